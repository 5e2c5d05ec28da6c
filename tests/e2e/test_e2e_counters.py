"""ztgeneve's counters (telemetry while running, the exit line after SIGTERM) agree with
the Geneve frames that ztunnel receives on its link (ztlink)."""
import subprocess
import time

import pytest
from conftest import FILE_PREFIX, MESHED, NODE_NS, PODS, POD_PORTS, VIP, ZTUNNEL_IP, ns_of

import netns
import pcaputil as pu
import telemetry
from ztgeneve import COUNTER_KEYS, delta, port_sum, ports_of

SETTLE = 0.5


def _redirectable(pods):
    """Geneve frames (fast_decode dicts) carrying TCP from one of pods to the VIP port."""
    ips = {PODS[p] for p in pods}
    return lambda d: d["geneve"] and d.get("iproto") == 6 and d.get("isrc") in ips \
        and d.get("idport") == 9080


class Window:
    """A counting window: captures on ztlink (what the node sends to ztunnel) and on the
    senders' eth0 run across it; each sender pod makes n connections to the VIP, which
    ztunnel's listener accepts (SYN, ACK, then the client's close)."""

    def __init__(self, lab, senders, name):
        self.senders = senders
        self.zt = lab.wire_to_ztunnel(name=f"{name}-zt")
        self.pods = {p: lab.capture(p, "eth0", "tcp dst port 9080", direction="out",
                                    name=f"{name}-{p}") for p in senders}
        self.caps = netns.Captures(self.zt, *self.pods.values())

    def __enter__(self):
        self.caps.__enter__()
        time.sleep(SETTLE)
        return self

    def __exit__(self, *exc):
        self.caps.__exit__(*exc)

    def send(self):
        procs = [netns.client_bg(ns_of(p), "tcp", VIP, 9080, "--timeout", "2")
                 for p, n in self.senders.items() for _ in range(n)]
        self.results = [pr.communicate(timeout=20)[0].strip() for pr in procs]

        def counts():
            return ({p: len([x for x in c.packets() if pu.is_tcp(x, dport=9080)])
                     for p, c in self.pods.items()}, len(self.geneve()))

        # the connections' last packets (the client's close) settle within a moment
        last, stable_since = None, time.monotonic()
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            now = counts()
            if now != last:
                last, stable_since = now, time.monotonic()
            elif time.monotonic() - stable_since >= SETTLE and sum(now[0].values()) == now[1]:
                break
            time.sleep(0.1)
        self.sent = {p: len([x for x in c.packets() if pu.is_tcp(x, syn=True)])
                     for p, c in self.pods.items()}
        self.sent_all = last[0]
        return self.sent

    def geneve(self):
        """Geneve frames on ztlink carrying the senders' TCP to the VIP port."""
        return [d for d in pu.fast_geneve(self.zt.path) if _redirectable(self.senders)(d)]


def test_counter_shape(lab):
    c = lab.counters()
    assert isinstance(c, dict) and set(c) >= {"ports"}, f"telemetry counters keys {sorted(c)}"
    assert set(c["ports"]) >= {f"{p}.twin" for p in PODS}, f"twins missing: {sorted(c['ports'])}"
    assert set(c["ports"]) >= set(PODS), f"ports {sorted(c['ports'])}"
    for name in PODS:
        pc = c["ports"][name]
        missing = set(COUNTER_KEYS) - set(pc)
        assert not missing, f"port {name} lacks counters {missing}"
        assert all(isinstance(pc[k], int) and pc[k] >= 0 for k in COUNTER_KEYS)


def test_dpdk_ethdev_telemetry(lab):
    with telemetry.Client(FILE_PREFIX) as t:
        ports = t.query("/ethdev/list")
        assert len(ports) >= len(PODS), f"ethdev list {ports}"
        st = t.query(f"/ethdev/stats,{ports[0]}")
        assert "ipackets" in st and "opackets" in st


def test_telemetry_redirect_counts_match_capture(lab):
    with Window(lab, {"ratings": 3, "reviews-v1": 2}, "ctr") as w:
        before = lab.counters()
        per_pod = w.send()
        after = lab.counters()
    geneve = w.geneve()
    sent = sum(w.sent_all.values())
    d = delta(after, before, "redirect", POD_PORTS)
    assert w.results == ["connected"] * 5, f"connections to the VIP: {w.results}"
    assert per_pod == {"ratings": 3, "reviews-v1": 2}, f"SYNs sent per pod: {per_pod}"
    assert len(geneve) == sent, f"pods sent {sent} TCP packets, ztunnel got {len(geneve)} Geneve frames"
    assert d == len(geneve), f"redirect counters rose by {d}, ztunnel got {len(geneve)} Geneve frames"
    for p, n in w.sent_all.items():
        assert delta(after, before, "redirect", [p]) == n, f"redirect counter of {p}"
    assert delta(after, before, "tx", ["ztunnel"]) >= len(geneve)
    assert delta(after, before, "rx", ["ratings", "reviews-v1"]) >= sent
    # the replies came back through the tunnel and were delivered
    assert delta(after, before, "decap", ["ztunnel"]) >= 5 * 2, "SYN-ACKs and data decapsulated"


@pytest.mark.last
def test_exit_line_counts_match_session_capture(lab):
    """SIGTERM: exit 0 and a ztgeneve-counters line whose redirect total equals every Geneve
    frame carrying a pod's IPv4 packet that ztunnel received since ztgeneve started (the
    other Geneve frames from the node are its answers to ARP inside the tunnel); each meshed
    pod's connect to ztunnel's own IP counted `direct` (sent here, so the test stands alone)."""
    direct = [netns.client_bg(ns_of(p), "tcp", ZTUNNEL_IP, 15008, "--timeout", "2") for p in MESHED]
    answers = [pr.communicate(timeout=20)[0].strip() for pr in direct]
    assert all(a in ("connected", "refused") for a in answers), f"ztunnel's IP not reached: {answers}"
    with Window(lab, {"productpage": 2, "reviews-v2": 2}, "exit") as w:
        w.send()
        sent = sum(w.sent_all.values())
        exit_counters = lab.z.stop()
    assert len(w.geneve()) == sent, f"pods sent {sent} TCP packets, ztunnel got {len(w.geneve())}"
    time.sleep(SETTLE)
    lab.session_capture.stop()
    frames = pu.fast_geneve(lab.session_capture.path)
    total = len([d for d in frames if d.get("inner_type") == 0x0800])
    arp = len([d for d in frames if d.get("inner_type") == 0x0806])
    dropped = lab.session_capture.dropped()
    assert not dropped, f"the session capture lost {dropped} packets; the comparison is void"
    assert lab.z.returncode == 0, f"ztgeneve exited {lab.z.returncode} on SIGTERM:\n{lab.z.stderr()[-2000:]}"
    assert exit_counters is not None, f"no ztgeneve-counters line on stdout:\n{lab.z.stdout()[-2000:]}"
    assert set(exit_counters) >= {"ports", "workers"}
    redirect = port_sum(exit_counters, "redirect", POD_PORTS)
    assert total >= sent
    assert redirect == total, (f"exit line: redirect total {redirect}; ztunnel received {total} "
                               f"Geneve frames carrying IPv4 during the session")
    arp_replies = int(ports_of(exit_counters)["ztunnel"].get("tunnel_arp_reply", 0))
    assert arp == arp_replies, f"{arp} in-tunnel ARP frames on ztlink, counter {arp_replies}"
    direct_total = port_sum(exit_counters, "direct", POD_PORTS)
    assert direct_total >= len(MESHED), "direct counter: the pods' connects to ztunnel's IP"
    workers = exit_counters["workers"]
    assert isinstance(workers, list) and workers


@pytest.mark.last
def test_exit_removes_twins(lab):
    assert not lab.z.running()
    links = subprocess.run(["ip", "-n", NODE_NS, "-o", "link"], capture_output=True, text=True).stdout
    left = [l.split(":")[1].strip() for l in links.splitlines() if ": t-" in l]
    assert not left, f"taps left after ztgeneve exited: {left}"
