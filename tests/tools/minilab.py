"""A small lab (tests/tools/lab.py's NodeLab) under a namespace prefix of its own, with the
ztgeneve instances, listener and servers of a test, for tests that disturb ztgeneve (signals,
kills, link faults, floods) without touching the session lab (ztg-*).

    lab = MiniLab("ztf-", pods={"pp": 3, "ra": 2, "lg": 20}, meshed=["pp", "ra"])
    lab.up()                                # namespaces, veths, node forwarding (fresh)
    z = lab.start_node(lab.node_config())   # ztgeneve role node in <prefix>node, twins addressed
    ...
    lab.down()                              # stops what it started, removes the namespaces

ztunnel's pod is <prefix>zt (lab.ns("zt")); no kube-proxy DNAT. endpoint=False: its link is a
plain kernel eth0 (Geneve frames arriving there are only counted by the kernel); endpoint=True:
the veth end ztlink, owned by a ztgeneve role endpoint (start_endpoint) whose taps eth0 and
pistioout lead to the transparent listener (start_listener), as in scripts/lab. Inbound:
node_config(inbound=True) and endpoint_config(inbound=True) add istioin and the tap pistioin,
start_listener(inbound=True) the relaying listener on 15006, client_up() a client outside the
node.
"""
import os
import subprocess
import tempfile
from pathlib import Path

import netns
# (GW_IP, VIP, ZT_MAC, links, sh, wait: the tests use them as minilab's)
from lab import (GW_IP, INBOUND_MARK, INBOUND_PORT, ISTIOIN_MAC, ISTIOOUT_IP, ISTIOOUT_MAC,  # noqa: F401
                 LISTENER_PORT, PISTIOIN_MAC, PISTIOOUT_MAC, TUNNEL_MTU, VIP, ZT_IP, ZT_MAC, ZT_OCTET, pod_mac,
                 NodeLab, links, sh, twin_mac, wait)
from tproxy_listener import ListenerGroup, ListenerProcess
from ztgeneve import Ztgeneve


class MiniLab(NodeLab):
    @classmethod
    def for_module(cls, request, prefix, pods, meshed, name, **kw):
        """The lab of one pytest module (request: its fixture's): skipped without root, its
        logs in a fresh /tmp/ztg-e2e-<name>-*, ZTG_BINARY's ztgeneve (else build/'s), taken
        down when the module ends (also on failure). Not yet up."""
        import pytest
        if os.geteuid() != 0:
            pytest.skip("needs root (network namespaces)")
        repo = Path(__file__).resolve().parents[2]
        binary = Path(os.environ.get("ZTG_BINARY", repo / "build" / "ztgeneve"))
        t = cls(prefix, pods, meshed, log_dir=tempfile.mkdtemp(prefix=f"ztg-e2e-{name}-"),
                binary=binary, **kw)
        request.addfinalizer(t.down)
        return t

    def __init__(self, prefix, pods, meshed, endpoint=False, log_dir="/tmp", binary=None,
                 offloads=False):
        super().__init__(prefix, pods=pods, zt_name="zt", endpoint=endpoint, dnat_to=None,
                         offloads=offloads)
        self.meshed = list(meshed)
        self.log_dir = log_dir
        self.binary = str(binary)
        self.node_prefix = f"{prefix}node"   # DPDK file prefixes
        self.ep_prefix = f"{prefix}ep"
        self.z = None
        self.ep = None
        self.listener = None
        self.inbound_listener = None
        self.servers = []
        self.node_ports = list(self.pods)    # the pod ports of the last node_config
        self.ep_taps = ["eth0", "pistioout"]  # the taps of the last endpoint_config

    # ------------------------------------------------------------ topology
    def down(self):
        """Stops what this lab started, then kills whatever else runs in its namespaces
        (SIGTERM, then SIGKILL) and deletes them."""
        for lp in (self.listener, self.inbound_listener):
            if lp:
                lp.stop()
        for s in self.servers:
            if s.poll() is None:
                s.terminate()
                try:
                    s.wait(5)
                except subprocess.TimeoutExpired:
                    s.kill()
        for z in (self.ep, self.z):
            if z and z.running():
                z.stop(timeout=10)
        return super().down()

    def up(self):
        """A fresh topology: whatever an earlier run left is removed first."""
        self.down()
        return super().up()

    # ------------------------------------------------------------ configs
    def node_config(self, path, pods=None, mbufs=None, arp_refresh_ms=None, next_hop_mac="arp",
                    idle_sleep_us=100, ports=None, protocols=None, too_big=None, inbound=False,
                    flows=None, metrics=None, ring_frames=None, dns_capture=False):
        """Writes a node config to path; ports: the pod ports (default all pods); inbound: with
        the inbound section (istioin, VNI 1000), flows: its `flows` ({max, idle_timeout_s,
        closing_timeout_s}), dns_capture: its dns_capture on; metrics: metrics.listen
        (ADDR:PORT in the node's namespace); ring_frames: the ztunnel port's af_packet ring
        (framecnt; DPDK's default 512)."""
        ports = list(self.pods) if ports is None else ports
        pods = self.meshed if pods is None else pods
        lines = ["role: node",
                 f"dpdk: {{workers: 1, memory_mb: 256, no_huge: true, file_prefix: {self.node_prefix}, "
                 f"idle_sleep_us: {idle_sleep_us}" + (f", mbufs: {mbufs}" if mbufs else "") + "}",
                 "ports:"]
        for i, pod in enumerate(ports):
            o = self.pods[pod]
            lines.append(f"  - {{name: {pod}, role: pods, devargs: \"net_af_packet_{i},iface=v-{pod}\", "
                         f"twin: \"net_tap_{i},iface=t-{pod},mac={twin_mac(o)}\"}}")
        ring = f",framecnt={ring_frames}" if ring_frames else ""
        lines.append(f"  - {{name: ztunnel, role: ztunnel, devargs: \"net_af_packet_zt,iface=v-ztunnel{ring}\", "
                     f"twin: \"net_tap_zt,iface=t-ztunnel,mac={twin_mac(ZT_OCTET)}\"}}")
        lines.append(f"tunnel: {{local_ip: {self.gw_ip}, remote_ip: {self.zt_ip}, next_hop_mac: \"{next_hop_mac}\", "
                     f"inner_src_mac: \"{ISTIOOUT_MAC}\", inner_dst_mac: \"{PISTIOOUT_MAC}\""
                     + (f", arp_refresh_ms: {arp_refresh_ms}" if arp_refresh_ms else "")
                     + (f", too_big: {too_big}" if too_big else "") + "}")
        lines.append("pods: [" + ", ".join(self.ip(p) for p in pods) + "]")
        if protocols:
            lines.append("redirect: {protocols: [" + ", ".join(protocols) + "]}")
        if inbound:
            fl = ", flows: {" + ", ".join(f"{k}: {v}" for k, v in flows.items()) + "}" if flows else ""
            dns = ", dns_capture: true" if dns_capture else ""
            lines.append(f"inbound: {{inner_src_mac: \"{ISTIOIN_MAC}\", inner_dst_mac: \"{PISTIOIN_MAC}\"{fl}{dns}}}")
        if metrics:
            lines.append(f"metrics: {{listen: \"{metrics}\"}}")
        lines.append("log: {level: info}")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.node_ports = list(ports)
        return path

    def endpoint_config(self, path, twin_mac_=ZT_MAC, inbound=False, ring_frames=None):
        """Writes an endpoint config to path: the uplink and the tap pistioout (VNI 1001), and
        with inbound pistioin (VNI 1000) too; ring_frames: the uplink's af_packet ring
        (framecnt; DPDK's default 512), for bursts of thousands of connections."""
        ring = f",framecnt={ring_frames}" if ring_frames else ""
        pin = f"""  - {{name: pistioin, role: tunnel, vni: 1000, devargs: "net_tap_pin,iface=pistioin,mac={PISTIOIN_MAC}"}}
""" if inbound else ""
        text = f"""role: endpoint
dpdk: {{workers: 1, memory_mb: 128, no_huge: true, file_prefix: {self.ep_prefix}, idle_sleep_us: 100}}
ports:
  - {{name: uplink, role: uplink, devargs: "net_af_packet_up,iface=ztlink{ring}", twin: "net_tap_eth0,iface=eth0,mac={twin_mac_}"}}
  - {{name: pistioout, role: tunnel, vni: 1001, devargs: "net_tap_pout,iface=pistioout,mac={PISTIOOUT_MAC}"}}
{pin}tunnel: {{udp_port: 6081, local_ip: {self.zt_ip}, remote_ip: {self.gw_ip}, next_hop_mac: arp, mtu: 1500}}
log: {{level: info}}
"""
        self.ep_taps = ["eth0", "pistioout"] + (["pistioin"] if inbound else [])
        with open(path, "w") as f:
            f.write(text)
        return path

    # ------------------------------------------------------------ instances
    def node(self, config, name="node"):
        d = os.path.join(self.log_dir, name)
        os.makedirs(d, exist_ok=True)
        return Ztgeneve(self.binary, config, ns=self.node_ns, log_dir=d, taps=self.twins(self.node_ports))

    def start_node(self, config, name="node", timeout=30):
        """Starts a node instance, waits for it and addresses its twins as scripts/lab twins."""
        self.z = self.node(config, name).start(timeout=timeout)
        self.address_twins()
        return self.z

    def address_twins(self, ports=None, wait_s=0):
        """As NodeLab's, for the pod ports of the last node_config by default."""
        return super().address_twins(self.node_ports if ports is None else ports, wait_s)

    def start_endpoint(self, config, name="endpoint", timeout=30):
        """Starts an endpoint instance in ztunnel's pod and addresses its taps."""
        d = os.path.join(self.log_dir, name)
        os.makedirs(d, exist_ok=True)
        self.ep = Ztgeneve(self.binary, config, ns=self.zt_ns, log_dir=d,
                           taps=self.ep_taps).start(timeout=timeout)
        self.address_endpoint_taps()
        return self.ep

    def start_listener(self, inbound=False, many=False, connect_timeout=None, name="listener-inbound",
                       relays=1):
        """ztunnel's stand-in: the outbound listener on 15001, or with inbound the relaying
        one on 15006 (mark INBOUND_MARK; many: its asyncio loop, connect_timeout: how long it
        waits for the pod; relays > 1: that many on the port, SO_REUSEPORT, read as one).
        Stopped by down()."""
        if inbound:
            def one(log):
                return ListenerProcess(self.zt_ns, os.path.join(self.log_dir, log), port=INBOUND_PORT,
                                       mark=INBOUND_MARK, relay=True, many=many,
                                       connect_timeout=connect_timeout, reuseport=relays > 1)
            lp = one(f"{name}.log").start() if relays == 1 else \
                ListenerGroup([one(f"{name}-{i}.log") for i in range(relays)]).start()
            self.inbound_listener = lp
            return lp
        self.listener = ListenerProcess(self.zt_ns, os.path.join(self.log_dir, "listener.log"),
                                        port=LISTENER_PORT).start()
        return self.listener

    def start_server(self, ns, addr, port, many=False, servers=1):
        """A plain echo server (the listener's protocol: one line, then echo) at addr:port;
        many: its asyncio loop, for thousands of connections; servers > 1: that many on the
        port (SO_REUSEPORT), each within its own file limit. Returns the first."""
        tool = os.path.join(netns.TOOLS, "tproxy_listener.py")
        started = []
        for i in range(servers):
            log = os.path.join(self.log_dir, f"server-{ns}-{port}" + (f"-{i}" if servers > 1 else "") + ".log")
            p = subprocess.Popen(netns.ns_cmd(ns, netns.PY, tool, "--addr", addr, "--port", port,
                                              "--mark", "0", "--log", log, *(["--many"] if many else []),
                                              *(["--reuseport"] if servers > 1 else [])),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 stdin=subprocess.DEVNULL)
            self.servers.append(p)
            line = p.stdout.readline()
            if not line.startswith("listening"):
                raise RuntimeError(f"echo server in {ns} did not start: {line!r} {p.stderr.read()}")
            started.append(p)
        return started[0]

    def inbound_up(self, server_port, many=False, ring_frames=None, relays=1, servers=1, **node_kw):
        """The inbound lab of tests/e2e/test_e2e_inbound*.py, fresh: the client outside the
        node, the node with the inbound section (node_kw: node_config's), the endpoint with
        pistioin (ring_frames: both instances' af_packet rings on ztunnel's link), the
        relaying stand-in on 15006 (relays: start_listener's) and an echo server on
        pp:server_port (many: both asyncio loops; servers: start_server's); every pod and ztunnel has sent first (its ARP for the gateway,
        as a pod does), so the node knows where it is."""
        self.up()
        self.client_up()
        self.start_node(self.node_config(os.path.join(self.log_dir, "node.yaml"), inbound=True,
                                         ring_frames=ring_frames, **node_kw))
        self.start_endpoint(self.endpoint_config(os.path.join(self.log_dir, "endpoint.yaml"), inbound=True,
                                                 ring_frames=ring_frames))
        self.start_listener(inbound=True, many=many, relays=relays)
        self.start_server(self.ns("pp"), "0.0.0.0", server_port, many=many, servers=servers)
        self.ping_all()
        return self

    # ------------------------------------------------------------ traffic
    def ping_all(self):
        """Every pod and ztunnel pings the gateway: the node learns where each is."""
        for p in self.pods:
            self.ping(p)
        self.ping(self.zt_name)

    def ping(self, pod, dst=None, count=1, timeout=2):
        r = subprocess.run(netns.ns_cmd(self.ns(pod), "ping", "-n", "-q", "-c", count, "-i", "0.2",
                                        "-W", timeout, dst or self.gw_ip), capture_output=True, text=True,
                           timeout=timeout * count + 10)
        return r.returncode == 0

    def flow(self, pod, count, pps, dport=9080, sport=45000, dst=None, background=False):
        """count raw TCP frames of one flow from pod (tests/kernel/flow.py, AF_PACKET)."""
        tool = os.path.join(os.path.dirname(netns.TOOLS), "kernel", "flow.py")
        args = netns.ns_cmd(self.ns(pod), netns.PY, tool, "--src", self.ip(pod), "--dst", dst or self.vip,
                            "--dport", dport, "--sport", sport, "--dst-mac",
                            twin_mac(self.pods[pod]), "--count", count, "--pps", pps)
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if background:
            return p
        out, err = p.communicate(timeout=60)
        if p.returncode != 0:
            raise RuntimeError(f"flow.py in {self.ns(pod)}: {err}")
        return int(out.strip())


# ---------------------------------------------------------------- accounting

RX_VERDICTS = ("redirect", "direct", "pass", "fragmented", "decap", "tunnel_arp_reply",
               "inbound", "skip_ztunnel", "skip_udp", "skip_host", "skip_proxied", "proxied",
               "proxied_kernel", "proxy_return", "dns_capture", "dns_answer", "dns_no_entry", "dns_flow_full")
TWIN_VERDICTS = ("pass", "inbound", "skip_ztunnel", "skip_udp", "skip_host", "skip_proxied")


def rx_accounted(c):
    """What a device's counters say became of the frames it received: every verdict, every
    decap_* and every drop_* except drop_tx_full (which a device counts for frames it could
    not send: they were counted already under the verdict of the device they came from) and
    drop_kernel_ring (frames the kernel's af_packet ring lost: never received)."""
    return sum(int(c.get(k, 0)) for k in RX_VERDICTS) + sum(
        int(v) for k, v in c.items()
        if (k.startswith("drop_") and k not in ("drop_tx_full", "drop_kernel_ring")) or k.startswith("decap_"))


def unbalanced(counters):
    """Devices whose rx is not accounted for: [(device, rx, accounted, counters)].
    Ports: rx = redirect + direct + pass + fragmented + decap + tunnel_arp_reply + the inbound
    verdicts + drop_* + decap_*; twins (<port>.twin): rx = pass (a pods port's twin with
    inbound on: pass + inbound + skip_* + drop_*)."""
    bad = []
    for dev, c in counters["ports"].items():
        rx = int(c.get("rx", 0))
        acc = sum(int(c.get(k, 0)) for k in TWIN_VERDICTS) + sum(
            int(v) for k, v in c.items() if k.startswith("drop_") and k not in ("drop_tx_full", "drop_kernel_ring")) \
            if dev.endswith(".twin") else rx_accounted(c)
        if rx != acc or (dev.endswith(".twin") and rx_accounted(c) != acc):
            bad.append((dev, rx, acc, {k: v for k, v in c.items() if v}))
    return bad


def node_tx_unbalanced(counters, pod_ports):
    """The node's transmit side: every frame a verdict sent somewhere left that device or was
    counted there as drop_tx_full. Returns a list of (what, sent + dropped, expected)."""
    p = counters["ports"]

    def g(dev, k):
        return int(p[dev].get(k, 0))

    out = []
    for port in pod_ports:  # a twin's frames go out of its port, the port's passes into the twin
        tw = f"{port}.twin"
        if g(tw, "tx") + g(tw, "drop_tx_full") != g(port, "pass"):
            out.append((tw, g(tw, "tx") + g(tw, "drop_tx_full"), g(port, "pass")))
    tw = "ztunnel.twin"
    exp = g("ztunnel", "pass") + g("ztunnel", "decap_unknown_pod")
    if g(tw, "tx") + g(tw, "drop_tx_full") != exp:
        out.append((tw, g(tw, "tx") + g(tw, "drop_tx_full"), exp))
    exp = sum(g(x, "redirect") + g(x, "direct") + g(x, "fragments") for x in pod_ports) + g("ztunnel.twin", "pass") \
        + g("ztunnel", "arp_sent") + g("ztunnel", "tunnel_arp_reply")
    got = g("ztunnel", "tx") + g("ztunnel", "drop_tx_full")
    if got != exp:
        out.append(("ztunnel", got, exp))
    exp = sum(g(f"{x}.twin", "pass") for x in pod_ports) + g("ztunnel", "decap") \
        + sum(g(x, "icmp_frag_needed") for x in pod_ports)
    got = sum(g(x, "tx") + g(x, "drop_tx_full") for x in pod_ports)
    if got != exp:
        out.append(("pod ports", got, exp))
    return out


def veth_rx(ns, iface):
    """The kernel's rx_packets of a link (what the kernel delivered to it, before any socket)."""
    return int(sh(ns, f"cat /sys/class/net/{iface}/statistics/rx_packets"))


def veth_tx(ns, iface):
    return int(sh(ns, f"cat /sys/class/net/{iface}/statistics/tx_packets"))


def flood(lab, pod, seconds, proto="tcp", dst=VIP, size=64):
    """Starts tests/tools/flood.py in pod's namespace; returns the Popen (stdout: frames sent)."""
    tool = os.path.join(netns.TOOLS, "flood.py")
    return subprocess.Popen(netns.ns_cmd(lab.ns(pod), netns.PY, tool, "--src", lab.ip(pod),
                                         "--dst", dst, "--dst-mac", twin_mac(lab.pods[pod]),
                                         "--proto", proto, "--seconds", seconds, "--size", size),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
