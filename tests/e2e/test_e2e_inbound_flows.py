"""The flow table in the inbound lab (test_e2e_inbound.py's, MiniLab.inbound_up, under the
prefix ztfl-): many concurrent connections from the client outside the node to pp:9080, each
relayed by ztunnel's stand-in (asyncio, tproxy_listener.py --relay --many) through its own
connection from the client's address, which the node learns from ztunnel's link
(`flow_insert`, `proxied`) and whose pod replies it returns to ztunnel (`proxy_return`).

- N_CONNS (10,000) connections held open at once (table of BIG_MAX): the table holds
  N_CONNS flows (ztgeneve_flow_table_flows), every connection's data comes back, nothing is
  dropped or redirected; closed (every RST_EVERY-th with a reset, the others with a FIN),
  the table shrinks back to 0 after inbound.flows.closing_timeout_s, no flow learned again.
- The node restarted with a table of SMALL_MAX: FULL_CONNS connections; those that find no
  room are dropped as a kernel drops a new connection when conntrack is full
  (`drop_flow_full`, one per SYN of ztunnel's): none reaches the pod, the client gets no
  data on them (the stand-in gives up and closes), the others work.
- Restarted with idle_timeout_s IDLE_S: idle connections are forgotten after IDLE_S
  (expired), not before; their closing is learned again and still returns to ztunnel.

Each role's processes (client, the pod's echo server, the relays) are as many as the file
limit needs (FILE_LIMIT, printed), and a restart first ends every connection that could
still send (quiesce), so one test's leftovers are not the next one's flows.

The flow table's size and expiries are read from /metrics (metrics.listen in the node's
namespace), the per-device counters from the telemetry socket. ztunnel's ephemeral ports
are kept apart from the client's (lab.ZT_PORTS): with 10,000 connections each way, a port
both chose would make the client's own packets look like ztunnel's connection."""
import json
import math
import os
import re
import resource
import subprocess
import time

import pytest

import lab as labtopo
import netns
import pcaputil as pu
import telemetry
from minilab import MiniLab, unbalanced
from pcaputil import TCP

PREFIX = "ztfl-"
PODS = {"pp": 3, "ra": 2, "lg": 20}
MESHED = ["pp", "ra"]
PORT = 9080
METRICS = "127.0.0.1:16091"
# Every connection is a file in the client, one in the pod's echo server and two in
# ztunnel's relay. A process may hold as many files as the hard limit (20,000 on the machine
# this was written on; root cannot raise it without CAP_SYS_RESOURCE, and another machine's
# may be lower): each role runs as many processes as its files need at that limit, the
# servers and relays on one port (SO_REUSEPORT, as ztunnel's workers would), with room for
# the kernel's uneven spread over them.
N_CONNS = 10000
FILE_LIMIT = resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def processes_for(files, spread=1.25):
    """How many processes hold `files` files at FILE_LIMIT each (minus what a process keeps
    for itself), with `spread` of headroom for an uneven share."""
    return max(1, math.ceil(files * spread / max(FILE_LIMIT - 200, 100)))


RELAYS = max(2, processes_for(2 * N_CONNS))
SERVERS = processes_for(N_CONNS)
CLIENT_PROCS = processes_for(N_CONNS, spread=1.0)
RING_FRAMES = 4096     # both instances' af_packet rings on ztunnel's link (DPDK's default: 512):
                       # a burst of resets lost there is never sent again, its flow stays
RST_EVERY = 2          # every second connection closes with a reset
CLOSING_S = 3          # inbound.flows.closing_timeout_s: the pod's FIN may follow ztunnel's late
                       # on a loaded machine, and must still find the flow
BIG_MAX = 16384        # the first table: room for N_CONNS
SMALL_MAX = 64         # the second table (flows.max), smaller than FULL_CONNS
IDLE_S = 2             # its idle timeout
IDLE_CONNS = 40        # fit the small table
FULL_CONNS = 100
CONNECT_TIMEOUT_S = 2.5  # the stand-in's wait for the pod in the full test: two SYNs (0 s, 1 s)


@pytest.fixture(scope="module")
def lab(request):
    t = MiniLab.for_module(request, PREFIX, PODS, MESHED, "flows", endpoint=True)
    print(f"\n[flows] file limit {FILE_LIMIT}: {CLIENT_PROCS} client, {SERVERS} server and "
          f"{RELAYS} relay processes for {N_CONNS} connections")
    t.inbound_up(PORT, many=True, ring_frames=RING_FRAMES, relays=RELAYS, servers=SERVERS, metrics=METRICS,
                 flows={"max": BIG_MAX, "closing_timeout_s": CLOSING_S})
    t.capture = netns.CaptureSet(t.log_dir)
    yield t
    t.capture.cleanup()


CLIENTS = []  # every Clients started, ended before a restart


def restart(lab, name, connect_timeout=None, **flows):
    """The node restarted with the inbound section's flows (and the stand-in, with its
    connect timeout); the pods send first again, so the new instance knows where they are.
    Whatever an earlier test left open is closed first: ztunnel's last packets of a
    connection would be learned by the new table."""
    for c in CLIENTS:
        c.kill()
    lab.inbound_listener.stop()
    quiesce(lab)
    lab.z.stop()
    lab.start_node(lab.node_config(os.path.join(lab.log_dir, f"{name}.yaml"), inbound=True, metrics=METRICS,
                                   ring_frames=RING_FRAMES, flows=flows), name=name)
    lab.start_listener(inbound=True, many=True, connect_timeout=connect_timeout, name=f"listener-{name}")
    lab.ping_all()
    # (a straggler of those connections, learned as closing, goes within the closing timeout)
    f = wait_flows(lab, lambda f: f["flows"] == 0, flows["closing_timeout_s"] + 10, "after the restart")
    assert f["capacity"] == flows["max"], f
    return lab


@pytest.fixture(scope="module")
def full(lab):
    """The node with a table of SMALL_MAX flows (idle connections kept), the stand-in
    waiting CONNECT_TIMEOUT_S for the pod."""
    return restart(lab, "node-full", CONNECT_TIMEOUT_S, max=SMALL_MAX, closing_timeout_s=CLOSING_S)


@pytest.fixture(scope="module")
def idle(lab):
    """The node with an idle timeout of IDLE_S."""
    return restart(lab, "node-idle", max=SMALL_MAX, idle_timeout_s=IDLE_S, closing_timeout_s=CLOSING_S)


def flow_metrics(lab):
    """The flow table's gauges and counter from /metrics: {flows, capacity, expired}."""
    body = netns.run(lab.node_ns, netns.PY, "-c",
                     f"import urllib.request; print(urllib.request.urlopen('http://{METRICS}/metrics', "
                     "timeout=5).read().decode())", timeout=30).stdout
    m = dict(re.findall(r"^ztgeneve_flow_table_(flows|capacity|expired_total) (\d+)$", body, re.M))
    assert len(m) == 3, f"no flow table in /metrics:\n{body[:2000]}"
    return {"flows": int(m["flows"]), "capacity": int(m["capacity"]), "expired": int(m["expired_total"])}


def counters(lab):
    return telemetry.counters(lab.node_prefix)["ports"]


def delta(after, before, dev, key):
    return int(after.get(dev, {}).get(key, 0)) - int(before.get(dev, {}).get(key, 0))


def total(after, before, key):
    return sum(delta(after, before, dev, key) for dev in after)


class Clients:
    """nsclient.py `many` in the client's namespace, holding its connections open until
    close(): `conns` spread over `procs` processes (each within the file limit), read as one."""

    def __init__(self, lab, conns, parallel=200, timeout=60, rst=0, procs=1):
        shares = [conns // procs + (i < conns % procs) for i in range(procs)]
        # each process resets its every rst-th connection, counting from its first
        self.resets = sum(math.ceil(n / rst) for n in shares) if rst else 0
        self.procs = [subprocess.Popen(
            netns.ns_cmd(lab.client_ns, netns.PY, os.path.join(netns.TOOLS, "nsclient.py"), "many",
                         lab.ip("pp"), PORT, "--conns", n, "--bytes", 64, "--parallel",
                         max(1, parallel // procs), "--timeout", timeout, "--hold", "--rst", rst),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for n in shares if n]
        lab.servers.extend(self.procs)  # down() ends them if the test does not
        CLIENTS.append(self)

    def kill(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)

    def opened(self, timeout):
        """The summary once every connection is open or has failed (bounded by timeout):
        {"ok", "failed", "conns"} over all processes."""
        outs = self._lines(timeout)
        return {"ok": sum(o["ok"] for o in outs), "failed": sum(o["failed"] for o in outs),
                "conns": [c for o in outs for c in o["conns"]]}

    def close(self, timeout=60):
        """Closes them all; returns {"closed", "reset", "eof"} summed."""
        for p in self.procs:
            p.stdin.write("close\n")
            p.stdin.flush()
        outs = self._lines(timeout)
        for p in self.procs:
            p.wait(timeout)
        return {k: sum(o[k] for o in outs) for k in ("closed", "reset", "eof")}

    def _lines(self, timeout):
        """One JSON line of each process, within timeout in all."""
        import select
        deadline = time.monotonic() + timeout
        outs = []
        for p in self.procs:
            r, _, _ = select.select([p.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                self.kill()
                raise AssertionError(f"nsclient many: no answer in {timeout}s")
            line = p.stdout.readline()
            if not line:
                raise AssertionError(f"nsclient many ended: rc {p.wait(5)}: {p.stderr.read()[-2000:]}")
            outs.append(json.loads(line))
        return outs


def quiesce(lab, timeout=10):
    """No connection of PORT left in ztunnel's or the pod's namespace that may still send:
    what a killed client or stopped relay leaves retransmits its FIN for minutes, and a new
    node would learn ztunnel's as a flow and see the pod's. Those still there after `timeout`
    are destroyed (ss -K: a reset each, learned by the node still running)."""
    spaces = (lab.zt_ns, lab.ns("pp"))
    states = ("state", "connected", "exclude", "time-wait")  # TIME_WAIT sends nothing
    filt = f"( sport = :{PORT} or dport = :{PORT} )"

    def left():
        return [ln for ns in spaces
                for ln in netns.run(ns, "ss", "-Htn", *states, filt).stdout.splitlines()
                if ln.strip()]

    if not netns.wait_until(lambda: not left(), timeout, interval=0.25):
        for ns in spaces:
            netns.run(ns, "ss", "-K", "-tn", *states, filt, check=False)
        assert netns.wait_until(lambda: not left(), 5, interval=0.25), f"connections left: {left()[:5]}"


def wait_flows(lab, pred, timeout, what):
    """Polls /metrics until pred(flow metrics) holds (bounded); returns the last read."""
    last = {}

    def check():
        last.update(flow_metrics(lab))
        return pred(last)

    assert netns.wait_until(check, timeout, interval=0.25), f"{what}: flow table {last} after {timeout}s"
    return last


def test_many_connections(lab):
    """N_CONNS connections at once through ztunnel: one flow each (inserted once, found for
    the rest of the connection's packets), every one's data back, none dropped, no reply of
    the pod into the outbound tunnel; closed (FIN or RST), the flows go after the closing
    timeout and none is learned again."""
    f0, b = flow_metrics(lab), counters(lab)
    assert f0["flows"] == 0 and f0["capacity"] == BIG_MAX, f0
    t0 = time.monotonic()
    clients = Clients(lab, N_CONNS, rst=RST_EVERY, procs=CLIENT_PROCS)
    opened = clients.opened(timeout=240)
    took = time.monotonic() - t0
    bad = [c for c in opened["conns"] if not c["ok"]][:5]
    assert opened["ok"] == N_CONNS, f"{opened['failed']} of {N_CONNS} failed in {took:.1f}s, e.g. {bad}"
    for c in opened["conns"][:3]:
        assert c["first"].startswith(f"ORIGDST {lab.ip('pp')}:{PORT} FROM {labtopo.CLIENT_IP}:"), c
    # Every connection is the client's; the stand-in's, from the client's address, is a flow.
    f1 = wait_flows(lab, lambda f: f["flows"] >= N_CONNS, 30, "all open")
    a = counters(lab)
    assert f1["flows"] == N_CONNS and f1["expired"] == f0["expired"], f1
    assert delta(a, b, "ztunnel", "flow_insert") == N_CONNS
    assert delta(a, b, "ztunnel", "proxied") >= 3 * N_CONNS, "SYN, ACK, data at least"
    assert delta(a, b, "ztunnel", "flow_hit") == delta(a, b, "ztunnel", "proxied") - N_CONNS
    assert delta(a, b, "pp", "proxy_return") >= 3 * N_CONNS, "SYN-ACK, first line, echo at least"
    assert delta(a, b, "pp", "flow_hit") == delta(a, b, "pp", "proxy_return")
    for dev, key in (("pp", "redirect"), ("ztunnel", "proxied_kernel"), ("ztunnel", "drop_flow_full")):
        assert delta(a, b, dev, key) == 0, (dev, key, delta(a, b, dev, key))
    assert delta(a, b, "pp.twin", "inbound") >= 3 * N_CONNS and delta(a, b, "pp.twin", "skip_proxied") == 0
    print(f"\n[flows] {N_CONNS} connections open in {took:.1f}s")

    closed = clients.close()
    assert closed["closed"] == N_CONNS and closed["reset"] == clients.resets, closed
    assert closed["eof"] == N_CONNS - closed["reset"], f"FIN-closed connections without the pod's FIN: {closed}"
    f2 = wait_flows(lab, lambda f: f["flows"] == 0, 30, "after close")
    c = counters(lab)
    assert f2["expired"] - f1["expired"] == N_CONNS, (f1, f2)
    assert delta(c, a, "ztunnel", "flow_insert") == 0, "a closing connection was learned again"
    assert delta(c, a, "pp", "redirect") == 0 and delta(c, a, "ztunnel", "drop_flow_full") == 0
    assert lab.inbound_listener.errors() == [], lab.inbound_listener.errors()[:5]


def test_table_full(full):
    """FULL_CONNS connections against a table of SMALL_MAX: the first to find room work; for
    the others ztunnel's SYN is dropped (drop_flow_full, one per SYN: the kernel drops a new
    connection when conntrack is full), never delivered to the pod nor answered by it, and
    the client gets no data on them (the stand-in gives up after CONNECT_TIMEOUT_S and closes
    the client's connection). Closed, the table empties."""
    lab = full
    pod_ip, cip = lab.ip("pp"), labtopo.CLIENT_IP
    f0, b = flow_metrics(lab), counters(lab)
    assert f0["flows"] == 0, f0
    seen = len(lab.inbound_listener.upstreams())
    from_zt = lab.capture(lab.node_ns, "v-ztunnel", f"tcp dst port {PORT} and src host {cip}",
                          direction="in", snaplen=96)
    at_pod = lab.capture(lab.ns("pp"), "eth0", f"tcp port {PORT}", snaplen=96)
    with netns.Captures(from_zt, at_pod):
        clients = Clients(lab, FULL_CONNS, parallel=FULL_CONNS, timeout=CONNECT_TIMEOUT_S + 20)
        opened = clients.opened(timeout=60)
        ok = opened["ok"]
        via = {int(u["via"].rsplit(":", 1)[1]) for u in lab.inbound_listener.upstreams()[seen:]}
        # The stand-in has given up on every connection that found no room (the client saw
        # it close); each of their SYNs is counted as the capture has it.
        netns.wait_until(lambda: len(lab.inbound_listener.errors()) >= FULL_CONNS - ok, 20)
        state = {}

        def counted():
            state["a"] = counters(lab)
            state["syns"] = [p for p in from_zt.packets() if pu.is_tcp(p, src=cip, dst=pod_ip, syn=True)]
            n = len([p for p in state["syns"] if p[TCP].sport not in via])
            return delta(state["a"], b, "ztunnel", "drop_flow_full") == n

        netns.wait_until(counted, 10, interval=0.25)
        a, syns = state["a"], state["syns"]
        f1 = flow_metrics(lab)
        pod = at_pod.packets()
    inserted = delta(a, b, "ztunnel", "flow_insert")
    assert 0 < ok <= SMALL_MAX and ok == len(via) == inserted == f1["flows"], (ok, len(via), inserted, f1)
    assert opened["failed"] == FULL_CONNS - ok >= FULL_CONNS - SMALL_MAX
    for c in opened["conns"]:
        if not c["ok"]:
            assert not c["first"], f"a connection without a flow got data: {c}"
    assert len(lab.inbound_listener.errors()) == FULL_CONNS - ok
    # Each SYN of ztunnel's without room: dropped, counted once.
    dropped = [p for p in syns if p[TCP].sport not in via]
    assert {p[TCP].sport for p in dropped} and len({p[TCP].sport for p in dropped}) == FULL_CONNS - ok
    assert delta(a, b, "ztunnel", "drop_flow_full") == len(dropped), (delta(a, b, "ztunnel", "drop_flow_full"),
                                                                       len(dropped))
    # ... and none reached the pod: it saw the connections with a flow only, and answered those.
    at = {p[TCP].sport for p in pod if pu.is_tcp(p, src=cip, dst=pod_ip)}
    back = {p[TCP].dport for p in pod if pu.is_tcp(p, src=pod_ip, dst=cip)}
    assert at == back == via, (len(at), len(back), len(via))
    for dev, key in (("pp", "redirect"), ("ztunnel", "proxied_kernel")):
        assert delta(a, b, dev, key) == 0, (dev, key)

    clients.close()
    wait_flows(lab, lambda f: f["flows"] == 0, 15, "after close")


def test_idle_expiry(idle):
    """IDLE_CONNS idle connections are forgotten IDLE_S after their last packet, not
    sooner; closing them afterwards learns each again from ztunnel's FIN (or RST), and the
    pod's FIN still returns to ztunnel: every FIN-closed connection gets the pod's FIN."""
    lab = idle
    f0, b = flow_metrics(lab), counters(lab)
    assert f0["flows"] == 0, f0
    t0 = time.monotonic()
    clients = Clients(lab, IDLE_CONNS, rst=RST_EVERY)
    opened = clients.opened(timeout=60)
    assert opened["ok"] == IDLE_CONNS, opened
    trace = []

    def gone(f):
        trace.append((time.monotonic(), f["flows"]))
        return f["flows"] == 0

    f1 = wait_flows(lab, gone, IDLE_S + 15, "idle")
    if trace[0][0] - t0 < IDLE_S - 0.5:
        assert trace[0][1] == IDLE_CONNS, f"forgotten before {IDLE_S}s: {trace}"
    first_drop = next(t for t, n in trace if n < IDLE_CONNS)
    assert first_drop - t0 >= IDLE_S - 0.25, f"expired {first_drop - t0:.2f}s after the first SYN: {trace}"
    assert f1["expired"] - f0["expired"] == IDLE_CONNS
    a = counters(lab)
    assert delta(a, b, "ztunnel", "flow_insert") == IDLE_CONNS

    closed = clients.close()
    assert closed["closed"] == IDLE_CONNS and closed["eof"] == IDLE_CONNS - closed["reset"], closed
    c = counters(lab)
    # ztunnel's FIN or RST of each is learned again (closing), the pod's answers return
    assert delta(c, a, "ztunnel", "flow_insert") == IDLE_CONNS
    assert delta(c, a, "pp", "proxy_return") >= IDLE_CONNS - closed["reset"]
    assert delta(c, a, "pp", "redirect") == 0
    wait_flows(lab, lambda f: f["flows"] == 0, 15, "after close")


def test_exit_line_balances(idle):
    """Last: the node stops; every frame it received is accounted for in its exit line."""
    node = idle.z.stop()
    assert idle.z.returncode == 0
    assert not unbalanced(node), unbalanced(node)
    assert node.get("mbufs_in_use") == 0
