"""A reference Geneve encapsulator written with scapy, independent of ztgeneve's C++:
what the kernel's istioout device would put on the wire for a redirected packet.
Used to build the expected pcaps of the packet-in/packet-out cases."""
from scapy.all import IP, UDP, Ether, Raw
from scapy.contrib.geneve import GENEVE

def _le(b):
    return int.from_bytes(b, "little")


def crc32c_u64(crc, value):
    """The SSE4.2 crc32 instruction on a 64-bit operand (CRC-32C, reflected, no final xor),
    as rte_hash_crc_8byte(value, crc) computes it."""
    for i in range(8):
        crc ^= (value >> (8 * i)) & 0xFF
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc


def flow_source_port(ip_bytes):
    """ztgeneve's documented UDP source-port hash (README, 'UDP source port'): CRC-32C over
    the inner addresses, then ports and protocol, folded into 49152-65535. Fields are
    taken as they lie in memory (network byte order read on a little-endian host);
    fragments hash with ports 0."""
    ihl = (ip_bytes[0] & 15) * 4
    proto = ip_bytes[9]
    frag = int.from_bytes(ip_bytes[6:8], "big") & 0x3FFF
    src, dst = _le(ip_bytes[12:16]), _le(ip_bytes[16:20])
    sport = dport = 0
    if proto in (6, 17, 132) and frag == 0 and len(ip_bytes) >= ihl + 4:
        sport, dport = _le(ip_bytes[ihl:ihl + 2]), _le(ip_bytes[ihl + 2:ihl + 4])
    h = crc32c_u64(0x5A17C0DE, (src << 32) | dst)
    h = crc32c_u64(h, (sport << 16) | dport | (proto << 32))
    return 0xC000 | ((h ^ (h >> 16)) & 0x3FFF)


def encapsulate(ip_bytes, t, flow=None):
    """Outer Ethernet/IPv4/UDP/Geneve + inner Ethernet around the inner IPv4 packet. flow:
    the packet whose flow hash is the UDP source port (a fragment's: the packet it was cut
    from, so that every fragment takes the path of the packet)."""
    ecn = ip_bytes[1] & 3
    outer = (Ether(dst=t["next_hop_mac"], src=t["port_mac"]) /
             IP(src=t["local_ip"], dst=t["remote_ip"], ttl=64, flags="DF", id=0, tos=ecn) /
             UDP(sport=flow_source_port(bytes(flow) if flow is not None else ip_bytes), dport=t.get("udp_port", 6081),
                 chksum=None if t.get("udp_checksum") else 0) /
             GENEVE(vni=t.get("vni", 1001), proto=0x6558) /
             Ether(dst=t["inner_dst_mac"], src=t["inner_src_mac"], type=0x0800) /
             Raw(ip_bytes))
    return bytes(outer)


def route_direct(ip_bytes, t):
    """A routed hop to the ztunnel IP: new MACs, TTL - 1, checksum recomputed."""
    ip = IP(ip_bytes)
    ip.ttl -= 1
    del ip.chksum
    return bytes(Ether(dst=t["next_hop_mac"], src=t["port_mac"], type=0x0800) / ip)
