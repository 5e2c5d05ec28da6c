"""Soak (issue 6, item 8): bounded mixed traffic through the full path, with pods added and
removed by SIGHUP reloads and one restart of ztunnel's endpoint; at the end every frame is
accounted for and every mbuf is back.

Own topology (namespaces zts-*, tests/tools/minilab.py), the lab's in small: node with five
pod ports and the ztunnel port; the ztunnel pod's link owned by a ztgeneve role endpoint
(taps eth0, pistioout), TPROXY to the transparent listener; an echo server on the node's own
address (10.244.2.1:9090) for traffic that is not redirected.

Each round, in parallel: every meshed pod makes TCP echo connections to the VIP (through
node -> Geneve -> endpoint -> TPROXY listener and back); pods that are not meshed make them
to the node's echo server (pass -> twin -> node kernel); every pod sends a DNS query and a
UDP datagram to the gateway; the legacy pod pings a meshed pod (routed by the node kernel
between two twins). Every connection must complete with its bytes echoed intact.

Events: every cycle (min(duration, 60 s)) pods r2 and r1 leave and join the pod list by a
SIGHUP reload of an edited copy of the config (the traffic follows: a pod that left talks to
the node's server instead); once, half-way, the endpoint is restarted (SIGTERM, start).

ZTG_SOAK_SECONDS (default 60) sets the duration; 600 for the long form.
"""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import minilab as ml
import netns
import telemetry
from minilab import MiniLab, wait

REPO = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("ZTG_BINARY", REPO / "build" / "ztgeneve"))
SECONDS = float(os.environ.get("ZTG_SOAK_SECONDS", "60"))
PODS = {"pp": 3, "ra": 2, "r1": 7, "r2": 5, "lg": 20}
MESHED0 = ["pp", "ra", "r1"]
SERVER_PORT = 9090
ECHO_BYTES = 16384
CONNS = 2


@pytest.fixture(scope="module")
def soak_lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    if not BINARY.exists():
        pytest.fail(f"{BINARY} not built")
    d = tmp_path_factory.mktemp("soak")
    lab = MiniLab("zts-", pods=PODS, meshed=MESHED0, endpoint=True, log_dir=str(d), binary=BINARY)
    try:
        lab.up()
        lab.cfg = lab.node_config(str(d / "node.yaml"), arp_refresh_ms=1000)
        lab.ep_cfg = lab.endpoint_config(str(d / "endpoint.yaml"))
        lab.start_node(lab.cfg)
        lab.start_endpoint(lab.ep_cfg)
        lab.start_listener()
        lab.start_server(lab.node_ns, ml.GW_IP, SERVER_PORT)
        yield lab
    finally:
        lab.down()


def set_pods(lab, meshed):
    """Rewrites the pods list of the node's config and reloads it with SIGHUP; waits until
    the pod table has them (bounded)."""
    lab.node_config(lab.cfg, pods=meshed, arp_refresh_ms=1000)
    lab.z.proc.send_signal(signal.SIGHUP)
    ok = wait(lambda: telemetry.query(lab.node_prefix, "/ztgeneve/info")["pods"] == len(meshed), 3)
    assert ok, f"after SIGHUP: {telemetry.query(lab.node_prefix, '/ztgeneve/info')}, want {len(meshed)} pods"


def echo(lab, pod, meshed, conns=CONNS, nbytes=ECHO_BYTES):
    dst, port = (ml.VIP, 9080) if pod in meshed else (ml.GW_IP, SERVER_PORT)
    return netns.client_bg(lab.ns(pod), "echo", dst, port, "--bytes", nbytes, "--conns", conns,
                           "--timeout", "20")


def round_of_traffic(lab, meshed, stats):
    procs = {p: echo(lab, p, meshed) for p in PODS}
    side = [netns.client_bg(lab.ns(p), "dns", ml.GW_IP) for p in PODS]
    side += [netns.client_bg(lab.ns(p), "udp", ml.GW_IP, 9999) for p in PODS]
    ping = subprocess.Popen(netns.ns_cmd(lab.ns("lg"), "ping", "-n", "-q", "-c", "3", "-i", "0.2",
                                         "-W", "2", lab.ip("pp")), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    failures = []
    for p, pr in procs.items():
        out, err = pr.communicate(timeout=60)
        try:
            conns = json.loads(out)["conns"]
        except (ValueError, KeyError):
            failures.append((p, out, err))
            continue
        for c in conns:
            kind = "meshed" if p in meshed else "passed"
            if c["ok"]:
                stats[kind] += 1
                stats["bytes"] += c["sent"]
            else:
                failures.append((p, kind, c))
    for s in side:
        s.communicate(timeout=30)
        stats["udp"] += 1
    ping.communicate(timeout=30)
    stats["pings"] += 1 if ping.returncode == 0 else 0
    if ping.returncode != 0:
        failures.append(("lg", "ping", lab.ip("pp")))
    return failures


def restart_endpoint(lab, meshed, stats):
    t0 = time.monotonic()
    lab.ep.stop(timeout=10)
    assert lab.ep.returncode == 0, f"endpoint exit {lab.ep.returncode}:\n{lab.ep.stderr()[-2000:]}"
    assert lab.ep.exit_counters and lab.ep.exit_counters.get("mbufs_in_use") == 0, \
        f"endpoint exit line: {lab.ep.exit_counters}"
    stats["endpoint_counters_before_restart"] = lab.ep.exit_counters
    lab.start_endpoint(lab.ep_cfg, name="endpoint-2")
    # bounded: the first connection after the restart waits for ARP on both sides
    ok = wait(lambda: json.loads(netns.client(lab.ns(meshed[0]), "echo", ml.VIP, 9080,
                                              "--timeout", "5"))["conns"][0]["ok"], 20, step=0.2)
    assert ok, "no connection through the restarted endpoint within 20 s"
    stats["endpoint_restart_seconds"] = round(time.monotonic() - t0, 2)


def test_soak(soak_lab):
    lab = soak_lab
    # warm-up: every pod resolves its gateway, both instances their peer
    for p in PODS:
        lab.ping(p, count=1, timeout=2)
    assert wait(lambda: json.loads(netns.client(lab.ns("pp"), "echo", ml.VIP, 9080, "--timeout", "3"))
                ["conns"][0]["ok"], 15, step=0.2), "no connection through the full path at start"
    node_base = telemetry.query(lab.node_prefix, "/ztgeneve/info")["mbufs_in_use"]
    ep_base = telemetry.query(lab.ep_prefix, "/ztgeneve/info")["mbufs_in_use"]

    cycle = min(SECONDS, 60.0)
    # (fraction of a cycle, pods after the reload)
    plan = [(0.2, ["pp", "ra", "r1", "r2"]), (0.4, ["pp", "ra", "r2"]), (0.6, ["pp", "ra", "r1", "r2"]),
            (0.8, ["pp", "ra", "r1"])]
    stats = {"meshed": 0, "passed": 0, "bytes": 0, "udp": 0, "pings": 0, "rounds": 0, "reloads": 0}
    meshed = list(MESHED0)
    restarted = False
    failures = []
    t0 = time.monotonic()
    while (now := time.monotonic() - t0) < SECONDS:
        if not restarted and now >= SECONDS / 2:
            restart_endpoint(lab, meshed, stats)
            restarted = True
        frac = (now % cycle) / cycle
        due = [pods for f, pods in plan if f <= frac]
        want = due[-1] if due else ["pp", "ra", "r1"]
        if sorted(want) != sorted(meshed):
            set_pods(lab, want)
            meshed = list(want)
            stats["reloads"] += 1
        failures += round_of_traffic(lab, meshed, stats)
        stats["rounds"] += 1
        assert lab.z.running() and lab.ep.running(), "an instance died during the soak"
        assert len(failures) == 0, f"round {stats['rounds']}: {failures[:5]}"
    duration = time.monotonic() - t0
    assert restarted and stats["reloads"] >= 4

    # quiet: both back to their idle mbuf count, by themselves
    assert wait(lambda: telemetry.query(lab.node_prefix, "/ztgeneve/info")["mbufs_in_use"] == node_base, 5)
    assert wait(lambda: telemetry.query(lab.ep_prefix, "/ztgeneve/info")["mbufs_in_use"] == ep_base, 5)
    time.sleep(0.5)
    lab.ep.stop(timeout=10)
    node = lab.z.stop(timeout=10)
    ep = lab.ep.exit_counters
    assert lab.z.returncode == 0 and lab.ep.returncode == 0
    assert node["mbufs_in_use"] == 0, f"node leaked {node['mbufs_in_use']} mbufs"
    assert ep["mbufs_in_use"] == 0, f"endpoint leaked {ep['mbufs_in_use']} mbufs"
    bad = ml.unbalanced(node)
    assert not bad, f"node: frames received but not accounted for: {bad}"
    bad = ml.node_tx_unbalanced(node, list(PODS))
    assert not bad, f"node: frames sent but neither transmitted nor counted: {bad}"
    for name, c in (("endpoint", ep), ("endpoint before restart", stats["endpoint_counters_before_restart"])):
        bad = ml.unbalanced(c)
        assert not bad, f"{name}: frames received but not accounted for: {bad}"
    drops = {d: {k: v for k, v in c.items() if k.startswith("drop_") and v} for d, c in node["ports"].items()}
    drops = {d: v for d, v in drops.items() if v}

    ports = node["ports"]
    print(f"\nsoak: {duration:.0f} s, {stats['rounds']} rounds, {stats['reloads']} SIGHUP reloads, "
          f"1 endpoint restart ({stats['endpoint_restart_seconds']} s to the first connection)")
    print(f"  connections completed: {stats['meshed']} through ztunnel, {stats['passed']} not redirected "
          f"({stats['bytes']} bytes echoed), {stats['udp']} UDP/DNS datagrams, {stats['pings']} ping runs")
    print(f"  node frames per device (rx / tx): " + ", ".join(
        f"{d} {c['rx']}/{c['tx']}" for d, c in ports.items()))
    tot = {k: sum(int(c.get(k, 0)) for c in ports.values())
           for k in ("rx", "tx", "redirect", "pass", "decap", "direct", "decap_unknown_pod", "tunnel_arp_reply")}
    print(f"  node totals: {tot}; drops: {drops or 'none'}")
    print(f"  endpoint (after restart) rx/tx: " + ", ".join(
        f"{d} {c['rx']}/{c['tx']}" for d, c in ep["ports"].items()))
    print("  every frame accounted for; mbufs_in_use back to baseline, 0 at exit (node and endpoint)")
