"""Both directions through the tunnel, with real Linux TCP stacks on both ends: a meshed
pod's connection to the service VIP is redirected by the node, decapsulated into pistioout
by the endpoint, taken by TPROXY to ztunnel's listener (which sees the VIP as original
destination), and its replies go back Geneve-encapsulated and are delivered to the pod.
The node kernel's NAT (a kube-proxy-like DNAT of the VIP) is never involved."""
import json
import re
import time
from collections import defaultdict

import pytest
from conftest import (GW_IP, ISTIOOUT_IP, ISTIOOUT_MAC, MESHED, NODE_NS, PISTIOOUT_MAC, PODS, VIP,
                      VNI, ZT_NS, ZTUNNEL_IP, ns_of, pod_mac, twin_mac)

import netns
import pcaputil as pu
import telemetry
from pcaputil import GENEVE, IP, TCP, UDP, Ether

VIP_PORT = 9080
MB = 1 << 20
NODE_ZT_MAC = twin_mac("ztunnel")  # the node's MAC on the ztunnel link
ZT_MAC = pod_mac("ztunnel")


def dnat_packets():
    """Packet counter of the node's kube-proxy-like DNAT rule for the VIP."""
    out = netns.run(NODE_NS, "iptables", "-w", "-t", "nat", "-L", "PREROUTING", "-v", "-x", "-n").stdout
    for line in out.splitlines():
        if "DNAT" in line and VIP in line and f"dpt:{VIP_PORT}" in line:
            return int(line.split()[0])
    raise AssertionError(f"no DNAT rule for {VIP}:{VIP_PORT} in {NODE_NS}:\n{out}")


def conntrack(*args):
    """conntrack -L in ztg-node with a filter; the list of entries (lines)."""
    p = netns.run(NODE_NS, "conntrack", "-L", *args, check=False)
    return [l for l in p.stdout.splitlines() if l.strip()]


def echo(pod, nbytes, conns=1, timeout=30):
    return netns.client_bg(ns_of(pod), "echo", VIP, VIP_PORT, "--bytes", nbytes, "--conns", conns,
                           "--timeout", timeout)


def results_of(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"nsclient echo failed: {err}"
    return json.loads(out)["conns"]


def check_conn(pod, r, nbytes):
    assert r["error"] is None and r["ok"], f"{pod}: connection failed or data differs: {r}"
    assert r["sent"] == nbytes and r["received"] == nbytes
    assert r["sha_sent"] == r["sha_received"]
    assert r["first"] == f"ORIGDST {VIP}:{VIP_PORT} FROM {r['local']}", \
        f"{pod}: listener's first line {r['first']!r}, local address {r['local']}"
    assert r["local"].startswith(PODS[pod] + ":")


def flows_by_sport(frames):
    """inner 5-tuple -> set of outer UDP source ports."""
    flows = defaultdict(set)
    for d in frames:
        if d.get("iproto") == 6 and "isport" in d:
            flows[(d["isrc"], d["isport"], d["idst"], d["idport"], 6)].add(d["sport"])
    return flows


@pytest.fixture(scope="module")
def bulk(lab):
    """Each meshed pod: one connection to the VIP, 1 MiB each way, all at once."""
    dnat0 = dnat_packets()
    zt = lab.wire_to_ztunnel(name="bulk-zt", snaplen=160, buffer_kib=16384)
    nd = lab.wire_to_node(name="bulk-node", snaplen=160, buffer_kib=16384)
    before = lab.counters()
    with netns.Captures(zt, nd):
        procs = {p: echo(p, MB) for p in MESHED}
        res = {p: results_of(pr) for p, pr in procs.items()}
        time.sleep(0.5)
    after = lab.counters()
    return {"res": res, "dnat": (dnat0, dnat_packets()), "zt": pu.fast_geneve(zt.path),
            "node": pu.fast_geneve(nd.path), "before": before, "after": after}


@pytest.mark.parametrize("pod", MESHED)
def test_connection_to_vip_echoes_1mib_each_way(lab, bulk, pod):
    [r] = bulk["res"][pod]
    check_conn(pod, r, MB)
    acc = [a for a in lab.listener.accepted() if a["peer"] == r["local"]]
    assert acc == [{"orig": f"{VIP}:{VIP_PORT}", "peer": r["local"]}], \
        f"listener log for {r['local']}: {acc}"
    closed = [c for c in lab.listener.closed() if c["peer"] == r["local"]]
    assert closed and closed[0]["in"] == MB and closed[0]["out"] == MB, f"listener: {closed}"


@pytest.mark.parametrize("pod", MESHED)
def test_both_directions_went_through_the_tunnel(bulk, pod):
    ip = PODS[pod]
    out = [d for d in bulk["zt"] if d.get("isrc") == ip and d.get("idst") == VIP]
    back = [d for d in bulk["node"] if d.get("isrc") == VIP and d.get("idst") == ip]
    # 1 MiB in segments of at most 1410 bytes (MSS of pistioout's MTU 1450)
    assert len(out) >= MB // 1410, f"{pod}: {len(out)} Geneve frames toward ztunnel"
    assert len(back) >= MB // 1410, f"{pod}: {len(back)} Geneve frames back to the node"
    for d in out + back:
        assert d["vni"] == VNI and d["ver"] == 0 and not d["oam"] and not d["critical"]
    assert all((d["src"], d["dst"]) == (GW_IP, ZTUNNEL_IP) for d in out)
    assert all((d["src"], d["dst"]) == (ZTUNNEL_IP, GW_IP) for d in back)


def test_node_nat_never_involved(bulk):
    d0, d1 = bulk["dnat"]
    assert d1 == d0, f"the node's DNAT rule for the VIP counted {d1 - d0} packets of meshed pods"
    for pod in MESHED:
        ct = conntrack("-s", PODS[pod], "-d", VIP)
        assert not ct, f"the node's conntrack saw {pod}'s connection to the VIP: {ct}"


def test_return_path_counters(bulk):
    from ztgeneve import delta
    dec = delta(bulk["after"], bulk["before"], "decap", ["ztunnel"])
    lost = delta(bulk["after"], bulk["before"], "drop_kernel_ring", ["ztunnel"])
    back = len([d for d in bulk["node"] if d.get("isrc") == VIP])
    # Every reply on the wire was decapsulated, or lost in the kernel's af_packet ring
    # before ztgeneve could read it, and counted as such (TCP resends those).
    assert dec + lost >= back, f"node decap counter rose by {dec} (+{lost} lost in the ring), {back} replies on the wire"
    assert delta(bulk["after"], bulk["before"], "decap_unknown_pod", ["ztunnel"]) == 0


def test_istioout_resolved_inside_the_tunnel(lab):
    """ztunnel's kernel resolves istioout (192.168.127.1) by ARP through pistioout; the node
    answers inside the tunnel with istioout's MAC. No static neighbour is configured."""
    netns.run(ZT_NS, "ip", "neigh", "flush", "dev", "pistioout")
    before = telemetry.query("ztg-node", "/ztgeneve/counters,ztunnel")["tunnel_arp_reply"]
    [r] = results_of(echo("productpage", 1000))
    check_conn("productpage", r, 1000)
    neigh = netns.run(ZT_NS, "ip", "neigh", "show", ISTIOOUT_IP, "dev", "pistioout").stdout
    m = re.search(r"lladdr ([0-9a-f:]{17})", neigh)
    assert m and m.group(1) == ISTIOOUT_MAC, f"ztunnel's neighbour {ISTIOOUT_IP}: {neigh!r}"
    assert "PERMANENT" not in neigh
    after = telemetry.query("ztg-node", "/ztgeneve/counters,ztunnel")["tunnel_arp_reply"]
    assert after > before, "the node's tunnel_arp_reply counter did not move"


@pytest.fixture(scope="module")
def concurrent(lab):
    """50 connections at once from the five meshed pods (10 each), 64 KiB each way."""
    zt = lab.wire_to_ztunnel(name="conc-zt", snaplen=160, buffer_kib=16384)
    nd = lab.wire_to_node(name="conc-node", snaplen=160, buffer_kib=16384)
    n_acc = len(lab.listener.accepted())
    with netns.Captures(zt, nd):
        procs = {p: echo(p, 64 * 1024, conns=10) for p in MESHED}
        res = {p: results_of(pr) for p, pr in procs.items()}
        time.sleep(0.5)
    return {"res": res, "zt": pu.fast_geneve(zt.path), "node": pu.fast_geneve(nd.path),
            "accepted": lab.listener.accepted()[n_acc:]}


def test_50_concurrent_connections_complete(concurrent):
    locals_ = []
    for pod, rs in concurrent["res"].items():
        assert len(rs) == 10
        for r in rs:
            check_conn(pod, r, 64 * 1024)
            locals_.append(r["local"])
    assert len(set(locals_)) == 50
    peers = {a["peer"] for a in concurrent["accepted"] if a["orig"] == f"{VIP}:{VIP_PORT}"}
    assert set(locals_) <= peers, f"listener did not see {sorted(set(locals_) - peers)}"


@pytest.mark.parametrize("direction", ["zt", "node"])
def test_udp_source_port_stable_per_flow(concurrent, direction):
    flows = flows_by_sport(concurrent[direction])
    assert len(flows) >= 50, f"{direction}: {len(flows)} inner TCP flows on the wire"
    unstable = {f: sorted(s) for f, s in flows.items() if len(s) != 1}
    assert not unstable, f"{direction}: flows with several outer UDP source ports: {unstable}"
    sports = {next(iter(s)) for s in flows.values()}
    assert len(sports) >= 10, f"{direction}: 50+ flows share only {len(sports)} source ports"
    assert all(49152 <= p <= 65535 for p in sports), sorted(sports)


def test_replies_come_from_the_vip(concurrent):
    tcp = [d for d in concurrent["node"] if d.get("iproto") == 6]
    assert tcp
    bad = [(d["isrc"], d["idst"]) for d in tcp
           if d["isrc"] != VIP or d["idst"] not in {PODS[p] for p in MESHED}]
    assert not bad, f"replies with an inner source other than the VIP: {bad[:5]}"


@pytest.fixture(scope="module")
def decoded(lab):
    """One small connection from productpage, full frames on both wires and at the pod."""
    zt = lab.wire_to_ztunnel(name="dec-zt")
    nd = lab.wire_to_node(name="dec-node")
    pod = lab.capture("productpage", "eth0", f"tcp src port {VIP_PORT}", direction="in",
                      name="dec-pod")
    with netns.Captures(zt, nd, pod):
        [r] = results_of(echo("productpage", 3000))
        time.sleep(0.5)
    return {"r": r, "zt": zt, "node": nd, "pod": pod.packets()}


@pytest.mark.parametrize("direction", ["zt", "node"])
def test_wire_decodes_as_geneve_scapy(decoded, direction):
    check_conn("productpage", decoded["r"], 3000)
    cap = decoded[direction]
    pkts = [p for p in cap.packets() if pu.outer_is_geneve(p)]
    tcp = [p for p in pkts if TCP in pu.inner_frame(p)]
    assert len(tcp) >= 4, f"{direction}: {len(tcp)} Geneve frames with TCP"
    outer = (GW_IP, ZTUNNEL_IP) if direction == "zt" else (ZTUNNEL_IP, GW_IP)
    macs = (NODE_ZT_MAC, ZT_MAC) if direction == "zt" else (ZT_MAC, NODE_ZT_MAC)
    inner_macs = (ISTIOOUT_MAC, PISTIOOUT_MAC) if direction == "zt" else (PISTIOOUT_MAC, ISTIOOUT_MAC)
    for p in tcp:
        assert (p[Ether].src, p[Ether].dst) == macs
        assert (p[IP].src, p[IP].dst) == outer
        assert pu.ip_header_checksum_ok(bytes(p[IP]))
        assert p[UDP].dport == 6081 and p[UDP].len == p[IP].len - 20
        g = p[GENEVE]
        assert (g.version, g.optionlen, g.oam, g.critical, g.proto, g.vni) == (0, 0, 0, 0, 0x6558, VNI)
        e = pu.inner_frame(p)
        assert (e.src, e.dst) == inner_macs, f"{direction}: inner MACs {e.src} -> {e.dst}"
        if direction == "zt":
            assert (e[IP].src, e[IP].dst, e[TCP].dport) == (PODS["productpage"], VIP, VIP_PORT)
        else:
            assert (e[IP].src, e[IP].dst, e[TCP].sport) == (VIP, PODS["productpage"], VIP_PORT)


@pytest.mark.parametrize("direction", ["zt", "node"])
def test_wire_decodes_as_geneve_tshark(decoded, direction):
    cap = decoded[direction]
    rows = [r for r in pu.tshark_decode(cap.path, display_filter="geneve.vni == 1001 && tcp")]
    n_scapy = len([p for p in cap.packets() if pu.outer_is_geneve(p) and TCP in pu.inner_frame(p)])
    assert rows and len(rows) == n_scapy, f"{direction}: tshark {len(rows)}, scapy {n_scapy}"
    for r in rows:
        assert r["geneve.version"] == ["0"] and pu.tshark_int(r["geneve.vni"][0]) == VNI
        assert pu.tshark_int(r["geneve.proto_type"][0]) == 0x6558
        assert r["ip.checksum.status"][0] == "1"
        if direction == "zt":
            assert r["ip.src"] == [GW_IP, PODS["productpage"]] and r["ip.dst"] == [ZTUNNEL_IP, VIP]
        else:
            assert r["ip.src"] == [ZTUNNEL_IP, VIP] and r["ip.dst"] == [GW_IP, PODS["productpage"]]
            assert r["tcp.srcport"] == [str(VIP_PORT)]


def test_reply_delivered_to_pod_from_its_twin(decoded):
    """Decapsulated replies leave the pod's port with the pod's MAC as destination and its
    twin's MAC as source, inner packet intact (checksum valid, VIP as source)."""
    got = [p for p in decoded["pod"] if pu.is_tcp(p, src=VIP, dst=PODS["productpage"])]
    assert len(got) >= 3
    for p in got:
        assert p[Ether].dst == pod_mac("productpage") and p[Ether].src == twin_mac("productpage")
        assert pu.ip_header_checksum_ok(bytes(p[IP]))
        assert not pu.outer_is_geneve(p)


def test_non_meshed_pod_does_not_reach_listener(lab):
    """legacy (10.244.2.20, not meshed): its TCP to the VIP goes to the node kernel, whose
    DNAT sends it to ratings (nothing listens there); it never enters the tunnel and the
    listener never sees it."""
    dnat0 = dnat_packets()
    zt = lab.wire_to_ztunnel("", name="legacy-zt")
    src = lab.capture("legacy", "eth0", f"tcp dst port {VIP_PORT}", direction="out",
                      name="legacy-pod")
    with netns.Captures(zt, src):
        out = netns.client(ns_of("legacy"), "tcp", VIP, VIP_PORT, "--timeout", "1.5")
        time.sleep(0.5)
    assert out != "connected", f"legacy's connection to the VIP completed: {out}"
    assert [p for p in src.packets() if pu.is_tcp(p, syn=True)], "legacy sent no SYN"
    assert dnat_packets() > dnat0, "legacy's SYN did not go through the node kernel's DNAT"
    ct = conntrack("-s", PODS["legacy"], "-d", VIP)
    assert ct and any("10.244.2.2" in l for l in ct), f"conntrack: {ct}"
    leaked = [p.summary() for p in zt.packets()
              if (pu.outer_is_geneve(p) and IP in pu.inner_frame(p)
                  and pu.inner_frame(p)[IP].src == PODS["legacy"])
              or (IP in p and p[IP].src == PODS["legacy"])]
    assert not leaked, f"legacy's packets reached ztunnel's link: {leaked}"
    assert not [a for a in lab.listener.accepted() if a["peer"].startswith(PODS["legacy"] + ":")]
