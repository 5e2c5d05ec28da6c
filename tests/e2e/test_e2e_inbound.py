"""Inbound end to end (istioin, VNI 1000), on a lab of its own (prefix ztin-): a client outside
the node (ztin-client, 10.10.1.2 behind the node kernel's link v-client) and a non-meshed pod
(lg) open TCP to a meshed pod's port (pp:9080). The node kernel routes it toward the pod, the
node's twin stage sends it into istioin, the endpoint decapsulates it into pistioin, TPROXY hands
it to ztunnel's stand-in on 15006, which reports the pod as original destination and opens its
own connection to the pod from the client's address; the node learns that connection from
ztunnel's link and returns the pod's replies to ztunnel unencapsulated (proxy_return), never
to the client; the stand-in relays, and its replies to the client go back through pistioin and
the node's kernel. 1 MiB each way, sha256 compared by the client.

The skips, each not redirected (no Geneve VNI 1000/1001 carrying it on ztunnel's link, the
skip_* counters grow by what the pod's capture counts, redirect and inbound do not) and
delivered: a kubelet-like probe from the node's address (skip_host, both directions by the
flow table), ztunnel's own connection to a pod (skip_ztunnel; the pod's replies `direct`),
a meshed pod's and a client's UDP to a meshed pod, and Geneve to the tunnel port of a meshed
pod (skip_udp), each echoed back."""
import json
import os

import pytest

import lab as labtopo
import netns
import pcaputil as pu
import telemetry
from minilab import MiniLab, unbalanced
from pcaputil import GENEVE, IP, TCP, UDP, Ether
from tproxy_listener import ListenerProcess
from udp_echo import UdpEcho

PREFIX = "ztin-"
PODS = {"pp": 3, "ra": 2, "lg": 20}
MESHED = ["pp", "ra"]
PORT = 9080          # the pod's echo server
UDP_PORT = 7000      # the pod's UDP echo server (and another on the Geneve port)
INBOUND_VNI = 1000
MB = 1 << 20


@pytest.fixture(scope="module")
def lab(request):
    t = MiniLab.for_module(request, PREFIX, PODS, MESHED, "inbound", endpoint=True)
    d = t.log_dir
    t.inbound_up(PORT)
    # HBONE's port: a plain stand-in (one line, then echo) answering through pistioin
    t.hbone = ListenerProcess(t.zt_ns, os.path.join(d, "listener-hbone.log"), port=labtopo.HBONE_PORT,
                              mark=labtopo.INBOUND_MARK).start()
    request.addfinalizer(t.hbone.stop)
    t.udp = {port: UdpEcho(t.ns("pp"), port, os.path.join(d, f"udp-pp-{port}.log")).start()
             for port in (UDP_PORT, pu.GENEVE_PORT)}
    for u in t.udp.values():
        request.addfinalizer(u.stop)
    t.capture = netns.CaptureSet(t.log_dir)
    yield t
    t.capture.cleanup()


def counters(lab):
    return telemetry.counters(lab.node_prefix)["ports"]


def delta(after, before, dev, key):
    return int(after.get(dev, {}).get(key, 0)) - int(before.get(dev, {}).get(key, 0))


def echo(ns, host, nbytes, port=PORT):
    out = json.loads(netns.client(ns, "echo", host, port, "--bytes", nbytes, timeout=90))
    return out["conns"][0]


def inbound_connection(lab, src_ns, src_ip):
    """One 1 MiB echo from src_ns to pp:9080 with captures on ztunnel's link (what the node
    sends it), in pp and at the source; returns what the checks need."""
    pod_ip = lab.ip("pp")
    zt = lab.capture(lab.zt_ns, labtopo.ZT_LINK, f"(udp dst port 6081) or (tcp and src host {pod_ip})",
                     direction="in")
    pod = lab.capture(lab.ns("pp"), "eth0", f"tcp port {PORT}")
    src = lab.capture(src_ns, "eth0", f"tcp and host {pod_ip}")
    before, ep_before = counters(lab), telemetry.counters(lab.ep_prefix)["ports"]
    seen = len(lab.inbound_listener.upstreams())
    with netns.Captures(zt, pod, src):
        conn = echo(src_ns, pod_ip, MB)
        # the last frames (FIN, ACK) are on the wire once the client has its EOF; wait for the
        # pod's own FIN to be back at ztunnel's link
        zt.wait_for(lambda p: TCP in p and not pu.outer_is_geneve(p) and p[TCP].flags & 0x01,
                    count=1, timeout=5)
    after, ep_after = counters(lab), telemetry.counters(lab.ep_prefix)["ports"]
    ups = lab.inbound_listener.upstreams()[seen:]
    return dict(conn=conn, zt=zt.packets(), zt_path=zt.path, pod=pod.packets(), src=src.packets(),
                before=before, after=after, ep_before=ep_before, ep_after=ep_after, ups=ups,
                pod_ip=pod_ip, src_ip=src_ip)


def check_inbound(lab, r):
    """What every inbound connection must show, whatever its source."""
    conn, pod_ip, src_ip = r["conn"], r["pod_ip"], r["src_ip"]
    assert conn["ok"] and conn["error"] is None, conn
    assert conn["sent"] == conn["received"] == MB and conn["sha_sent"] == conn["sha_received"]
    client_port = int(conn["local"].rsplit(":", 1)[1])
    assert conn["local"].startswith(src_ip + ":"), conn
    # The stand-in: the pod's address as original destination, the client as its peer, and
    # its own connection from the client's address.
    assert len(r["ups"]) == 1, r["ups"]
    up = r["ups"][0]
    assert up["orig"] == f"{pod_ip}:{PORT}" and up["peer"] == conn["local"], up
    via_ip, via_port = up["via"].rsplit(":", 1)
    via_port = int(via_port)
    assert via_ip == src_ip, up
    # ... and the pod's server saw that connection: its first line names the client's address
    # (the stand-in's port), relayed to the client.
    assert conn["first"] == f"ORIGDST {pod_ip}:{PORT} FROM {src_ip}:{via_port}", conn

    # The SYN reached ztunnel's link as Geneve VNI 1000, istioin -> pistioin inside, outer
    # node -> ztunnel; decoded by scapy ...
    syns = pu.geneve_with_inner(r["zt"], lambda e: pu.is_tcp(e, src=src_ip, dst=pod_ip, dport=PORT, syn=True)
                                and e[TCP].sport == client_port)
    assert syns, f"no Geneve SYN {src_ip}:{client_port} -> {pod_ip}:{PORT} on ztunnel's link"
    s = syns[0]
    assert s[GENEVE].vni == INBOUND_VNI and s[GENEVE].proto == 0x6558, s[GENEVE].show(dump=True)
    assert (s[IP].src, s[IP].dst) == (lab.gw_ip, lab.zt_ip)
    inner = pu.inner_frame(s)
    assert (inner[Ether].src, inner[Ether].dst) == (labtopo.ISTIOIN_MAC, labtopo.PISTIOIN_MAC)
    assert inner[IP].ttl == 63, "the node kernel's one routed hop"
    # ... and by tshark (outer and inner addresses, VNI)
    tf = [f for f in pu.tshark_decode(r["zt_path"], f"geneve && tcp.flags.syn == 1 && tcp.flags.ack == 0 "
                                                    f"&& tcp.srcport == {client_port}")]
    assert tf, "tshark finds no Geneve SYN"
    f = tf[0]
    assert [pu.tshark_int(v) for v in f["geneve.vni"]] == [INBOUND_VNI], f
    assert f["ip.src"] == [lab.gw_ip, src_ip] and f["ip.dst"] == [lab.zt_ip, pod_ip], f
    assert f["udp.dstport"] == ["6081"] and f["tcp.dstport"] == [str(PORT)], f
    # Every frame of the client's connection reached ztunnel encapsulated, VNI 1000.
    client_frames = pu.geneve_with_inner(r["zt"], lambda e: pu.is_tcp(e, src=src_ip, dst=pod_ip)
                                         and e[TCP].sport == client_port)
    assert {p[GENEVE].vni for p in client_frames} == {INBOUND_VNI}

    # In the pod: only the stand-in's connection, from the client's address; the client's own
    # port never appears.
    assert r["pod"], "nothing captured in the pod"
    ends = {(p[IP].src, p[TCP].sport) if p[TCP].dport == PORT else (p[IP].dst, p[TCP].dport)
            for p in r["pod"] if pu.is_tcp(p)}
    assert ends == {(src_ip, via_port)}, ends
    assert any(pu.is_tcp(p, src=src_ip, dst=pod_ip, syn=True) and not p[TCP].flags & 0x10 for p in r["pod"])

    # The pod's replies on that connection reached ztunnel's link unencapsulated ...
    returned = [p for p in r["zt"] if not pu.outer_is_geneve(p) and pu.is_tcp(p, src=pod_ip, dst=src_ip)]
    assert returned and all(p[TCP].sport == PORT and p[TCP].dport == via_port for p in returned), \
        {(p[TCP].sport, p[TCP].dport) for p in returned}
    assert returned[0][Ether].dst == labtopo.ZT_MAC
    # ... and never the client: what it received from the pod's address is the stand-in's
    # connection (its own port), none of the pod's replies to the stand-in's port.
    to_client = [p for p in r["src"] if pu.is_tcp(p, src=pod_ip, dst=src_ip)]
    assert to_client and {p[TCP].dport for p in to_client} == {client_port}, \
        {p[TCP].dport for p in to_client}

    # Counters (the node's, live through telemetry): the client's frames into istioin on pp's
    # twin, ztunnel's connection learned and delivered, the pod's replies returned as
    # captured, ztunnel's replies to the client through pistioin handed to the kernel.
    b, a = r["before"], r["after"]
    assert delta(a, b, "pp.twin", "inbound") == len(client_frames), (delta(a, b, "pp.twin", "inbound"),
                                                                      len(client_frames))
    assert delta(a, b, "ztunnel", "flow_insert") == 1
    assert delta(a, b, "ztunnel", "proxied") > 0 and delta(a, b, "ztunnel", "proxied_kernel") == 0
    assert delta(a, b, "pp", "proxy_return") == len(returned), (delta(a, b, "pp", "proxy_return"),
                                                                len(returned))
    assert delta(a, b, "pp", "redirect") == 0, "a reply went into the outbound tunnel"
    assert delta(a, b, "ztunnel", "decap_unknown_pod") > 0
    for dev in ("pp.twin", "ztunnel", "pp"):
        assert delta(a, b, dev, "drop_flow_full") == 0 and delta(a, b, dev, "drop_no_nexthop") == 0
    # The endpoint: VNI 1000 into pistioin, pistioin's frames encapsulated back.
    eb, ea = r["ep_before"], r["ep_after"]
    assert delta(ea, eb, "pistioin", "tx") >= len(client_frames)
    assert delta(ea, eb, "pistioin", "redirect") > 0 and delta(ea, eb, "pistioout", "redirect") == 0
    return via_port


def test_client_outside_the_node(lab):
    r = inbound_connection(lab, lab.client_ns, labtopo.CLIENT_IP)
    check_inbound(lab, r)


def test_non_meshed_local_pod(lab):
    """lg (not meshed) to pp: its SYN passes to the kernel from lg's port, which routes it
    toward pp: the same path from there."""
    b = counters(lab)
    r = inbound_connection(lab, lab.ns("lg"), lab.ip("lg"))
    check_inbound(lab, r)
    a = counters(lab)
    assert delta(a, b, "lg", "redirect") == 0 and delta(a, b, "lg", "pass") > 0


def test_hbone_port_stays_15008(lab):
    """TCP to a meshed pod's 15008 (HBONE) is TPROXYed to ztunnel's 15008, not to the relaying
    15006: the 15008 stand-in (one line, then echo) answers with the pod's address as
    original destination; through 15006 the pod itself, which has no 15008, would refuse."""
    seen = len(lab.inbound_listener.accepted())
    conn = echo(lab.client_ns, lab.ip("pp"), 4096, port=labtopo.HBONE_PORT)
    assert conn["ok"], conn
    assert conn["first"] == f"ORIGDST {lab.ip('pp')}:{labtopo.HBONE_PORT} FROM {conn['local']}", conn
    assert conn["local"].startswith(labtopo.CLIENT_IP + ":")
    assert len(lab.inbound_listener.accepted()) == seen
    assert lab.hbone.accepted()[-1]["orig"] == f"{lab.ip('pp')}:{labtopo.HBONE_PORT}"


# ---------------------------------------------------------------- the skips

def carrying(pkts, a, b):
    """Frames between a and b (either way), as sent or inside a Geneve frame."""
    def between(ip):
        return {ip.src, ip.dst} == {a, b}
    out = []
    for p in pkts:
        if IP not in p:
            continue
        if pu.outer_is_geneve(p):
            try:
                e = pu.inner_frame(p)
            except Exception:  # noqa: BLE001  (not a frame inside: only the outer counts)
                e = None
            if e is not None and IP in e and between(e[IP]):
                out.append(p)
                continue
        if between(p[IP]):
            out.append(p)
    return out


def tunnelled(pkts):
    """The Geneve frames of the node's tunnels (VNI 1000 or 1001) among pkts."""
    return [p for p in pkts if pu.outer_is_geneve(p) and p[GENEVE].vni in (INBOUND_VNI, 1001)]


def total(after, before, key):
    return sum(delta(after, before, dev, key) for dev in set(after) | set(before))


def skip_window(lab, traffic, pod_bpf, settled, timeout=15):
    """Runs traffic() with captures on ztunnel's link (everything the node sends it) and in
    pp; waits (bounded) until settled(counters delta, pod packets) holds: ztgeneve counts a
    frame as it sends it, the pod's capture sees it a moment later. Returns traffic's result,
    the two captures' packets and the counters before and after."""
    zt = lab.capture(lab.zt_ns, labtopo.ZT_LINK, "ip", direction="in")
    pod = lab.capture(lab.ns("pp"), "eth0", pod_bpf)
    with netns.Captures(zt, pod):
        before = counters(lab)
        out = traffic()
        state = {}

        def done():
            state["after"], state["pod"] = counters(lab), pod.packets()
            return settled(lambda dev, key: delta(state["after"], before, dev, key), state["pod"], out)

        netns.wait_until(done, timeout, interval=0.2)
        zt_pkts = zt.packets()
    return out, zt_pkts, state["pod"], before, state["after"]


def check_not_redirected(zt_pkts, before, after, a, b):
    """Nothing between a and b went into a tunnel toward ztunnel, and the node's redirect and
    inbound counters grew by no more than the other tunnel frames captured meanwhile (none,
    unless an earlier connection's last frame straggled)."""
    ours = [p for p in tunnelled(zt_pkts) if carrying([p], a, b)]
    assert not ours, f"{a} <-> {b} reached ztunnel's link in Geneve: {[p.summary() for p in ours]}"
    others = len(tunnelled(zt_pkts))
    grown = total(after, before, "redirect") + total(after, before, "inbound")
    assert grown <= others, (f"redirect + inbound grew by {grown}, yet only {others} Geneve frames "
                             f"reached ztunnel's link")


def tcp_ends(pkts, a, a_port, b, b_port):
    """(frames a:a_port -> b:b_port, frames back) among pkts."""
    there = [p for p in pkts if pu.is_tcp(p, src=a, dst=b) and p[TCP].sport == a_port and p[TCP].dport == b_port]
    back = [p for p in pkts if pu.is_tcp(p, src=b, dst=a) and p[TCP].sport == b_port and p[TCP].dport == a_port]
    return there, back


def closed_both_ways(there, back):
    """Both FINs captured, and an ACK from `there` after the FIN from `back`: the
    connection's last frame (echo closes first; its kernel ACKs the pod's FIN before the
    client reads the EOF, so it is on its way once echo returns)."""
    fins = [p for p in back if p[TCP].flags & 0x01]
    return bool(fins) and any(p[TCP].flags & 0x01 for p in there) and \
        any(p.time > fins[0].time and p[TCP].flags & 0x10 for p in there)


def skipped_connection(lab, src_ns, src_ip, there_ctr, back_ctr):
    """A 4 KiB echo from src_ns (source src_ip) to pp:9080 in a skip_window: it works, the
    pod's server saw src_ip, the counters there_ctr and back_ctr ((device, counter)) equal
    the frames the pod's capture has each way, and nothing of it went into a tunnel toward
    ztunnel. Returns (client port, ztunnel link's packets, frames there, frames back,
    counters before, after)."""
    pod_ip = lab.ip("pp")

    def settled(d, pod, conn):
        port = int(conn["local"].rsplit(":", 1)[1])
        there, back = tcp_ends(pod, src_ip, port, pod_ip, PORT)
        return closed_both_ways(there, back) and (d(*there_ctr), d(*back_ctr)) == (len(there), len(back))

    conn, zt, pod, b, a = skip_window(lab, lambda: echo(src_ns, pod_ip, 4096), f"tcp port {PORT}", settled)
    assert conn["ok"], conn
    port = int(conn["local"].rsplit(":", 1)[1])
    assert conn["local"] == f"{src_ip}:{port}", "the connection's source"
    assert conn["first"] == f"ORIGDST {pod_ip}:{PORT} FROM {src_ip}:{port}", conn
    there, back = tcp_ends(pod, src_ip, port, pod_ip, PORT)
    assert there and back and closed_both_ways(there, back), "the pod's capture lacks the connection"
    assert (delta(a, b, *there_ctr), delta(a, b, *back_ctr)) == (len(there), len(back)), (there_ctr, back_ctr)
    for dev, key in (("pp", "redirect"), ("pp", "proxy_return"), ("pp.twin", "inbound"),
                     ("pp.twin", "drop_flow_full")):
        assert delta(a, b, dev, key) == 0, (dev, key, delta(a, b, dev, key))
    check_not_redirected(zt, b, a, src_ip, pod_ip)
    return port, zt, there, back, b, a


def test_probe_from_node_address(lab):
    """A kubelet-like probe: the node (its address HOST_IP = tunnel.local_ip, as the kernel
    picks it for the route to pp's twin) connects to pp:9080 and exchanges 4 KiB. Its frames
    to the pod are skip_host on pp's twin (the connection learned in the flow table), the
    pod's replies skip_host on pp's port (to the kernel: neither redirected outbound as a
    meshed pod's TCP nor returned to ztunnel), each frame counted once; nothing reaches
    ztunnel's link."""
    _, zt, _, back, b, a = skipped_connection(lab, lab.node_ns, lab.gw_ip, ("pp.twin", "skip_host"),
                                              ("pp", "skip_host"))
    assert delta(a, b, "pp.twin", "flow_insert") == 1, "the probe's connection is remembered once"
    assert delta(a, b, "pp", "flow_hit") == len(back), "each reply found the connection"
    assert not carrying(zt, lab.gw_ip, lab.ip("pp")), "the probe reached ztunnel's link"


def test_ztunnel_own_connection(lab):
    """ztunnel (from ZT_IP, out of its eth0) connects to pp:9080 and exchanges 4 KiB: its
    frames pass from ztunnel's port to the kernel and are skip_ztunnel on pp's twin (not
    into istioin); the pod's replies to ZT_IP go `direct` (MACs rewritten, unencapsulated)
    to ztunnel's link, one frame each; no flow is learned (it is not a client's)."""
    zt_ip, pod_ip = lab.zt_ip, lab.ip("pp")
    port, zt, there, back, b, a = skipped_connection(lab, lab.zt_ns, zt_ip, ("pp.twin", "skip_ztunnel"),
                                                     ("pp", "direct"))
    assert delta(a, b, "ztunnel", "pass") >= len(there), "ztunnel's frames went to the kernel"
    assert total(a, b, "flow_insert") == 0 and total(a, b, "proxied") == 0
    # On ztunnel's link: the pod's replies, unencapsulated, to ztunnel's MAC; nothing in Geneve.
    _, on_link = tcp_ends(zt, zt_ip, port, pod_ip, PORT)
    assert len(on_link) == len(back) and all(not pu.outer_is_geneve(p) for p in on_link)
    assert all(p[Ether].dst == labtopo.ZT_MAC for p in on_link)


def geneve_payload(lab, vni):
    """A Geneve frame as the node's tunnels carry one (a meshed pod's SYN inside), as the
    payload of a datagram to a pod's Geneve port."""
    inner = (Ether(src=labtopo.ISTIOOUT_MAC, dst=labtopo.PISTIOOUT_MAC)
             / IP(src=lab.ip("ra"), dst=lab.vip) / TCP(sport=41000, dport=9080, flags="S"))
    return bytes(GENEVE(vni=vni, proto=0x6558) / inner)


UDP_CASES = {  # id: (source, the pod's port, payload or a Geneve VNI)
    "meshed-pod": ("ra", UDP_PORT, b"ztgeneve udp from a meshed pod"),
    "client": ("client", UDP_PORT, b"ztgeneve udp from a client"),
    "geneve-client": ("client", pu.GENEVE_PORT, 1000),
    "geneve-meshed-pod": ("ra", pu.GENEVE_PORT, 1001),
}
UDP_COUNT = 3


@pytest.mark.parametrize("case", list(UDP_CASES))
def test_udp_to_meshed_pod(lab, case):
    """UDP_COUNT datagrams to pp (a meshed pod), each echoed back: from ra (a meshed pod: its
    UDP passes to the kernel, never into istioout) or from the client outside the node; to
    pp's UDP port, or to its Geneve port (6081) carrying a Geneve frame of the node's
    tunnels. Each datagram is skip_udp on pp's twin (not into istioin), the replies pass
    from pp's port (and are skip_udp on ra's twin), the pod receives the payload unchanged,
    and nothing of it reaches ztunnel's link."""
    src, port, payload = UDP_CASES[case]
    payload = geneve_payload(lab, payload) if isinstance(payload, int) else payload
    src_ns, src_ip = (lab.client_ns, labtopo.CLIENT_IP) if src == "client" else (lab.ns(src), lab.ip(src))
    pod_ip, server = lab.ip("pp"), lab.udp[port]
    seen = len(server.received())

    def run():
        return json.loads(netns.client(src_ns, "udpecho", pod_ip, port, "--count", UDP_COUNT,
                                       "--hex", payload.hex(), timeout=60))

    def datagrams(pod, frm, to):
        return [p for p in pod if pu.is_udp(p, src=frm, dst=to) and UDP in p
                and (p[UDP].dport if to == pod_ip else p[UDP].sport) == port]

    def settled(d, pod, out):
        ok = d("pp.twin", "skip_udp") == len(datagrams(pod, src_ip, pod_ip)) == UDP_COUNT
        return ok and (src != "ra" or d("ra.twin", "skip_udp") == len(datagrams(pod, pod_ip, src_ip)))

    out, zt, pod, b, a = skip_window(lab, run, f"udp port {port}", settled)
    assert out == {"local": out["local"], "sent": UDP_COUNT, "echoed": UDP_COUNT}, out
    assert out["local"].startswith(src_ip + ":")
    got = server.received()[seen:]
    assert [(g["peer"], g["payload"]) for g in got] == [(out["local"], payload)] * UDP_COUNT, got
    ins, outs = datagrams(pod, src_ip, pod_ip), datagrams(pod, pod_ip, src_ip)
    assert len(ins) == len(outs) == UDP_COUNT, (len(ins), len(outs))
    assert all(bytes(p[UDP].payload) == payload for p in ins + outs), "the datagram changed on its way"
    assert delta(a, b, "pp.twin", "skip_udp") == UDP_COUNT
    assert delta(a, b, "pp", "pass") >= UDP_COUNT, "pp's replies passed to the kernel"
    if src == "ra":
        assert delta(a, b, "ra", "pass") >= UDP_COUNT and delta(a, b, "ra", "redirect") == 0
        assert delta(a, b, "ra.twin", "skip_udp") == UDP_COUNT
    for dev, key in (("pp", "redirect"), ("pp.twin", "inbound"), ("ztunnel", "decap")):
        assert delta(a, b, dev, key) == 0, (dev, key, delta(a, b, dev, key))
    assert not carrying(zt, src_ip, pod_ip), "the datagrams reached ztunnel's link"
    check_not_redirected(zt, b, a, src_ip, pod_ip)


def test_exit_lines_balance(lab):
    """Last: both instances stop; every frame either received is accounted for in the exit
    line (the inbound verdicts included), and the flows ztunnel opened are in it."""
    node = lab.z.stop()
    ep = lab.ep.stop()
    assert lab.z.returncode == 0 and lab.ep.returncode == 0
    assert not unbalanced(node), unbalanced(node)
    assert not unbalanced(ep), unbalanced(ep)
    p = node["ports"]
    assert p["ztunnel"]["flow_insert"] >= 2 and p["pp"]["proxy_return"] > 0, p
    assert p["pp.twin"]["inbound"] > 0 and p["ztunnel"]["proxied"] > 0, p
    assert ep["ports"]["uplink"]["decap"] > 0 and ep["ports"]["pistioin"]["redirect"] > 0, ep["ports"]
    assert node.get("mbufs_in_use") == 0 and ep.get("mbufs_in_use") == 0, "mbufs not back in the pool"
