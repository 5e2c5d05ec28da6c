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


# --- fast path for large captures: raw pcap records and a struct-level Geneve decoder ---

from pcapraw import raw_frames  # noqa: E402  (re-exported)


def _ip4(b):
    return ".".join(str(x) for x in b)


def fast_decode(frame, port=GENEVE_PORT):
    """A dict describing an untagged IPv4 frame, and if it is UDP to the Geneve port the
    Geneve header and inner IPv4/TCP/UDP: keys src, dst, proto, sport, dport, tos, and for
    Geneve: geneve (True), vni, ver, optlen, oam, critical, gproto, inner_type, isrc, idst,
    iproto, isport, idport, itos, iflags (TCP). None if not IPv4."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ihl = (frame[14] & 0x0F) * 4
    d = {"src": _ip4(frame[26:30]), "dst": _ip4(frame[30:34]), "proto": frame[23],
         "tos": frame[15], "geneve": False}
    l4 = 14 + ihl
    if d["proto"] in (6, 17) and len(frame) >= l4 + 4:
        d["sport"], d["dport"] = struct.unpack_from("!HH", frame, l4)
    if d["proto"] != 17 or d.get("dport") != port or len(frame) < l4 + 16:
        return d
    g = l4 + 8
    d.update(geneve=True, ver=frame[g] >> 6, optlen=frame[g] & 0x3F, oam=bool(frame[g + 1] & 0x80),
             critical=bool(frame[g + 1] & 0x40), gproto=struct.unpack_from("!H", frame, g + 2)[0],
             vni=int.from_bytes(frame[g + 4:g + 7], "big"))
    inner = g + 8 + d["optlen"] * 4
    if len(frame) < inner + 14:
        return d
    d["inner_type"] = struct.unpack_from("!H", frame, inner + 12)[0]
    i3 = inner + 14
    if d["inner_type"] != 0x0800 or len(frame) < i3 + 20:
        return d
    iihl = (frame[i3] & 0x0F) * 4
    d.update(isrc=_ip4(frame[i3 + 12:i3 + 16]), idst=_ip4(frame[i3 + 16:i3 + 20]),
             iproto=frame[i3 + 9], itos=frame[i3 + 1])
    i4 = i3 + iihl
    if d["iproto"] in (6, 17) and len(frame) >= i4 + 4:
        d["isport"], d["idport"] = struct.unpack_from("!HH", frame, i4)
    if d["iproto"] == 6 and len(frame) >= i4 + 14:
        d["iflags"] = frame[i4 + 13]
    return d


def fast_geneve(path, port=GENEVE_PORT):
    """fast_decode of every Geneve frame in a capture."""
    out = []
    for fr in raw_frames(path):
        d = fast_decode(fr, port)
        if d and d["geneve"]:
            out.append(d)
    return out
