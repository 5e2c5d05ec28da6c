"""Inbound (istioin, VNI 1000) with `attach: xdp`, on a cni lab of its own (prefix ztxi-): the
node as a ptp CNI plumbs it, a client outside the node behind the node's link vclient (the
uplink port's one link), ztunnel's side played by a ztgeneve role endpoint with pistioin and the
relaying stand-in on 15006, kernel.mode program.

A client's TCP to a meshed pod (pp) is taken by the uplink's XDP program, Geneve-encapsulated
with VNI 1000 by ztgeneve (the kernel's routed hop included: inner TTL 63) and reaches
ztunnel's link; the stand-in reports pp as original destination, opens its own connection to
pp from the client's address and relays: 1 MiB each way, sha256 compared by the client. A
non-meshed pod's (legacy) TCP to pp is taken by the pods' program on its link, the same way.
The stand-in's connection arrives on ztunnel's link unencapsulated with the source's address:
ztunnel's program hands it to ztgeneve, which learns it in the flow table and delivers it; the
pod's replies on it return to ztunnel unencapsulated (proxy_return, table 102), never to the
source nor into a tunnel. Not redirected: a kubelet-like probe from the node's address (its SYN
leaves the node's own stack; the pod's replies are found in the kernel's conntrack as the node's
connection), ztunnel's own connection to a pod, UDP to a meshed pod from the client and from
a meshed pod. The links' in-kernel
counters (inbound, to_ztgeneve, to_kernel) move by what the captures show.

After kill -9: the kernel path ztgeneve installed. This kernel has no Geneve module, so
a veth named istioin stands in for the Geneve link: table 100's route for the pod leads into it
and the client's SYN is captured leaving through it; what istioin would do with it (Geneve to
ztunnel) is not tested here."""
import json
import os
import signal
import tempfile
from pathlib import Path

import pytest

import lab as labtopo
import netns
import pcaputil as pu
from minilab import unbalanced
from pcaputil import GENEVE, IP, TCP, UDP, Ether
from telemetry import counters as tel_counters, query
from tproxy_listener import ListenerProcess
from udp_echo import UdpEcho
from ztgeneve import Ztgeneve

REPO = Path(__file__).resolve().parents[2]
PREFIX = "ztxi-"
FILE_PREFIX = "ztxi-node"
MESHED = [p for p in labtopo.SESSION_PODS if p != "legacy"]
POD = "productpage"
OTHER = "ratings"    # another meshed pod
LEGACY = "legacy"    # not meshed
PORT = 9080          # pp's echo server
UDP_PORT = 7000
INBOUND_VNI = 1000
# The node's end of the client's link (client_up); no '-': DPDK 22.11's telemetry keys (the
# link names of /ztgeneve/xdp) cannot hold one.
UPLINK = "vclient"
MB = 1 << 20


def sh(ns, cmd, check=True):
    return labtopo.sh(ns, cmd, check=check)


@pytest.fixture(scope="module")
def lab(request):
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    binary = Path(os.environ.get("ZTG_BINARY", REPO / "build" / "ztgeneve"))
    if not binary.exists():
        pytest.fail(f"{binary} not built")
    t = labtopo.CniLab(PREFIX, pods=6, zt_name="zt", endpoint=True)
    t.down()
    request.addfinalizer(t.down)
    t.up()
    t.client_up(UPLINK)
    t.tunnel_stand_ins(["istioin"])
    t.log_dir = d = tempfile.mkdtemp(prefix="ztg-e2e-xdpin-")
    cfg = os.path.join(d, "node.yaml")
    with open(cfg, "w") as f:
        f.write(t.xdp_config(MESHED, prefix=FILE_PREFIX, uplink=[UPLINK]))
    ep = os.path.join(d, "endpoint.yaml")
    with open(ep, "w") as f:
        f.write(open(REPO / "config" / "lab-endpoint.yaml").read().replace("ztg-endpoint", "ztxi-endpoint"))
    t.procs = {}

    request.addfinalizer(lambda: [p.stop() for p in t.procs.values() if p.running()])
    for name, c, ns in (("endpoint", ep, t.zt_ns), ("node", cfg, t.node_ns)):
        os.makedirs(os.path.join(d, name))
        t.procs[name] = Ztgeneve(binary, c, ns=ns, log_dir=os.path.join(d, name)).start(timeout=60)
    t.address_endpoint_taps(wait_s=20)
    t.listeners = [ListenerProcess(t.zt_ns, os.path.join(d, "listener-out.log")).start(),
                   ListenerProcess(t.zt_ns, os.path.join(d, "listener-in.log"), port=labtopo.INBOUND_PORT,
                                   mark=labtopo.INBOUND_MARK, relay=True).start()]
    t.inbound_listener = t.listeners[1]
    for lp in t.listeners:
        request.addfinalizer(lp.stop)
    t.udp = UdpEcho(t.ns(POD), UDP_PORT, os.path.join(d, "udp-pp.log")).start()
    request.addfinalizer(t.udp.stop)
    # pp's echo server (the listener's protocol: one line naming the connection, then echo)
    server = ListenerProcess(t.ns(POD), os.path.join(d, "server-pp.log"), port=PORT, mark=0,
                             addr="0.0.0.0").start()
    request.addfinalizer(server.stop)
    t.capture = netns.CaptureSet(t.log_dir)
    yield t
    t.capture.cleanup()


def counters(t):
    """(ztgeneve's device counters, the links' in-kernel counters), live."""
    return tel_counters(FILE_PREFIX)["ports"], query(FILE_PREFIX, "/ztgeneve/xdp")


def delta(after, before, dev, key):
    return int(after.get(dev, {}).get(key, 0)) - int(before.get(dev, {}).get(key, 0))


def echo(ns, host, nbytes, port=PORT):
    out = json.loads(netns.client(ns, "echo", host, port, "--bytes", nbytes, timeout=90))
    return out["conns"][0]


def inbound_connection(t, src_ns, src_ip, link):
    """A 1 MiB echo from src_ns to pp:9080, captured on ztunnel's link (what the node sends
    it); checks what every inbound connection must show; link: the node's link the source's
    frames arrive on (its program hands them over)."""
    pod_ip = t.ip(POD)
    zt = t.capture(t.zt_ns, labtopo.ZT_LINK, f"(udp dst port 6081) or (tcp and src host {pod_ip})",
                   direction="in")
    src = t.capture(src_ns, "eth0", f"tcp and host {pod_ip}")
    (b, xb), seen = counters(t), len(t.inbound_listener.upstreams())
    with netns.Captures(zt, src):
        conn = echo(src_ns, pod_ip, MB)
        # the pod's own FIN back at ztunnel's link: the stand-in's connection is closing
        zt.wait_for(lambda p: TCP in p and not pu.outer_is_geneve(p) and p[TCP].flags & 0x01,
                    count=1, timeout=5)
    # ztgeneve counts a frame as it sends it; the capture holds it a moment later, and the last
    # frames may still be in flight: settle on the counters matching the capture
    netns.wait_until(lambda: delta(counters(t)[0], b, "uplink", "inbound") == len(client_frames(zt, src_ip, pod_ip)),
                     5, interval=0.2)
    a, xa = counters(t)
    assert conn["ok"] and conn["error"] is None, conn
    assert conn["sent"] == conn["received"] == MB and conn["sha_sent"] == conn["sha_received"]
    client_port = int(conn["local"].rsplit(":", 1)[1])
    assert conn["local"].startswith(src_ip + ":"), conn
    ups = t.inbound_listener.upstreams()[seen:]
    assert len(ups) == 1, ups
    up = ups[0]
    assert up["orig"] == f"{pod_ip}:{PORT}" and up["peer"] == conn["local"], up
    via_ip, via_port = up["via"].rsplit(":", 1)
    assert via_ip == src_ip, up
    assert conn["first"] == f"ORIGDST {pod_ip}:{PORT} FROM {src_ip}:{via_port}", conn

    # The SYN on ztunnel's link as Geneve VNI 1000, istioin -> pistioin inside, node -> ztunnel
    # outside, one routed hop; decoded by scapy ...
    pkts = zt.packets()
    syns = pu.geneve_with_inner(pkts, lambda e: pu.is_tcp(e, src=src_ip, dst=pod_ip, dport=PORT, syn=True)
                                and e[TCP].sport == client_port)
    assert syns, f"no Geneve SYN {src_ip}:{client_port} -> {pod_ip}:{PORT} on ztunnel's link"
    s = syns[0]
    assert s[GENEVE].vni == INBOUND_VNI and s[GENEVE].proto == 0x6558, s[GENEVE].show(dump=True)
    assert (s[IP].src, s[IP].dst) == (t.gw_ip, t.zt_ip) and s[UDP].dport == pu.GENEVE_PORT
    inner = pu.inner_frame(s)
    assert (inner[Ether].src, inner[Ether].dst) == (labtopo.ISTIOIN_MAC, labtopo.PISTIOIN_MAC)
    assert inner[IP].ttl == 63, "the kernel's one routed hop, made by ztgeneve"
    # ... and by tshark
    tf = pu.tshark_decode(zt.path, f"geneve && tcp.flags.syn == 1 && tcp.flags.ack == 0 && tcp.srcport == {client_port}")
    assert tf, "tshark finds no Geneve SYN"
    assert [pu.tshark_int(v) for v in tf[0]["geneve.vni"]] == [INBOUND_VNI], tf[0]
    assert tf[0]["ip.src"] == [t.gw_ip, src_ip] and tf[0]["ip.dst"] == [t.zt_ip, pod_ip], tf[0]
    # Every frame of the client's connection reached ztunnel in VNI 1000.
    frames = client_frames(zt, src_ip, pod_ip, client_port)
    assert {p[GENEVE].vni for p in frames} == {INBOUND_VNI}

    # The pod's replies on the stand-in's connection reached ztunnel's link unencapsulated, to
    # ztunnel's MAC (table 102) ...
    returned = [p for p in pkts if not pu.outer_is_geneve(p) and pu.is_tcp(p, src=pod_ip, dst=src_ip)]
    assert returned and all(p[TCP].sport == PORT and p[TCP].dport == int(via_port) for p in returned), \
        {(p[TCP].sport, p[TCP].dport) for p in returned}
    assert all(p[Ether].dst == labtopo.ZT_MAC for p in returned)
    assert not pu.geneve_with_inner(pkts, lambda e: pu.is_tcp(e, src=pod_ip, dst=src_ip)), \
        "a reply of the pod went into a tunnel"
    # ... and never to the source: what it received from the pod's address is the stand-in's
    # answer on its own connection.
    to_src = [p for p in src.packets() if pu.is_tcp(p, src=pod_ip, dst=src_ip)]
    assert to_src and {p[TCP].dport for p in to_src} == {client_port}, {p[TCP].dport for p in to_src}

    # Counters: the link's program handed over as inbound what ztgeneve encapsulated (on the
    # uplink port, whichever link), as many as the capture has; nothing of it as outbound.
    link_in = delta(xa, xb, link, "inbound")
    assert link_in == delta(a, b, "uplink", "inbound") == len(frames), \
        (link_in, delta(a, b, "uplink", "inbound"), len(frames))
    assert delta(xa, xb, link, "to_ztgeneve") == 0 and delta(xa, xb, link, "no_socket") == 0
    assert delta(a, b, "uplink", "rx") == len(frames), "the uplink port received only those"
    # ztunnel's connection learned once from ztunnel's link and delivered, the pod's replies
    # returned as captured, none redirected outbound; ztunnel's replies to the source
    # decapsulated (VNI 1000) and routed by the kernel's FIB.
    assert delta(a, b, "ztunnel", "flow_insert") == 1
    assert delta(a, b, "ztunnel", "proxied") + delta(a, b, "ztunnel", "proxied_kernel") > 0
    assert delta(a, b, "pods", "proxy_return") == len(returned), (delta(a, b, "pods", "proxy_return"), len(returned))
    assert delta(a, b, "pods", "redirect") == 0, "a reply went into the outbound tunnel"
    assert delta(a, b, "ztunnel", "decap_unknown_pod") > 0
    for dev in ("ztunnel", "pods", "uplink"):
        for key in ("drop_no_twin", "drop_flow_full", "drop_no_nexthop"):
            assert delta(a, b, dev, key) == 0, (dev, key)
    return a, b, xa, xb


def client_frames(zt, src_ip, pod_ip, sport=None):
    return pu.geneve_with_inner(zt.packets(), lambda e: pu.is_tcp(e, src=src_ip, dst=pod_ip)
                                and (sport is None or e[TCP].sport == sport))


def test_client_outside_the_node(lab):
    inbound_connection(lab, lab.client_ns, labtopo.CLIENT_IP, UPLINK)


def test_non_meshed_local_pod(lab):
    """legacy (not meshed) to pp: the pods' program on legacy's link hands it over as inbound
    (to the uplink port's device), never as a meshed pod's outbound."""
    inbound_connection(lab, lab.ns(LEGACY), lab.ip(LEGACY), lab.host_veth(LEGACY))


def tunnelled_between(pkts, x, y):
    out = []
    for p in pkts:
        if pu.outer_is_geneve(p):
            e = pu.inner_frame(p)
            if IP in e and {e[IP].src, e[IP].dst} == {x, y}:
                out.append(p)
    return out


def test_probe_from_node_address(lab):
    """A kubelet-like probe: the node (source HOST_IP, the gateway on its lo) connects to
    pp:9080 and exchanges 4 KiB. Its frames leave the node's own stack (no program sees them);
    the pod's replies to HOST_IP are found in the kernel's conntrack as the node's connection
    and stay the kernel's (pp's link: to_kernel, not to_ztgeneve); nothing of it reaches
    ztunnel's link, in Geneve or not."""
    pod_ip, veth = lab.ip(POD), lab.host_veth(POD)
    zt = lab.capture(lab.zt_ns, labtopo.ZT_LINK, f"host {lab.gw_ip} or udp port 6081", direction="in")
    pod = lab.capture(lab.ns(POD), "eth0", f"tcp port {PORT} and host {lab.gw_ip}")
    with netns.Captures(zt, pod):
        b, xb = counters(lab)
        conn = echo(lab.node_ns, pod_ip, 4096)
        pod.wait_for(lambda p: pu.is_tcp(p, src=pod_ip, dst=lab.gw_ip) and p[TCP].flags & 0x01, timeout=5)
        a, xa = counters(lab)
    assert conn["ok"], conn
    assert conn["local"].startswith(lab.gw_ip + ":"), conn
    port = int(conn["local"].rsplit(":", 1)[1])
    replies = [p for p in pod.packets() if pu.is_tcp(p, src=pod_ip, dst=lab.gw_ip) and p[TCP].dport == port]
    assert replies
    assert delta(xa, xb, veth, "to_ztgeneve") == 0, "a reply of the probe was redirected"
    assert delta(xa, xb, veth, "to_kernel") >= len(replies)
    assert delta(a, b, "pods", "redirect") == 0 and delta(a, b, "uplink", "inbound") == 0
    assert not tunnelled_between(zt.packets(), lab.gw_ip, pod_ip)
    assert not [p for p in zt.packets() if IP in p and not pu.outer_is_geneve(p)
                and {p[IP].src, p[IP].dst} == {lab.gw_ip, pod_ip}]


UDP_CASES = {  # id: (source, pp's port, payload)
    "client": ("client", UDP_PORT, b"ztgeneve udp"),
    "meshed-pod": (OTHER, UDP_PORT, b"ztgeneve udp"),
}


@pytest.mark.parametrize("case", list(UDP_CASES))
def test_udp_to_meshed_pod(lab, case):
    """UDP to pp (a meshed pod) from the client outside the node and from another meshed pod:
    never handed to ztgeneve (the `-p udp` skip): echoed back unchanged, none of it on
    ztunnel's link, the source's link counts it to_kernel."""
    src, port, payload = UDP_CASES[case]
    src_ns, src_ip, link = (lab.client_ns, labtopo.CLIENT_IP, UPLINK) if src == "client" else \
        (lab.ns(src), lab.ip(src), lab.host_veth(src))
    pod_ip = lab.ip(POD)
    zt = lab.capture(lab.zt_ns, labtopo.ZT_LINK, "udp", direction="in")
    with netns.Captures(zt):
        b, xb = counters(lab)
        out = json.loads(netns.client(src_ns, "udpecho", pod_ip, port, "--count", 3, "--hex",
                                      payload.hex(), timeout=60))
        a, xa = counters(lab)
    assert out["sent"] == out["echoed"] == 3, out
    assert delta(xa, xb, link, "to_ztgeneve") == delta(xa, xb, link, "inbound") == 0
    assert delta(xa, xb, link, "to_kernel") >= 3
    assert delta(a, b, "uplink", "rx") == 0 and delta(a, b, "pods", "rx") == 0
    assert not tunnelled_between(zt.packets(), src_ip, pod_ip)
    assert not [p for p in zt.packets() if IP in p and not pu.outer_is_geneve(p)
                and {p[IP].src, p[IP].dst} == {src_ip, pod_ip}]


def test_ztunnels_own_connection(lab):
    """ztunnel's own connection to pp (from the ztunnel IP: the `-s ZT_IP` skip): on ztunnel's
    link its frames stay the kernel's (ztunnel's program hands over only the connections for
    clients: nothing learned), on pp's link the pod's replies to the ztunnel IP too (neither
    to_ztgeneve nor inbound); 4 KiB echoed, none of it in a tunnel."""
    pod_ip, zt_ip = lab.ip(POD), lab.zt_ip
    pod_link, zt_link = lab.host_veth(POD), lab.host_veth(lab.zt_name)
    pod = lab.capture(lab.ns(POD), "eth0", f"tcp port {PORT} and host {zt_ip}")
    with netns.Captures(pod):
        b, xb = counters(lab)
        conn = echo(lab.zt_ns, pod_ip, 4096)
        pod.wait_for(lambda p: pu.is_tcp(p, src=pod_ip, dst=zt_ip) and p[TCP].flags & 0x01, timeout=5)
        a, xa = counters(lab)
    assert conn["ok"] and conn["local"].startswith(zt_ip + ":"), conn
    frames = [p for p in pod.packets() if TCP in p and PORT in (p[TCP].sport, p[TCP].dport)]
    to_pod = [p for p in frames if p[IP].dst == pod_ip]
    replies = [p for p in frames if p[IP].src == pod_ip]
    assert to_pod and replies and not [p for p in frames if pu.outer_is_geneve(p)]
    assert delta(xa, xb, zt_link, "to_ztgeneve") == 0 and delta(xa, xb, zt_link, "to_kernel") >= len(to_pod)
    assert delta(xa, xb, pod_link, "to_ztgeneve") == delta(xa, xb, pod_link, "inbound") == 0
    assert delta(xa, xb, pod_link, "to_kernel") >= len(replies)
    for dev, key in (("ztunnel", "flow_insert"), ("ztunnel", "proxied"), ("pods", "rx"), ("uplink", "rx")):
        assert delta(a, b, dev, key) == 0, (dev, key, delta(a, b, dev, key))


def test_counters_balance(lab):
    """Every frame each port received is accounted for (the uplink's: inbound and drops)."""
    ports = tel_counters(FILE_PREFIX)["ports"]
    assert not unbalanced({"ports": ports}), unbalanced({"ports": ports})
    assert ports["uplink"]["inbound"] > 0


def test_kill_9_kernel_path(lab):
    """Last: kill -9. The BPF links go with the process: no program is left on the uplink, and
    the kernel path program mode installed takes the client's TCP to pp: `ip route get` says
    table 100's route into istioin (the stand-in veth), and the client's SYN leaves the node
    through it (what a Geneve istioin would then do is not tested: no Geneve module here)."""
    node = lab.procs["node"]
    node.stop(sig=signal.SIGKILL)
    links = json.loads(sh(lab.node_ns, "ip -j link show"))
    # (net_af_xdp's own program stays on ztgeneve's aggregation devices ztg<N>x: never a link)
    assert not [l["ifname"] for l in links if "xdp" in l and not l["ifname"].startswith("ztg")], \
        "a program outlived ztgeneve"
    pod_ip = lab.ip(POD)
    route = sh(lab.node_ns, f"ip route get {pod_ip} from {labtopo.CLIENT_IP} iif {UPLINK}")
    assert "via 192.168.126.2 dev istioin" in route and "table 100" in route, route
    cap = netns.Capture(lab.node_ns, "pistioin", f"tcp and src {labtopo.CLIENT_IP} and dst {pod_ip}",
                        name="xdpin-fallback").start()
    try:
        netns.client(lab.client_ns, "tcp", pod_ip, PORT, "--timeout", 1.0, timeout=15)
        got = cap.wait_for(lambda p: pu.is_tcp(p, syn=True), count=1, timeout=5)
    finally:
        cap.stop()
    assert got, "the client's SYN did not take table 100's route into istioin"
