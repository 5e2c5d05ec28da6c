#!/usr/bin/python3
"""Writes the packet-in/packet-out cases under tests/pcap/cases/<case>/: in.pcap (what
the pods port receives), expected-ztunnel.pcap and expected-twin.pcap (what must leave
the ztunnel port and the pods port's kernel twin, in order), and case.yaml (the tunnel
and pods used; test_pcap.py turns it into a ztgeneve config with net_pcap ports).
Run it again after changing a case; the outputs are committed."""
import os
import sys

import yaml
from scapy.all import ARP, IP, IPv6, TCP, UDP, Dot1Q, Ether, Raw, fragment, wrpcap

sys.path.insert(0, os.path.dirname(__file__))
from geneve_ref import encapsulate, route_direct  # noqa: E402

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cases")
POD_MAC, GW_MAC = "02:00:00:00:02:03", "02:00:00:00:01:03"
VIP, ZT = "10.96.0.10", "10.244.2.10"
PODS = ["10.244.2.3", "10.244.2.2", "10.244.2.7"]
OTHER = "10.244.2.20"

BASE = {
    "local_ip": "10.244.2.1", "remote_ip": ZT,
    "next_hop_mac": "02:00:00:00:02:0a", "port_mac": "02:00:00:00:01:0a",
    "inner_src_mac": "02:00:00:00:7f:01", "inner_dst_mac": "02:00:00:00:7f:02",
}


def eth(vlan=None):
    e = Ether(src=POD_MAC, dst=GW_MAC)
    return e / Dot1Q(vlan=vlan) if vlan is not None else e


def write(name, tunnel, protocols, frames):
    """frames: list of (frame, verdict) with verdict redirect|direct|pass|drop|fragment
    (too big for the tunnel without DF: scapy's own fragment() splits it into 8-byte units
    that fit, each encapsulated)."""
    d = os.path.join(HERE, name)
    os.makedirs(d, exist_ok=True)
    t = dict(BASE, **tunnel)
    zt_out, twin_out = [], []
    for f, verdict in frames:
        raw = bytes(f)
        if verdict in ("redirect", "direct"):
            p = Ether(raw)
            ipl = p[IP]
            ip_bytes = bytes(ipl)[:ipl.len]
            zt_out.append(encapsulate(ip_bytes, t) if verdict == "redirect" else route_direct(ip_bytes, t))
        elif verdict == "fragment":
            ipl = Ether(raw)[IP]
            unit = (t.get("mtu", 1500) - 50 - ipl.ihl * 4) // 8 * 8
            for frag in fragment(ipl, fragsize=unit):
                zt_out.append(encapsulate(bytes(frag), t, flow=ipl))
        elif verdict == "pass":
            twin_out.append(raw)
    wrpcap(os.path.join(d, "in.pcap"), [Ether(bytes(f)) for f, _ in frames])
    wrpcap(os.path.join(d, "expected-ztunnel.pcap"), [Ether(b) for b in zt_out])
    wrpcap(os.path.join(d, "expected-twin.pcap"), [Ether(b) for b in twin_out])
    counts = {v: sum(1 for _, x in frames if x == v) for v in ("redirect", "direct", "pass", "drop", "fragment")}
    counts["fragments"] = len(zt_out) - counts["redirect"] - counts["direct"]
    case = {"tunnel": {k: v for k, v in t.items() if k != "port_mac"}, "protocols": protocols,
            "pods": PODS, "frames": len(frames), "expect": counts}
    with open(os.path.join(d, "case.yaml"), "w") as fh:
        yaml.safe_dump(case, fh, sort_keys=False)


def outbound():
    f = []
    for i, pod in enumerate(PODS):  # SYNs of several flows, 64/512/1500-byte frames
        f.append((eth() / IP(src=pod, dst=VIP, flags="DF") / TCP(sport=40000 + i, dport=9080, flags="S"), "redirect"))
        f.append((eth() / IP(src=pod, dst=VIP) / TCP(sport=41000 + i, dport=9080, flags="PA") / Raw(b"x" * 458), "redirect"))
    big = 1500 - 50  # the largest inner packet that fits the 1500-byte tunnel MTU
    f.append((eth() / IP(src=PODS[0], dst=VIP) / TCP(sport=42000, dport=9080, flags="A") / Raw(b"y" * (big - 40)), "redirect"))
    f.append((eth() / IP(src=PODS[0], dst=VIP, flags="DF") / TCP(sport=42001, dport=9080, flags="A") / Raw(b"z" * (big - 39)), "drop"))
    # Too big without DF: fragmented (tunnel.too_big defaults to fragment), also a chained
    # jumbo frame with a copied option (Router Alert: in every fragment; scapy copies all
    # options, so a non-copied one is left to the unit test), and a fragment split again.
    f.append((eth() / IP(src=PODS[0], dst=VIP, id=7) / TCP(sport=42002, dport=9080, flags="A") / Raw(b"w" * (big - 39)), "fragment"))
    f.append((eth() / IP(src=PODS[1], dst=VIP, id=8, options=b"\x94\x04\x00\x00") / TCP(sport=42003, dport=9080, flags="A")
              / Raw(bytes(range(256)) * 12), "fragment"))
    f.append((eth() / IP(src=PODS[2], dst=VIP, id=9, flags="MF", frag=100, proto=6) / Raw(b"v" * 1480), "fragment"))
    f.append((eth(vlan=12) / IP(src=PODS[1], dst=VIP) / TCP(sport=43000, dport=9080, flags="S"), "redirect"))
    f.append((eth() / IP(src=PODS[2], dst=VIP, tos=0x03) / TCP(sport=44000, dport=9080, flags="S"), "redirect"))  # CE
    f.append((eth() / IP(src=PODS[2], dst=VIP, tos=0xb9) / TCP(sport=44001, dport=9080, flags="S"), "redirect"))  # EF + ECT(1)
    f.append((eth() / IP(src=PODS[0], dst=VIP, options=b"\x01\x01\x01\x00") / TCP(sport=45000, dport=9080), "redirect"))
    f.append((eth() / IP(src=PODS[0], dst=VIP, flags="MF", frag=0, proto=6) / Raw(b"f" * 32), "redirect"))
    f.append((eth() / IP(src=PODS[0], dst=VIP, frag=4, proto=6) / Raw(b"g" * 16), "redirect"))
    # Padded minimum frame: the padding must not enter the tunnel.
    f.append((bytes(eth() / IP(src=PODS[1], dst=VIP) / TCP(sport=46000, dport=9080, flags="S")) + b"\0" * 6, "redirect"))
    f.append((eth() / IP(src=PODS[0], dst=ZT, ttl=64) / TCP(sport=47000, dport=15001, flags="S"), "direct"))
    f.append((eth() / IP(src=PODS[0], dst=ZT, ttl=1) / TCP(sport=47001, dport=15001, flags="S"), "pass"))
    f.append((eth() / IP(src=PODS[0], dst=VIP) / UDP(sport=5353, dport=53) / Raw(b"dns"), "pass"))
    f.append((eth() / IP(src=OTHER, dst=VIP) / TCP(sport=48000, dport=9080, flags="S"), "pass"))
    f.append((Ether(src=POD_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=PODS[0], pdst="10.244.2.1", hwsrc=POD_MAC), "pass"))
    f.append((eth() / IPv6(src="fd00::3", dst="fd00::a") / TCP(dport=9080), "pass"))
    f.append((bytes(eth() / IP(src=PODS[0], dst=VIP) / TCP(dport=9080))[:30], "pass"))  # truncated
    f.append((eth() / IP(src=PODS[0], dst=VIP, proto=6) / Raw(b"\x00" * 2), "redirect"))  # TCP header cut short: TCP by protocol, no ports
    write("outbound", {}, ["tcp"], f)


def variant():
    # istioin-like tunnel: VNI 1000, another port, UDP checksums on, TCP and UDP redirected.
    f = [(eth() / IP(src=PODS[0], dst=VIP) / TCP(sport=50000 + i, dport=9080, flags="S") / Raw(b"p" * i), "redirect")
         for i in range(4)]
    f.append((eth() / IP(src=PODS[1], dst=VIP) / UDP(sport=5353, dport=53) / Raw(b"q" * 33), "redirect"))
    f.append((eth() / IP(src=OTHER, dst=VIP) / UDP(sport=5353, dport=53), "pass"))
    write("vni1000-udpcsum", {"vni": 1000, "udp_port": 6082, "udp_checksum": True}, ["tcp", "udp"], f)


if __name__ == "__main__":
    outbound()
    variant()
    print("cases written under", HERE)
