"""--scale veth: the attach kinds on veths, with one generator and the same veths for all.

The topology is the cni lab's (tests/tools/lab.py CniLab, under a prefix of this run): N pod
namespaces with one veth each to the node namespace, whose kernel routes them (forwarding
on, a route and proxy ARP per host veth, 10.244.2.1 on lo, no kube-proxy DNAT so no
conntrack), and ztunnel's pod (10.244.2.10) as the sink: its eth0 drops whatever arrives
(iptables raw PREROUTING DROP, no reply traffic), and its rx counter is the measure. The
veth ends keep the kernel's default offloads (the generator's frames are complete, MTU-sized
frames, so offloads change nothing on their way). ztunnel's veth pair has MTU 1600 (1500-byte
frames + 50 bytes of tunnel); the pods' stay at 1500. The node knows ztunnel's MAC (a
permanent neighbour), so no kind waits for ARP.

The generator: dpdk-testpmd txonly over net_af_xdp on the first pod's eth0, UDP from that
pod's address to the VIP 10.96.0.10:9080, `size` bytes, its lcores on CPU 0. The kinds
(KINDS) differ only in what the node does with those frames."""
import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

import yaml

from . import env
from .check import _int
from .env import Proc, log
from .sides import REPO, WithGenerator, Ztgeneve, eal_mem_args

import lab as labtopo  # noqa: E402  tests/tools/lab.py (env put tests/tools on sys.path)

KINDS = [("gen", "generator alone: frames received by the node kernel (ceiling)"),
         ("kernel", "the kernel path: ipset + mangle MARK 0x100 + rule 101 + table 101 via `istioout`, a "
                    "VXLAN device standing in for Geneve (no Geneve module here; both share the kernel's "
                    "UDP-tunnel transmit)"),
         ("ztg-afpacket", "**ztgeneve**, `net_af_packet` on the node ends"),
         ("ztg-afxdp", "**ztgeneve**, `net_af_xdp` on the node ends"),
         ("ztg-xdp", "**ztgeneve**, `attach: xdp` on the node's links")]
METHOD = [
    "Topology: the cni lab (`tests/tools/lab.py` CniLab) in namespaces of this run: N pod namespaces with one "
    "veth each to the node namespace (forwarding on, a /32 route and proxy ARP per host veth, no kube-proxy "
    "DNAT, hence no conntrack), and ztunnel's pod 10.244.2.10 as the sink (iptables raw PREROUTING DROP on its "
    "eth0: no reply traffic); ztunnel's veth pair MTU 1600, the pods' 1500; every veth keeps the kernel's "
    "default offloads (the generator's frames are complete and MTU-sized, so they change nothing).",
    "Generator: `dpdk-testpmd --forward-mode=txonly` over `net_af_xdp` on the first pod's eth0 (both lcores "
    "on CPU 0): one flow of UDP from that pod (10.244.2.3) to 10.96.0.10:9080, `--txpkts` = the frame size; "
    "with 110 pods the other 109 are idle but in the ipset, ztgeneve's table and (`attach: xdp`) its links.",
    "Counted: frames arriving on ztunnel's veth (its eth0's rx), over the window; offered = frames the node "
    "received from the generator (the pod's host veth's rx). ztgeneve: role node, 1 worker on CPU 1 "
    "busy-polling, control on CPU 0, `redirect.protocols: [udp]`; the device kinds open the generating pod's "
    "host veth and ztunnel's (one pods port: DPDK 22.11 allows 32 ports, not 110); `attach: xdp` lists all "
    "pods' host veths. The kernel path runs in the generator's softirq on CPU 0. Checked before measuring "
    "(first pod count and size): 64 frames captured on ztunnel's eth0 are each a tunnel frame VNI 1001, UDP "
    "6081, 10.244.2.1 -> 10.244.2.10 carrying the pod's UDP to the VIP (tshark; Geneve from ztgeneve, VXLAN "
    "from the kernel path).",
    "The kernel path: ipset of the pods, mangle PREROUTING `-p udp -m set --match-set <pods> src -j MARK "
    "0x100/0x100` (the reference marks TCP; the generator sends UDP), `ip rule 101 fwmark 0x100 lookup 101`, "
    "table 101 = ztunnel's /32 on its veth + default via `istioout`; `istioout` is a kernel VXLAN device (VNI "
    "1001, UDP 6081) standing in for Geneve, which this kernel lacks: VXLAN and Geneve share the kernel's "
    "UDP-tunnel transmit (udp_tunnel_xmit_skb), with the same 50 bytes of headers.",
    "The kinds are interleaved, so they compare with each other within a run; a load average of 1 or more "
    "at the start (above) means other work shared the CPUs and the absolute figures are low and noisy."]
ZT_MTU = 1600  # 1500-byte frames + 50 of tunnel; XDP on a veth wants the peer MTU under a page
IPSET = "zperf-pods"
ISTIOOUT = "istioout"


def link_stats(ns, dev):
    """(rx packets, tx packets) of a link."""
    out = env.ns_run(ns, "ip", "-j", "-s", "link", "show", "dev", dev)
    s = json.loads(out)[0]["stats64"]
    return int(s["rx"]["packets"]), int(s["tx"]["packets"])


class Topology:
    """The cni lab with `pods` pods for this run; the first pod carries the generator."""

    def __init__(self, pods):
        self.lab = labtopo.CniLab(prefix=f"zv{os.getpid()}p{pods}-", pods=pods, dnat_to=None, log=log)
        self.gen_pod = next(iter(self.lab.pods))
        self.gen_ns, self.gen_ip = self.lab.ns(self.gen_pod), self.lab.ip(self.gen_pod)
        self.gen_veth = self.lab.host_veth(self.gen_pod)
        self.zt_veth = self.lab.host_veth(self.lab.zt_name)
        self.node, self.zt_ns = self.lab.node_ns, self.lab.zt_ns
        self.pod_ips = [self.lab.ip(p) for p in self.lab.pods]
        self.pod_veths = [self.lab.host_veth(p) for p in self.lab.pods]

    def up(self):
        t0 = time.monotonic()
        self.lab.up()
        lab = self.lab
        env.ns_run(self.node, "ip", "link", "set", self.zt_veth, "mtu", ZT_MTU)
        env.ns_run(self.zt_ns, "ip", "link", "set", "eth0", "mtu", ZT_MTU)
        env.ns_run(self.node, "ip", "neigh", "replace", lab.zt_ip, "lladdr", lab.zt_mac, "dev", self.zt_veth,
                   "nud", "permanent")
        env.ns_run(self.zt_ns, "iptables", "-t", "raw", "-A", "PREROUTING", "-i", "eth0", "-j", "DROP")
        log(f"veth topology: {len(lab.pods)} pods + ztunnel around {self.node} in {time.monotonic() - t0:.1f}s")
        return self

    def down(self):
        self.lab.down()

    def sink(self):
        """Frames that arrived on ztunnel's veth (its eth0's rx)."""
        return link_stats(self.zt_ns, "eth0")[0]

    def offered(self):
        """Frames the node received from the generator (its pod's host veth's rx)."""
        return link_stats(self.node, self.gen_veth)[0]


class VethGenerator:
    """dpdk-testpmd txonly over net_af_xdp on the generating pod's eth0 (CPU 0)."""

    def __init__(self, topo, workdir, size):
        self.topo, self.workdir, self.size = topo, Path(workdir), size
        self.prefix = f"zperf-vgen-{os.getpid()}"
        self.label = "testpmd txonly (net_af_xdp on the pod's eth0)"

    def start(self):
        t = self.topo
        node_mac = labtopo.node_mac(t.lab.octet(t.gen_pod))
        args = ["stdbuf", "-oL", "dpdk-testpmd", "--lcores=0@0,1@0", "--main-lcore", "0", "--file-prefix",
                self.prefix, "--no-pci", "--log-level=*:warning", *eal_mem_args(None, 512),
                "--vdev", "net_af_xdp0,iface=eth0,start_queue=0,queue_count=1", "--",
                "--forward-mode=txonly", f"--tx-ip={t.gen_ip},10.96.0.10", "--tx-udp=40000,9080",
                f"--txpkts={self.size}", f"--eth-peer=0,{node_mac}", "--nb-cores=1",
                "--total-num-mbufs=16384", "--auto-start"]
        self.proc = Proc(t.gen_ns, args, self.workdir, "veth-gen", stdin_pipe=True)
        before = t.offered()
        env.wait_for(lambda: t.offered() > before + 1000, 60, "waiting for the veth generator", self.proc)
        return self

    def stop(self):
        with contextlib.suppress(Exception):
            self.proc.p.stdin.close()
        rc = self.proc.stop()
        env.dpdk_run_dir_cleanup(self.prefix)
        return rc


class GeneratorOnly:
    """Nothing on the node: what the generator gets into the node's kernel."""
    label = "generator alone"

    def __init__(self, topo, workdir, size, **_):
        self.topo = topo

    def start(self):
        return self

    def sample(self):
        n = self.topo.offered()
        return n, n

    def stop(self):
        return 0


class KernelPath:
    """The reference configuration's outbound part in the node namespace: an ipset of the
    pods, mangle PREROUTING MARK 0x100 of their UDP (the protocol the generator sends; the
    reference marks TCP), rule 101 fwmark 0x100 -> table 101 (ztunnel's /32 on its veth, the
    default via istioout). istioout is a VXLAN device (VNI 1001, UDP 6081, 10.244.2.1 ->
    10.244.2.10): this kernel has no Geneve module, and both share the kernel's UDP-tunnel
    transmit (udp_tunnel_xmit_skb)."""
    label = "kernel path (VXLAN istioout)"

    def __init__(self, topo, workdir, size, **_):
        self.topo = topo

    def start(self):
        t, lab = self.topo, self.topo.lab
        n = t.node
        env.ns_run(n, "ipset", "create", IPSET, "hash:ip", "-exist")
        subprocess.run(env.ns_cmd(n, "ipset", "restore", "-exist"), check=True, text=True, capture_output=True,
                       input="".join(f"add {IPSET} {ip}\n" for ip in t.pod_ips))
        env.ns_run(n, "iptables", "-t", "mangle", "-A", "PREROUTING", "-p", "udp", "-m", "set", "--match-set",
                   IPSET, "src", "-j", "MARK", "--set-xmark", "0x100/0x100")
        env.ns_run(n, "ip", "rule", "add", "priority", "101", "fwmark", "0x100/0x100", "lookup", "101")
        env.ns_run(n, "ip", "link", "add", ISTIOOUT, "mtu", ZT_MTU - 50, "type", "vxlan", "id", "1001",
                   "remote", lab.zt_ip, "local", lab.gw_ip, "dstport", "6081", "nolearning")
        env.ns_run(n, "ip", "addr", "add", f"{labtopo.ISTIOOUT_IP}/30", "dev", ISTIOOUT)
        env.ns_run(n, "ip", "link", "set", ISTIOOUT, "up")
        env.ns_run(n, "ip", "neigh", "replace", labtopo.PISTIOOUT_IP, "lladdr", labtopo.PISTIOOUT_MAC, "dev",
                   ISTIOOUT, "nud", "permanent")
        env.ns_run(n, "ip", "route", "add", f"{lab.zt_ip}/32", "dev", t.zt_veth, "scope", "link", "table", "101")
        env.ns_run(n, "ip", "route", "add", "default", "via", labtopo.PISTIOOUT_IP, "dev", ISTIOOUT, "table", "101")
        return self

    def sample(self):
        return self.topo.sink(), self.topo.offered()

    def stop(self):
        n = self.topo.node
        for cmd in (("iptables", "-t", "mangle", "-F", "PREROUTING"), ("ip", "rule", "del", "priority", "101"),
                    ("ip", "route", "flush", "table", "101"), ("ip", "link", "del", ISTIOOUT),
                    ("ipset", "destroy", IPSET)):
            env.ns_run(n, *cmd, check=False)
        return 0


class VethZtgeneve(Ztgeneve):
    """ztgeneve (role node, 1 worker on CPU 1, busy-polling) in the node namespace, every pod
    in its table, redirecting UDP. attach "af_packet" / "af_xdp": attach: device on the
    generating pod's host veth and ztunnel's (DPDK 22.11 has 32 ports: one pods port, not
    one per pod); "xdp": attach: xdp on every pod's host veth and ztunnel's."""

    def __init__(self, topo, workdir, size, attach):  # noqa: D107 - no Devices: the counters are the sink's
        self.ns, self.workdir, self.huge, self.workers = topo.node, Path(workdir), None, 1
        self.prefix = f"zperf-ztg-{os.getpid()}"
        self.pods, self.mtu, self.protocols = topo.pod_ips, ZT_MTU if size > 1464 else None, ["udp"]
        self.topo, self.attach = topo, attach
        self.label = f"ztgeneve {attach}"

    def config(self):
        t = self.topo
        cfg = yaml.safe_load((REPO / "perf" / "configs" / "ztgeneve-node.yaml").read_text())
        cfg["dpdk"].update(workers=1, file_prefix=self.prefix, no_huge=True, mbufs=16384, memory_mb=512)
        if self.attach == "xdp":
            cfg["ports"] = [{"name": "pods", "role": "pods", "attach": "xdp", "links": t.pod_veths},
                            {"name": "ztunnel", "role": "ztunnel", "attach": "xdp", "links": [t.zt_veth]}]
            del cfg["tunnel"]["next_hop_mac"]  # the kernel's neighbour table gives it
        else:
            pmd = "net_af_packet" if self.attach == "af_packet" else "net_af_xdp"
            extra = "" if self.attach == "af_packet" else ",start_queue=0,queue_count=1"
            cfg["ports"] = [{"name": "pods", "role": "pods", "devargs": f"{pmd}0,iface={t.gen_veth}{extra}"},
                            {"name": "ztunnel", "role": "ztunnel", "devargs": f"{pmd}1,iface={t.zt_veth}{extra}",
                             "mac": labtopo.node_mac(labtopo.ZT_OCTET)}]
        cfg["pods"] = self.pods
        cfg.setdefault("limits", {})["pods"] = max(1024, len(self.pods) * 5 // 4)
        if self.mtu:
            cfg["tunnel"]["mtu"] = self.mtu
        cfg["redirect"] = {"protocols": self.protocols}
        path = self.workdir / "ztgeneve-veth.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def start(self):
        self.launch()
        before = self.topo.sink()
        env.wait_for(lambda: self.topo.sink() > before + 1000, 30, "waiting for ztgeneve to reach ztunnel",
                     self.proc)
        return self

    def sample(self):
        return self.topo.sink(), self.topo.offered()


SIDES = {"gen": GeneratorOnly, "kernel": KernelPath,
         "ztg-afpacket": lambda t, w, s: VethZtgeneve(t, w, s, "af_packet"),
         "ztg-afxdp": lambda t, w, s: VethZtgeneve(t, w, s, "af_xdp"),
         "ztg-xdp": lambda t, w, s: VethZtgeneve(t, w, s, "xdp")}


def make(topo, workdir, kind, size):
    side = SIDES[kind](topo, workdir, size)
    return WithGenerator(side, VethGenerator(topo, workdir, size), label=side.label)


def check(topo, workdir, kind, size, frames=64):
    """Problems (empty = correct) of what reaches ztunnel's veth with this kind: `frames`
    frames captured there must all be the generator's UDP to the VIP in a tunnel VNI 1001,
    UDP 6081, 10.244.2.1 -> 10.244.2.10: Geneve from ztgeneve, VXLAN from the kernel path."""
    if kind == "gen":
        return []
    cap = Path(workdir) / f"veth-check-{kind}-{len(topo.pod_ips)}p-{size}.pcap"
    side = make(topo, workdir, kind, size)
    try:
        side.start()
        env.ns_run(topo.zt_ns, "timeout", "20", "tcpdump", "-i", "eth0", "-c", frames, "-w", cap, "udp", timeout=30)
    finally:
        side.stop()
    vxlan = kind == "kernel"
    fields = ["vxlan.vni" if vxlan else "geneve.vni", "ip.src", "ip.dst", "udp.dstport", "frame.len"]
    out = subprocess.run(["tshark", "-r", str(cap), *(["-d", "udp.port==6081,vxlan"] if vxlan else []), "-T",
                          "fields", "-E", "occurrence=a", *sum((["-e", f] for f in fields), [])],
                         capture_output=True, text=True, check=True).stdout
    rows = [dict(zip(fields, line.split("\t"))) for line in out.splitlines() if line.strip()]
    lab = topo.lab
    want = [lab.gw_ip, topo.gen_ip], [lab.zt_ip, "10.96.0.10"]
    bad = [r for r in rows if not (
        _int(r[fields[0]]) == 1001 and r["ip.src"].split(",") == want[0]
        and r["ip.dst"].split(",") == want[1] and r["udp.dstport"] == "6081,9080"
        and _int(r["frame.len"]) == size + 50)]
    probs = []
    if len(rows) < frames:
        probs.append(f"{len(rows)} frames captured on ztunnel's veth, expected {frames}")
    if bad:
        probs.append(f"{len(bad)} of {len(rows)} frames at ztunnel's veth are not "
                     f"{'VXLAN' if vxlan else 'Geneve'} VNI 1001 {want[0][0]} -> {want[1][0]} UDP 6081 carrying "
                     f"{topo.gen_ip} -> 10.96.0.10:9080 of {size} + 50 bytes; first: {bad[0]}")
    log(f"check veth {kind} ({len(topo.pod_ips)} pods, {size} B): {len(rows) - len(bad)}/{len(rows)} "
        f"{'VXLAN' if vxlan else 'Geneve'} VNI 1001 to ztunnel" + (f": FAILED: {probs}" if probs else ""))
    return probs

