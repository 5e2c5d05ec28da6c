#!/usr/bin/python3
"""Writes the fuzzers' seed corpus: tests/fuzz/corpus/<target>/<name> (small files).

fuzz_parse takes one raw frame; the burst targets (fuzz_node_pods, fuzz_decap,
fuzz_endpoint) take `mode:u8` then records `len:u16be shape:u8 bytes` (see
fuzz_support.hpp; shape bit 7 chains the frame after (shape & 0x7f) bytes).

    /usr/bin/python3 tests/fuzz/make_seeds.py [--out DIR]

Deterministic: running it again rewrites the same files.
"""
import argparse
import pathlib
import shutil
import struct

from scapy.all import ARP, IP, IPv6, TCP, UDP, Dot1Q, Ether, IPOption_RR, Raw, conf  # noqa

conf.verb = 0

POD_MAC, TWIN_MAC = "02:00:00:00:02:03", "02:00:00:00:01:03"
NODE_MAC, ZT_MAC = "02:00:00:00:01:0a", "02:00:00:00:02:0a"
ISTIOOUT_MAC, PISTIOOUT_MAC = "02:00:00:00:7f:01", "02:00:00:00:7f:02"
POD, VIP, ZT, NODE = "10.244.2.3", "10.96.0.10", "10.244.2.10", "10.244.2.1"


def b(pkt):
    return bytes(pkt)


# --- frames a pod sends -------------------------------------------------------------------
def syn(src=POD, dst=VIP, **ip):
    return Ether(src=POD_MAC, dst=TWIN_MAC) / IP(src=src, dst=dst, flags="DF", **ip) / TCP(
        sport=40000, dport=9080, flags="S", seq=1)


def partial(pkt):
    """The frame as a pod's kernel hands it over with tx checksum offload on: the TCP/UDP
    checksum field holds the folded pseudo-header sum (CHECKSUM_PARTIAL), not the checksum."""
    raw = bytearray(bytes(pkt))
    l3 = 14 if raw[12:14] == b"\x08\x00" else 18
    ihl, total, proto = (raw[l3] & 15) * 4, struct.unpack("!H", raw[l3 + 2:l3 + 4])[0], raw[l3 + 9]
    s = proto + total - ihl + sum(struct.unpack("!4H", raw[l3 + 12:l3 + 20]))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    off = l3 + ihl + (16 if proto == 6 else 6)
    raw[off:off + 2] = struct.pack("!H", s)
    return bytes(raw)


def pod_frames():
    f = {}
    f["syn"] = b(syn())
    f["syn_vlan"] = b(Ether(src=POD_MAC, dst=TWIN_MAC) / Dot1Q(vlan=7) /
                      IP(src=POD, dst=VIP, flags="DF") / TCP(sport=40000, dport=9080, flags="S"))
    f["syn_ip_options"] = b(Ether(src=POD_MAC, dst=TWIN_MAC) /
                            IP(src=POD, dst=VIP, options=[IPOption_RR(routers=["1.2.3.4"])]) /
                            TCP(sport=40000, dport=9080, flags="S"))
    f["syn_ecn_ce"] = b(syn(tos=3))
    f["syn_payload"] = b(syn() / Raw(bytes(range(200))))
    f["frag_first"] = b(Ether(src=POD_MAC, dst=TWIN_MAC) / IP(src=POD, dst=VIP, flags="MF", id=7) /
                        TCP(sport=40000, dport=9080, flags="PA") / Raw(b"x" * 64))
    f["frag_later"] = b(Ether(src=POD_MAC, dst=TWIN_MAC) /
                        IP(src=POD, dst=VIP, frag=9, id=7, proto=6) / Raw(b"y" * 40))
    f["direct_to_ztunnel"] = b(syn(dst=ZT))
    f["direct_ttl1"] = b(syn(dst=ZT, ttl=1))
    f["udp_dns"] = b(Ether(src=POD_MAC, dst=TWIN_MAC) / IP(src=POD, dst="10.96.0.53") /
                     UDP(sport=5353, dport=53) / Raw(b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 6))
    f["arp_request"] = b(Ether(src=POD_MAC, dst="ff:ff:ff:ff:ff:ff") /
                         ARP(op=1, hwsrc=POD_MAC, psrc=POD, pdst="10.244.2.1"))
    f["ipv6_tcp"] = b(Ether(src=POD_MAC, dst=TWIN_MAC) / IPv6(src="fd00::3", dst="fd00::a") /
                      TCP(sport=40000, dport=9080, flags="S"))
    f["not_a_pod"] = b(syn(src="10.244.2.99"))
    short = syn(src="10.244.2.2")
    f["padded"] = b(short) + b"\x00" * 6  # 54 bytes + Ethernet padding to 60
    f["jumbo"] = b(syn(src="10.244.2.7") / Raw(bytes(i & 0xff for i in range(3000))))
    # too big without DF: fragmented (with options: later fragments keep only copied ones)
    f["big_no_df"] = b(Ether(src=POD_MAC, dst=TWIN_MAC) /
                       IP(src=POD, dst=VIP, id=9, options=[IPOption_RR(routers=["1.2.3.4"])]) /
                       TCP(sport=40001, dport=9080, flags="PA") / Raw(bytes(range(256)) * 6))
    f["jumbo_no_df"] = b(Ether(src=POD_MAC, dst=TWIN_MAC) / IP(src="10.244.2.7", dst=VIP, frag=3, flags="MF") /
                         TCP(sport=40002, dport=9080, flags="A") / Raw(bytes(i & 0xff for i in range(4000))))
    f["partial_syn"] = partial(syn())
    f["partial_payload"] = partial(syn() / Raw(bytes(range(201))))  # odd length
    f["partial_vlan"] = partial(Ether(src=POD_MAC, dst=TWIN_MAC) / Dot1Q(vlan=7) /
                                IP(src=POD, dst=VIP) / TCP(sport=40003, dport=9080, flags="S"))
    f["partial_udp"] = partial(Ether(src=POD_MAC, dst=TWIN_MAC) / IP(src=POD, dst="10.96.0.53") /
                               UDP(sport=5353, dport=53) / Raw(b"\x12\x34" + b"\x00" * 10))
    f["partial_not_a_pod"] = partial(syn(src="10.244.2.99"))
    f["partial_direct"] = partial(syn(dst=ZT))
    f["partial_big_no_df"] = partial(Ether(src=POD_MAC, dst=TWIN_MAC) / IP(src=POD, dst=VIP, id=11) /
                                     TCP(sport=40004, dport=9080, flags="PA") / Raw(bytes(range(256)) * 6))
    whole = f["syn"]
    for cut in (0, 1, 13, 14, 17, 20, 33, 34, 37, 40, 53):
        f[f"syn_trunc_{cut}"] = whole[:cut]
    lie = bytearray(whole)
    lie[16:18] = struct.pack("!H", 1400)  # IPv4 total length past the frame
    f["syn_len_lies"] = bytes(lie)
    return f


# --- Geneve ---------------------------------------------------------------------------------
def geneve_hdr(vni=1001, opt_words=0, flags=0, version=0, proto=0x6558):
    h = struct.pack("!BBH", version << 6 | opt_words, flags, proto) + struct.pack("!I", vni << 8)
    opts = b""
    for w in range(opt_words):  # class 0x0105, type w, length 0 words... packed as raw words
        opts += struct.pack("!HBB", 0x0105, w, 0) if w == 0 else bytes([w, w, w, w])
    return h + opts


def geneve(inner, src=ZT, dst=NODE, smac=ZT_MAC, dmac=NODE_MAC, vlan=None, ecn=0,
           udp_csum=False, sport=50000, dport=6081, **g):
    eth = Ether(src=smac, dst=dmac)
    if vlan is not None:
        eth = eth / Dot1Q(vlan=vlan)
    udp = UDP(sport=sport, dport=dport) if udp_csum else UDP(sport=sport, dport=dport, chksum=0)
    return b(eth / IP(src=src, dst=dst, tos=ecn, flags="DF", ttl=64) / udp /
             Raw(geneve_hdr(**g) + inner))


def reply_inner(dst=POD, tos=0):
    return b(Ether(src=PISTIOOUT_MAC, dst=ISTIOOUT_MAC) / IP(src=VIP, dst=dst, tos=tos) /
             TCP(sport=9080, dport=40000, flags="SA", seq=5, ack=2) / Raw(b"hello"))


def tunnel_arp_inner(op=1):
    return b(Ether(src=PISTIOOUT_MAC, dst="ff:ff:ff:ff:ff:ff") /
             ARP(op=op, hwsrc=PISTIOOUT_MAC, psrc="192.168.127.2", pdst="192.168.127.1"))


def decap_frames():
    f = {}
    for w in range(4):
        f[f"reply_opts{w}"] = geneve(reply_inner(), opt_words=w)
    f["reply_udp_csum"] = geneve(reply_inner(), udp_csum=True)
    f["reply_vlan"] = geneve(reply_inner(), vlan=5)
    f["reply_ce_over_ect0"] = geneve(reply_inner(tos=2), ecn=3)
    f["reply_ce_over_notect"] = geneve(reply_inner(tos=0), ecn=3)
    f["reply_ect1_over_ect0"] = geneve(reply_inner(tos=2), ecn=1)
    f["reply_unknown_pod"] = geneve(reply_inner(dst="10.244.2.99"))
    f["reply_unlocated_pod"] = geneve(reply_inner(dst="10.244.2.5"))
    f["reply_pod_on_twin"] = geneve(reply_inner(dst="10.244.2.7"))
    f["reply_padded_inner"] = geneve(reply_inner() + b"\x00" * 9)
    f["arp_in_geneve"] = geneve(tunnel_arp_inner())
    f["arp_reply_in_geneve"] = geneve(tunnel_arp_inner(op=2))
    f["bad_version"] = geneve(reply_inner(), version=1)
    f["oam"] = geneve(reply_inner(), flags=0x80)
    f["critical_opts"] = geneve(reply_inner(), flags=0x40, opt_words=2)
    f["critical_no_opts"] = geneve(reply_inner(), flags=0x40)
    f["wrong_vni"] = geneve(reply_inner(), vni=1002)
    f["not_ethernet"] = geneve(reply_inner()[14:], proto=0x0800)
    f["not_ours_port"] = geneve(reply_inner(), dport=6082)
    f["not_ours_src"] = geneve(reply_inner(), src="10.244.2.9")
    bad = bytearray(f["reply_opts0"])
    bad[24] ^= 0xff  # outer IPv4 checksum
    f["bad_outer_checksum"] = bytes(bad)
    f["ztunnel_own_tcp"] = b(Ether(src=ZT_MAC, dst=NODE_MAC) / IP(src=ZT, dst=VIP) /
                             TCP(sport=15001, dport=9080, flags="S"))
    f["ztunnel_arp"] = b(Ether(src=ZT_MAC, dst="ff:ff:ff:ff:ff:ff") /
                         ARP(op=1, hwsrc=ZT_MAC, psrc=ZT, pdst=NODE))
    whole = f["reply_opts1"]
    for cut in (14, 34, 42, 49, 50, 54, 63, 64, 70, 84, len(whole) - 1):
        f[f"reply_trunc_{cut}"] = whole[:cut]
    return f


def endpoint_uplink_frames():
    """Geneve from the node to the ztunnel, as istioout sends it."""
    inner = b(Ether(src=ISTIOOUT_MAC, dst=PISTIOOUT_MAC) / IP(src=POD, dst=VIP, flags="DF") /
              TCP(sport=40000, dport=9080, flags="S"))
    kw = dict(src=NODE, dst=ZT, smac=NODE_MAC, dmac=ZT_MAC)
    f = {}
    for w in range(3):
        f[f"node_syn_opts{w}"] = geneve(inner, opt_words=w, **kw)
    f["node_syn_vni1000"] = geneve(inner, vni=1000, **kw)
    f["node_syn_vni1002"] = geneve(inner, vni=1002, **kw)
    f["node_syn_ce"] = geneve(inner[:15] + b"\x02" + inner[16:], ecn=3, **kw)
    f["node_arp_in_geneve"] = geneve(tunnel_arp_inner(), **kw)
    f["node_udp_csum"] = geneve(inner, udp_csum=True, **kw)
    f["node_arp"] = b(Ether(src=NODE_MAC, dst="ff:ff:ff:ff:ff:ff") /
                      ARP(op=1, hwsrc=NODE_MAC, psrc=NODE, pdst=ZT))
    f["node_tcp"] = b(Ether(src=NODE_MAC, dst=ZT_MAC) / IP(src=NODE, dst=ZT) /
                      TCP(sport=33000, dport=15008, flags="S"))
    f["node_trunc_60"] = f["node_syn_opts1"][:60]
    return f


def endpoint_tap_frames():
    """What the ztunnel's kernel sends out of pistioout."""
    f = {}
    f["tap_synack"] = b(Ether(src=PISTIOOUT_MAC, dst=ISTIOOUT_MAC) / IP(src=VIP, dst=POD, tos=1) /
                        TCP(sport=9080, dport=40000, flags="SA"))
    f["tap_arp"] = tunnel_arp_inner()
    f["tap_ipv6"] = b(Ether(src=PISTIOOUT_MAC, dst=ISTIOOUT_MAC) / IPv6() / TCP())
    f["tap_padded"] = f["tap_synack"] + b"\x00" * 6
    f["tap_vlan"] = b(Ether(src=PISTIOOUT_MAC, dst=ISTIOOUT_MAC) / Dot1Q(vlan=3) /
                      IP(src=VIP, dst=POD) / TCP(sport=9080, dport=40000, flags="A"))
    f["tap_big"] = b(Ether(src=PISTIOOUT_MAC, dst=ISTIOOUT_MAC) / IP(src=VIP, dst=POD) /
                     TCP(sport=9080, dport=40000, flags="A") / Raw(b"z" * 1420))
    f["tap_trunc_10"] = f["tap_synack"][:10]
    return f


def inbound_frames():
    """fuzz_inbound: frames that, as given, are ztunnel's (the ztunnel port) and the kernel's
    toward a pod (the twin), and mirrored, the pod's replies."""
    client, legacy = "192.168.50.2", "10.244.2.20"

    def tcp(src, dst, sport=45000, dport=9080, flags="S", ttl=64, **ip):
        return Ether(src=ZT_MAC, dst=NODE_MAC) / IP(src=src, dst=dst, ttl=ttl, flags="DF", **ip) / TCP(
            sport=sport, dport=dport, flags=flags, seq=1)
    f = {
        "client_syn": b(tcp(client, POD)),
        "client_ack": b(tcp(client, POD, flags="A") / Raw(b"x" * 40)),
        "client_fin": b(tcp(client, POD, flags="FA")),
        "client_rst": b(tcp(client, POD, flags="R")),
        "client_ttl1": b(tcp(client, POD, sport=45001, ttl=1)),
        "legacy_syn_other_pod": b(tcp(legacy, "10.244.2.2", sport=45002)),
        "client_to_nonmeshed": b(tcp(client, legacy, sport=45003)),
        "ztunnel_own": b(tcp(ZT, POD, sport=46000, dport=15008)),
        "host_probe": b(tcp(NODE, POD, sport=33000, dport=8080)),
        "host_icmp": b(Ether(src=ZT_MAC, dst=NODE_MAC) / IP(src=NODE, dst=POD) / Raw(b"\x08\0\0\0\0\0\0\0")),
        "client_udp": b(Ether(src=ZT_MAC, dst=NODE_MAC) / IP(src=client, dst=POD) / UDP(sport=5353, dport=53)),
        "client_geneve": b(Ether(src=ZT_MAC, dst=NODE_MAC) / IP(src=client, dst=POD) / UDP(sport=50000, dport=6081)
                           / Raw(b"\0\0\x65\x58\0\x03\xe9\0")),
        "client_big_df": b(tcp(client, POD, sport=45004, flags="A") / Raw(b"y" * 1460)),
        "client_frag": b(Ether(src=ZT_MAC, dst=NODE_MAC) / IP(src=client, dst=POD, flags="MF") / TCP(sport=45005)),
        "client_vlan": b(Ether(src=ZT_MAC, dst=NODE_MAC) / Dot1Q(vlan=7) / IP(src=client, dst=POD) /
                         TCP(sport=45006, dport=9080, flags="S")),
        "client_partial": partial(tcp(client, POD, sport=45007, flags="PA") / Raw(b"z" * 33)),
        "client_trunc": b(tcp(client, POD, sport=45008))[:40],
        "arp": b(Ether(src=ZT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=ZT, pdst=NODE)),
    }
    return f


# --- files ----------------------------------------------------------------------------------
def burst(mode, frames, shapes=None):
    out = bytes([mode])
    for i, fr in enumerate(frames):
        shape = shapes[i] if shapes else 0
        out += struct.pack("!HB", len(fr), shape) + fr
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parent / "corpus"))
    out = pathlib.Path(ap.parse_args().out)
    corpus = {"fuzz_parse": {}, "fuzz_node_pods": {}, "fuzz_decap": {}, "fuzz_endpoint": {},
              "fuzz_inbound": {}}

    pods, dec = pod_frames(), decap_frames()
    up, tap = endpoint_uplink_frames(), endpoint_tap_frames()

    # fuzz_parse: single frames; the first byte (0x02 for our MACs) is also the chain split.
    for name, fr in {**pods, **{"geneve_" + k: v for k, v in dec.items() if "trunc" not in k}}.items():
        corpus["fuzz_parse"][name] = fr
    corpus["fuzz_parse"]["syn_split_at_40"] = bytes([40]) + pods["syn"][1:]

    c = corpus["fuzz_node_pods"]
    for name, fr in pods.items():
        c[name] = burst(0, [fr])
    mix = [pods[k] for k in ("syn", "syn_vlan", "arp_request", "ipv6_tcp", "udp_dns", "frag_first",
                             "syn_ip_options", "not_a_pod", "direct_to_ztunnel", "direct_ttl1",
                             "padded", "syn_trunc_37")]
    c["mix"] = burst(0, mix)
    c["mix_chained"] = burst(0, mix, [0x80 | 20, 0x80 | 14, 0, 0x80 | 40, 0, 0x80 | 34, 0x80 | 1,
                                      0, 0x80 | 22, 0, 0x80 | 54, 0])
    for mode, name in ((1, "no_nexthop"), (2, "no_twin"), (4, "low_headroom"), (8, "udp_redirected"),
                       (16, "small_mtu")):
        c["mix_" + name] = burst(mode, mix)
    c["burst32"] = burst(0, [pods["syn"], pods["syn_payload"]] * 16)
    pmix = [v for k, v in pods.items() if k.startswith("partial_")]
    c["partial_mix"] = burst(8, pmix)  # UDP redirected too
    c["partial_mix_chained"] = burst(8, pmix, [0x80 | 50, 0x80 | 51, 0x80 | 55, 0x80 | 41, 0,
                                               0x80 | 34, 0x80 | 60])
    c["jumbo_chained"] = burst(0, [pods["jumbo"]], [0x80 | 60])
    c["jumbo_no_df_chained"] = burst(0, [pods["jumbo_no_df"], pods["big_no_df"]], [0x80 | 60, 0x80 | 50])
    c["big_no_df_dropped"] = burst(64, [pods["big_no_df"], pods["syn"]])
    c["mix_small_mtu_no_df"] = burst(16, [pods["big_no_df"], pods["syn_ip_options"], pods["frag_first"]])
    # DNS capture (mode 128): queries from several ports and pods (more than the table's 8),
    # one repeated, one to ztunnel itself, one chained, with and without a UDP checksum.
    dns = [Ether(src=POD_MAC, dst=TWIN_MAC) / IP(src=src, dst=dst, ttl=ttl) /
           UDP(sport=sport, dport=53, chksum=csum) / Raw(b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 6 + b"q" * n)
           for src, dst, sport, ttl, csum, n in (
               (POD, VIP, 41000, 64, None, 17), (POD, VIP, 41000, 64, None, 30), ("10.244.2.2", VIP, 41001, 64, 0, 5),
               (POD, ZT, 41002, 64, None, 1), (POD, VIP, 41003, 1, None, 9), ("10.244.2.20", VIP, 41004, 64, None, 3),
               *((POD, VIP, 42000 + i, 64, None, i) for i in range(9)))]
    c["dns_capture"] = burst(128, [b(f) for f in dns] + [pods["syn"], pods["udp_dns"]])
    c["dns_capture_chained"] = burst(128 | 8, [b(f) for f in dns[:6]], [0x80 | 40, 0, 0x80 | 44, 0, 0x80 | 20, 0])

    c = corpus["fuzz_decap"]
    for name, fr in dec.items():
        c[name] = burst(0, [fr])
    dmix = [dec[k] for k in ("reply_opts0", "reply_opts3", "arp_in_geneve", "reply_ce_over_notect",
                             "wrong_vni", "ztunnel_arp", "ztunnel_own_tcp", "reply_unknown_pod",
                             "reply_pod_on_twin", "reply_trunc_63", "reply_vlan")]
    c["mix"] = burst(0, dmix)
    c["mix_chained"] = burst(0, dmix, [0x80 | 64, 0x80 | 50, 0x80 | 70, 0, 0, 0x80 | 20, 0,
                                       0x80 | 90, 0x80 | 110, 0, 0x80 | 30])
    c["mix_no_twin"] = burst(1, dmix)
    c["mix_low_headroom"] = burst(2, dmix)
    c["mix_port_6082"] = burst(4, dmix + [dec["not_ours_port"]])

    c = corpus["fuzz_endpoint"]
    for name, fr in up.items():
        c["uplink_" + name] = burst(0, [fr])
    umix = list(up.values())
    c["uplink_mix"] = burst(0, umix)
    c["uplink_mix_chained"] = burst(0, umix, [0x80 | (17 * i % 100) for i in range(len(umix))])
    c["uplink_mix_no_twin"] = burst(16, umix)
    for name, fr in tap.items():
        c["tap_" + name] = burst(1, [fr])
    tmix = list(tap.values())
    c["tap_mix"] = burst(1, tmix)
    c["tap_mix_vni1000"] = burst(3, tmix)
    c["tap_mix_no_nexthop"] = burst(5, tmix)
    c["tap_mix_low_headroom"] = burst(9, tmix)
    c["tap_mix_udp_csum"] = burst(33, tmix)
    c["tap_mix_chained_udp_csum"] = burst(33, tmix, [0x80 | 20, 0x80 | 30, 0, 0x80 | 61, 0x80 | 18,
                                                     0x80 | 100, 0])

    c = corpus["fuzz_inbound"]
    inb = inbound_frames()
    for name, fr in inb.items():
        c[name] = burst(0, [fr])
    imix = list(inb.values())
    c["mix"] = burst(0, imix)
    c["mix_chained"] = burst(0, imix, [0x80 | (13 * i % 90 + 1) for i in range(len(imix))])
    c["mix_no_nexthop"] = burst(8 | 7, imix)
    c["mix_twin_only"] = burst(4, imix)
    c["mix_ztunnel_then_twin"] = burst(5, imix)
    c["many_flows"] = burst(7, [bytes(Ether(src=ZT_MAC, dst=NODE_MAC) / IP(src="192.168.50.2", dst=POD) /
                                      TCP(sport=40000 + i, dport=9080, flags="S")) for i in range(32)])

    for target, files in corpus.items():
        d = out / target
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        for name, data in files.items():
            (d / name).write_bytes(data)
        print(f"{target}: {len(files)} seeds, {sum(map(len, files.values()))} bytes")


if __name__ == "__main__":
    main()
