"""Inbound end to end (istioin, VNI 1000), on a lab of its own (prefix ztin-): a client outside
the node (ztin-client, 10.10.1.2 behind the node kernel's link v-client) and a non-meshed pod
(lg) open TCP to a meshed pod's port (pp:9080). The node kernel routes it toward the pod, the
node's twin stage sends it into istioin, the endpoint decapsulates it into pistioin, TPROXY hands
it to ztunnel's stand-in on 15006, which reports the pod as original destination and opens its
own connection to the pod from the client's address; the node learns that connection from
ztunnel's link and returns the pod's replies to ztunnel unencapsulated (proxy_return), never
to the client; the stand-in relays, and its replies to the client go back through pistioin and
the node's kernel. 1 MiB each way, sha256 compared by the client."""
import json
import os
import tempfile
from pathlib import Path

import pytest

import lab as labtopo
import netns
import pcaputil as pu
import telemetry
from minilab import MiniLab, unbalanced
from pcaputil import GENEVE, IP, TCP, Ether
from tproxy_listener import ListenerProcess

REPO = Path(__file__).resolve().parents[2]
PREFIX = "ztin-"
PODS = {"pp": 3, "ra": 2, "lg": 20}
MESHED = ["pp", "ra"]
PORT = 9080          # the pod's echo server
INBOUND_VNI = 1000
MB = 1 << 20


@pytest.fixture(scope="module")
def lab(request):
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    binary = Path(os.environ.get("ZTG_BINARY", REPO / "build" / "ztgeneve"))
    d = tempfile.mkdtemp(prefix="ztg-e2e-inbound-")
    t = MiniLab(PREFIX, PODS, MESHED, endpoint=True, log_dir=d, binary=binary)
    request.addfinalizer(t.down)
    t.up()
    t.client_up()
    t.start_node(t.node_config(os.path.join(d, "node.yaml"), inbound=True))
    t.start_endpoint(t.endpoint_config(os.path.join(d, "endpoint.yaml"), inbound=True))
    t.start_listener(inbound=True)
    # HBONE's port: a plain stand-in (one line, then echo) answering through pistioin
    t.hbone = ListenerProcess(t.zt_ns, os.path.join(d, "listener-hbone.log"), port=labtopo.HBONE_PORT,
                              mark=labtopo.INBOUND_MARK).start()
    request.addfinalizer(t.hbone.stop)
    t.start_server(t.ns("pp"), "0.0.0.0", PORT)
    # Every pod sends first (as a pod does: its ARP for the gateway), so the node knows where
    # it is; ztunnel resolves the node through eth0.
    for p in PODS:
        t.ping(p)
    t.ping("zt")
    t.captures = []
    yield t
    for c in t.captures:
        c.cleanup()


def capture(lab, ns, iface, bpf, direction=None):
    c = netns.Capture(ns, iface, bpf=bpf, direction=direction, snaplen=200, buffer_kib=16384,
                      path=os.path.join(lab.log_dir, f"{ns}-{iface}-{len(lab.captures)}.pcap"))
    lab.captures.append(c)
    return c


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
    zt = capture(lab, lab.zt_ns, labtopo.ZT_LINK, f"(udp dst port 6081) or (tcp and src host {pod_ip})",
                 direction="in")
    pod = capture(lab, lab.ns("pp"), "eth0", f"tcp port {PORT}")
    src = capture(lab, src_ns, "eth0", f"tcp and host {pod_ip}")
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
