"""`attach: xdp` with `links: auto` and `kernel.mode: program` on the cni lab (tests/tools/lab.py's
CniLab, prefix ztp-): ztgeneve's `pods` are the truth, so pods come and go by editing the
config and SIGHUP. A pod added that way gets ztgeneve's program on the link its /32 route leads
to within the bound measured here, its TCP leaves as Geneve VNI 1001, and the kernel objects
program mode installs follow it (the ipset member, table 100's route); a pod removed gets its
link back without the program and its TCP is the kernel's again. This kernel has no Geneve
module: veths named istioin / istioout stand in for the Geneve links (as tests/kernel does), so
that the routes through them are installed and the kernel path can be followed to its end:
after kill -9 a meshed pod's SYN is marked 0x100 by the mangle rule ztgeneve installed, routed
by table 101 and leaves through istioout; a restart takes over again, SIGTERM leaves nothing."""
import json
import signal
import time

import pytest
import yaml

import lab as labtopo
import netns
from telemetry import counters as tel_counters, query
from test_e2e_xdp import (agg_devices, cni_lab, connect, log_lines, mark_packets, our_progs, start,
                          xdp_links, xdp_on)
from test_e2e_xdp_discovery import geneve_sources, wait_xdp
from tproxy_listener import ListenerProcess

PREFIX = "ztp-"
FILE_PREFIX = "ztp-node"
PODS = 16  # the article's six and ten pod-<octet>
ADDED = 8  # added to and removed from `pods` at run time
IPSET = "ztunnel-pods-ips"
MESHED = "productpage"
LEGACY = "legacy"  # never meshed: the listener a pod reaches through the kernel
START = [MESHED, "reviews-v1"]
ATTACH_BOUND_S = 2.0  # from the SIGHUP to the program on the link(s) (measured: README)
ISTIOOUT_PEER = "192.168.127.2"  # kernel.istioout_peer's default: table 101's next hop


def sh(ns, cmd, check=True):
    return labtopo.sh(ns, cmd, check=check)


@pytest.fixture(scope="module")
def cni(request):
    t = cni_lab(request, PREFIX, PODS, lambda t: t.xdp_config(
        START, kernel_mode="program", prefix=FILE_PREFIX, links="auto"))
    t.added = [p for p in t.pods if p.startswith("pod-")][:ADDED]
    t.veth = {p: t.host_veth(p) for p in t.pods}
    t.tunnel_stand_ins()
    return t


def set_pods(t, pods):
    """The config's pods become `pods`; SIGHUP; waits for the reload line."""
    with open(t.config) as f:
        cfg = yaml.safe_load(f)
    cfg["pods"] = [t.ip(p) for p in pods]
    with open(t.config, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    n = t.z.stderr().count("reloaded ")
    t.z.proc.send_signal(signal.SIGHUP)
    assert netns.wait_until(lambda: t.z.stderr().count("reloaded ") > n, 10), t.z.stderr()[-2000:]


def members(t):
    """The ipset's members: {ip: comment}."""
    out = sh(t.node_ns, f"ipset list -output save {IPSET}")
    return {l.split()[2]: l.split("comment ")[1].strip('"') if "comment " in l else None
            for l in out.splitlines() if l.startswith("add ")}


def table100_pods(t):
    """Table 100's pod routes (through istioin): {ip}."""
    return {r["dst"] for r in json.loads(sh(t.node_ns, "ip -j route show table 100"))
            if r.get("dev") == "istioin"}


def kernel_follows(t, pods):
    want = {t.ip(p) for p in pods}
    return members(t) == {ip: "ztgeneve" for ip in want} and table100_pods(t) == want


def test_starts_with_its_pods_links_and_installs_their_kernel_path(cni):
    start(cni, "first")
    assert wait_xdp(cni, START, True, 5) is not None, xdp_on(cni.node_ns)
    assert agg_devices(cni.node_ns) == ["ztg0k", "ztg0x", "ztg1k", "ztg1x"]
    assert not {cni.veth[p] for p in cni.pods if p not in START} & xdp_on(cni.node_ns).keys()
    assert sorted(xdp_links(cni.node_ns)) == ["ztg_xdp_pods"] * len(START) + ["ztg_xdp_ztunnel"]
    assert netns.wait_until(lambda: kernel_follows(cni, START), 5), (members(cni), table100_pods(cni))
    assert geneve_sources(cni, [*START, LEGACY]) == {cni.ip(p) for p in START}


def test_pods_added_and_removed_by_sighup_follow(cni, tmp_path):
    t = cni
    probe = t.added[0]
    server = ListenerProcess(t.ns(LEGACY), str(tmp_path / "legacy.log"), port=9080, mark=0,
                             addr=t.ip(LEGACY)).start()
    try:
        assert connect(t, probe, t.ip(LEGACY), 9080) == "connected"  # the kernel's, before
        t0 = time.monotonic()
        set_pods(t, [*START, probe])
        assert wait_xdp(t, [probe], True, 5) is not None
        single = time.monotonic() - t0  # from the SIGHUP on
        t0 = time.monotonic()
        set_pods(t, [*START, *t.added])
        assert wait_xdp(t, t.added, True, 10) is not None, "an added pod's link has no program"
        took = time.monotonic() - t0
        print(f"\nattach bound (program mode, SIGHUP): one pod {single * 1000:.0f} ms, "
              f"{ADDED - 1} at once {took * 1000:.0f} ms")
        assert single <= ATTACH_BOUND_S and took <= ATTACH_BOUND_S, (single, took)
        assert netns.wait_until(lambda: kernel_follows(t, [*START, *t.added]), 5), \
            (members(t), table100_pods(t))
        assert geneve_sources(t, t.added) == {t.ip(p) for p in t.added}
        assert connect(t, probe, t.ip(LEGACY), 9080) != "connected"  # ztgeneve's now: to ztunnel
        xdp = query(FILE_PREFIX, "/ztgeneve/xdp")
        for p in t.added:
            assert xdp[t.veth[p]]["to_ztgeneve"] > 0, (p, xdp[t.veth[p]])
            assert len([l for l in log_lines(t, " attached: pod ") if l.endswith(f" {t.ip(p)}")]) == 1, p

        t0 = time.monotonic()
        set_pods(t, START)
        assert wait_xdp(t, t.added, False, 10) is not None, "a removed pod's link still has the program"
        print(f"detach: {ADDED} at once {(time.monotonic() - t0) * 1000:.0f} ms")
        assert netns.wait_until(lambda: kernel_follows(t, START), 5), (members(t), table100_pods(t))
        rx = tel_counters(FILE_PREFIX)["ports"]["pods"]["rx"]
        before = query(FILE_PREFIX, "/ztgeneve/xdp")
        assert geneve_sources(t, t.added) == set()
        assert connect(t, probe, t.ip(LEGACY), 9080) == "connected"  # the kernel's again
        after = query(FILE_PREFIX, "/ztgeneve/xdp")
        assert tel_counters(FILE_PREFIX)["ports"]["pods"]["rx"] == rx
        for p in t.added:
            assert after[t.veth[p]] == before[t.veth[p]], p
        detached = log_lines(t, "detached: no meshed pod's route leads to it any more")
        for p in t.added:
            assert len([l for l in detached if f" {t.veth[p]} " in l]) == 1, p
    finally:
        server.stop()


def test_kill_9_falls_back_to_the_kernel_path_it_installed(cni):
    t = cni
    t.z.proc.send_signal(signal.SIGKILL)
    t.z.proc.wait(10)
    assert xdp_links(t.node_ns) == [] and xdp_on(t.node_ns).keys() <= {"ztg0x", "ztg1x"}
    assert kernel_follows(t, START)  # its objects stay: the kernel path is ready
    veth, src = t.veth[MESHED], t.ip(MESHED)
    route = sh(t.node_ns, f"ip route get {t.vip} from {src} iif {veth} mark 0x100")
    assert "table 101" in route and f"via {ISTIOOUT_PEER} dev istioout" in route, route
    m0 = mark_packets(t)
    cap = netns.Capture(t.node_ns, "pistioout", f"tcp and src {src}", name="xdp-program-fallback").start()
    try:
        assert connect(t, MESHED, t.vip, t.vip_port) != "connected"
        got = cap.wait_for(lambda p: True, count=1, timeout=5)
    finally:
        cap.stop()
    from scapy.layers.inet import IP, TCP
    assert got and got[0][IP].src == src and got[0][IP].dst == t.vip and got[0][TCP].flags & 0x02, got
    assert mark_packets(t) > m0


def test_restart_takes_over_and_sigterm_leaves_nothing(cni):
    t = cni
    start(t, "after-kill")
    assert wait_xdp(t, START, True, 5) is not None
    assert agg_devices(t.node_ns) == ["ztg0k", "ztg0x", "ztg1k", "ztg1x"]
    assert sorted(xdp_links(t.node_ns)) == ["ztg_xdp_pods"] * len(START) + ["ztg_xdp_ztunnel"]
    assert geneve_sources(t, START) == {t.ip(p) for p in START}
    m0 = mark_packets(t)
    assert geneve_sources(t, [MESHED]) == {t.ip(MESHED)}
    assert mark_packets(t) == m0  # ztgeneve takes the SYNs before netfilter again
    counters = t.z.stop()
    assert counters is not None and counters["xdp"][t.veth[MESHED]]["to_ztgeneve"] > 0
    assert xdp_links(t.node_ns) == [] and xdp_on(t.node_ns) == {}
    assert agg_devices(t.node_ns) == [] and our_progs(t.node_ns) == {}
    assert kernel_follows(t, START)  # program mode's objects stay for the kernel path
