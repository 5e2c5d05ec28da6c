"""A reference for both ends of the tunnel, written with scapy and struct, independent of
ztgeneve's C++: what the kernel's rules, istioout/pistioout and routing would put on the
wire for a frame, following the README's tables (verdicts, counters) and the RFCs
(8926 Geneve, 6040 ECN, 791 fragmentation, 1191 fragmentation needed). make_cases.py
builds the expected pcaps and counters of the packet-in/packet-out cases with it.

A tunnel `t` is a dict: local_ip, remote_ip, next_hop_mac, port_mac (our MAC on the link),
vni, udp_port, udp_checksum, mtu and, for the node, inner_src_mac, inner_dst_mac,
inner_ip, too_big."""
import struct

from scapy.all import ARP, ICMP, IP, UDP, Ether, Raw, fragment
from scapy.layers.inet import in4_chksum
from scapy.contrib.geneve import GENEVE

GENEVE_PORT = 6081
OUTER_LEN = 50  # outer Ethernet + IPv4 + UDP + Geneve without options
DEFAULTS = {"vni": 1001, "udp_port": GENEVE_PORT, "udp_checksum": False, "mtu": 1500,
            "inner_ip": "192.168.127.1", "too_big": "fragment"}
NON_IP_SPORT = 0xC000  # UDP source port of a tunnel frame whose inner frame is not IPv4


def tunnel(**kw):
    return dict(DEFAULTS, **kw)


def _le(b):
    return int.from_bytes(b, "little")


def _ip4(b):
    return ".".join(str(x) for x in b)


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


def checksum16(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


# --- frames ------------------------------------------------------------------------------

class Frame:
    """An Ethernet frame parsed as ztgeneve's README describes: one 802.1Q tag looked
    through; `ip` is the IPv4 packet (cut to its total length) if the header is well formed
    and the frame holds all of it, else None."""

    def __init__(self, raw):
        self.raw = bytes(raw)
        self.vlan = None
        self.l3 = 14
        self.ethertype = int.from_bytes(self.raw[12:14], "big") if len(self.raw) >= 14 else None
        if self.ethertype == 0x8100 and len(self.raw) >= 18:
            self.vlan = int.from_bytes(self.raw[14:16], "big")
            self.ethertype = int.from_bytes(self.raw[16:18], "big")
            self.l3 = 18
        self.ip = None
        b = self.raw[self.l3:]
        if self.ethertype == 0x0800 and len(b) >= 20:
            ihl = (b[0] & 15) * 4
            total = int.from_bytes(b[2:4], "big")
            if b[0] >> 4 == 4 and ihl >= 20 and total >= ihl and len(b) >= total:
                self.ip = b[:total]

    @property
    def src_mac(self):
        return self.raw[6:12]

    @property
    def ip_src(self):
        return _ip4(self.ip[12:16])

    @property
    def ip_dst(self):
        return _ip4(self.ip[16:20])

    @property
    def df(self):
        return bool(self.ip[6] & 0x40)

    def arp(self):
        """(op, sender MAC, sender IP, target IP) of an untagged Ethernet/IPv4 ARP, else None."""
        if self.vlan is not None or self.ethertype != 0x0806 or len(self.raw) < 42:
            return None
        a = self.raw[14:42]
        if a[0:2] != b"\x00\x01" or a[2:4] != b"\x08\x00" or a[4] != 6 or a[5] != 4:
            return None
        return int.from_bytes(a[6:8], "big"), a[8:14], _ip4(a[14:18]), _ip4(a[24:28])


def complete_partial(raw):
    """A frame whose TCP/UDP checksum its sender left to offload (the field holds the folded
    pseudo-header sum, as a pod's kernel hands it over with tx checksumming on) with the
    checksum completed, as scapy computes it; else the frame as it is. Returns (frame, done)."""
    f = Frame(raw)
    if f.ip is None or f.ip[9] not in (6, 17) or int.from_bytes(f.ip[6:8], "big") & 0x3FFF:
        return raw, False
    ihl = (f.ip[0] & 15) * 4
    l4 = f.ip[ihl:]
    field = 16 if f.ip[9] == 6 else 6
    if len(l4) < (20 if f.ip[9] == 6 else 8):
        return raw, False
    pseudo = checksum16(f.ip[12:20] + struct.pack("!HH", f.ip[9], len(l4)))
    if int.from_bytes(l4[field:field + 2], "big") != pseudo:
        return raw, False
    zeroed = l4[:field] + b"\0\0" + l4[field + 2:]
    c = in4_chksum(f.ip[9], IP(f.ip), zeroed) or 0xFFFF
    at = f.l3 + ihl + field
    return raw[:at] + struct.pack("!H", c) + raw[at + 2:], True


def mac_str(b):
    return ":".join(f"{x:02x}" for x in b)


# --- encapsulation -------------------------------------------------------------------------

def geneve_frame(t, inner_frame, sport, ecn=0, vni=None):
    """Outer Ethernet/IPv4/UDP/Geneve around an inner Ethernet frame, as a Linux geneve
    device sends it: TTL 64, DF, ID 0, DSCP 0 and the inner ECN (RFC 6040 normal mode), UDP
    checksum only if asked, Geneve version 0 without options, protocol 0x6558."""
    outer = (Ether(dst=t["next_hop_mac"], src=t["port_mac"]) /
             IP(src=t["local_ip"], dst=t["remote_ip"], ttl=64, flags="DF", id=0, tos=ecn) /
             UDP(sport=sport, dport=t["udp_port"], chksum=None if t["udp_checksum"] else 0) /
             GENEVE(vni=t["vni"] if vni is None else vni, proto=0x6558) /
             Raw(bytes(inner_frame)))
    return bytes(outer)


def encapsulate(ip_bytes, t, flow=None):
    """istioout: the pod's IPv4 packet behind the inner Ethernet header istioout ->
    pistioout. flow: the packet whose flow hash is the UDP source port (a fragment's: the
    packet it was cut from, so that every fragment takes the path of the packet)."""
    inner = Ether(dst=t["inner_dst_mac"], src=t["inner_src_mac"], type=0x0800) / Raw(ip_bytes)
    return geneve_frame(t, inner, flow_source_port(bytes(flow) if flow is not None else ip_bytes),
                        ecn=ip_bytes[1] & 3)


def encapsulate_frame(raw, t, vni):
    """pistioout on the ztunnel side: the whole frame the kernel sent out of the tap, its
    Ethernet padding cut; the source port hashes its IPv4 packet (NON_IP_SPORT if it is none)."""
    f = Frame(raw)
    assert f.vlan is None, "a tap sends untagged frames"
    if f.ip is not None:
        raw = raw[:14 + len(f.ip)]
    return geneve_frame(t, raw, flow_source_port(f.ip) if f.ip else NON_IP_SPORT,
                        ecn=f.ip[1] & 3 if f.ip else 0, vni=vni)


def route(ip_bytes, dst_mac, src_mac, ttl_dec=1, ecn=None):
    """One routed hop: new untagged Ethernet header, TTL - ttl_dec, the ECN field set if
    given, the header checksum recomputed."""
    ip = IP(ip_bytes)
    ip.ttl -= ttl_dec
    if ecn is not None:
        ip.tos = (ip.tos & ~3) | ecn
    del ip.chksum
    return bytes(Ether(dst=dst_mac, src=src_mac, type=0x0800) / ip)


def frag_needed(f, port_mac, t):
    """ICMP destination unreachable, fragmentation needed (RFC 1191) for the too-big DF
    packet of frame f, with next-hop MTU = tunnel MTU - 50, from the node's address and
    the pod's gateway MAC, quoting as much of the packet as fits 576 bytes (RFC 1812)."""
    quote = f.ip[:576 - 28]
    icmp = ICMP(type=3, code=4, nexthopmtu=t["mtu"] - OUTER_LEN) / Raw(quote)
    return bytes(Ether(dst=mac_str(f.src_mac), src=port_mac) /
                 IP(src=t["local_ip"], dst=f.ip_src, ttl=64, id=0) / icmp)


def fragments(f, t):
    """RFC 791 fragments (scapy's own fragment()) of the packet of frame f, each of which
    fits the tunnel, each encapsulated with the flow hash of the whole packet."""
    ipl = IP(f.ip)
    unit = (t["mtu"] - OUTER_LEN - ipl.ihl * 4) // 8 * 8
    return [encapsulate(bytes(p), t, flow=f.ip) for p in fragment(ipl, fragsize=unit)]


def tunnel_arp_reply(inner, t):
    """istioout answering an ARP request for its address (inner_ip) from the ztunnel side:
    the reply, Ethernet to the asker's MAC, through the tunnel (NON_IP_SPORT, no ECN)."""
    a = ARP(inner[14:42])
    reply = (Ether(dst=a.hwsrc, src=t["inner_src_mac"]) /
             ARP(hwtype=a.hwtype, ptype=a.ptype, op=2, hwsrc=t["inner_src_mac"], psrc=t["inner_ip"],
                 hwdst=a.hwsrc, pdst=a.psrc))
    return geneve_frame(t, reply, NON_IP_SPORT)


# --- decapsulation ---------------------------------------------------------------------------

NOT_ECT, ECT1, ECT0, CE = 0, 1, 2, 3


def ecn_decapsulate(outer, inner):
    """RFC 6040 section 4.2: the inner ECN field after decapsulation, or None (drop)."""
    if outer == CE:
        return None if inner == NOT_ECT else CE
    if outer == ECT1 and inner == ECT0:
        return ECT1
    return inner


def inspect(raw, t):
    """What a frame on the tunnel link is (RFC 8926): ("not_ours", None) unless it is
    IPv4/UDP from the peer to us on the Geneve port; ("drop", counter) for a tunnel frame we
    must not decapsulate; else ("ok", (vni, inner Ethernet frame, outer ECN)). Counter
    names as in the README."""
    f = Frame(raw)
    b = f.raw[f.l3:]
    if f.ethertype != 0x0800 or len(b) < 20:
        return "not_ours", None
    ihl = (b[0] & 15) * 4
    if b[9] != 17 or _ip4(b[12:16]) != t["remote_ip"] or _ip4(b[16:20]) != t["local_ip"]:
        return "not_ours", None
    if len(b) < ihl + 8 or int.from_bytes(b[ihl + 2:ihl + 4], "big") != t["udp_port"]:
        return "not_ours", None
    total = int.from_bytes(b[2:4], "big")
    if b[0] >> 4 != 4 or ihl < 20 or total < ihl + 8 or total > len(b):
        return "drop", "decap_bad_outer"
    if checksum16(b[:ihl]) != 0xFFFF:
        return "drop", "decap_bad_outer"
    if int.from_bytes(b[6:8], "big") & 0x3FFF:  # MF or an offset: an outer fragment
        return "drop", "decap_bad_outer"
    udp = b[ihl:total]
    ulen, ucsum = struct.unpack("!HH", udp[4:8])
    if ulen != len(udp) or ulen < 16:
        return "drop", "decap_bad_outer"
    if ucsum != 0:
        pseudo = b[12:20] + struct.pack("!BBH", 0, 17, ulen)
        if checksum16(pseudo + udp) != 0xFFFF:
            return "drop", "decap_bad_outer"
    g = udp[8:]
    if g[0] >> 6 != 0:
        return "drop", "decap_bad_version"
    opt_len = (g[0] & 0x3F) * 4
    if g[1] & 0x80:
        return "drop", "decap_oam"
    if g[1] & 0x40 and opt_len:
        return "drop", "decap_critical"
    if len(g) < 8 + opt_len + 14:
        return "drop", "decap_bad_outer"
    if g[2:4] != b"\x65\x58":
        return "drop", "decap_bad_inner"
    return "ok", (int.from_bytes(g[4:7], "big"), g[8 + opt_len:], b[1] & 3)


def node_decap(inner, outer_ecn, t, located, ports, twin_mac):
    """The node's return path for a valid Geneve frame of our VNI: (counter, device,
    frame). located: pod IP -> (port, pod MAC); ports: port -> our MAC there; twin_mac: the
    MAC of the ztunnel port's kernel twin, where what is no located pod goes, as if
    ztunnel had routed it there (decapsulated, TTL untouched: the kernel routes it)."""
    f = Frame(inner)
    arp = f.arp()
    if arp and arp[0] == 1 and arp[3] == t["inner_ip"]:
        return "tunnel_arp_reply", "link", tunnel_arp_reply(inner, t)
    if f.vlan is not None or f.ethertype != 0x0800 or f.ip is None:
        return "decap_bad_inner", None, None
    ecn = ecn_decapsulate(outer_ecn, f.ip[1] & 3)
    if ecn is None:
        return "decap_ecn_drop", None, None
    where = located.get(f.ip_dst)
    ttl = f.ip[8]
    if where is None or ttl <= 1:
        return "decap_unknown_pod", "twin", route(f.ip, twin_mac, t["next_hop_mac"], ttl_dec=0, ecn=ecn)
    port, pod_mac = where
    return "decap", port, route(f.ip, pod_mac, ports[port], ecn=ecn)


def endpoint_decap(inner, outer_ecn):
    """pistioout/pistioin on the ztunnel side: the inner frame as the kernel's geneve device
    hands it up: RFC 6040 on an untagged IPv4 packet (a VLAN tag hides it), Ethernet
    padding after an IPv4 packet cut. (counter, frame)."""
    f = Frame(inner)
    if f.ip is None:
        return "decap", inner
    out = bytearray(inner[:f.l3 + len(f.ip)])
    if f.vlan is None:
        ecn = ecn_decapsulate(outer_ecn, f.ip[1] & 3)
        if ecn is None:
            return "decap_ecn_drop", None
        if ecn != f.ip[1] & 3:
            out = bytearray(route(f.ip, mac_str(inner[0:6]), mac_str(inner[6:12]), ttl_dec=0, ecn=ecn))
    return "decap", bytes(out)


# --- the node's pods port --------------------------------------------------------------------

def pods_verdict(raw, t, pods, protocols, gw_mac):
    """The README's table for a frame from a pod on a pods port whose MAC is gw_mac:
    (counter, outputs, pod seen, generated) where outputs is a list of (device, frame),
    device "link" (the ztunnel port), "twin" (the port's kernel twin) or "port" (back to
    the pod); pod seen is (IP, MAC) if the frame tells where a pod of the pod table is (its
    IPv4 traffic or its ARP), else None; generated counts the frames made on the way
    (counter -> n)."""
    f = Frame(raw)
    if f.ip is None:
        arp = f.arp()
        seen = (arp[2], arp[1]) if arp and arp[2] in pods else None
        return "pass", [("twin", raw)], seen, {}
    seen = (f.ip_src, f.src_mac) if f.ip_src in pods else None
    if seen is None or f.ip[9] not in protocols:
        return "pass", [("twin", raw)], seen, {}
    if f.ip_dst == t["remote_ip"]:  # table 101: ZT_IP dev <veth> scope link
        if f.ip[8] <= 1:
            return "pass", [("twin", raw)], seen, {}  # the kernel answers: time exceeded
        return "direct", [("link", route(f.ip, t["next_hop_mac"], t["port_mac"]))], seen, {}
    if len(f.ip) > t["mtu"] - OUTER_LEN:
        if f.df:
            return "drop_too_big", [("port", frag_needed(f, gw_mac, t))], seen, {"icmp_frag_needed": 1}
        if t["too_big"] == "drop":
            return "drop_too_big", [], seen, {}
        frags = fragments(f, t)
        return "fragmented", [("link", b) for b in frags], seen, {"fragments": len(frags)}
    return "redirect", [("link", encapsulate(f.ip, t))], seen, {}


# --- inbound (rule 103 / table 100, the skips, ztunnel's proxied connections) ---------------

def _tcp(f):
    """(sport, dport, flags) of an unfragmented TCP packet of frame f, else None."""
    ip = f.ip
    if ip is None or ip[9] != 6 or int.from_bytes(ip[6:8], "big") & 0x3FFF:
        return None
    ihl = (ip[0] & 15) * 4
    if len(ip) < ihl + 14:
        return None
    return int.from_bytes(ip[ihl:ihl + 2], "big"), int.from_bytes(ip[ihl + 2:ihl + 4], "big"), ip[ihl + 13]


class Flows:
    """The connections the node remembers (the kernel's connmarks 0x210 and 0x220): the key
    as the connection's opener sent it, (src, sport, dst, dport) -> "proxied" or "host";
    and, with DNS capture, the captured queries (pod, pod's port) -> the address asked
    (conntrack's DNAT entries). capacity: the table's size limit, for both."""

    def __init__(self, capacity):
        self.capacity, self.kinds, self.dns = capacity, {}, {}

    def _full(self):
        return len(self.kinds) + len(self.dns) >= self.capacity

    def learn(self, key, kind):
        """'hit', 'insert' or 'full'."""
        if key in self.kinds:
            return "hit"
        if self._full():
            return "full"
        self.kinds[key] = kind
        return "insert"

    def learn_dns(self, key, asked):
        """'hit' (the address asked updated: the last query's), 'insert' or 'full'."""
        if key in self.dns:
            self.dns[key] = asked
            return "hit"
        if self._full():
            return "full"
        self.dns[key] = asked
        return "insert"


def inbound_tunnel(t, inb):
    """istioin: the tunnel row of VNI 1000, the same outer headers as istioout's."""
    return dict(t, vni=inb["vni"], inner_src_mac=inb["inner_src_mac"], inner_dst_mac=inb["inner_dst_mac"])


def kernel_to_pod(raw, t, inb, pods, flows):
    """What the kernel sends toward a pod out of a pods port's twin, inbound on, in the
    order of the kernel's chain: (counter, outputs [(device kind, frame)], generated)."""
    f = Frame(raw)
    if f.ip is None or f.ip_dst not in pods:
        return "pass", [("port", raw)], {}
    if f.ip_src == t["remote_ip"]:
        return "skip_ztunnel", [("port", raw)], {}
    if f.ip[9] == 17:
        return "skip_udp", [("port", raw)], {}
    tcp = _tcp(f)
    if f.ip_src == t["local_ip"]:
        if tcp is None:
            return "skip_host", [("port", raw)], {}
        r = flows.learn((f.ip_src, tcp[0], f.ip_dst, tcp[1]), "host")
        if r == "full":
            return "drop_flow_full", [], {}
        return "skip_host", [("port", raw)], {"flow_" + r: 1}
    if tcp is not None and (f.ip_src, tcp[0], f.ip_dst, tcp[1]) in flows.kinds:
        return "skip_proxied", [("port", raw)], {"flow_hit": 1}
    if f.ip[9] not in inb["protocols"]:
        return "pass", [("port", raw)], {}
    assert len(f.ip) <= t["mtu"] - OUTER_LEN, "too big inbound: not modelled here"
    return "inbound", [("link", encapsulate(f.ip, inbound_tunnel(t, inb)))], {}


def ztunnel_plain(raw, t, located, ports, flows):
    """ztunnel's unencapsulated TCP from a source not its own (a connection it opens for a
    client): learned, then routed to the located pod (TTL - 1) or handed to the kernel.
    None if it is not such a packet. (counter, outputs, generated)."""
    f = Frame(raw)
    tcp = _tcp(f)
    if tcp is None or f.ip_src == t["remote_ip"]:
        return None
    r = flows.learn((f.ip_src, tcp[0], f.ip_dst, tcp[1]), "proxied")
    if r == "full":
        return "drop_flow_full", [], {}
    where = located.get(f.ip_dst)
    if where is None or f.ip[8] <= 1:
        return "proxied_kernel", [("twin", raw)], {"flow_" + r: 1}
    port, pod_mac = where
    return "proxied", [(port, route(f.ip, pod_mac, ports[port]))], {"flow_" + r: 1}


def pod_on_flow(raw, t, flows, twin_raw=None):
    """A pod's TCP on a remembered connection (looked up the other way round): proxied ->
    to ztunnel unencapsulated, one hop (table 102); the node's own -> to the kernel. None
    if it is on none. (counter, outputs, generated)."""
    f = Frame(raw)
    tcp = _tcp(f)
    if tcp is None:
        return None
    kind = flows.kinds.get((f.ip_dst, tcp[1], f.ip_src, tcp[0]))
    if kind is None:
        return None
    if kind == "host":
        return "skip_host", [("twin", raw)], {"flow_hit": 1}
    if f.ip[8] <= 1:
        return "pass", [("twin", raw)], {"flow_hit": 1}
    return "proxy_return", [("link", route(f.ip, t["next_hop_mac"], t["port_mac"]))], {"flow_hit": 1}


# --- DNS capture (inbound.dns_capture; the kernel's nat rule for UDP/53) ----------------------

ZTUNNEL_DNS_PORT = 15053


def _udp(f):
    """(sport, dport) of an unfragmented UDP packet of frame f whose header is whole, else None."""
    ip = f.ip
    if ip is None or ip[9] != 17 or int.from_bytes(ip[6:8], "big") & 0x3FFF:
        return None
    ihl = (ip[0] & 15) * 4
    if len(ip) < ihl + 8:
        return None
    return int.from_bytes(ip[ihl:ihl + 2], "big"), int.from_bytes(ip[ihl + 2:ihl + 4], "big")


def _nat(ip_bytes, src=None, sport=None, dst=None, dport=None):
    """The IPv4/UDP packet with an end rewritten and both checksums summed afresh by scapy
    (a UDP checksum of 0, none, stays 0), as conntrack's NAT leaves it."""
    ip = IP(ip_bytes)
    if src is not None:
        ip.src, ip[UDP].sport = src, sport
    if dst is not None:
        ip.dst, ip[UDP].dport = dst, dport
    del ip.chksum
    if ip[UDP].chksum != 0:
        del ip[UDP].chksum
    return bytes(ip)


def dns_query(raw, t, pods, flows):
    """A meshed pod's UDP to port 53: DNATed to ZT_IP:15053 and routed to ztunnel (mark
    0x220, table main), one hop; the address asked remembered. None if it is no such
    packet. (counter, outputs [(device kind, frame)], generated)."""
    f = Frame(raw)
    udp = _udp(f)
    if udp is None or f.ip_src not in pods or udp[1] != 53:
        return None
    if f.ip[8] <= 1:
        return "pass", [("twin", raw)], {}  # the kernel answers: time exceeded
    r = flows.learn_dns((f.ip_src, udp[0]), f.ip_dst)
    if r == "full":
        return "dns_flow_full", [("twin", raw)], {}
    out = _nat(f.ip, dst=t["remote_ip"], dport=ZTUNNEL_DNS_PORT)
    return "dns_capture", [("link", route(out, t["next_hop_mac"], t["port_mac"]))], {"flow_" + r: 1}


def dns_answer(raw, t, located, ports, flows):
    """ztunnel's UDP from ZT_IP:15053 to a pod: with a captured query, its source put back
    to the address asked, :53, and routed to the located pod (TTL - 1; else to the kernel
    through the twin, translated); without one, to the kernel unchanged. None if it is no
    such packet. (counter, outputs, generated)."""
    f = Frame(raw)
    udp = _udp(f)
    if udp is None or f.ip_src != t["remote_ip"] or udp[0] != ZTUNNEL_DNS_PORT:
        return None
    asked = flows.dns.get((f.ip_dst, udp[1]))
    if asked is None:
        return "dns_no_entry", [("twin", raw)], {}
    out = _nat(f.ip, src=asked, sport=53)
    where = located.get(f.ip_dst)
    if where is None or f.ip[8] <= 1:
        return "dns_answer", [("twin", raw[:f.l3] + out + raw[f.l3 + len(f.ip):])], {"flow_hit": 1}
    port, pod_mac = where
    return "dns_answer", [(port, route(out, pod_mac, ports[port]))], {"flow_hit": 1}
