"""Packet helpers for the e2e tests: pick frames out of captures, decode them twice
(scapy and tshark, independently), check checksums."""
import json
import struct
import subprocess

from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import bind_layers

GENEVE_PORT = 6081
bind_layers(UDP, GENEVE, dport=GENEVE_PORT)


def ip_header_checksum_ok(ip_bytes):
    ihl = (ip_bytes[0] & 0x0F) * 4
    hdr = ip_bytes[:ihl]
    if len(hdr) % 2:
        hdr += b"\0"
    s = sum(struct.unpack(f"!{len(hdr) // 2}H", hdr))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


def outer_is_geneve(p, port=GENEVE_PORT):
    """An IPv4/UDP frame to the Geneve port (not an ICMP error quoting one)."""
    return (Ether in p and IP in p and p[IP].proto == 17 and UDP in p
            and p[UDP].dport == port and GENEVE in p)


def inner_frame(p):
    """The inner Ethernet frame of a Geneve packet, re-parsed from its bytes."""
    g = p[GENEVE]
    return Ether(bytes(g.payload))


def inner_ip_bytes(p):
    e = inner_frame(p)
    return bytes(e[IP]) if IP in e else None


def geneve_with_inner(pkts, pred):
    """Geneve frames whose inner frame satisfies pred(inner_ether)."""
    out = []
    for p in pkts:
        if outer_is_geneve(p):
            try:
                e = inner_frame(p)
            except Exception:
                continue
            if pred(e):
                out.append(p)
    return out


def is_tcp(p, src=None, dst=None, dport=None, syn=None):
    if IP not in p or TCP not in p or p[IP].proto != 6:
        return False
    if src and p[IP].src != src:
        return False
    if dst and p[IP].dst != dst:
        return False
    if dport and p[TCP].dport != dport:
        return False
    if syn is not None and bool(p[TCP].flags & 0x02) != syn:
        return False
    return True


def is_udp(p, src=None, dst=None, dport=None):
    if IP not in p or UDP not in p or p[IP].proto != 17:
        return False
    if src and p[IP].src != src:
        return False
    if dst and p[IP].dst != dst:
        return False
    if dport and p[UDP].dport != dport:
        return False
    return True


def mentions_ip(p, ip):
    """True if ip appears as source or destination of the frame's IPv4 header or of an
    IPv4 header inside a Geneve payload."""
    if IP in p and ip in (p[IP].src, p[IP].dst):
        return True
    if outer_is_geneve(p):
        try:
            e = inner_frame(p)
            return IP in e and ip in (e[IP].src, e[IP].dst)
        except Exception:
            return False
    return False


TSHARK_FIELDS = [
    "frame.number", "eth.dst", "eth.src", "ip.version", "ip.src", "ip.dst", "ip.ttl",
    "ip.flags.df", "ip.dsfield.ecn", "ip.checksum.status", "ip.proto", "udp.srcport",
    "udp.dstport", "udp.checksum", "udp.length", "geneve.version", "geneve.option.length",
    "geneve.flags.oam", "geneve.flags.critical", "geneve.proto_type", "geneve.vni",
    "tcp.srcport", "tcp.dstport", "tcp.flags.syn",
]


def tshark_decode(path, display_filter="geneve"):
    """Decode a capture with tshark; returns one dict per frame, field -> list of values
    (for repeated layers: [outer, inner])."""
    args = ["tshark", "-n", "-r", path, "-o", "ip.check_checksum:TRUE",
            "-d", f"udp.port=={GENEVE_PORT},geneve", "-T", "json", "--no-duplicate-keys"]
    if display_filter:
        args += ["-Y", display_filter]
    for f in TSHARK_FIELDS:
        args += ["-e", f]
    p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"tshark failed: {p.stderr}")
    out = p.stdout.strip()
    if not out:
        return []
    frames = []
    for fr in json.loads(out):
        frames.append(fr["_source"]["layers"])
    return frames


def tshark_int(v):
    return int(v, 0) if isinstance(v, str) else int(v)
