"""A small, self-contained copy of the lab (scripts/lab) under a namespace prefix of its own,
for tests that disturb ztgeneve (signals, kills, link faults, floods) without touching the
session lab (ztg-*).

    lab = MiniLab("ztf-", pods={"pp": 3, "ra": 2, "lg": 20}, meshed=["pp", "ra"])
    lab.up()                                # namespaces, veths, node forwarding
    z = lab.start_node(lab.node_config())   # ztgeneve role node in <prefix>node, twins addressed
    ...
    lab.down()                              # kills what runs in the namespaces, deletes them

Namespaces: <prefix>node (ztgeneve node, twins t-<pod>, 10.244.2.1), <prefix><pod> for each
pod (eth0 = 10.244.2.<octet>, MAC 02:00:00:00:02:<octet>, node end v-<pod>), and
<prefix>zt, ztunnel's pod (10.244.2.10), whose link is v-ztunnel on the node side and:

  endpoint=False: a plain kernel veth end eth0 with 10.244.2.10 (the node resolves it by ARP;
                  Geneve frames arriving there are only counted by the kernel);
  endpoint=True:  the veth end ztlink, owned by a ztgeneve role endpoint which makes the
                  taps eth0 (10.244.2.10) and pistioout (192.168.127.2/30, TPROXY to the
                  transparent listener on 127.0.0.1:15001), as in scripts/lab.

Everything lives in the prefix's namespaces; nothing is configured in the root namespace.
"""
import os
import subprocess
import time

import netns
from tproxy_listener import ListenerProcess
from ztgeneve import Ztgeneve

GW_IP = "10.244.2.1"
ZT_IP = "10.244.2.10"
ZT_MAC = "02:00:00:00:02:0a"
VIP = "10.96.0.10"
ISTIOOUT_IP = "192.168.127.1"
ISTIOOUT_MAC = "02:00:00:00:7f:01"
PISTIOOUT_MAC = "02:00:00:00:7f:02"
LISTENER_PORT = 15001
TUNNEL_MTU = 1450


def pod_mac(octet):
    return f"02:00:00:00:02:{octet:02x}"


def twin_mac(octet):
    return f"02:00:00:00:01:{octet:02x}"


def sh(ns, cmd, check=True, timeout=60):
    r = subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", cmd], capture_output=True,
                       text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"[{ns}] {cmd}: rc {r.returncode}: {r.stderr}")
    return r.stdout


def links(ns):
    r = subprocess.run(["ip", "-n", ns, "-o", "link", "show"], capture_output=True, text=True)
    return {l.split(":")[1].strip().split("@")[0] for l in r.stdout.splitlines() if ":" in l}


def wait(pred, timeout, step=0.05):
    """Polls pred until true or timeout; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


class MiniLab:
    def __init__(self, prefix, pods, meshed, endpoint=False, log_dir="/tmp",
                 binary=None):
        self.prefix = prefix
        self.pods = dict(pods)          # name -> last octet of 10.244.2.x
        self.meshed = list(meshed)
        self.endpoint = endpoint
        self.log_dir = log_dir
        self.binary = str(binary)
        self.node_ns = f"{prefix}node"
        self.zt_ns = f"{prefix}zt"
        self.node_prefix = f"{prefix}node"   # DPDK file prefixes
        self.ep_prefix = f"{prefix}ep"
        self.zt_link = "ztlink" if endpoint else "eth0"
        self.z = None
        self.ep = None
        self.listener = None
        self.servers = []

    # ------------------------------------------------------------ names
    def ns(self, pod):
        return self.zt_ns if pod == "zt" else f"{self.prefix}{pod}"

    def ip(self, pod):
        return ZT_IP if pod == "zt" else f"10.244.2.{self.pods[pod]}"

    def namespaces(self):
        return [self.node_ns, self.zt_ns] + [self.ns(p) for p in self.pods]

    # ------------------------------------------------------------ topology
    def down(self):
        """Kills whatever runs in the namespaces (SIGTERM, then SIGKILL) and deletes them."""
        for proc in (self.listener,):
            if proc:
                proc.stop()
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
        existing = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
        nss = [n for n in self.namespaces() if n in existing]
        for sig in ("-TERM", "-KILL"):
            for n in nss:
                pids = subprocess.run(["ip", "netns", "pids", n], capture_output=True,
                                      text=True).stdout.split()
                for p in pids:
                    subprocess.run(["kill", sig, p], capture_output=True)
            if sig == "-TERM":
                wait(lambda: not any(subprocess.run(["ip", "netns", "pids", n], capture_output=True,
                                                    text=True).stdout.split() for n in nss), 5)
        for n in nss:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)

    def up(self):
        self.down()
        for n in self.namespaces():
            subprocess.run(["ip", "netns", "add", n], check=True)
            sh(n, "ip link set lo up; sysctl -qw net.ipv6.conf.all.disable_ipv6=1 "
                  "net.ipv6.conf.default.disable_ipv6=1 net.ipv4.conf.all.rp_filter=0 "
                  "net.ipv4.conf.default.rp_filter=0")
        sh(self.node_ns, "sysctl -qw net.ipv4.ip_forward=1")
        for pod, o in self.pods.items():
            v = f"v-{pod}"
            subprocess.run(["ip", "-n", self.node_ns, "link", "add", v, "type", "veth", "peer",
                            "name", "eth0", "netns", self.ns(pod)], check=True)
            self._node_end(v, o)
            sh(self.ns(pod), f"ip link set eth0 address {pod_mac(o)} mtu 1500; "
                             f"ethtool -K eth0 tx off rx off tso off gso off gro off >/dev/null 2>&1 || true; "
                             f"ip addr add {self.ip(pod)}/32 dev eth0; ip link set eth0 up; "
                             f"ip route add {GW_IP} dev eth0 scope link; "
                             f"ip route add default via {GW_IP} dev eth0")
        subprocess.run(["ip", "-n", self.node_ns, "link", "add", "v-ztunnel", "type", "veth",
                        "peer", "name", self.zt_link, "netns", self.zt_ns], check=True)
        self._node_end("v-ztunnel", 10)
        off = "ethtool -K {d} tx off rx off tso off gso off gro off >/dev/null 2>&1 || true"
        if self.endpoint:
            sh(self.zt_ns, f"ip link set ztlink address {ZT_MAC} mtu 1500 arp off; {off.format(d='ztlink')}; "
                           f"ip link set ztlink up; sysctl -qw net.ipv4.conf.ztlink.forwarding=0; "
                           f"iptables -w -t mangle -A PREROUTING -i pistioout -p tcp -j TPROXY "
                           f"--on-port {LISTENER_PORT} --on-ip 127.0.0.1 --tproxy-mark 0x400/0xfff; "
                           f"ip rule add priority 20000 fwmark 0x400/0xfff lookup 100; "
                           f"ip route replace local 0.0.0.0/0 dev lo table 100; "
                           f"ip rule add priority 20001 fwmark 0x401/0xfff lookup 101")
        else:
            sh(self.zt_ns, f"ip link set eth0 address {ZT_MAC} mtu 1500; {off.format(d='eth0')}; "
                           f"ip addr add {ZT_IP}/32 dev eth0; ip link set eth0 up; "
                           f"ip route add {GW_IP} dev eth0 scope link; "
                           f"ip route add default via {GW_IP} dev eth0")
        return self

    def _node_end(self, v, octet):
        sh(self.node_ns, f"ip link set {v} address 02:00:00:00:03:{octet:02x} mtu 1500 arp off; "
                         f"ethtool -K {v} tx off rx off tso off gso off gro off >/dev/null 2>&1 || true; "
                         f"ip link set {v} up; sysctl -qw net.ipv4.conf.{v}.forwarding=0")

    # ------------------------------------------------------------ configs
    def node_config(self, path, pods=None, mbufs=None, arp_refresh_ms=None, next_hop_mac="arp",
                    idle_sleep_us=100, ports=None, protocols=None, too_big=None):
        """Writes a node config to path; ports: the pod ports (default all pods)."""
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
        lines.append("  - {name: ztunnel, role: ztunnel, devargs: \"net_af_packet_zt,iface=v-ztunnel\", "
                     f"twin: \"net_tap_zt,iface=t-ztunnel,mac={twin_mac(10)}\"}}")
        lines.append(f"tunnel: {{local_ip: {GW_IP}, remote_ip: {ZT_IP}, next_hop_mac: \"{next_hop_mac}\", "
                     f"inner_src_mac: \"{ISTIOOUT_MAC}\", inner_dst_mac: \"{PISTIOOUT_MAC}\""
                     + (f", arp_refresh_ms: {arp_refresh_ms}" if arp_refresh_ms else "")
                     + (f", too_big: {too_big}" if too_big else "") + "}")
        lines.append("pods: [" + ", ".join(self.ip(p) for p in pods) + "]")
        if protocols:
            lines.append("redirect: {protocols: [" + ", ".join(protocols) + "]}")
        lines.append("log: {level: info}")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.node_ports = ports
        return path

    def endpoint_config(self, path, twin_mac_=ZT_MAC):
        text = f"""role: endpoint
dpdk: {{workers: 1, memory_mb: 128, no_huge: true, file_prefix: {self.ep_prefix}, idle_sleep_us: 100}}
ports:
  - {{name: uplink, role: uplink, devargs: "net_af_packet_up,iface=ztlink", twin: "net_tap_eth0,iface=eth0,mac={twin_mac_}"}}
  - {{name: pistioout, role: tunnel, vni: 1001, devargs: "net_tap_pout,iface=pistioout,mac={PISTIOOUT_MAC}"}}
tunnel: {{udp_port: 6081, local_ip: {ZT_IP}, remote_ip: {GW_IP}, next_hop_mac: arp, mtu: 1500}}
log: {{level: info}}
"""
        with open(path, "w") as f:
            f.write(text)
        return path

    # ------------------------------------------------------------ instances
    def node(self, config, name="node"):
        d = os.path.join(self.log_dir, name)
        os.makedirs(d, exist_ok=True)
        ports = getattr(self, "node_ports", list(self.pods))
        return Ztgeneve(self.binary, config, ns=self.node_ns, log_dir=d,
                        taps=[f"t-{p}" for p in ports] + ["t-ztunnel"])

    def start_node(self, config, name="node", timeout=30):
        """Starts a node instance, waits for it and addresses its twins as scripts/lab twins."""
        self.z = self.node(config, name).start(timeout=timeout)
        self.address_twins()
        return self.z

    def address_twins(self, ports=None):
        ports = getattr(self, "node_ports", list(self.pods)) if ports is None else ports
        cmds = []
        for pod in list(ports) + ["ztunnel"]:
            t, ip = f"t-{pod}", (ZT_IP if pod == "ztunnel" else self.ip(pod))
            cmds.append(f"sysctl -qw net.ipv6.conf.{t}.disable_ipv6=1 net.ipv4.conf.{t}.rp_filter=0 "
                        f">/dev/null 2>&1; ip addr replace {GW_IP}/32 dev {t}; ip link set {t} up; "
                        f"ip route replace {ip}/32 dev {t}")
        sh(self.node_ns, "; ".join(cmds))

    def start_endpoint(self, config, name="endpoint", timeout=30):
        d = os.path.join(self.log_dir, name)
        os.makedirs(d, exist_ok=True)
        self.ep = Ztgeneve(self.binary, config, ns=self.zt_ns, log_dir=d,
                           taps=["eth0", "pistioout"]).start(timeout=timeout)
        sh(self.zt_ns, "for t in eth0 pistioout; do sysctl -qw net.ipv6.conf.$t.disable_ipv6=1 "
                       "net.ipv4.conf.$t.rp_filter=0; done; "
                       f"ip addr replace {ZT_IP}/32 dev eth0; ip link set eth0 up; "
                       f"ip route replace {GW_IP} dev eth0 scope link; "
                       f"ip route replace default via {GW_IP} dev eth0; "
                       f"ip link set pistioout mtu {TUNNEL_MTU}; "
                       f"ip addr replace 192.168.127.2/30 dev pistioout; ip link set pistioout up; "
                       f"ip route replace default via {ISTIOOUT_IP} dev pistioout table 101")
        return self.ep

    def start_listener(self):
        self.listener = ListenerProcess(self.zt_ns, os.path.join(self.log_dir, "listener.log"),
                                        port=LISTENER_PORT).start()
        return self.listener

    def start_server(self, ns, addr, port):
        """A plain echo server (the listener's protocol: one line, then echo) at addr:port."""
        tool = os.path.join(netns.TOOLS, "tproxy_listener.py")
        p = subprocess.Popen(netns.ns_cmd(ns, netns.PY, tool, "--addr", addr, "--port", port,
                                          "--mark", "0", "--log",
                                          os.path.join(self.log_dir, f"server-{ns}-{port}.log")),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL)
        line = p.stdout.readline()
        if not line.startswith("listening"):
            raise RuntimeError(f"echo server in {ns} did not start: {line!r} {p.stderr.read()}")
        self.servers.append(p)
        return p

    # ------------------------------------------------------------ traffic
    def ping(self, pod, dst=GW_IP, count=1, timeout=2):
        r = subprocess.run(netns.ns_cmd(self.ns(pod), "ping", "-n", "-q", "-c", count, "-i", "0.2",
                                        "-W", timeout, dst), capture_output=True, text=True,
                           timeout=timeout * count + 10)
        return r.returncode == 0

    def flow(self, pod, count, pps, dport=9080, sport=45000, dst=VIP, background=False):
        """count raw TCP frames of one flow from pod (tests/kernel/flow.py, AF_PACKET)."""
        tool = os.path.join(os.path.dirname(netns.TOOLS), "kernel", "flow.py")
        args = netns.ns_cmd(self.ns(pod), netns.PY, tool, "--src", self.ip(pod), "--dst", dst,
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

RX_VERDICTS = ("redirect", "direct", "pass", "fragmented", "decap", "tunnel_arp_reply")


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
    Ports: rx = redirect + direct + pass + fragmented + decap + tunnel_arp_reply + drop_* + decap_*;
    twins (<port>.twin): rx = pass."""
    bad = []
    for dev, c in counters["ports"].items():
        rx = int(c.get("rx", 0))
        acc = int(c.get("pass", 0)) if dev.endswith(".twin") else rx_accounted(c)
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
