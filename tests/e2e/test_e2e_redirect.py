"""A meshed pod's TCP to a service VIP reaches ztunnel Geneve-encapsulated (VNI 1001),
VIP untouched: checked on ztunnel's link (ztlink, the wire as ztunnel receives it), decoded
independently by scapy and tshark. ztunnel's listener accepts the connections, so every
packet of each connection (SYN, ACK, the client's close) travels the tunnel."""
import subprocess
import time
from collections import defaultdict

import pytest
from conftest import MESHED, PODS, VIP, VNI, ZTUNNEL_IP, GW_IP, ns_of, pod_mac, twin_mac

import netns
import pcaputil as pu
from pcaputil import GENEVE, IP, TCP, UDP, Ether

VIP_PORT = 9080
INNER_SRC_MAC = "02:00:00:00:7f:01"
INNER_DST_MAC = "02:00:00:00:7f:02"
ZTUNNEL_MAC = pod_mac("ztunnel")
CONNECT_TIMEOUT = 3
CONNS_PER_POD = 2


@pytest.fixture(scope="module")
def redirected(lab):
    """All meshed pods connect to the VIP at once, twice each; capture what they send and
    what ztunnel receives."""
    zt = lab.wire_to_ztunnel(name="redirect-zt")
    pods = {p: lab.capture(p, "eth0", f"tcp dst port {VIP_PORT}", direction="out",
                           name=f"redirect-{p}") for p in MESHED}
    with netns.Captures(zt, *pods.values()):
        procs = {(p, i): netns.client_bg(ns_of(p), "tcp", VIP, VIP_PORT, "--timeout", CONNECT_TIMEOUT)
                 for p in MESHED for i in range(CONNS_PER_POD)}
        results = {k: pr.communicate(timeout=20)[0].strip() for k, pr in procs.items()}
        sent = {p: pods[p].wait_for(lambda x: pu.is_tcp(x, syn=True), count=CONNS_PER_POD, timeout=3)
                for p in MESHED}

        def settled():  # every packet the pods sent to the VIP is on ztlink
            want = sum(len([x for x in c.packets() if pu.is_tcp(x, dport=VIP_PORT)])
                       for c in pods.values())
            got = len([d for d in pu.fast_geneve(zt.path)
                       if d.get("iproto") == 6 and d.get("idport") == VIP_PORT])
            return want == got

        time.sleep(0.5)
        netns.wait_until(settled, 5, interval=0.2)
        time.sleep(0.3)
    zpk = zt.packets()
    decoded = pu.tshark_decode(zt.path, display_filter="")
    return {"sent": {p: pods[p].packets() for p in MESHED}, "zt": zpk, "tshark": decoded,
            "zt_path": zt.path, "results": results}


def frames_of(redirected, pod):
    """(index in capture, scapy packet) of Geneve frames whose inner source is pod."""
    ip = PODS[pod]
    out = []
    for i, p in enumerate(redirected["zt"]):
        if pu.outer_is_geneve(p):
            e = pu.inner_frame(p)
            if IP in e and e[IP].src == ip:
                out.append((i, p))
    return out


@pytest.mark.parametrize("pod", MESHED)
def test_tcp_arrives_encapsulated_at_ztunnel(redirected, pod):
    res = [v for (p, _), v in redirected["results"].items() if p == pod]
    assert res == ["connected"] * CONNS_PER_POD, f"{pod}: connections to the VIP: {res}"
    syns = [p for p in redirected["sent"][pod] if pu.is_tcp(p, syn=True)]
    assert len(syns) >= CONNS_PER_POD, f"{pod} sent {len(syns)} SYNs"
    sent = [p for p in redirected["sent"][pod] if pu.is_tcp(p, dport=VIP_PORT)]
    assert len(sent) > len(syns), f"{pod}: only SYNs sent; the handshakes did not complete"
    got = frames_of(redirected, pod)
    plain = [p for p in redirected["zt"] if pu.is_tcp(p, src=PODS[pod], dst=VIP)]
    assert not plain, f"{pod}: TCP to the VIP reached ztunnel without encapsulation"
    assert len(got) == len(sent), (
        f"{pod}: sent {len(sent)} TCP packets to {VIP}:{VIP_PORT}, ztlink got {len(got)} Geneve frames")


@pytest.mark.parametrize("pod", MESHED)
def test_outer_headers_scapy(redirected, pod):
    got = frames_of(redirected, pod)
    assert got, f"no Geneve frame from {pod}"
    for _, p in got:
        assert p[Ether].dst == ZTUNNEL_MAC, "outer Ethernet dst must be ztunnel's eth0 MAC"
        assert p[Ether].type == 0x0800
        ip = p[IP]
        assert ip.version == 4 and ip.ihl == 5
        assert (ip.src, ip.dst) == (GW_IP, ZTUNNEL_IP)
        assert ip.ttl == 64
        assert ip.flags.DF, "outer DF must be set"
        assert not ip.flags.MF and ip.frag == 0
        assert ip.proto == 17
        assert pu.ip_header_checksum_ok(bytes(ip)), "outer IPv4 header checksum invalid"
        assert ip.len == len(bytes(ip)), "outer IPv4 total length wrong"
        udp = p[UDP]
        assert udp.dport == 6081
        assert 49152 <= udp.sport <= 65535, f"UDP source port {udp.sport} outside 49152..65535"
        assert udp.chksum == 0, "UDP checksum must be 0 (noudpcsum)"
        assert udp.len == ip.len - 20, "UDP length wrong"
        inner = pu.inner_frame(p)
        assert (ip.tos & 3) == (inner[IP].tos & 3), "outer ECN must follow the inner (RFC 6040)"


@pytest.mark.parametrize("pod", MESHED)
def test_udp_source_port_stable_per_flow(redirected, pod):
    flows = defaultdict(set)
    for _, p in frames_of(redirected, pod):
        e = pu.inner_frame(p)
        flows[(e[IP].src, e[TCP].sport, e[IP].dst, e[TCP].dport)].add(p[UDP].sport)
    assert flows, f"no Geneve frame from {pod}"
    for flow, sports in flows.items():
        assert len(sports) == 1, f"flow {flow}: outer UDP source ports {sorted(sports)} vary"
    n_frames = len(frames_of(redirected, pod))
    assert len(flows) >= CONNS_PER_POD, f"{pod}: {len(flows)} flows"
    assert n_frames > len(flows), "expected several packets in the same flow"


@pytest.mark.parametrize("pod", MESHED)
def test_geneve_header_scapy(redirected, pod):
    got = frames_of(redirected, pod)
    assert got
    for _, p in got:
        g = p[GENEVE]
        raw = bytes(g)[:8]
        assert raw[0] >> 6 == 0, "Geneve version must be 0"
        assert raw[0] & 0x3F == 0, "Geneve options length must be 0"
        assert raw[1] & 0x80 == 0, "O bit must be 0"
        assert raw[1] & 0x40 == 0, "C bit must be 0"
        assert int.from_bytes(raw[2:4], "big") == 0x6558, "protocol must be Transparent Ethernet Bridging"
        assert int.from_bytes(raw[4:7], "big") == VNI
        assert (g.version, g.optionlen, g.oam, g.critical, g.proto, g.vni) == (0, 0, 0, 0, 0x6558, VNI)


@pytest.mark.parametrize("pod", MESHED)
def test_geneve_decoded_by_tshark(redirected, pod):
    ip = PODS[pod]
    rows = [r for r in redirected["tshark"] if "geneve.vni" in r and ip in r.get("ip.src", [])]
    n_scapy = len(frames_of(redirected, pod))
    assert rows, f"tshark decoded no Geneve frame from {pod} in {redirected['zt_path']}"
    assert len(rows) == n_scapy, f"tshark sees {len(rows)} Geneve frames from {pod}, scapy {n_scapy}"
    for r in rows:
        assert r["ip.src"] == [GW_IP, ip]
        assert r["ip.dst"] == [ZTUNNEL_IP, VIP]
        assert r["eth.dst"] == [ZTUNNEL_MAC, INNER_DST_MAC]
        assert r["eth.src"][1] == INNER_SRC_MAC
        assert r["ip.ttl"][0] == "64"
        assert r["ip.flags.df"][0] == "1"
        assert r["ip.checksum.status"][0] == "1", "tshark: outer IPv4 checksum not good"
        assert r["udp.dstport"] == ["6081"]
        assert pu.tshark_int(r["udp.checksum"][0]) == 0
        assert 49152 <= int(r["udp.srcport"][0]) <= 65535
        assert r["geneve.version"] == ["0"]
        assert r["geneve.option.length"] == ["0"]
        assert r["geneve.flags.oam"] == ["0"] and r["geneve.flags.critical"] == ["0"]
        assert pu.tshark_int(r["geneve.proto_type"][0]) == 0x6558
        assert pu.tshark_int(r["geneve.vni"][0]) == VNI
        assert r["tcp.dstport"] == [str(VIP_PORT)]
    syn_rows = [r for r in rows if r.get("tcp.flags.syn") == ["1"]]
    assert len(syn_rows) >= CONNS_PER_POD, f"tshark: {len(syn_rows)} SYNs from {pod}"


@pytest.mark.parametrize("pod", MESHED)
def test_inner_frame_is_what_the_pod_sent(redirected, pod):
    got = frames_of(redirected, pod)
    assert got
    sent_ip = [bytes(p[IP]) for p in redirected["sent"][pod] if pu.is_tcp(p, dport=VIP_PORT)]
    for _, p in got:
        e = pu.inner_frame(p)
        assert e.dst == INNER_DST_MAC and e.src == INNER_SRC_MAC, \
            f"inner Ethernet {e.src} -> {e.dst}, expected {INNER_SRC_MAC} -> {INNER_DST_MAC}"
        assert e.type == 0x0800
        assert e[IP].src == PODS[pod] and e[IP].dst == VIP, "VIP must be kept (no DNAT)"
        assert e[TCP].dport == VIP_PORT
        inner_ip = bytes(e[IP])
        assert inner_ip in sent_ip, "inner IPv4 packet differs from what the pod sent"
    # and every packet the pod sent is there exactly once
    inner_all = sorted(bytes(pu.inner_frame(p)[IP]) for _, p in got)
    assert inner_all == sorted(sent_ip)
