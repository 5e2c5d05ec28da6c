#!/usr/bin/python3
"""Writes the packet-in/packet-out cases, one directory each under tests/pcap/cases/:

  case.yaml               what the case is (below)
  in-<device>.pcap        the frames a device receives (a port, or a twin: from the kernel)
  expected-<device>.pcap  the frames that must leave each device, in order (empty: none)

case.yaml: `description`; `known_bug` (optional: the case shows a bug and is expected to
fail until it is fixed); `role`, `tunnel`, `redirect`, `pods` as in ztgeneve's config;
`ports` (name, role, mac, vni, twin: whether it has a kernel twin); `input`, in order:
the device, its pcap, how many frames, and the pods ztgeneve must then have `located`
(learnt from their traffic) before the next input comes; `expect`, per device: its pcap,
frames, `counters` (the non-zero ones: every other must be 0) and `decode` (per frame it
sends, the tshark fields and values it must carry, or null).

The expected frames, counters and pod locations come from geneve_ref.py (scapy), never
from ztgeneve; each frame below also names the counter it is meant to hit, and the
reference must agree. The `decode` rows are what the frame is meant to carry (from the
input and the config, not from the reference's bytes): test_pcap.py asks tshark.
Run it again after changing a case (the output is reproducible); the files are committed."""
import os
import shutil
import struct
import sys
from collections import Counter

import yaml
from scapy.all import ARP, ICMP, IP, IPv6, TCP, UDP, Dot1Q, Ether, Raw
from scapy.contrib.geneve import GENEVE

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
import geneve_ref as ref  # noqa: E402
from pcapraw import write_frames  # noqa: E402

CASES = os.path.join(HERE, "cases")

NODE, ZT, VIP = "10.244.2.1", "10.244.2.10", "10.96.0.10"
PRODUCTPAGE, RATINGS, REVIEWS, LEGACY = "10.244.2.3", "10.244.2.2", "10.244.2.7", "10.244.2.20"
PODS = [PRODUCTPAGE, RATINGS, REVIEWS]
POD_MAC = {PRODUCTPAGE: "02:00:00:00:02:03", RATINGS: "02:00:00:00:02:02",
           REVIEWS: "02:00:00:00:02:07", LEGACY: "02:00:00:00:02:14"}
GW_MAC = "02:00:00:00:01:03"            # the node's pods ports (the pods' gateway)
NODE_ZT_MAC = "02:00:00:00:01:0a"       # the node's ztunnel port
ZT_MAC = "02:00:00:00:02:0a"            # the ztunnel pod
ISTIOOUT, PISTIOOUT = "02:00:00:00:7f:01", "02:00:00:00:7f:02"
ISTIOOUT_IP, PISTIOOUT_IP = "192.168.127.1", "192.168.127.2"

NODE_TUNNEL = ref.tunnel(local_ip=NODE, remote_ip=ZT, next_hop_mac=ZT_MAC, port_mac=NODE_ZT_MAC,
                         inner_src_mac=ISTIOOUT, inner_dst_mac=PISTIOOUT)
ENDPOINT_TUNNEL = ref.tunnel(local_ip=ZT, remote_ip=NODE, next_hop_mac=NODE_ZT_MAC, port_mac=ZT_MAC)
PROTO = {"tcp": 6, "udp": 17, "icmp": 1, "sctp": 132}
ICMP_PER_SECOND = 100  # README: at most 100 ICMP fragmentation-needed a second per worker
NODE_KEYS = ("vni", "udp_port", "local_ip", "remote_ip", "next_hop_mac", "udp_checksum", "mtu",
             "inner_src_mac", "inner_dst_mac", "inner_ip", "too_big")
ENDPOINT_KEYS = NODE_KEYS[:7]


def pcap_mac(i):
    """net_pcap's MAC for the i-th net_pcap device of the process (02:70:63:61:70:<i>, 'pcap'
    in ASCII). test_pcap.py creates them in the order of Case.devices."""
    return f"02:70:63:61:70:{i:02x}"


def node_ports(*pods_ports):
    return ([{"name": p, "role": "pods", "mac": GW_MAC, "twin": True} for p in pods_ports or ("pods",)] +
            [{"name": "ztunnel", "role": "ztunnel", "mac": NODE_ZT_MAC, "twin": True}])


def endpoint_ports(*tunnels):
    return ([{"name": "uplink", "role": "uplink", "mac": ZT_MAC, "twin": True}] +
            [{"name": n, "role": "tunnel", "vni": v, "twin": False} for n, v in tunnels])


class Flow(dict):
    """A mapping written on one line."""


yaml.SafeDumper.add_representer(Flow, lambda dumper, d: dumper.represent_mapping(
    "tag:yaml.org,2002:map", d.items(), flow_style=True))


class Case:
    """A case being built: its ports, its inputs in order and, from the reference, what each
    device must send and count."""

    def __init__(self, name, description, role, ports, tunnel, pods=(), protocols=("tcp",), known_bug=None,
                 inbound=None):
        self.name, self.description, self.role, self.ports = name, description, role, ports
        self.inbound = inbound  # the config's inbound section, or None (off)
        self.flows = ref.Flows(inbound.get("flows", {}).get("max", 65536)) if inbound else None
        self.known_bug = known_bug
        self.t = dict(tunnel)
        self.pods, self.protocols = list(pods), list(protocols)
        self.devices, self.mac, self.kind = [], {}, {}
        for p in ports:
            self.devices.append(p["name"])
            self.kind[p["name"]] = p["role"]
            self.mac[p["name"]] = p.get("mac", pcap_mac(len(self.devices) - 1))
            if p["twin"]:
                self.devices.append(p["name"] + ".twin")
                self.kind[p["name"] + ".twin"] = "twin"
                self.mac[p["name"] + ".twin"] = pcap_mac(len(self.devices) - 1)
        self.link = next(p["name"] for p in ports if p["role"] in ("ztunnel", "uplink"))
        assert self.mac[self.link] == self.t["port_mac"]
        self.tunnel_of = {p.get("vni", self.t["vni"]): p["name"] for p in ports if p["role"] == "tunnel"}
        self.inputs = []
        self.out = {d: [] for d in self.devices}
        self.decode = {d: [] for d in self.devices}
        self.ctr = {d: Counter() for d in self.devices}
        self.located = {}  # pod IP -> (port, MAC), as the reference learns it
        self.icmp_sent = 0

    def on(self, device):
        """The frames that follow arrive on device, after all earlier ones were received."""
        assert device in self.devices and all(s["device"] != device for s in self.inputs), device
        self.inputs.append({"device": device, "frames": [], "located": []})
        return self

    def emit(self, device, frame, decode=None):
        self.out[device].append(frame)
        self.decode[device].append(decode)
        self.ctr[device]["tx"] += 1

    def frame(self, frame, expect, decode=None):
        """One frame in on the current device; expect: the counter it is meant to hit there
        (the reference must agree); decode: what tshark must read in its output."""
        raw = bytes(frame)
        dev = self.inputs[-1]["device"]
        self.inputs[-1]["frames"].append(raw)
        self.ctr[dev]["rx"] += 1
        counter, outs, generated = getattr(self, "_" + self.kind[dev])(dev, raw)
        if generated.pop("csum_completed", 0):
            self.ctr[dev]["csum_completed"] += 1
        if any(d not in self.devices for d, _ in outs):  # for a kernel twin the port has not
            assert all(d.endswith(".twin") for d, _ in outs)
            counter, outs = "drop_no_twin", []
        assert counter == expect, f"{self.name}: frame {len(self.inputs[-1]['frames'])} on {dev}: " \
                                  f"the reference says {counter}, the case means {expect}"
        self.ctr[dev][counter] += 1
        for k, n in generated.items():
            self.ctr[dev][k] += n
        for i, (d, b) in enumerate(outs):
            self.emit(d, b, decode if i == 0 else None)
        return self

    def frames(self, items):
        for f, expect, *decode in items:
            self.frame(f, expect, *decode)
        return self

    # The stages of the reference, one per kind of device.
    def _pods(self, dev, raw):
        raw, completed = ref.complete_partial(raw)  # whatever the verdict
        counter, outs, generated = self._pods_verdict(dev, raw)
        if completed:
            generated = {**generated, "csum_completed": 1}
        return counter, outs, generated

    def _pods_verdict(self, dev, raw):
        if self.inbound:  # the proxy-return rule comes before the mark rule, DNS capture after
            done = ref.pod_on_flow(raw, self.t, self.flows)
            if not done and self.inbound.get("dns_capture"):
                done = ref.dns_query(raw, self.t, self.pods, self.flows)
            if done:
                self._note_seen(dev, raw)
                counter, outs, generated = done
                return counter, [({"link": self.link, "twin": dev + ".twin"}[d], b) for d, b in outs], generated
        counter, outs, seen, generated = ref.pods_verdict(raw, self.t, self.pods,
                                                          {PROTO.get(p, p) for p in self.protocols},
                                                          self.mac[dev])
        if seen is not None:
            where = (dev, ref.mac_str(seen[1]))
            if self.located.get(seen[0]) != where:
                self.located[seen[0]] = where
                self.inputs[-1]["located"].append({"ip": seen[0], "mac": where[1], "port": dev})
        if generated.get("icmp_frag_needed"):
            self.icmp_sent += 1
            if self.icmp_sent > ICMP_PER_SECOND:
                generated, outs = {"icmp_rate_limited": 1}, []
        where = {"link": self.link, "twin": dev + ".twin", "port": dev}
        return counter, [(where[d], b) for d, b in outs], generated

    def _from_peer(self, dev, raw, served):
        """The tunnel link's checks, shared by both roles: the verdict of what is not a
        valid Geneve frame of a VNI in served, or None and (VNI, inner frame, outer ECN)."""
        verdict, detail = ref.inspect(raw, self.t)
        if verdict == "not_ours":
            raw, completed = ref.complete_partial(raw)
            return ("pass", [(dev + ".twin", raw)], {"csum_completed": 1} if completed else {}), None
        if verdict == "drop":
            return (detail, [], {}), None
        if detail[0] not in served:
            return ("decap_bad_vni", [], {}), None
        return None, detail

    def _note_seen(self, dev, raw):
        """A meshed pod's IPv4 frame tells where the pod is, whatever its verdict."""
        f = ref.Frame(raw)
        if f.ip is not None and f.ip_src in self.pods:
            where = (dev, ref.mac_str(f.src_mac))
            if self.located.get(f.ip_src) != where:
                self.located[f.ip_src] = where
                self.inputs[-1]["located"].append({"ip": f.ip_src, "mac": where[1], "port": dev})

    def _ztunnel(self, dev, raw):
        if self.inbound and ref.inspect(raw, self.t)[0] == "not_ours":
            ports = {p: self.mac[p] for p in self.devices if self.kind[p] == "pods"}
            done = ref.ztunnel_plain(raw, self.t, self.located, ports, self.flows)
            if not done and self.inbound.get("dns_capture"):
                done = ref.dns_answer(raw, self.t, self.located, ports, self.flows)
            if done:
                counter, outs, generated = done
                return counter, [(dev + ".twin" if d == "twin" else d, b) for d, b in outs], generated
        served = {self.t["vni"]} | ({self.inbound["vni"]} if self.inbound else set())
        done, detail = self._from_peer(dev, raw, served)
        if done:
            return done
        _, inner, ecn = detail
        ports = {p: self.mac[p] for p in self.devices if self.kind[p] == "pods"}
        counter, to, out = ref.node_decap(inner, ecn, self.t, self.located, ports, self.mac.get(dev + ".twin"))
        to = {"link": dev, "twin": dev + ".twin"}.get(to, to)
        return counter, [(to, out)] if out is not None else [], {}

    def _uplink(self, dev, raw):
        done, detail = self._from_peer(dev, raw, self.tunnel_of)
        if done:
            return done
        vni, inner, ecn = detail
        counter, out = ref.endpoint_decap(inner, ecn)
        return counter, [(self.tunnel_of[vni], out)] if out is not None else [], {}

    def _tunnel(self, dev, raw):
        vni = next(p.get("vni", self.t["vni"]) for p in self.ports if p["name"] == dev)
        f = ref.Frame(raw)
        if len(raw[:14 + len(f.ip)] if f.ip else raw) - 14 > self.t["mtu"] - ref.OUTER_LEN:
            return "drop_too_big", [], {}
        return "redirect", [(self.link, ref.encapsulate_frame(raw, self.t, vni))], {}

    def _twin(self, dev, raw):
        port = dev[:-len(".twin")]
        if self.inbound and self.kind[port] == "pods":
            inb = dict(self.inbound, protocols={PROTO.get(p, p) for p in self.inbound.get("protocols", ["tcp"])})
            counter, outs, generated = ref.kernel_to_pod(raw, self.t, inb, self.pods, self.flows)
            return counter, [({"port": port, "link": self.link}[d], b) for d, b in outs], generated
        return "pass", [(port, raw)], {}

    def write(self):
        d = os.path.join(CASES, self.name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        keys = NODE_KEYS if self.role == "node" else ENDPOINT_KEYS
        spec = {"description": self.description}
        if self.known_bug:
            spec["known_bug"] = self.known_bug
        spec.update({"role": self.role, "tunnel": {k: self.t[k] for k in keys}})
        if self.role == "node":
            spec["redirect"] = {"protocols": self.protocols}
            spec["pods"] = self.pods
        if self.inbound:
            spec["inbound"] = self.inbound
        spec["ports"] = self.ports
        spec["input"] = []
        for s in self.inputs:
            pcap = f"in-{s['device']}.pcap"
            write_frames(os.path.join(d, pcap), s["frames"])
            spec["input"].append({"device": s["device"], "pcap": pcap, "frames": len(s["frames"]),
                                  "located": s["located"]})
        spec["expect"] = {}
        for dev in self.devices:
            pcap = f"expected-{dev}.pcap"
            write_frames(os.path.join(d, pcap), self.out[dev])
            spec["expect"][dev] = {"pcap": pcap, "frames": len(self.out[dev]),
                                   "counters": dict(sorted(self.ctr[dev].items())),
                                   "decode": [Flow(r) if r else None for r in self.decode[dev]]}
        with open(os.path.join(d, "case.yaml"), "w") as fh:
            fh.write("# Written by tests/pcap/make_cases.py: edit that, then run it.\n")
            yaml.safe_dump(spec, fh, sort_keys=False, default_flow_style=None, width=110)
        return self


# --- what the outputs are meant to carry (tshark field -> the values of its occurrences) ----------

def m_encap(t, inner_src, inner_dst, ecn=0, vni=None):
    return {"geneve.vni": [t["vni"] if vni is None else vni], "ip.src": [t["local_ip"], inner_src],
            "ip.dst": [t["remote_ip"], inner_dst], "ip.dsfield.ecn": [ecn, ecn]}


def m_routed(src, dst, ttl, dst_mac, ecn=0):
    return {"eth.dst": [dst_mac], "ip.src": [src], "ip.dst": [dst], "ip.ttl": [ttl], "ip.dsfield.ecn": [ecn]}


def m_frag_needed(t, pod, dst):
    return {"icmp.type": [3], "icmp.code": [4], "icmp.mtu": [t["mtu"] - 50],
            "ip.src": [t["local_ip"], pod], "ip.dst": [pod, dst]}


def m_arp_reply(t, asker):
    return {"geneve.vni": [t["vni"]], "ip.src": [t["local_ip"]], "ip.dst": [t["remote_ip"]],
            "arp.opcode": [2], "arp.src.proto_ipv4": [t["inner_ip"]], "arp.dst.proto_ipv4": [asker]}


def m_plain(src, dst, ecn=0):
    return {"ip.src": [src], "ip.dst": [dst], "ip.dsfield.ecn": [ecn]}


def m_arp(op, sender, target):
    return {"arp.opcode": [op], "arp.src.proto_ipv4": [sender], "arp.dst.proto_ipv4": [target]}


# --- frames ------------------------------------------------------------------------------------

def pod_eth(pod=PRODUCTPAGE, vlan=None, mac=None):
    e = Ether(src=mac or POD_MAC[pod], dst=GW_MAC)
    return e / Dot1Q(vlan=vlan) if vlan is not None else e


def syn(src, dst=VIP, sport=40000, dport=9080, **ip):
    return IP(src=src, dst=dst, **ip) / TCP(sport=sport, dport=dport, flags="S")


def synack(src=VIP, dst=PRODUCTPAGE, sport=9080, dport=40000, **ip):
    return IP(src=src, dst=dst, **ip) / TCP(sport=sport, dport=dport, flags="SA")


def inner_eth(ip):
    """An IPv4 packet as istioout/pistioout frame it inside the tunnel."""
    return Ether(src=PISTIOOUT, dst=ISTIOOUT) / ip


def geneve(inner, vni=1001, src=ZT, dst=NODE, sport=50000, dport=6081, tos=0, ttl=64, flags="DF",
           ver=0, oam=0, critical=0, options=b"", proto=0x6558, csum=0, eth_src=ZT_MAC, eth_dst=NODE_ZT_MAC,
           ip_chksum=None, ip_len=None, udp_len=None, frag=0, vlan=None, trailer=b""):
    """A Geneve frame built byte by byte (every field at the case's choice, malformed ones too).
    csum: 0 (none), None (the right one) or a value."""
    assert len(options) % 4 == 0
    g = bytes([(ver << 6) | (len(options) // 4), (oam << 7) | (critical << 6)]) + proto.to_bytes(2, "big") + \
        vni.to_bytes(3, "big") + b"\0" + options + bytes(inner)
    udp = UDP(sport=sport, dport=dport, len=udp_len, chksum=csum) / Raw(g)
    ip = IP(src=src, dst=dst, tos=tos, ttl=ttl, flags=flags, frag=frag, id=0, chksum=ip_chksum, len=ip_len) / udp
    e = Ether(src=eth_src, dst=eth_dst)
    if vlan is not None:
        e = e / Dot1Q(vlan=vlan)
    return bytes(e / ip) + trailer


def to_node(inner, **kw):
    return geneve(inner, **kw)


def to_endpoint(inner, **kw):
    return geneve(inner, **dict(dict(src=NODE, dst=ZT, eth_src=NODE_ZT_MAC, eth_dst=ZT_MAC), **kw))


# --- the cases ---------------------------------------------------------------------------------

def node_pods_mixed():
    """The first case: every pods-port verdict interleaved in one burst."""
    c = Case("node-pods-mixed", "pods port: redirect, direct, pass, too big with and without DF, all "
             "interleaved in one burst (the same pod MAC for every source)",
             "node", node_ports(), NODE_TUNNEL, pods=PODS)
    c.on("pods")
    t, mac = c.t, POD_MAC[PRODUCTPAGE]

    def eth(vlan=None):
        return pod_eth(vlan=vlan, mac=mac)

    for i, pod in enumerate(PODS):  # SYNs of several flows, 64/512/1500-byte frames
        c.frame(eth() / syn(pod, sport=40000 + i, flags="DF"), "redirect", m_encap(t, pod, VIP))
        c.frame(eth() / IP(src=pod, dst=VIP) / TCP(sport=41000 + i, dport=9080, flags="PA") / Raw(b"x" * 458),
                "redirect", m_encap(t, pod, VIP))
    big = 1500 - 50  # the largest inner packet that fits the 1500-byte tunnel MTU
    c.frame(eth() / IP(src=PRODUCTPAGE, dst=VIP) / TCP(sport=42000, dport=9080, flags="A") / Raw(b"y" * (big - 40)),
            "redirect", m_encap(t, PRODUCTPAGE, VIP))
    c.frame(eth() / IP(src=PRODUCTPAGE, dst=VIP, flags="DF") / TCP(sport=42001, dport=9080, flags="A")
            / Raw(b"z" * (big - 39)), "drop_too_big", m_frag_needed(t, PRODUCTPAGE, VIP))
    # Too big without DF: fragmented (tunnel.too_big defaults to fragment), also a chained
    # jumbo frame with a copied option (Router Alert: in every fragment; scapy copies all
    # options, so a non-copied one is left to the unit test), and a fragment split again.
    c.frame(eth() / IP(src=PRODUCTPAGE, dst=VIP, id=7) / TCP(sport=42002, dport=9080, flags="A") / Raw(b"w" * (big - 39)),
            "fragmented", m_encap(t, PRODUCTPAGE, VIP))
    c.frame(eth() / IP(src=RATINGS, dst=VIP, id=8, options=b"\x94\x04\x00\x00") / TCP(sport=42003, dport=9080, flags="A")
            / Raw(bytes(range(256)) * 12), "fragmented", m_encap(t, RATINGS, VIP))
    c.frame(eth() / IP(src=REVIEWS, dst=VIP, id=9, flags="MF", frag=100, proto=6) / Raw(b"v" * 1480), "fragmented",
            m_encap(t, REVIEWS, VIP))
    c.frame(eth(vlan=12) / syn(RATINGS, sport=43000), "redirect", m_encap(t, RATINGS, VIP))
    c.frame(eth() / syn(REVIEWS, sport=44000, tos=0x03), "redirect", m_encap(t, REVIEWS, VIP, ecn=3))  # CE
    c.frame(eth() / syn(REVIEWS, sport=44001, tos=0xb9), "redirect", m_encap(t, REVIEWS, VIP, ecn=1))  # EF + ECT(1)
    c.frame(eth() / IP(src=PRODUCTPAGE, dst=VIP, options=b"\x01\x01\x01\x00") / TCP(sport=45000, dport=9080),
            "redirect", m_encap(t, PRODUCTPAGE, VIP))
    c.frame(eth() / IP(src=PRODUCTPAGE, dst=VIP, flags="MF", frag=0, proto=6) / Raw(b"f" * 32), "redirect")
    c.frame(eth() / IP(src=PRODUCTPAGE, dst=VIP, frag=4, proto=6) / Raw(b"g" * 16), "redirect")
    # Padded minimum frame: the padding must not enter the tunnel.
    c.frame(bytes(eth() / syn(RATINGS, sport=46000)) + b"\0" * 6, "redirect", m_encap(t, RATINGS, VIP))
    c.frame(eth() / syn(PRODUCTPAGE, dst=ZT, sport=47000, dport=15001, ttl=64), "direct",
            m_routed(PRODUCTPAGE, ZT, 63, ZT_MAC))
    c.frame(eth() / syn(PRODUCTPAGE, dst=ZT, sport=47001, dport=15001, ttl=1), "pass")
    c.frame(eth() / IP(src=PRODUCTPAGE, dst=VIP) / UDP(sport=5353, dport=53) / Raw(b"dns"), "pass")
    c.frame(eth() / syn(LEGACY, sport=48000), "pass")
    c.frame(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=PRODUCTPAGE, pdst=NODE, hwsrc=mac), "pass")
    c.frame(eth() / IPv6(src="fd00::3", dst="fd00::a") / TCP(dport=9080), "pass")
    c.frame(bytes(eth() / IP(src=PRODUCTPAGE, dst=VIP) / TCP(dport=9080))[:30], "pass")  # truncated
    # TCP header cut short: TCP by protocol, no ports
    c.frame(eth() / IP(src=PRODUCTPAGE, dst=VIP, proto=6) / Raw(b"\x00" * 2), "redirect")
    return c.write()


def node_pods_vni1000_udpcsum():
    t = dict(NODE_TUNNEL, vni=1000, udp_port=6082, udp_checksum=True)
    c = Case("node-pods-vni1000-udpcsum", "pods port with an istioin-like tunnel: VNI 1000, UDP port "
             "6082, outer UDP checksums, TCP and UDP redirected", "node", node_ports(), t, pods=PODS,
             protocols=["tcp", "udp"]).on("pods")
    for i in range(4):
        c.frame(pod_eth() / syn(PRODUCTPAGE, sport=50000 + i) / Raw(b"p" * i), "redirect", m_encap(c.t, PRODUCTPAGE, VIP))
    c.frame(pod_eth(RATINGS) / IP(src=RATINGS, dst=VIP) / UDP(sport=5353, dport=53) / Raw(b"q" * 33), "redirect",
            m_encap(c.t, RATINGS, VIP))
    c.frame(pod_eth(LEGACY) / IP(src=LEGACY, dst=VIP) / UDP(sport=5353, dport=53), "pass")
    return c.write()


def node_pods_pass():
    c = Case("node-pods-pass", "pods port: what the kernel's mark rule does not match goes to the "
             "twin unchanged; a pod's UDP and ARP still tell where it is", "node", node_ports(),
             NODE_TUNNEL, pods=PODS).on("pods")
    c.frames([
        (pod_eth(LEGACY) / syn(LEGACY), "pass", m_plain(LEGACY, VIP)),             # not meshed
        (pod_eth() / IP(src=PRODUCTPAGE, dst=VIP) / UDP(sport=5353, dport=53) / Raw(b"dns?"), "pass",
         m_plain(PRODUCTPAGE, VIP)),
        (pod_eth() / IP(src=PRODUCTPAGE, dst=VIP) / ICMP(id=1, seq=1) / Raw(b"ping"), "pass",
         m_plain(PRODUCTPAGE, VIP)),
        (Ether(src=POD_MAC[REVIEWS], dst="ff:ff:ff:ff:ff:ff") /
         ARP(hwsrc=POD_MAC[REVIEWS], psrc=REVIEWS, pdst=NODE), "pass", m_arp(1, REVIEWS, NODE)),  # learnt
        (Ether(src=POD_MAC[LEGACY], dst="ff:ff:ff:ff:ff:ff") / ARP(hwsrc=POD_MAC[LEGACY], psrc=LEGACY, pdst=NODE),
         "pass", m_arp(1, LEGACY, NODE)),
        (pod_eth(RATINGS, vlan=5) / ARP(hwsrc=POD_MAC[RATINGS], psrc=RATINGS, pdst=NODE), "pass"),  # tagged: not learnt
        (pod_eth() / IPv6(src="fd00::3", dst="fd00::a") / TCP(dport=9080, flags="S"), "pass"),
        (bytes(pod_eth() / syn(PRODUCTPAGE))[:30], "pass"),                       # IPv4 header cut short
        (bytes(pod_eth() / IP(src=PRODUCTPAGE, dst=VIP, len=200) / TCP(dport=9080, flags="S")), "pass"),  # total > frame
        (bytes(pod_eth() / IP(src=PRODUCTPAGE, dst=VIP, version=5) / TCP(dport=9080, flags="S")), "pass"),
        (bytes(pod_eth() / IP(src=PRODUCTPAGE, dst=VIP, ihl=4) / TCP(dport=9080, flags="S")), "pass"),
        (Ether(src=POD_MAC[PRODUCTPAGE], dst="01:80:c2:00:00:0e", type=0x88cc) / Raw(b"\x02\x07\x04" + b"\0" * 43),
         "pass"),                                                                  # LLDP
    ])
    return c.write()


def node_pods_direct():
    c = Case("node-pods-direct", "pods port: a meshed pod's TCP to the ztunnel IP is routed to it "
             "unencapsulated (table 101), TTL - 1, a VLAN tag dropped", "node", node_ports(), NODE_TUNNEL,
             pods=PODS).on("pods")
    c.frames([
        (pod_eth() / syn(PRODUCTPAGE, dst=ZT, dport=15008), "direct", m_routed(PRODUCTPAGE, ZT, 63, ZT_MAC)),
        (pod_eth(RATINGS) / syn(RATINGS, dst=ZT, dport=15008, ttl=2), "direct", m_routed(RATINGS, ZT, 1, ZT_MAC)),
        (pod_eth(RATINGS) / syn(RATINGS, dst=ZT, dport=15008, ttl=1), "pass"),      # time exceeded: the kernel's
        (pod_eth(REVIEWS, vlan=7) / syn(REVIEWS, dst=ZT, dport=15008, tos=0x2a), "direct",
         m_routed(REVIEWS, ZT, 63, ZT_MAC, ecn=2)),
        (pod_eth() / IP(src=PRODUCTPAGE, dst=ZT, flags="DF") / TCP(sport=40001, dport=15008, flags="A")
         / Raw(b"d" * 1460), "direct", m_routed(PRODUCTPAGE, ZT, 63, ZT_MAC)),      # 1500 bytes: no tunnel, fits
        (pod_eth() / IP(src=PRODUCTPAGE, dst=ZT) / UDP(sport=5353, dport=53), "pass"),  # UDP is not redirected
        (pod_eth(LEGACY) / syn(LEGACY, dst=ZT, dport=15008), "pass"),
    ])
    return c.write()


def node_pods_too_big_df():
    c = Case("node-pods-too-big-df", "pods port: a redirect too big for the tunnel with DF set is "
             "dropped and the pod gets ICMP fragmentation needed, MTU 1450, from the node",
             "node", node_ports(), NODE_TUNNEL, pods=PODS).on("pods")
    t = c.t

    def tcp(pod, n, sport, **ip):
        return pod_eth(pod) / IP(src=pod, dst=VIP, flags="DF", **ip) / TCP(sport=sport, dport=9080, flags="A") / Raw(b"b" * n)

    c.frames([
        (tcp(PRODUCTPAGE, 1410, 40000), "redirect", m_encap(t, PRODUCTPAGE, VIP)),      # 1450: fits exactly
        (tcp(PRODUCTPAGE, 1411, 40001), "drop_too_big", m_frag_needed(t, PRODUCTPAGE, VIP)),
        (tcp(RATINGS, 1460, 40002, options=b"\x94\x04\x00\x00"), "drop_too_big", m_frag_needed(t, RATINGS, VIP)),
        (tcp(REVIEWS, 8000, 40003, tos=0x02), "drop_too_big", m_frag_needed(t, REVIEWS, VIP)),  # jumbo, chained
        (tcp(LEGACY, 1460, 40004), "pass"),                                           # not meshed: the kernel's
        (pod_eth() / IP(src=PRODUCTPAGE, dst=VIP, flags="DF") / UDP(sport=5353, dport=53) / Raw(b"u" * 1472),
         "pass"),                                                                     # not redirected
    ])
    return c.write()


def node_pods_icmp_rate_limit():
    t = dict(NODE_TUNNEL, mtu=576)
    c = Case("node-pods-icmp-rate-limit", "pods port, tunnel MTU 576: 101 too-big DF packets at once "
             "get 100 ICMP fragmentation needed (MTU 526), the 101st none (icmp_rate_limited)",
             "node", node_ports(), t, pods=PODS).on("pods")
    for i in range(101):
        c.frame(pod_eth() / IP(src=PRODUCTPAGE, dst=VIP, flags="DF") / TCP(sport=41000 + i, dport=9080, flags="A")
                / Raw(b"r" * 520), "drop_too_big", m_frag_needed(c.t, PRODUCTPAGE, VIP) if i < 100 else None)
    return c.write()


def node_pods_fragment():
    t = dict(NODE_TUNNEL, mtu=1280)
    c = Case("node-pods-fragment-mtu1280", "pods port, tunnel MTU 1280: too big without DF is split "
             "into RFC 791 fragments of at most 1230 bytes, each its own Geneve frame with the "
             "packet's source port and ECN; DF gets ICMP with MTU 1230", "node", node_ports(), t,
             pods=PODS).on("pods")
    c.frames([
        (pod_eth() / IP(src=PRODUCTPAGE, dst=VIP, id=100) / TCP(sport=40000, dport=9080, flags="A") / Raw(b"a" * 1191),
         "fragmented", m_encap(c.t, PRODUCTPAGE, VIP)),                               # 1231: two fragments
        (pod_eth(RATINGS) / IP(src=RATINGS, dst=VIP, id=101, tos=0x01) / TCP(sport=40001, dport=9080, flags="A")
         / Raw(bytes(range(256)) * 11), "fragmented", m_encap(c.t, RATINGS, VIP, ecn=1)),  # 2856, chained
        (pod_eth(REVIEWS) / IP(src=REVIEWS, dst=VIP, id=102, flags="MF", frag=50, proto=6) / Raw(b"c" * 1400),
         "fragmented", m_encap(c.t, REVIEWS, VIP)),                                   # a fragment split again
        (pod_eth() / IP(src=PRODUCTPAGE, dst=VIP, id=103) / TCP(sport=40002, dport=9080, flags="A") / Raw(b"e" * 1190),
         "redirect", m_encap(c.t, PRODUCTPAGE, VIP)),                                 # 1230: fits
        (pod_eth() / IP(src=PRODUCTPAGE, dst=VIP, id=104, flags="DF") / TCP(sport=40003, dport=9080, flags="A")
         / Raw(b"f" * 1191), "drop_too_big", m_frag_needed(c.t, PRODUCTPAGE, VIP)),
    ])
    return c.write()


def node_pods_too_big_drop():
    t = dict(NODE_TUNNEL, too_big="drop")
    c = Case("node-pods-too-big-drop", "pods port with tunnel.too_big: drop: too big without DF is "
             "dropped (drop_too_big, no ICMP); with DF the pod is still told", "node", node_ports(), t,
             pods=PODS).on("pods")
    c.frames([
        (pod_eth() / IP(src=PRODUCTPAGE, dst=VIP) / TCP(sport=40000, dport=9080, flags="A") / Raw(b"a" * 1411),
         "drop_too_big"),
        (pod_eth() / IP(src=PRODUCTPAGE, dst=VIP, flags="DF") / TCP(sport=40001, dport=9080, flags="A") / Raw(b"a" * 1411),
         "drop_too_big", m_frag_needed(c.t, PRODUCTPAGE, VIP)),
        (pod_eth() / IP(src=PRODUCTPAGE, dst=VIP) / TCP(sport=40002, dport=9080, flags="A") / Raw(b"a" * 1410),
         "redirect", m_encap(c.t, PRODUCTPAGE, VIP)),
    ])
    return c.write()


def node_pods_vlan():
    c = Case("node-pods-vlan", "pods port, 802.1Q-tagged frames: classified through the tag, which "
             "never enters the tunnel nor the direct route; what passes keeps it", "node",
             node_ports(), NODE_TUNNEL, pods=PODS).on("pods")
    t = c.t
    c.frames([
        (pod_eth(vlan=100) / syn(PRODUCTPAGE), "redirect", m_encap(t, PRODUCTPAGE, VIP)),
        (pod_eth(RATINGS, vlan=4094) / syn(RATINGS, sport=40001, tos=0x02), "redirect", m_encap(t, RATINGS, VIP, ecn=2)),
        (bytes(pod_eth(vlan=100) / syn(PRODUCTPAGE, sport=40002)) + b"\0" * 8, "redirect",
         m_encap(t, PRODUCTPAGE, VIP)),                                               # padded
        (pod_eth(vlan=100) / syn(PRODUCTPAGE, dst=ZT, dport=15008), "direct", m_routed(PRODUCTPAGE, ZT, 63, ZT_MAC)),
        (pod_eth(vlan=100) / IP(src=PRODUCTPAGE, dst=VIP) / UDP(sport=5353, dport=53), "pass"),
        (pod_eth(LEGACY, vlan=100) / syn(LEGACY), "pass"),
        (pod_eth(vlan=0) / syn(PRODUCTPAGE, sport=40003), "redirect", m_encap(t, PRODUCTPAGE, VIP)),  # priority tag
        (pod_eth(vlan=100) / Dot1Q(vlan=200) / syn(PRODUCTPAGE, sport=40004), "pass"),  # two tags: not parsed
        (pod_eth(vlan=100) / IP(src=PRODUCTPAGE, dst=VIP, id=5) / TCP(sport=40005, dport=9080, flags="A")
         / Raw(b"v" * 1460), "fragmented", m_encap(t, PRODUCTPAGE, VIP)),
    ])
    return c.write()


def node_return_decap():
    c = Case("node-return-decap", "ztunnel port: valid Geneve from ztunnel is decapsulated and routed "
             "(TTL - 1, RFC 6040 ECN) to the pod that owns the inner destination, on the port and MAC "
             "it was seen with; options skipped, padding and an outer VLAN tag dropped",
             "node", node_ports("pods", "pods2"), NODE_TUNNEL, pods=PODS)
    c.on("pods").frame(pod_eth() / syn(PRODUCTPAGE), "redirect", m_encap(c.t, PRODUCTPAGE, VIP))
    c.on("pods2").frame(pod_eth(RATINGS) / syn(RATINGS, sport=40001), "redirect", m_encap(c.t, RATINGS, VIP))
    pp, ra = POD_MAC[PRODUCTPAGE], POD_MAC[RATINGS]
    opt = b"\x01\x02\x03\x01" + b"\x11\x22\x33\x44"  # class 0x0102, type 3 (not critical), 4 bytes of data
    c.on("ztunnel").frames([
        (to_node(inner_eth(synack())), "decap", m_routed(VIP, PRODUCTPAGE, 63, pp)),
        (to_node(inner_eth(synack(dst=RATINGS, dport=40001))), "decap", m_routed(VIP, RATINGS, 63, ra)),
        (to_node(inner_eth(synack(ttl=2))), "decap", m_routed(VIP, PRODUCTPAGE, 1, pp)),
        (to_node(inner_eth(synack()), options=opt), "decap", m_routed(VIP, PRODUCTPAGE, 63, pp)),
        (to_node(inner_eth(synack()), options=opt * 3, critical=0), "decap", m_routed(VIP, PRODUCTPAGE, 63, pp)),
        (to_node(inner_eth(synack()), critical=1), "decap", m_routed(VIP, PRODUCTPAGE, 63, pp)),  # C without options
        (to_node(inner_eth(synack(tos=0x02)), tos=0x03), "decap", m_routed(VIP, PRODUCTPAGE, 63, pp, ecn=3)),
        (to_node(inner_eth(synack(tos=0x02)), tos=0x01), "decap", m_routed(VIP, PRODUCTPAGE, 63, pp, ecn=1)),
        (to_node(inner_eth(synack(tos=0x01)), tos=0x03), "decap", m_routed(VIP, PRODUCTPAGE, 63, pp, ecn=3)),
        (to_node(inner_eth(synack(tos=0x00)), tos=0x02), "decap", m_routed(VIP, PRODUCTPAGE, 63, pp)),
        (to_node(inner_eth(synack(tos=0xb8 | 0x02)), tos=0x00), "decap", m_routed(VIP, PRODUCTPAGE, 63, pp, ecn=2)),
        (to_node(inner_eth(synack()), csum=None), "decap", m_routed(VIP, PRODUCTPAGE, 63, pp)),  # UDP checksum
        (to_node(inner_eth(synack()), trailer=b"\0" * 12), "decap", m_routed(VIP, PRODUCTPAGE, 63, pp)),
        (to_node(bytes(inner_eth(synack())) + b"\x55" * 10), "decap", m_routed(VIP, PRODUCTPAGE, 63, pp)),
        (to_node(inner_eth(synack()), vlan=30), "decap", m_routed(VIP, PRODUCTPAGE, 63, pp)),
        (to_node(inner_eth(synack(options=b"\x01\x01\x01\x00")), flags=0), "decap",
         m_routed(VIP, PRODUCTPAGE, 63, pp)),
        (to_node(inner_eth(synack()), options=b"\x01\x02\x03\x1f" + b"\xbb" * 124 + opt * 15 + b"\x01\x02\x04\x00"), "decap",
         m_routed(VIP, PRODUCTPAGE, 63, pp)),                                       # 252 bytes of options: the most
        (bytes(Ether(src=ZT_MAC, dst=NODE_ZT_MAC) /
               IP(src=ZT, dst=NODE, flags="DF", options=b"\x01\x01\x01\x00") /
               UDP(sport=50000, dport=6081, chksum=0) / GENEVE(vni=1001, proto=0x6558) / inner_eth(synack())),
         "decap", m_routed(VIP, PRODUCTPAGE, 63, pp)),                              # outer IPv4 options
        (to_node(inner_eth(IP(src=VIP, dst=RATINGS) / TCP(sport=9080, dport=40001, flags="PA")
                           / Raw(b"R" * 1410))), "decap", m_routed(VIP, RATINGS, 63, ra)),  # 1514 on the wire
    ])
    return c.write()


def node_return_unknown():
    c = Case("node-return-unknown", "ztunnel port: decapsulated packets for no located pod (not a pod, "
             "a pod never seen) or with TTL 1 go to the kernel through the ztunnel twin "
             "(decap_unknown_pod); what is not our tunnel passes to the twin unchanged",
             "node", node_ports(), NODE_TUNNEL, pods=PODS)
    c.on("pods").frame(pod_eth() / syn(PRODUCTPAGE), "redirect", m_encap(c.t, PRODUCTPAGE, VIP))
    twin = c.mac["ztunnel.twin"]
    c.on("ztunnel").frames([
        (to_node(inner_eth(synack(dst=LEGACY))), "decap_unknown_pod", m_routed(VIP, LEGACY, 64, twin)),
        (to_node(inner_eth(synack(dst=REVIEWS))), "decap_unknown_pod", m_routed(VIP, REVIEWS, 64, twin)),
        (to_node(inner_eth(synack(ttl=1))), "decap_unknown_pod", m_routed(VIP, PRODUCTPAGE, 1, twin)),
        (to_node(inner_eth(synack(dst="10.1.2.3", tos=0x02)), tos=0x03), "decap_unknown_pod",
         m_routed(VIP, "10.1.2.3", 64, twin, ecn=3)),
        (to_node(inner_eth(synack()), vlan=9), "decap", m_routed(VIP, PRODUCTPAGE, 63, POD_MAC[PRODUCTPAGE])),
        # Not our tunnel: ztunnel's own traffic and ARP, another port, another peer, IPv6.
        (Ether(src=ZT_MAC, dst=NODE_ZT_MAC) / IP(src=ZT, dst=NODE) / TCP(sport=15008, dport=33000, flags="SA"), "pass"),
        (Ether(src=ZT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(hwsrc=ZT_MAC, psrc=ZT, pdst=NODE), "pass"),
        (to_node(inner_eth(synack()), dport=6082), "pass"),
        (to_node(inner_eth(synack()), src="10.244.2.99"), "pass"),
        (to_node(inner_eth(synack()), dst="10.244.2.5"), "pass"),
        (Ether(src=ZT_MAC, dst=NODE_ZT_MAC) / IP(src=ZT, dst=NODE) / ICMP(type=0) / Raw(b"pong"), "pass"),
        (Ether(src=ZT_MAC, dst=NODE_ZT_MAC) / IPv6(src="fd00::a", dst="fd00::1") / UDP(dport=6081), "pass"),
    ])
    return c.write()


def node_return_drops():
    c = Case("node-return-drops", "ztunnel port: Geneve from ztunnel that must not be decapsulated "
             "(RFC 8926, RFC 6040) is dropped under its reason; then a valid frame still passes",
             "node", node_ports(), NODE_TUNNEL, pods=PODS).on("ztunnel")
    good = inner_eth(synack(dst=LEGACY))
    ip_only = bytes(synack())
    c.frames([
        (to_node(good, ver=1), "decap_bad_version"),
        (to_node(good, ver=3, options=b"\0" * 4), "decap_bad_version"),
        (to_node(good, oam=1), "decap_oam"),
        (to_node(good, oam=1, critical=1), "decap_oam"),
        (to_node(good, critical=1, options=b"\x01\x02\x83\x01" + b"\0" * 4), "decap_critical"),
        (to_node(good, vni=1000), "decap_bad_vni"),
        (to_node(good, vni=0), "decap_bad_vni"),
        (to_node(good, ip_chksum=0x1234), "decap_bad_outer"),
        (to_node(good, csum=0x1234), "decap_bad_outer"),
        (to_node(good, flags="MF"), "decap_bad_outer"),                             # an outer fragment
        (to_node(good, flags=0, frag=8), "decap_bad_outer"),
        (to_node(good, ip_len=200), "decap_bad_outer"),                             # longer than the frame
        (to_node(good, udp_len=60), "decap_bad_outer"),
        (to_node(b"\x02\x00\x00\x00\x7f\x01" * 2), "decap_bad_outer"),              # no room for the inner Ethernet
        (to_node(ip_only, proto=0x0800), "decap_bad_inner"),                        # IPv4 right after Geneve
        (to_node(Ether(src=PISTIOOUT, dst=ISTIOOUT) / IPv6(src="fd00::a", dst="fd00::3") / TCP()), "decap_bad_inner"),
        (to_node(Ether(src=PISTIOOUT, dst=ISTIOOUT) / Dot1Q(vlan=3) / synack()), "decap_bad_inner"),
        (to_node(bytes(good)[:14 + 30]), "decap_bad_inner"),                        # IPv4 cut short
        (to_node(Ether(src=PISTIOOUT, dst=ISTIOOUT) / ARP(op=2, hwsrc=PISTIOOUT, psrc=PISTIOOUT_IP,
                                                          pdst=ISTIOOUT_IP)), "decap_bad_inner"),  # not a request
        (to_node(inner_eth(synack(dst=LEGACY, tos=0x00)), tos=0x03), "decap_ecn_drop"),  # CE over Not-ECT
        (to_node(good), "decap_unknown_pod", m_routed(VIP, LEGACY, 64, c.mac["ztunnel.twin"])),
    ])
    return c.write()


def node_tunnel_arp():
    c = Case("node-tunnel-arp", "ztunnel port: ARP for istioout's address asked inside the tunnel "
             "by pistioout is answered through the tunnel as istioout would; any other ARP in the "
             "tunnel is no IPv4 (decap_bad_inner)", "node", node_ports(), NODE_TUNNEL, pods=PODS).on("ztunnel")
    t = c.t

    def who_has(ip, src_mac=PISTIOOUT, src_ip=PISTIOOUT_IP, pad=0):
        return bytes(Ether(src=src_mac, dst="ff:ff:ff:ff:ff:ff") / ARP(hwsrc=src_mac, psrc=src_ip, pdst=ip)) + b"\0" * pad

    c.frames([
        (to_node(who_has(ISTIOOUT_IP)), "tunnel_arp_reply", m_arp_reply(t, PISTIOOUT_IP)),
        (to_node(who_has(ISTIOOUT_IP, pad=18)), "tunnel_arp_reply", m_arp_reply(t, PISTIOOUT_IP)),  # padded to 60
        (to_node(who_has(ISTIOOUT_IP, src_mac="02:00:00:00:7f:55", src_ip="192.168.127.3")), "tunnel_arp_reply",
         m_arp_reply(t, "192.168.127.3")),
        (to_node(who_has(ISTIOOUT_IP), csum=None, tos=0x03), "tunnel_arp_reply", m_arp_reply(t, PISTIOOUT_IP)),
        (to_node(who_has("192.168.127.9")), "decap_bad_inner"),
    ])
    return c.write()


def node_twins():
    c = Case("node-twins", "twins: what the node's kernel sends out of a twin leaves by its port "
             "unchanged (the pods port's, then the ztunnel port's)", "node", node_ports(), NODE_TUNNEL, pods=PODS)
    c.on("pods.twin").frames([
        (Ether(src=GW_MAC, dst=POD_MAC[PRODUCTPAGE]) / ARP(op=2, hwsrc=GW_MAC, psrc=NODE,
                                                          hwdst=POD_MAC[PRODUCTPAGE], pdst=PRODUCTPAGE), "pass",
         m_arp(2, NODE, PRODUCTPAGE)),
        (Ether(src=GW_MAC, dst=POD_MAC[LEGACY]) / synack(dst=LEGACY, ttl=63), "pass", m_plain(VIP, LEGACY)),
        (Ether(src=GW_MAC, dst=POD_MAC[PRODUCTPAGE]) / IP(src=NODE, dst=PRODUCTPAGE) / UDP(sport=53, dport=5353), "pass"),
        (to_node(inner_eth(synack()), eth_src=GW_MAC, eth_dst=POD_MAC[PRODUCTPAGE]), "pass"),  # even Geneve
    ])
    c.on("ztunnel.twin").frames([
        (Ether(src=NODE_ZT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(hwsrc=NODE_ZT_MAC, psrc=NODE, pdst=ZT), "pass",
         m_arp(1, NODE, ZT)),
        (Ether(src=NODE_ZT_MAC, dst=ZT_MAC) / syn(NODE, dst=ZT, dport=15008), "pass", m_plain(NODE, ZT)),
    ])
    return c.write()


def endpoint_uplink_decap():
    c = Case("endpoint-uplink-decap", "endpoint uplink: Geneve from the node is decapsulated into the "
             "tap of its VNI (pistioout 1001, pistioin 1000) as the kernel's geneve device hands it up; "
             "the rest of the link passes to the twin", "endpoint",
             endpoint_ports(("pistioout", 1001), ("pistioin", 1000)), ENDPOINT_TUNNEL).on("uplink")
    out = Ether(src=ISTIOOUT, dst=PISTIOOUT)
    opt = b"\x01\x02\x03\x02" + b"\xaa" * 8
    c.frames([
        (to_endpoint(out / syn(PRODUCTPAGE)), "decap", m_plain(PRODUCTPAGE, VIP)),
        (to_endpoint(out / syn(RATINGS, sport=40001), vni=1000), "decap", m_plain(RATINGS, VIP)),
        (to_endpoint(out / syn(PRODUCTPAGE, sport=40002, tos=0x02), tos=0x03), "decap", m_plain(PRODUCTPAGE, VIP, ecn=3)),
        (to_endpoint(out / syn(PRODUCTPAGE, sport=40003, tos=0x02), tos=0x01), "decap", m_plain(PRODUCTPAGE, VIP, ecn=1)),
        (to_endpoint(out / syn(PRODUCTPAGE, sport=40004), tos=0x03), "decap_ecn_drop"),
        (to_endpoint(out / Dot1Q(vlan=8) / syn(PRODUCTPAGE, sport=40005), tos=0x03), "decap"),  # tag hides the ECN
        (to_endpoint(out / syn(PRODUCTPAGE, sport=40006), options=opt, csum=None), "decap", m_plain(PRODUCTPAGE, VIP)),
        (to_endpoint(bytes(out / syn(PRODUCTPAGE, sport=40007)) + b"\0" * 6, trailer=b"\0" * 4), "decap",
         m_plain(PRODUCTPAGE, VIP)),                                                 # inner and outer padding
        (to_endpoint(Ether(src=ISTIOOUT, dst=PISTIOOUT) / ARP(op=2, hwsrc=ISTIOOUT, psrc=ISTIOOUT_IP,
                                                              hwdst=PISTIOOUT, pdst=PISTIOOUT_IP)), "decap"),
        (to_endpoint(out / IPv6(src="fd00::3", dst="fd00::a") / TCP()), "decap"),
        (to_endpoint(out / syn(PRODUCTPAGE), vni=1002), "decap_bad_vni"),
        (to_endpoint(out / syn(PRODUCTPAGE), oam=1), "decap_oam"),
        (to_endpoint(out / syn(PRODUCTPAGE), ver=2), "decap_bad_version"),
        (to_endpoint(out / syn(PRODUCTPAGE), critical=1, options=opt), "decap_critical"),
        (to_endpoint(out / syn(PRODUCTPAGE), ip_chksum=0), "decap_bad_outer"),
        (to_endpoint(bytes(syn(PRODUCTPAGE)), proto=0x0800), "decap_bad_inner"),
        (Ether(src=NODE_ZT_MAC, dst=ZT_MAC) / syn(NODE, dst=ZT, dport=15008), "pass"),
        (Ether(src=NODE_ZT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(hwsrc=NODE_ZT_MAC, psrc=NODE, pdst=ZT), "pass"),
        (to_node(out / syn(PRODUCTPAGE)), "pass"),                                   # the wrong way round
    ])
    return c.write()


def endpoint_tunnel_encap():
    c = Case("endpoint-tunnel-encap", "endpoint: what the kernel sends out of pistioout is encapsulated "
             "whole toward the node (VNI 1001, 10.244.2.10 -> 10.244.2.1); then what it sends out of "
             "the uplink's twin (eth0) leaves by the uplink unchanged", "endpoint",
             endpoint_ports(("pistioout", 1001)), ENDPOINT_TUNNEL).on("pistioout")
    t = c.t
    back = Ether(src=PISTIOOUT, dst=ISTIOOUT)
    c.frames([
        (back / synack(), "redirect", m_encap(t, VIP, PRODUCTPAGE)),
        (back / synack(dst=RATINGS, dport=40001, tos=0x03), "redirect", m_encap(t, VIP, RATINGS, ecn=3)),
        (back / synack(dst=REVIEWS, dport=40002, tos=0x29), "redirect", m_encap(t, VIP, REVIEWS, ecn=1)),
        (Ether(src=PISTIOOUT, dst="ff:ff:ff:ff:ff:ff") / ARP(hwsrc=PISTIOOUT, psrc=PISTIOOUT_IP, pdst=ISTIOOUT_IP),
         "redirect", {"geneve.vni": [1001], "ip.src": [ZT], "ip.dst": [NODE], "arp.opcode": [1],
                      "arp.dst.proto_ipv4": [ISTIOOUT_IP]}),
        (bytes(back / synack(dport=40003)) + b"\0" * 6, "redirect", m_encap(t, VIP, PRODUCTPAGE)),  # padding cut
        (back / IP(src=VIP, dst=PRODUCTPAGE) / UDP(sport=53, dport=5353) / Raw(b"answer"), "redirect",
         m_encap(t, VIP, PRODUCTPAGE)),
        (back / IP(src=VIP, dst=PRODUCTPAGE) / TCP(sport=9080, dport=40000, flags="PA") / Raw(b"o" * 1410),
         "redirect", m_encap(t, VIP, PRODUCTPAGE)),                                  # 1450 + 14: fits
        (back / IP(src=VIP, dst=PRODUCTPAGE) / TCP(sport=9080, dport=40000, flags="PA") / Raw(b"o" * 1411),
         "drop_too_big"),
        (back / IPv6(src="fd00::a", dst="fd00::3") / TCP(), "redirect",
         {"geneve.vni": [1001], "ip.src": [ZT], "ip.dst": [NODE]}),
    ])
    c.on("uplink.twin").frames([
        (Ether(src=ZT_MAC, dst=NODE_ZT_MAC) / ARP(op=2, hwsrc=ZT_MAC, psrc=ZT, hwdst=NODE_ZT_MAC, pdst=NODE), "pass"),
        (Ether(src=ZT_MAC, dst=NODE_ZT_MAC) / synack(src=ZT, dst=NODE, sport=15008, dport=33000), "pass"),
    ])
    return c.write()


def endpoint_vni1000_udpcsum():
    t = dict(ENDPOINT_TUNNEL, vni=1000, udp_checksum=True)
    c = Case("endpoint-vni1000-udpcsum", "endpoint with one tunnel tap pistioin (VNI 1000) and UDP "
             "checksums on: decapsulated from the uplink, then encapsulated back with VNI 1000 and a "
             "checksum", "endpoint", endpoint_ports(("pistioin", 1000)), t)
    inb = Ether(src=ISTIOOUT, dst=PISTIOOUT)
    c.on("uplink").frames([
        (to_endpoint(inb / syn(PRODUCTPAGE), vni=1000, csum=None), "decap", m_plain(PRODUCTPAGE, VIP)),
        (to_endpoint(inb / syn(PRODUCTPAGE), vni=1000, csum=0), "decap", m_plain(PRODUCTPAGE, VIP)),
        (to_endpoint(inb / syn(PRODUCTPAGE), vni=1000, csum=0xbeef), "decap_bad_outer"),
        (to_endpoint(inb / syn(PRODUCTPAGE), vni=1001, csum=None), "decap_bad_vni"),
    ])
    c.on("pistioin").frames([
        (Ether(src=PISTIOOUT, dst=ISTIOOUT) / synack(), "redirect", m_encap(c.t, VIP, PRODUCTPAGE, vni=1000)),
        (Ether(src=PISTIOOUT, dst=ISTIOOUT) / synack(dport=40001) / Raw(b"k" * 301), "redirect",
         m_encap(c.t, VIP, PRODUCTPAGE, vni=1000)),
    ])
    return c.write()


def node_no_twins():
    c = Case("node-no-twins", "ports without a kernel twin: what would go to the kernel is dropped "
             "and counted (drop_no_twin), on the pods port and on the return path",
             "node", [dict(p, twin=False) for p in node_ports()], NODE_TUNNEL, pods=PODS)
    c.on("pods").frames([
        (pod_eth() / syn(PRODUCTPAGE), "redirect", m_encap(c.t, PRODUCTPAGE, VIP)),
        (pod_eth(LEGACY) / syn(LEGACY), "drop_no_twin"),
        (Ether(src=POD_MAC[RATINGS], dst="ff:ff:ff:ff:ff:ff") / ARP(hwsrc=POD_MAC[RATINGS], psrc=RATINGS, pdst=NODE),
         "drop_no_twin"),
    ])
    c.on("ztunnel").frames([
        (to_node(inner_eth(synack(dst=RATINGS))), "decap", m_routed(VIP, RATINGS, 63, POD_MAC[RATINGS])),
        (to_node(inner_eth(synack(dst=LEGACY))), "drop_no_twin"),                   # decap, for no pod
        (Ether(src=ZT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(hwsrc=ZT_MAC, psrc=ZT, pdst=NODE), "drop_no_twin"),
    ])
    return c.write()


def partial(frame):
    """frame as a pod's kernel hands it to its veth with tx checksumming on (the default):
    the TCP/UDP checksum field holds the folded pseudo-header sum (CHECKSUM_PARTIAL)."""
    raw = bytearray(bytes(frame))
    f = ref.Frame(bytes(raw))
    ihl = (f.ip[0] & 15) * 4
    at = f.l3 + ihl + (16 if f.ip[9] == 6 else 6)
    raw[at:at + 2] = struct.pack("!H", ref.checksum16(f.ip[12:20] + struct.pack("!HH", f.ip[9], len(f.ip) - ihl)))
    return bytes(raw)


def node_partial_checksums():
    c = Case("node-pods-partial-csum", "pods port and ztunnel port: TCP/UDP checksums the sender left to "
             "offload (partial) are completed whatever the verdict (redirect, direct, pass); a wrong "
             "checksum that is not partial is forwarded as it is", "node", node_ports(), NODE_TUNNEL,
             pods=PODS)
    wrong = bytearray(bytes(pod_eth() / syn(PRODUCTPAGE, sport=40009)))
    wrong[50:52] = b"\x12\x34"  # the TCP checksum, simply wrong
    c.on("pods").frames([
        (partial(pod_eth() / syn(PRODUCTPAGE)), "redirect", m_encap(c.t, PRODUCTPAGE, VIP)),
        (partial(pod_eth() / syn(PRODUCTPAGE, sport=40001) / Raw(bytes(range(201)))), "redirect",
         m_encap(c.t, PRODUCTPAGE, VIP)),
        (partial(pod_eth(vlan=4) / syn(PRODUCTPAGE, sport=40002)), "redirect", m_encap(c.t, PRODUCTPAGE, VIP)),
        (partial(pod_eth() / syn(PRODUCTPAGE, dst=ZT, dport=15008)), "direct", m_routed(PRODUCTPAGE, ZT, 63, ZT_MAC)),
        (partial(pod_eth() / IP(src=PRODUCTPAGE, dst="10.96.0.53") / UDP(sport=5353, dport=53) /
                 Raw(b"\x12\x34\x01\x00" + b"\x00" * 8)), "pass"),
        (partial(pod_eth() / syn(LEGACY)), "pass"),
        (bytes(wrong), "redirect", m_encap(c.t, PRODUCTPAGE, VIP)),
    ])
    c.on("ztunnel").frames([
        (partial(Ether(src=ZT_MAC, dst=c.mac["ztunnel"]) / IP(src=ZT, dst="10.244.9.9") /
                 TCP(sport=15008, dport=443, flags="S")), "pass"),
    ])
    return c.write()


def node_static_next_hop():
    c = Case("node-static-next-hop", "ztunnel port: with a static tunnel.next_hop_mac, an ARP "
             "from the ztunnel IP with another MAC must not change where redirects go (config/README: "
             "only next_hop_mac: arp learns from ARP)", "node", node_ports(), NODE_TUNNEL, pods=PODS)
    other = "02:00:00:00:02:99"
    c.on("ztunnel").frame(Ether(src=other, dst="ff:ff:ff:ff:ff:ff") / ARP(hwsrc=other, psrc=ZT, pdst=NODE), "pass",
                          m_arp(1, ZT, NODE))
    c.on("pods").frame(pod_eth() / syn(PRODUCTPAGE), "redirect", m_encap(c.t, PRODUCTPAGE, VIP))
    return c.write()


def node_direct_padding():
    c = Case("node-pods-direct-padding", "pods port: a direct packet to the ztunnel IP leaves without the "
             "Ethernet padding (or trailer) of the pod's frame, as the kernel trims a frame to its IPv4 "
             "length before routing it (and as the redirect path does)", "node", node_ports(), NODE_TUNNEL,
             pods=PODS)
    c.on("pods").frames([
        (bytes(pod_eth() / syn(PRODUCTPAGE, dst=ZT, dport=15008)) + b"\xee" * 6, "direct",
         m_routed(PRODUCTPAGE, ZT, 63, ZT_MAC)),
        (bytes(pod_eth(vlan=4) / syn(PRODUCTPAGE, dst=ZT, sport=40001, dport=15008)) + b"\xee" * 100, "direct",
         m_routed(PRODUCTPAGE, ZT, 63, ZT_MAC)),
    ])
    return c.write()



# --- inbound (the inbound: section) -------------------------------------------------------------

ISTIOIN, PISTIOIN = "02:00:00:00:7e:01", "02:00:00:00:7e:02"
CLIENT = "192.168.50.2"  # outside the node, behind an uplink


def inbound_cfg(**flows):
    cfg = {"vni": 1000, "inner_src_mac": ISTIOIN, "inner_dst_mac": PISTIOIN, "inner_ip": "192.168.126.1"}
    if flows:
        cfg["flows"] = dict(flows)
    return cfg


def kernel_eth(c, pod):
    """What the node's kernel sends toward a pod: from the pods port's twin to the pod."""
    return Ether(src=c.mac["pods.twin"], dst=POD_MAC.get(pod, "02:00:00:00:02:99"))


def node_inbound():
    c = Case("node-inbound", "inbound: what the kernel sends toward a meshed pod goes to ztunnel as Geneve "
             "VNI 1000 (istioin -> pistioin inside, the packet as the kernel routed it); the skips (from the "
             "ztunnel IP, UDP, Geneve to the tunnel port, the host IP) and non-meshed destinations go to the "
             "pod unchanged; a probe's replies go to the kernel, a meshed pod's own TCP is still redirected",
             "node", node_ports(), NODE_TUNNEL, pods=PODS, inbound=inbound_cfg())
    t = c.t
    m_in = lambda src, dst: m_encap(t, src, dst, vni=1000)  # noqa: E731
    c.on("pods.twin").frames([
        (kernel_eth(c, PRODUCTPAGE) / syn(CLIENT, PRODUCTPAGE, ttl=63), "inbound", m_in(CLIENT, PRODUCTPAGE)),
        (kernel_eth(c, RATINGS) / syn(LEGACY, RATINGS, ttl=63), "inbound", m_in(LEGACY, RATINGS)),  # non-meshed pod
        (kernel_eth(c, PRODUCTPAGE) / IP(src=CLIENT, dst=PRODUCTPAGE, ttl=63) / TCP(sport=40000, dport=9080, flags="A")
         / Raw(b"x" * 100), "inbound", m_in(CLIENT, PRODUCTPAGE)),
        (kernel_eth(c, PRODUCTPAGE) / syn(ZT, PRODUCTPAGE, dport=15008), "skip_ztunnel", m_plain(ZT, PRODUCTPAGE)),
        (kernel_eth(c, PRODUCTPAGE) / IP(src=CLIENT, dst=PRODUCTPAGE) / UDP(sport=5353, dport=53), "skip_udp",
         m_plain(CLIENT, PRODUCTPAGE)),
        (kernel_eth(c, PRODUCTPAGE) / IP(src=CLIENT, dst=PRODUCTPAGE) / UDP(sport=50000, dport=6081, chksum=0) /
         GENEVE(vni=1001, proto=0x6558) / inner_eth(synack()), "skip_udp"),  # Geneve to the tunnel port
        (kernel_eth(c, PRODUCTPAGE) / syn(NODE, PRODUCTPAGE, sport=33000, dport=8080), "skip_host",
         m_plain(NODE, PRODUCTPAGE)),  # a kubelet probe
        (kernel_eth(c, PRODUCTPAGE) / IP(src=NODE, dst=PRODUCTPAGE) / ICMP(), "skip_host"),
        (kernel_eth(c, LEGACY) / syn(CLIENT, LEGACY, ttl=63), "pass", m_plain(CLIENT, LEGACY)),  # not meshed
        (kernel_eth(c, PRODUCTPAGE) / IP(src=CLIENT, dst=PRODUCTPAGE) / ICMP(), "pass"),  # inbound.protocols: tcp
        (kernel_eth(c, PRODUCTPAGE) / ARP(op=2, hwsrc=c.mac["pods.twin"], psrc=NODE, pdst=PRODUCTPAGE), "pass"),
    ])
    c.on("pods").frames([
        (pod_eth() / synack(src=PRODUCTPAGE, dst=NODE, sport=8080, dport=33000), "skip_host",
         m_plain(PRODUCTPAGE, NODE)),  # the probe's reply: to the kernel, not into istioout
        (pod_eth() / syn(PRODUCTPAGE, NODE, sport=41000, dport=10250), "redirect", m_encap(t, PRODUCTPAGE, NODE)),
        (pod_eth() / syn(PRODUCTPAGE), "redirect", m_encap(t, PRODUCTPAGE, VIP)),
    ])
    return c.write()


def node_inbound_proxied():
    c = Case("node-inbound-proxied", "inbound: ztunnel's connection to a pod with the client's address as "
             "source is remembered and handed to the kernel (the pod is not located yet); the pod's replies "
             "on it go to ztunnel unencapsulated (table 102), never to the client nor into istioout; the "
             "kernel's delivery of it is not redirected; a new client port is; ztunnel's own traffic passes",
             "node", node_ports(), NODE_TUNNEL, pods=PODS, inbound=inbound_cfg())
    t = c.t
    zt = lambda ip: Ether(src=ZT_MAC, dst=NODE_ZT_MAC) / ip  # noqa: E731
    c.on("ztunnel").frames([
        (zt(syn(CLIENT, PRODUCTPAGE, sport=45000)), "proxied_kernel", m_plain(CLIENT, PRODUCTPAGE)),
        (zt(IP(src=CLIENT, dst=PRODUCTPAGE) / TCP(sport=45000, dport=9080, flags="A")), "proxied_kernel",
         m_plain(CLIENT, PRODUCTPAGE)),
        (zt(syn(ZT, PRODUCTPAGE, sport=46000)), "pass", m_plain(ZT, PRODUCTPAGE)),  # its own: never learned
        (zt(IP(src=CLIENT, dst=PRODUCTPAGE) / UDP(sport=45000, dport=9080)), "pass"),
    ])
    c.on("pods").frames([
        (pod_eth() / synack(src=PRODUCTPAGE, dst=CLIENT, sport=9080, dport=45000), "proxy_return",
         m_routed(PRODUCTPAGE, CLIENT, 63, ZT_MAC)),
        (pod_eth() / IP(src=PRODUCTPAGE, dst=CLIENT) / TCP(sport=9080, dport=45000, flags="FA"), "proxy_return",
         m_routed(PRODUCTPAGE, CLIENT, 63, ZT_MAC)),
        (pod_eth() / synack(src=PRODUCTPAGE, dst=CLIENT, sport=9080, dport=45001), "redirect",
         m_encap(t, PRODUCTPAGE, CLIENT)),  # not a proxied connection: a meshed pod's TCP
        (pod_eth() / IP(src=PRODUCTPAGE, dst=ZT) / TCP(sport=15008, dport=46000, flags="SA"), "direct",
         m_routed(PRODUCTPAGE, ZT, 63, ZT_MAC)),
    ])
    c.on("pods.twin").frames([
        (kernel_eth(c, PRODUCTPAGE) / syn(CLIENT, PRODUCTPAGE, sport=45000, ttl=63), "skip_proxied",
         m_plain(CLIENT, PRODUCTPAGE)),
        (kernel_eth(c, PRODUCTPAGE) / syn(CLIENT, PRODUCTPAGE, sport=45001, ttl=63), "inbound",
         m_encap(t, CLIENT, PRODUCTPAGE, vni=1000)),
    ])
    return c.write()


def node_inbound_flow_full():
    c = Case("node-inbound-flow-full", "inbound: ztunnel's proxied connections to a located pod are delivered "
             "direct (TTL - 1); with the flow table full (inbound.flows.max 8) a new one is dropped, as the "
             "kernel drops a new connection when conntrack is full, and known ones still go through",
             "node", node_ports(), NODE_TUNNEL, pods=PODS, inbound=inbound_cfg(max=8))
    pp = POD_MAC[PRODUCTPAGE]
    zt = lambda ip: Ether(src=ZT_MAC, dst=NODE_ZT_MAC) / ip  # noqa: E731
    c.on("pods").frames([(pod_eth() / syn(PRODUCTPAGE), "redirect", m_encap(c.t, PRODUCTPAGE, VIP))])
    c.on("ztunnel").frames(
        [(zt(syn(CLIENT, PRODUCTPAGE, sport=45000 + i)), "proxied", m_routed(CLIENT, PRODUCTPAGE, 63, pp))
         for i in range(8)] +
        [(zt(syn(CLIENT, PRODUCTPAGE, sport=46000)), "drop_flow_full"),
         (zt(IP(src=CLIENT, dst=PRODUCTPAGE) / TCP(sport=45003, dport=9080, flags="A")), "proxied",
          m_routed(CLIENT, PRODUCTPAGE, 63, pp))])
    return c.write()

# --- DNS capture (inbound.dns_capture) ----------------------------------------------------------

def dns_q(pod, sport, dst=VIP, vlan=None, csum=None, ttl=64, qid=0x1234):
    """A pod's DNS query (an A query for productpage) to dst:53; csum: None (the right one), 0 (none)."""
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + b"\x0bproductpage\x00\x00\x01\x00\x01"
    return pod_eth(pod, vlan=vlan) / IP(src=pod, dst=dst, ttl=ttl) / UDP(sport=sport, dport=53, chksum=csum) / Raw(q)


def dns_a(pod, dport, csum=None, ttl=64, n=1):
    """ztunnel's answer from ZT_IP:15053, as its link delivers it."""
    a = struct.pack("!HHHHHH", 0x1234, 0x8180, 1, n, 0, 0) + b"\x0bproductpage\x00\x00\x01\x00\x01" + \
        n * (b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x1e\x00\x04\x0a\x60\x00\x0a")
    return (Ether(src=ZT_MAC, dst=NODE_ZT_MAC) / IP(src=ZT, dst=pod, ttl=ttl) /
            UDP(sport=15053, dport=dport, chksum=csum) / Raw(a))


def m_udp(src, dst, sport, dport, ttl, dst_mac, csum=1):
    """A routed UDP packet; csum: tshark's checksum status (1 good, 3 none)."""
    return dict(m_routed(src, dst, ttl, dst_mac), **{"udp.srcport": [sport], "udp.dstport": [dport],
                                                      "udp.checksum.status": [csum]})


def node_dns_capture():
    c = Case("node-dns-capture", "DNS capture (inbound.dns_capture): a meshed pod's UDP to port 53 goes "
             "to ZT_IP:15053 unencapsulated, one routed hop (a VLAN tag dropped, a partial checksum completed, "
             "no checksum kept as none, the checksums updated: scapy sums them afresh); ztunnel's answers "
             "come back to the pod from the address it asked, :53; an answer with no query is handed to "
             "the kernel unchanged; what is no meshed pod's query to port 53 passes as before",
             "node", node_ports(), NODE_TUNNEL, pods=PODS, inbound=dict(inbound_cfg(), dns_capture=True))
    pp, ra = POD_MAC[PRODUCTPAGE], POD_MAC[RATINGS]
    c.on("pods").frames([
        (dns_q(PRODUCTPAGE, 41000), "dns_capture", m_udp(PRODUCTPAGE, ZT, 41000, 15053, 63, ZT_MAC)),
        (dns_q(PRODUCTPAGE, 41001, dst="10.96.0.53", csum=0), "dns_capture",
         m_udp(PRODUCTPAGE, ZT, 41001, 15053, 63, ZT_MAC, csum=3)),
        (partial(dns_q(RATINGS, 41002)), "dns_capture", m_udp(RATINGS, ZT, 41002, 15053, 63, ZT_MAC)),
        (dns_q(RATINGS, 41003, vlan=7, ttl=2), "dns_capture", m_udp(RATINGS, ZT, 41003, 15053, 1, ZT_MAC)),
        (dns_q(PRODUCTPAGE, 41004, dst=ZT), "dns_capture", m_udp(PRODUCTPAGE, ZT, 41004, 15053, 63, ZT_MAC)),
        (dns_q(PRODUCTPAGE, 41000, qid=0x4321), "dns_capture",
         m_udp(PRODUCTPAGE, ZT, 41000, 15053, 63, ZT_MAC)),                          # the same port again
        (dns_q(PRODUCTPAGE, 41005, ttl=1), "pass"),                                  # time exceeded: the kernel's
        (dns_q(LEGACY, 41006), "pass", m_plain(LEGACY, VIP)),                        # not meshed
        (pod_eth() / IP(src=PRODUCTPAGE, dst=VIP) / UDP(sport=5353, dport=5353) / Raw(b"mdns"), "pass"),
        (pod_eth() / IP(src=PRODUCTPAGE, dst=VIP, flags="MF") / UDP(sport=41007, dport=53) / Raw(b"f" * 16),
         "pass"),                                                                    # a fragment: the kernel's
        (pod_eth() / syn(PRODUCTPAGE, dport=53), "redirect", m_encap(c.t, PRODUCTPAGE, VIP)),  # TCP/53: redirected
    ])
    c.on("ztunnel").frames([
        (dns_a(PRODUCTPAGE, 41000), "dns_answer", m_udp(VIP, PRODUCTPAGE, 53, 41000, 63, pp)),
        (dns_a(PRODUCTPAGE, 41000, n=2), "dns_answer", m_udp(VIP, PRODUCTPAGE, 53, 41000, 63, pp)),
        (dns_a(PRODUCTPAGE, 41001, csum=0), "dns_answer", m_udp("10.96.0.53", PRODUCTPAGE, 53, 41001, 63, pp, csum=3)),
        (dns_a(RATINGS, 41002), "dns_answer", m_udp(VIP, RATINGS, 53, 41002, 63, ra)),
        (dns_a(PRODUCTPAGE, 41004), "dns_answer", m_udp(ZT, PRODUCTPAGE, 53, 41004, 63, pp)),
        (dns_a(PRODUCTPAGE, 41009), "dns_no_entry", m_plain(ZT, PRODUCTPAGE)),       # no query from that port
        (dns_a(REVIEWS, 41000), "dns_no_entry"),                                    # nor from that pod
        (Ether(src=ZT_MAC, dst=NODE_ZT_MAC) / IP(src=ZT, dst=PRODUCTPAGE) / UDP(sport=15054, dport=41000), "pass"),
    ])
    return c.write()


def node_dns_flow_full():
    c = Case("node-dns-flow-full", "DNS capture with the flow table full (inbound.flows.max 8): a query from a "
             "new port takes the kernel path unchanged, as without capture (dns_flow_full); known ports are "
             "still captured and answered", "node", node_ports(), NODE_TUNNEL, pods=PODS,
             inbound=dict(inbound_cfg(max=8), dns_capture=True))
    c.on("pods").frames(
        [(dns_q(PRODUCTPAGE, 42000 + i), "dns_capture", m_udp(PRODUCTPAGE, ZT, 42000 + i, 15053, 63, ZT_MAC))
         for i in range(8)] +
        [(dns_q(PRODUCTPAGE, 43000), "dns_flow_full", m_plain(PRODUCTPAGE, VIP)),
         (dns_q(PRODUCTPAGE, 42003), "dns_capture", m_udp(PRODUCTPAGE, ZT, 42003, 15053, 63, ZT_MAC))])
    c.on("ztunnel").frames([
        (dns_a(PRODUCTPAGE, 42003), "dns_answer", m_udp(VIP, PRODUCTPAGE, 53, 42003, 63, POD_MAC[PRODUCTPAGE])),
        (dns_a(PRODUCTPAGE, 43000), "dns_no_entry", m_plain(ZT, PRODUCTPAGE)),  # the kernel's conntrack has it
    ])
    return c.write()


ALL = [node_pods_mixed, node_pods_vni1000_udpcsum, node_pods_pass, node_pods_direct, node_pods_too_big_df,
       node_pods_icmp_rate_limit, node_pods_fragment, node_pods_too_big_drop, node_pods_vlan,
       node_return_decap, node_return_unknown, node_return_drops, node_tunnel_arp, node_twins, node_no_twins,
       endpoint_uplink_decap, endpoint_tunnel_encap, endpoint_vni1000_udpcsum,
       node_static_next_hop, node_direct_padding, node_partial_checksums,
       node_inbound, node_inbound_proxied, node_inbound_flow_full, node_dns_capture, node_dns_flow_full]

if __name__ == "__main__":
    names = [f().name for f in ALL]
    for stale in sorted(set(os.listdir(CASES)) - set(names)):
        shutil.rmtree(os.path.join(CASES, stale))
    print(f"{len(names)} cases written under {CASES}")
