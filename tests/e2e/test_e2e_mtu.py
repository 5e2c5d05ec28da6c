"""A redirected packet that no longer fits the MTU after the 50 bytes of encapsulation is
never sent oversized; one that fits is sent whole."""
import time

import pytest
from conftest import PODS, VIP, ns_of, twin_mac

import netns
import pcaputil as pu
from pcaputil import IP, TCP, UDP

POD = "reviews-v2"
MTU = 1500


def _send(lab, ip_len, sport):
    zt = lab.wire_to_ztunnel(name=f"mtu-{ip_len}")
    with zt:
        out = netns.client(ns_of(POD), "rawtcp", VIP, 9080, "--ip-len", ip_len, "--src", PODS[POD],
                           "--dst-mac", twin_mac(POD), "--sport", sport)
        assert out == "sent"
        got = zt.wait_for(lambda p: pu.outer_is_geneve(p) and TCP in pu.inner_frame(p)
                          and pu.inner_frame(p)[TCP].sport == sport, count=1, timeout=2)
        if not got:
            time.sleep(0.5)
    return [p for p in zt.packets() if pu.outer_is_geneve(p)], got


def test_largest_fitting_packet_is_encapsulated(lab):
    allp, got = _send(lab, MTU - 50, 40001)
    assert got, f"a {MTU - 50}-byte packet (fits after encap) did not reach ztunnel"
    assert len(bytes(got[0][IP])) == MTU, "outer IPv4 packet should be exactly the MTU"
    assert len(bytes(pu.inner_frame(got[0])[IP])) == MTU - 50


def test_too_big_packet_never_sent_oversized(lab):
    allp, got = _send(lab, MTU - 49, 40002)
    oversized = [len(bytes(p[IP])) for p in allp if len(bytes(p[IP])) > MTU]
    assert not oversized, f"ztunnel received outer IPv4 packets of {oversized} bytes > MTU {MTU}"
    assert not got, "a packet that cannot fit after encapsulation was sent to ztunnel"


def test_too_big_df_packet_gets_icmp_frag_needed_with_the_tunnel_mtu(lab):
    """RFC 8926 §4.4.1 / RFC 1191: the sender learns the path MTU, as from istioout."""
    from pcaputil import ICMP
    before = lab.counters()
    with netns.Capture(ns_of(POD), "eth0", bpf="icmp", name="mtu-icmp") as cap:
        out = netns.client(ns_of(POD), "rawtcp", VIP, 9080, "--ip-len", MTU - 49, "--src", PODS[POD],
                           "--dst-mac", twin_mac(POD), "--sport", 40003)
        assert out == "sent"
        got = cap.wait_for(lambda p: ICMP in p and p[ICMP].type == 3 and p[ICMP].code == 4, count=1, timeout=3)
    assert got, "no ICMP fragmentation-needed reached the pod"
    icmp = got[0][ICMP]
    assert got[0][IP].src == "10.244.2.1" and got[0][IP].dst == PODS[POD]
    assert icmp.nexthopmtu == MTU - 50, f"next-hop MTU {icmp.nexthopmtu}, want {MTU - 50}"
    from scapy.layers.inet import IPerror
    quoted = got[0][IPerror]  # scapy's name for the IP header quoted inside an ICMP error
    assert quoted.dst == VIP and quoted.src == PODS[POD], "the ICMP must quote the offending packet"
    after = lab.counters()
    assert after["ports"][POD]["icmp_frag_needed"] - before["ports"][POD]["icmp_frag_needed"] == 1
    assert after["ports"][POD]["drop_too_big"] - before["ports"][POD]["drop_too_big"] == 1


def test_tcp_with_a_large_mss_learns_the_tunnel_mtu_and_completes(lab):
    """Real TCP from a meshed pod whose peer advertises MSS 1460 (ztunnel's answering route,
    table 101 via pistioout, gets advmss 1460 for this test): the pod's full segments are
    1500-byte DF packets that cannot fit the tunnel, so ztgeneve drops them and answers ICMP
    fragmentation-needed (MTU 1450); the pod's kernel lowers its path MTU to the VIP,
    resends smaller, and 256 KiB echo both ways intact. Nothing over the MTU reaches ztunnel."""
    import json
    from conftest import ISTIOOUT_IP, ZT_NS
    pod, nbytes = "productpage", 256 * 1024
    route = ["default", "via", ISTIOOUT_IP, "dev", "pistioout", "table", "101"]
    netns.run(ns_of(pod), "ip", "route", "flush", "cache")  # no path MTU learnt before
    netns.run(ZT_NS, "ip", "route", "replace", *route, "advmss", "1460")
    before = lab.counters()["ports"][pod]
    zt = lab.wire_to_ztunnel(name="mtu-mss")
    try:
        with zt:
            proc = netns.client_bg(ns_of(pod), "echo", VIP, 9080, "--bytes", nbytes, "--timeout", 30)
            out, err = proc.communicate(timeout=60)
    finally:
        netns.run(ZT_NS, "ip", "route", "replace", *route)
    assert proc.returncode == 0, err
    [r] = json.loads(out)["conns"]
    assert r["error"] is None and r["ok"] and r["received"] == nbytes, r
    after = lab.counters()["ports"][pod]
    icmp = after["icmp_frag_needed"] - before["icmp_frag_needed"]
    assert icmp >= 1, "the pod never sent a segment too big for the tunnel"
    assert after["drop_too_big"] - before["drop_too_big"] >= icmp
    assert after["fragmented"] == before["fragmented"], "DF segments must never be fragmented"
    learnt = netns.run(ns_of(pod), "ip", "route", "get", VIP).stdout
    assert "mtu 1450" in learnt, f"the pod's kernel did not learn the tunnel MTU: {learnt}"
    sizes = [len(p[IP]) for p in zt.packets() if pu.outer_is_geneve(p)]
    assert sizes and max(sizes) <= MTU, f"outer packets up to {max(sizes)} bytes toward ztunnel"
    assert max(sizes) == MTU, "no full-sized segments after the path MTU was learnt"
