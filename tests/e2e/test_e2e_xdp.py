"""ztgeneve with `attach: xdp` on the cni lab (tests/tools/lab.py's CniLab, under a prefix of
its own, ztx-): the node as a ptp CNI plumbs it, ztgeneve attached on top through its eBPF
programs and one aggregation device per port, kernel.mode program. Meshed TCP leaves as
Geneve VNI 1001 on ztunnel's link; ARP, pings, a non-meshed pod's TCP stay the kernel's and
ztgeneve receives none of them; a listed link deleted at run time is detached and attached
again when a link of its name comes back (never a link that reuses its ifindex); across kill -9
and SIGTERM + restart the kernel carries the traffic (pings at 10 ms lose at most MAX_LOST), nothing is left behind or doubled."""
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import lab as labtopo
import netns
import pcaputil
from telemetry import counters as tel_counters, query
from tproxy_listener import ListenerProcess
from ztgeneve import Ztgeneve

REPO = Path(__file__).resolve().parents[2]
PREFIX = "ztx-"
PODS = int(os.environ.get("ZTG_XDP_PODS", "110"))
FILE_PREFIX = "ztx-node"
MESHED = "productpage"
LEGACY = "legacy"
MAX_LOST = 2  # pings at 10 ms lost across a kill -9 or a restart, at most


def sh(ns, cmd, check=True):
    return labtopo.sh(ns, cmd, check=check)


def cni_lab(request, prefix, pods, config):
    """The cni lab under prefix with pods pods (removed at the end, ztgeneve stopped first);
    t.config the file of config(t)'s YAML text."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    binary = Path(os.environ.get("ZTG_BINARY", REPO / "build" / "ztgeneve"))
    if not binary.exists():
        pytest.fail(f"{binary} not built")
    t = labtopo.CniLab(prefix, pods=pods, zt_name="zt")
    t.down()
    request.addfinalizer(t.down)
    t.up()
    t.log_dir = tempfile.mkdtemp(prefix=f"ztg-e2e-{prefix}")
    t.config = os.path.join(t.log_dir, "node.yaml")
    with open(t.config, "w") as f:
        f.write(config(t))
    t.binary = binary
    t.z = None
    request.addfinalizer(lambda: stop(t))
    return t


@pytest.fixture(scope="module")
def cni(request):
    # meshed: the article's five; legacy and pod-<octet> are not
    return cni_lab(request, PREFIX, PODS, lambda t: t.xdp_config(
        [p for p in labtopo.SESSION_PODS if p != LEGACY], prefix=FILE_PREFIX))


def start(t, name):
    os.makedirs(os.path.join(t.log_dir, name), exist_ok=True)
    t.z = Ztgeneve(t.binary, t.config, ns=t.node_ns, log_dir=os.path.join(t.log_dir, name))
    t.z.start(timeout=60)
    return t.z


def stop(t, sig=signal.SIGTERM):
    if t.z is not None and t.z.running():
        t.z.stop(sig=sig)
    return t.z


OUR_PROGS = ("ztg_xdp_pods", "ztg_xdp_ztunnel", "ztg_tc_agg")


def our_progs(ns):
    """{id: name} of the programs of attach: xdp loaded in the kernel (BPF objects are not
    per namespace: other labs' programs, e.g. the twin lab's ztg_xdp_pass, are left out)."""
    return {p["id"]: p["name"] for p in json.loads(sh(ns, "bpftool -j prog list") or "[]")
            if p.get("name") in OUR_PROGS}


def xdp_links(ns):
    """The BPF links of attach: xdp's programs: [program name]."""
    progs = our_progs(ns)
    out = json.loads(sh(ns, "bpftool -j link list") or "[]")
    return [progs[l["prog_id"]] for l in out if l.get("prog_id") in progs]


def xdp_on(ns):
    """Links carrying an XDP program in ns: {link name: program id}."""
    links = json.loads(sh(ns, "ip -j link show"))
    return {l["ifname"]: l["xdp"]["prog"]["id"] for l in links if "xdp" in l}


def agg_devices(ns):
    return sorted(l["ifname"] for l in json.loads(sh(ns, "ip -j link show"))
                  if l["ifname"].startswith("ztg"))


def kernel_state(t):
    """What the node's kernel has that ztgeneve's attach must not change."""
    node = t.node_ns
    return (sh(node, "ip -4 addr show | grep -v ztg"), sh(node, "ip route show"),
            sh(node, "sysctl -a 2>/dev/null | grep -E '^net.ipv4.(ip_forward|conf.(all|default|veth))' | sort"))


def connect(t, pod, host, port, timeout=1.0):
    return netns.client(t.ns(pod), "tcp", host, port, "--timeout", timeout, timeout=15).strip()


def mark_packets(t):
    """Packets counted by the mangle MARK 0x100 rule (ztgeneve's kernel path): the outbound
    mark alone, not the chain's skip marks (ztunnel's ICMP answers to the Geneve its closed
    port 6081 receives pass through the kernel and are marked 0x220)."""
    out = sh(t.node_ns, "iptables-save -c -t mangle")  # [packets:bytes] -A ... per rule
    return sum(int(l[1:l.index(":")]) for l in out.splitlines()
               if l.startswith("[") and "-A ztunnel-PREROUTING" in l and "--set-xmark 0x100/0x100" in l)


def geneve_capture(t, name):
    return netns.Capture(t.zt_ns, "eth0", "udp port 6081", name=f"xdp-{name}").start()


def meshed_syns_as_geneve(t, name, pod=MESHED):
    """Meshed TCP to the VIP: the SYNs as they arrive on ztunnel's link."""
    cap = geneve_capture(t, name)
    try:
        connect(t, pod, t.vip, t.vip_port)
        got = cap.wait_for(lambda p: True, count=1, timeout=5)
    finally:
        cap.stop()
    return cap, got


def test_attach_changes_nothing_of_the_node(cni):
    before = kernel_state(cni)
    z = start(cni, "first")
    assert z.running()
    assert agg_devices(cni.node_ns) == ["ztg0k", "ztg0x", "ztg1k", "ztg1x"]
    on = xdp_on(cni.node_ns)
    for p in cni.all_pods():
        assert cni.host_veth(p) in on, p
    # one program per kind, each link through its own BPF link
    assert sorted(xdp_links(cni.node_ns)) == ["ztg_xdp_pods"] * PODS + ["ztg_xdp_ztunnel"]
    assert kernel_state(cni)[:2] == before[:2]


def test_meshed_tcp_arrives_as_geneve_vni_1001(cni):
    cap, got = meshed_syns_as_geneve(cni, "first")
    from scapy.contrib.geneve import GENEVE
    from scapy.layers.inet import IP, TCP
    assert got, "no Geneve on ztunnel's link"
    g = got[0]
    assert g[IP].src == cni.gw_ip and g[IP].dst == cni.zt_ip
    assert g[GENEVE].vni == 1001
    inner = pcaputil.inner_frame(g)
    assert inner[IP].src == cni.ip(MESHED) and inner[IP].dst == cni.vip
    assert inner[TCP].dport == cni.vip_port and inner[TCP].flags & 0x02
    r = subprocess.run(["tshark", "-r", cap.path, "-Y", "geneve.vni == 1001 && tcp.flags.syn == 1",
                        "-T", "fields", "-e", "ip.src"], capture_output=True, text=True, timeout=30)
    assert [cni.gw_ip, cni.ip(MESHED)] in [l.split(",") for l in r.stdout.split()], r.stdout  # outer, inner


def test_the_kernel_serves_arp_dns_pings_and_a_non_meshed_pods_tcp(cni, tmp_path):
    # a DNS server on the non-meshed pod's address, port 53 (a cluster DNS pod)
    with open(tmp_path / "dns.log", "w") as log:
        dns = subprocess.Popen(netns.ns_cmd(cni.ns(LEGACY), netns.PY,
                                            os.path.join(netns.TOOLS, "dns_responder.py"),
                                            cni.ip(LEGACY), 53),
                               stdout=subprocess.PIPE, stderr=log, text=True, stdin=subprocess.DEVNULL)
    try:
        assert dns.stdout.readline().strip() == "listening"
        before = tel_counters(FILE_PREFIX)["ports"]
        kb = query(FILE_PREFIX, "/ztgeneve/xdp")
        ns = cni.ns(MESHED)
        sh(ns, "ip neigh flush dev eth0")
        assert subprocess.run(netns.ns_cmd(ns, "ping", "-c", 3, "-i", 0.2, "-W", 2, cni.gw_ip)).returncode == 0
        assert subprocess.run(netns.ns_cmd(cni.ns(LEGACY), "ping", "-c", 3, "-i", 0.2, "-W", 2,
                                           cni.ip(MESHED))).returncode == 0
        # the meshed pod's DNS query (UDP: not in redirect.protocols) answered by the kernel's path
        out = netns.client(ns, "dns", cni.ip(LEGACY), "--wait", 3, timeout=20).strip()
        assert out != "timeout", "the meshed pod's DNS query got no answer"
        answer = json.loads(out)
        assert answer["from"] == f"{cni.ip(LEGACY)}:53" and answer["answers"] == 1, answer
    finally:
        dns.kill()
        dns.wait(5)
    # a non-meshed pod's TCP to another non-meshed pod (the VIP's backend is meshed: its
    # replies would rightly go to ztunnel)
    backend = list(cni.pods)[-1] if PODS > 6 else LEGACY
    server = ListenerProcess(cni.ns(backend), str(tmp_path / "backend.log"), port=9080,
                             mark=0, addr=cni.ip(backend)).start()
    try:
        out = json.loads(netns.client(cni.ns(LEGACY), "echo", cni.ip(backend), 9080,
                                      "--bytes", 100000, timeout=40))
    finally:
        server.stop()
    assert out["conns"][0]["ok"], out
    after = tel_counters(FILE_PREFIX)["ports"]
    ka = query(FILE_PREFIX, "/ztgeneve/xdp")
    # ztgeneve received nothing of it: its ports' rx did not move
    assert after["pods"]["rx"] == before["pods"]["rx"], (before["pods"], after["pods"])
    assert after["ztunnel"]["rx"] == before["ztunnel"]["rx"]
    meshed, legacy = cni.host_veth(MESHED), cni.host_veth(LEGACY)
    assert ka[meshed]["to_kernel"] > kb[meshed]["to_kernel"]  # ARP, pings
    assert ka[legacy]["to_kernel"] > kb[legacy]["to_kernel"]
    assert ka[legacy]["to_ztgeneve"] == kb[legacy]["to_ztgeneve"] == 0
    assert ka[meshed]["to_ztgeneve"] == after["pods"]["rx"]  # what it redirected, ztgeneve got


def ifindex(t, link):
    return int(sh(t.node_ns, f"cat /sys/class/net/{link}/ifindex").strip())


def log_lines(t, what):
    return [l for l in (t.z.stdout() + t.z.stderr()).splitlines() if what in l]


RELINK = "reviews-v2"  # meshed; its listed link is deleted and re-made


def test_a_listed_link_deleted_is_detached_and_attached_again_by_name(cni):
    t, veth = cni, cni.host_veth(RELINK)
    assert meshed_syns_as_geneve(t, "relink-0", RELINK)[1]
    counted = query(FILE_PREFIX, "/ztgeneve/xdp")[veth]
    assert counted["to_ztgeneve"] > 0 and counted["deleted"] == 0, counted
    index = ifindex(t, veth)
    t0 = time.monotonic()
    sh(t.node_ns, f"ip link del {veth}")
    gone = f"{veth} (ifindex {index}) detached: the link was deleted; attached again when a link of that name appears"
    assert netns.wait_until(lambda: log_lines(t, gone), 5, interval=0.02), t.z.stderr()[-2000:]
    detached = time.monotonic() - t0
    assert sorted(xdp_links(t.node_ns)) == ["ztg_xdp_pods"] * (PODS - 1) + ["ztg_xdp_ztunnel"]
    xdp = query(FILE_PREFIX, "/ztgeneve/xdp")[veth]  # kept, under the link's name
    assert xdp["deleted"] == 1 and xdp["to_ztgeneve"] >= counted["to_ztgeneve"], (xdp, counted)
    # a link of another name given the ifindex is not the listed link: nothing, no counters
    sh(t.node_ns, f"ip link add ztxreuse index {index} type veth peer name ztxreusep && "
                  "ip link set ztxreuse up && ip link set ztxreusep up")
    time.sleep(0.5)  # five kernel.poll_ms
    assert "ztxreuse" not in xdp_on(t.node_ns) and "ztxreuse" not in query(FILE_PREFIX, "/ztgeneve/xdp")
    sh(t.node_ns, "ip link del ztxreuse")
    # the pod's link of that name comes back (another ifindex): the port's program again
    t0 = time.monotonic()
    t.plug(RELINK)
    assert netns.wait_until(lambda: veth in xdp_on(t.node_ns), 5, interval=0.02), xdp_on(t.node_ns)
    print(f"\nlisted link: detached {detached * 1000:.0f} ms after its deletion, attached again "
          f"{(time.monotonic() - t0) * 1000:.0f} ms after it was re-made (with its route and address)")
    again = ifindex(t, veth)
    assert again != index and len(log_lines(t, f"{veth} (ifindex {again}) attached: listed")) == 1
    assert meshed_syns_as_geneve(t, "relink-1", RELINK)[1]
    xdp = query(FILE_PREFIX, "/ztgeneve/xdp")[veth]  # the old link's counters and the new one's
    assert xdp["deleted"] == 1 and xdp["to_ztgeneve"] > counted["to_ztgeneve"], (xdp, counted)
    # deleted and re-made at once under the same ifindex (within one poll): detached first
    sh(t.node_ns, f"ip link del {veth}")
    t.plug(RELINK, index=again)
    assert netns.wait_until(lambda: len(log_lines(t, f"{veth} (ifindex {again}) attached: listed")) == 2, 5)
    assert len(log_lines(t, f"{veth} (ifindex {again}) detached: the link was deleted")) == 1
    assert sorted(xdp_links(t.node_ns)) == ["ztg_xdp_pods"] * PODS + ["ztg_xdp_ztunnel"]
    assert meshed_syns_as_geneve(t, "relink-2", RELINK)[1]
    assert query(FILE_PREFIX, "/ztgeneve/xdp")[veth]["deleted"] == 2


class Pinger:
    """ping at 10 ms from a pod, in the background; lost() once stopped."""

    def __init__(self, t, pod, dst):
        self.p = subprocess.Popen(netns.ns_cmd(t.ns(pod), "ping", "-n", "-i", "0.01", "-W", "1", dst),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self):
        self.p.send_signal(signal.SIGINT)
        out = self.p.communicate(timeout=10)[0]
        line = next(l for l in out.splitlines() if "packets transmitted" in l)
        sent, got = int(line.split()[0]), int(line.split()[3])
        return sent, sent - got


def across(t, action):
    """Runs action while pinging (a meshed pod to the gateway, a non-meshed pod to a pod);
    returns [(sent, lost)] for both."""
    pingers = [Pinger(t, MESHED, t.gw_ip), Pinger(t, LEGACY, t.ip(MESHED))]
    try:
        time.sleep(1.0)
        action()
        time.sleep(1.0)
    finally:
        res = [p.stop() for p in pingers]
    print(f"\nping (sent, lost): meshed->gateway {res[0]}, non-meshed->pod {res[1]}")
    return res


def test_kill_9_falls_back_to_the_kernel(cni):
    z = cni.z
    assert z.running()
    res = across(cni, lambda: (z.proc.send_signal(signal.SIGKILL), z.proc.wait(10)))
    for sent, lost in res:
        assert sent > 100 and lost <= MAX_LOST, res
    # the kernel detached every program with the process
    assert xdp_links(cni.node_ns) == [] and xdp_on(cni.node_ns).keys() <= {"ztg0x", "ztg1x"}
    # the meshed pod's SYNs now reach the kernel's netfilter (the MARK rule ztgeneve installed)
    m0 = mark_packets(cni)
    assert connect(cni, MESHED, cni.vip, cni.vip_port) != "connected"
    assert mark_packets(cni) > m0


def test_restart_after_kill_9_takes_over_without_doubling(cni):
    start(cni, "after-kill")
    assert agg_devices(cni.node_ns) == ["ztg0k", "ztg0x", "ztg1k", "ztg1x"]
    assert sorted(xdp_links(cni.node_ns)) == ["ztg_xdp_pods"] * PODS + ["ztg_xdp_ztunnel"]
    _, got = meshed_syns_as_geneve(cni, "after-kill")
    assert got, "no Geneve after the restart"
    # Once it redirects again, the MARK counter stops growing: ztgeneve takes the meshed
    # pod's SYNs before netfilter. (Measured from the first Geneve on: right after "running"
    # the first SYN can still reach the kernel while the aggregation pair comes up.)
    m0 = mark_packets(cni)
    _, got = meshed_syns_as_geneve(cni, "after-kill-2")
    assert got and mark_packets(cni) == m0


def test_sigterm_and_restart(cni):
    z = cni.z
    res = across(cni, lambda: (z.stop(), start(cni, "after-term")))
    for sent, lost in res:
        assert sent > 100 and lost <= MAX_LOST, res
    _, got = meshed_syns_as_geneve(cni, "after-term")
    assert got


def test_sigterm_leaves_nothing_behind(cni):
    counters = cni.z.stop()
    assert counters is not None and "xdp" in counters
    assert counters["xdp"][cni.host_veth(MESHED)]["to_ztgeneve"] > 0
    assert xdp_links(cni.node_ns) == []
    assert xdp_on(cni.node_ns) == {}
    assert agg_devices(cni.node_ns) == []
    assert our_progs(cni.node_ns) == {}
