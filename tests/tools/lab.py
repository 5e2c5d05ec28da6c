#!/usr/bin/env python3
"""The lab: the article's node and its pods, each in a network namespace. The one
implementation behind scripts/lab (main() below) and the tests' own labs (minilab.py, under
namespace prefixes of their own).

    lab = NodeLab()                  # the session lab of scripts/lab: ztg-*, pods SESSION_PODS
    lab.up()                         # namespaces, veths, node routing, kube-proxy DNAT, TPROXY
    ...                              # ztgeneve (role node) runs in lab.node_ns
    lab.address_twins(wait_s=20)     # its kernel twins get the gateway address and pod routes
    ...                              # ztgeneve (role endpoint) runs in lab.zt_ns
    lab.address_endpoint_taps()      # its taps eth0, pistioout (and pistioin) get ztunnel's addresses
    lab.down()                       # kills what runs in <prefix>* namespaces, deletes them

Namespaces, for a prefix P, pods {name: last octet} in the subnet S (10.244.2) and ztunnel's
pod named Z ("ztunnel" in scripts/lab):

  P<pod>  eth0: S.<octet>/32, MAC 02:00:00:00:02:<octet>, default route via the gateway S.1;
  Pnode   the node: v-<pod> and v-ztunnel, the node's ends of the pods' veths (MAC
          02:00:00:00:03:<octet>, no address, arp off, forwarding off: ztgeneve opens them
          with net_af_packet, the kernel ignores them); ztgeneve's kernel twins t-<pod> and
          t-ztunnel get S.1/32 and the pod routes (address_twins); IP forwarding on, no
          default route; with dnat_to, kube-proxy's DNAT of the VIP;
  PZ      ztunnel's pod (S.10), whose link is v-ztunnel on the node's side and
            endpoint=True:  the veth end ztlink, owned by a ztgeneve role endpoint which makes
                            the taps eth0 (S.10), pistioout (192.168.127.2/30) and, with
                            inbound, pistioin (192.168.126.2/30) that address_endpoint_taps
                            addresses; TCP arriving on pistioout is TPROXYed to the
                            transparent listener on 127.0.0.1:15001, on pistioin to 15006
                            (15008 to 15008);
            endpoint=False: a plain kernel eth0 like any pod's (the node resolves it by ARP);
  Pclient (client_up, for inbound) a client outside the node: eth0 10.10.1.2/24, default via
          10.10.1.1 on the node's v-client, a link of the node's kernel (not ztgeneve's).

The cni lab (CniLab, `scripts/lab up --topology cni`): the same node as kindnet's ptp CNI
plumbs it, the kernel alone carrying everything (ztgeneve attaches to it in a later step):

    lab = CniLab(pods=110)           # the article's six pods and pod-<octet> up to 110
    lab.up()                         # fresh namespaces only; a failure removes them
    lab.down()

  P<pod>  eth0 as in the twin lab (S.<octet>/32, gateway on the link, default via it), no
          IPv6 address; offloads as the kernel makes them (no ethtool);
  Pnode   per pod a veth<8 hex> (CniLab.host_veth, from the pod's name): MAC
          02:00:00:00:03:<octet>, no address, proxy_arp on, the route `S.<octet> dev veth...
          scope link`; the node address S.1/32 on lo; IP forwarding on, rp_filter as a new
          namespace has it, no default route; kube-proxy's DNAT of the VIP; no ambient rule;
  PZ      ztunnel's pod: a pod like the others (S.10), or with endpoint=True the veth end
          ztlink for a ztgeneve role endpoint, as in the twin lab.

The node address is not on the host veths, as ptp puts it (S.1/32 on each): one address
that no pod's veth carries lets a later step hand a veth to ztgeneve without moving the
gateway, and the node answers ARP for it on every veth all the same (a local address;
proxy_arp answers for the other pods' addresses too, as Calico's veths do).

Everything lives in the prefix's namespaces: nothing is configured in the root namespace and
no route leads out. down() removes every namespace with the prefix, also those of an earlier
lab with other pods.

Namespaces holds what any topology is made of (namespaces, veth pairs, a pod's end, an end
ztgeneve opens, offloads, removal); PodNode what any node with pods has, however they are
plumbed (names, addresses, kube-proxy's DNAT, ztunnel's rules and taps); NodeLab (the twin
lab) and CniLab are the article's node built from them.
"""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

SUBNET = "10.244.2"
GW_OCTET = 1
ZT_OCTET = 10
GW_IP = f"{SUBNET}.{GW_OCTET}"
ZT_IP = f"{SUBNET}.{ZT_OCTET}"
VIP = "10.96.0.10"
VIP_PORT = 9080
ISTIOOUT_IP = "192.168.127.1"
PISTIOOUT_IP = "192.168.127.2"
ISTIOOUT_MAC = "02:00:00:00:7f:01"   # the tunnel's inner MACs (ztgeneve's configs)
PISTIOOUT_MAC = "02:00:00:00:7f:02"
LISTENER_PORT = 15001
# Inbound (istioin, VNI 1000): the tunnel's addresses and inner MACs, ztunnel's ports (TPROXY
# keeps HBONE's 15008, takes other TCP to 15006) and the marks of its pod's policy routing.
ISTIOIN_IP = "192.168.126.1"
PISTIOIN_IP = "192.168.126.2"
ISTIOIN_MAC = "02:00:00:00:7e:01"
PISTIOIN_MAC = "02:00:00:00:7e:02"
INBOUND_PORT = 15006
HBONE_PORT = 15008
INBOUND_MARK = 0x402   # the inbound listener's sockets: rule 20002 -> table 102 -> pistioin
RETURN_MARK = 0x4d3    # the replies to ztunnel's connections from a client's address: table 100
ZT_PORTS = "10000 32767"  # ztunnel's ephemeral ports: below the default 32768-60999 (ztunnel_rules)
# A client outside the node (PodNode.client_up): a namespace behind a link of the node's
# kernel, addresses outside the pod CIDR.
CLIENT_NET = "10.10.1"
CLIENT_IP = f"{CLIENT_NET}.2"
CLIENT_GW = f"{CLIENT_NET}.1"
TUNNEL_MTU = 1450                    # link MTU 1500 - 50 bytes of Geneve, as Istio sets it
ZT_LINK = "ztlink"                   # ztunnel's end of its veth when an endpoint owns it

# The session lab: scripts/lab, tests/e2e, config/lab-node.yaml. name -> last octet.
SESSION_PREFIX = "ztg-"
SESSION_PODS = {"productpage": 3, "ratings": 2, "reviews-v1": 7, "reviews-v2": 5,
                "reviews-v3": 8, "legacy": 20}

# The cni lab (CniLab): at most kubelet's default max-pods; the node address on the node's
# loopback (a local address no pod's veth carries; a dummy would do the same, but kernels
# built without CONFIG_DUMMY, as this machine's, have none).
CNI_MAX_PODS = 110
GW_DEV = "lo"

# A new veth's offloads on Linux (ethtool -k): what a link made with offloads off gets back
# when a later up() wants them on.
VETH_OFFLOADS = ("tx", "on", "rx", "on", "tso", "on", "gso", "on", "gro", "off")
NO_OFFLOADS = ("tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off")


def pod_mac(octet):
    return f"02:00:00:00:02:{octet:02x}"


def node_mac(octet):
    """The node's end of a pod's veth."""
    return f"02:00:00:00:03:{octet:02x}"


def twin_mac(octet):
    """A pod port's kernel twin (set by ztgeneve's config, which the lab's configs follow)."""
    return f"02:00:00:00:01:{octet:02x}"


ZT_MAC = pod_mac(ZT_OCTET)


class LabError(RuntimeError):
    pass


def log(msg):
    print(f"lab: {msg}", file=sys.stderr, flush=True)


def run(*args, check=True, timeout=60):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise LabError(f"{' '.join(map(str, args))}: rc {r.returncode}: {r.stderr.strip()}")
    return r


def sh(ns, cmd, check=True, timeout=60):
    """Runs cmd with sh -c in namespace ns; returns its stdout."""
    r = run("ip", "netns", "exec", ns, "sh", "-c", cmd, check=False, timeout=timeout)
    if check and r.returncode != 0:
        raise LabError(f"[{ns}] {cmd}: rc {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def script(ns, lines):
    """Runs shell lines in ns, stopping at the first that fails."""
    return sh(ns, "set -e\n" + "\n".join(lines))


def links(ns):
    r = run("ip", "-n", ns, "-o", "link", "show", check=False)
    return {l.split(":")[1].strip().split("@")[0] for l in r.stdout.splitlines() if ":" in l}


def batch(ns, lines, force=False, timeout=60):
    """Runs ip commands (lines without the leading `ip`) in one `ip -batch` process in
    namespace ns (None: `ip netns` commands from the root namespace). Stops at the first that
    fails, or with force runs them all; raises LabError if one failed."""
    r = subprocess.run(["ip", *(("-n", ns) if ns else ()), *(("-force",) if force else ()), "-batch", "-"],
                       input="".join(f"{l}\n" for l in lines), capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise LabError(f"[{ns or 'ip -batch'}] rc {r.returncode}: {r.stderr.strip()}")


def batches(jobs, parallel=4, timeout=60):
    """batch() for each (ns, lines) of jobs, up to parallel of them at a time (one process
    per namespace is what costs: this hides part of its latency). Raises LabError naming
    every namespace whose batch failed, once all have finished."""
    pending, running, failed = list(jobs), [], []
    while pending or running:
        while pending and len(running) < parallel:
            ns, lines = pending.pop(0)
            p = subprocess.Popen(["ip", "-n", ns, "-batch", "-"], stdin=subprocess.PIPE,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            p.stdin.write("".join(f"{l}\n" for l in lines))
            p.stdin.close()
            running.append((ns, p))
        ns, p = running.pop(0)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        err = p.stderr.read().strip()
        p.stderr.close()
        if p.returncode != 0:
            failed.append(f"{ns}: rc {p.returncode}: {err}")
    if failed:
        raise LabError("ip -batch failed in " + "; ".join(failed))


def wait(pred, timeout, step=0.05):
    """Polls pred until true or timeout; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


def ns_exists(ns):
    return os.path.exists(f"/run/netns/{ns}")


def pids_by_ns(nss):
    """{ns: [pids]}: the processes in each of the named namespaces nss, as `ip netns pids`
    finds them (/proc/PID/ns/net is /run/netns/NS), in one pass over /proc."""
    ids, out = {}, {ns: [] for ns in nss}
    for ns in nss:
        try:
            st = os.stat(f"/run/netns/{ns}")
        except OSError:
            continue
        ids[(st.st_dev, st.st_ino)] = ns
    for d in os.listdir("/proc") if ids else ():
        if not d.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{d}/ns/net")
        except OSError:
            continue  # gone, or a zombie
        ns = ids.get((st.st_dev, st.st_ino))
        if ns:
            out[ns].append(int(d))
    return out


def ns_pids(ns):
    return pids_by_ns([ns])[ns]


def ipt_once(ns, table, chain, *rule):
    """An iptables rule, appended unless present."""
    rule = [str(a) for a in rule]
    if run("ip", "netns", "exec", ns, "iptables", "-w", "-t", table, "-C", chain, *rule,
           check=False).returncode != 0:
        run("ip", "netns", "exec", ns, "iptables", "-w", "-t", table, "-A", chain, *rule)


def rule_once(ns, prio, *selector):
    """An ip rule at priority prio, added unless that priority has one."""
    if not run("ip", "-n", ns, "rule", "show", "priority", prio, check=False).stdout.strip():
        run("ip", "-n", ns, "rule", "add", "priority", prio, *selector)


class Namespaces:
    """Namespaces named <prefix>*, made and removed together: what any topology is built of.
    offloads: False turns checksum and segmentation offloads off on every veth end made
    (see set_offloads); True keeps the kernel's defaults, as a real pod has them."""

    def __init__(self, prefix, offloads=False, log=log):
        self.prefix = prefix
        self.offloads = offloads
        self.log = log
        self._made = set()  # (ns, dev): veth ends made by this object, with the kernel's defaults

    def namespaces(self):
        """The topology's namespaces, in the order they are made."""
        raise NotImplementedError

    def present(self):
        """The namespaces with the prefix that exist (in `ip netns list` order)."""
        names = [l.split()[0] for l in run("ip", "netns", "list", check=False).stdout.splitlines()
                 if l.strip()]
        return [n for n in names if n.startswith(self.prefix)]

    def add_ns(self, ns, forwarding=False, rp_filter=0):
        """A namespace (made unless it exists) with lo up, no IPv6, and the reverse-path
        filter rp_filter (None: as a new namespace has it, which it takes from the root's)."""
        if not ns_exists(ns):
            run("ip", "netns", "add", ns)
        rpf = "" if rp_filter is None else \
            f" net.ipv4.conf.all.rp_filter={rp_filter} net.ipv4.conf.default.rp_filter={rp_filter}"
        sh(ns, "ip link set lo up; sysctl -qw net.ipv6.conf.all.disable_ipv6=1 "
               "net.ipv6.conf.default.disable_ipv6=1" + rpf
               + (" net.ipv4.ip_forward=1" if forwarding else ""))

    def veth(self, ns_a, a, ns_b, b, stale=()):
        """The veth pair a (in ns_a) -- b (in ns_b), made unless a exists. An end named b (or
        one of stale) left in ns_b by an earlier lab, its peer gone, would block the creation:
        it is deleted first. Returns True if made."""
        if a in links(ns_a):
            if b not in links(ns_b):
                raise LabError(f"{ns_b} has no {b} (peer of {a} in {ns_a})")
            return False
        for s in (b, *stale):
            run("ip", "-n", ns_b, "link", "del", s, check=False)
        run("ip", "-n", ns_a, "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns_b)
        self._made |= {(ns_a, a), (ns_b, b)}
        return True

    def set_offloads(self, ns, dev):
        """Applies self.offloads to a veth end."""
        if self.offloads and (ns, dev) in self._made:
            return  # made now: the kernel's defaults, as a real pod has them
        if shutil.which("ethtool") is None:
            self.log(f"warning: ethtool missing; {dev} in {ns} keeps its offloads")
            return
        # Off (offloads=False) because ztgeneve's net_af_packet ports cannot yet handle what a
        # veth with offloads on hands to their packet socket: TCP/UDP checksums left for the
        # receiver to finish (partial checksums) and TCP segments larger than the MTU (GSO,
        # GRO). Off, every frame carries its real checksum and fits the MTU. On again for an
        # end an earlier up() made with them off: a new veth's defaults.
        flags = VETH_OFFLOADS if self.offloads else NO_OFFLOADS
        ethtool = ("ip", "netns", "exec", ns, "ethtool", "-K", dev)
        if run(*ethtool, *flags, check=False).returncode != 0 and \
                run(*ethtool, *flags[:2], check=False).returncode != 0:
            self.log(f"warning: ethtool -K {dev} {' '.join(flags)} failed in {ns}")

    def end(self, ns, dev, mac, mtu=1500, arp=True):
        """A veth end's MAC, MTU, ARP and offloads."""
        sh(ns, f"ip link set {dev} address {mac} mtu {mtu}" + ("" if arp else " arp off"))
        self.set_offloads(ns, dev)

    def bare_end(self, ns, dev, mac, mtu=1500):
        """A veth end that ztgeneve opens with net_af_packet: no address, no ARP, no
        forwarding, so that the kernel ignores it."""
        self.end(ns, dev, mac, mtu, arp=False)
        script(ns, [f"ip addr flush dev {dev}", f"ip link set {dev} up",
                    f"sysctl -qw net.ipv4.conf.{dev}.forwarding=0"])

    @staticmethod
    def pod_addressing(dev, ip, gw):
        """The ip commands (without `ip`) that address a pod's interface as a ptp CNI does:
        its /32 address, the gateway on the link and the default route via the gateway."""
        return [f"addr replace {ip}/32 dev {dev}", f"link set {dev} up",
                f"route replace {gw} dev {dev} scope link", f"route replace default via {gw} dev {dev}"]

    def pod_end(self, ns, dev, mac, ip, gw, mtu=1500):
        """A pod's interface as a CNI leaves it (pod_addressing), with its MAC and offloads."""
        self.end(ns, dev, mac, mtu)
        script(ns, [f"ip {c}" for c in self.pod_addressing(dev, ip, gw)])

    def wait_links(self, ns, names, wait_s, what, hint):
        """Waits (bounded) until every link of names exists in ns."""
        missing = []

        def ready():
            nonlocal missing
            have = links(ns)
            missing = [n for n in names if n not in have]
            return not missing

        if not wait(ready, wait_s, step=0.2):
            raise LabError(f"{what}: after {wait_s:g}s still missing in {ns}: {' '.join(missing)} ({hint})")

    def down(self):
        """Kills what runs in every namespace with the prefix (SIGTERM: ztgeneve removes its
        taps and prints its counters; SIGKILL after 5 s) and deletes them. Returns them."""
        nss = self.present()
        if not nss:
            self.log("down: nothing to remove")
            return []
        for pids in pids_by_ns(nss).values():
            for pid in pids:
                _kill(pid, signal.SIGTERM)
        wait(lambda: not any(pids_by_ns(nss).values()), 5, step=0.1)
        for ns, pids in pids_by_ns(nss).items():
            for pid in pids:
                self.log(f"down: killing {pid} ({_cmdline(pid)[:80]}) in {ns}")
                _kill(pid, signal.SIGKILL)
        try:
            batch(None, [f"netns del {ns}" for ns in nss], force=True)
        except LabError as e:
            self.log(f"down: could not delete {' '.join(ns for ns in nss if ns_exists(ns))}: {e}")
        gone = [ns for ns in nss if not ns_exists(ns)]
        self.log("down: removed " + (" ".join(gone) if len(gone) <= 10
                                      else f"{len(gone)} {self.prefix}* namespaces"))
        return nss

    def status(self):
        """Namespaces, their processes, links, addresses and routes, as text."""
        nss = self.present()
        if not nss:
            return f"no {self.prefix}* namespaces\n"
        out = []
        for ns in nss:
            out.append(f"== {ns} (pids: {' '.join(map(str, ns_pids(ns)))})")
            for what, args in (("link", ("-br", "link")), ("addr", ("-br", "-4", "addr")),
                               ("route", ("-4", "route"))):
                out += [f"  {what:5} {l}" for l in run("ip", "-n", ns, *args, check=False).stdout.splitlines()]
        return "\n".join(out) + "\n"


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class PodNode(Namespaces):
    """A node, its pods, ztunnel's pod and kube-proxy, whichever way they are plumbed: their
    names and addresses, the DNAT, ztunnel's rules and an endpoint's taps. pods: {name: last
    octet}; zt_name: ztunnel pod's namespace suffix; endpoint: whether a ztgeneve role
    endpoint owns ztunnel's link; dnat_to: kube-proxy's DNAT target of vip:vip_port (None: no
    kube-proxy)."""

    def __init__(self, prefix, pods, zt_name, endpoint, dnat_to, subnet, vip, vip_port, offloads, log):
        super().__init__(prefix, offloads=offloads, log=log)
        self.pods = dict(pods)
        self.zt_name = zt_name
        self.endpoint = endpoint
        self.dnat_to = dnat_to
        self.subnet = subnet
        self.vip, self.vip_port = vip, vip_port
        self.gw_ip = f"{subnet}.{GW_OCTET}"
        self.zt_ip = f"{subnet}.{ZT_OCTET}"
        self.zt_mac = pod_mac(ZT_OCTET)
        self.node_ns = f"{prefix}node"
        self.zt_ns = f"{prefix}{zt_name}"
        self.client_ns = f"{prefix}client"  # client_up
        self.zt_link = ZT_LINK if endpoint else "eth0"

    # ------------------------------------------------------------ names
    def ns(self, pod):
        return self.zt_ns if pod == self.zt_name else f"{self.prefix}{pod}"

    def ip(self, pod):
        return self.zt_ip if pod == self.zt_name else f"{self.subnet}.{self.pods[pod]}"

    def namespaces(self):
        return [self.node_ns] + [self.ns(p) for p in self.pods] + [self.zt_ns]

    def kube_proxy(self):
        """kube-proxy's part: the VIP DNATed to dnat_to (a ratings endpoint by default) as
        traffic enters the node. Redirected traffic must never reach it (its counter stays 0
        for meshed pods); a non-meshed pod's does."""
        if self.dnat_to:
            ipt_once(self.node_ns, "nat", "PREROUTING", "-d", self.vip, "-p", "tcp", "--dport",
                     self.vip_port, "-j", "DNAT", "--to-destination", self.dnat_to)

    def ztunnel_rules(self):
        """The ztunnel pod's rules (kernel-path.md, point 7): TCP from pistioout goes to the
        transparent listener on 127.0.0.1:15001; its sockets (mark 0x401) answer through
        pistioout (table 101, whose route address_endpoint_taps adds once the tap exists).
        Inbound: TCP from pistioin to port 15008 (HBONE) stays 15008, any other to 15006; the
        inbound listener's sockets (INBOUND_MARK) answer through pistioin (table 102); TCP
        arriving on eth0 for an address not the pod's own is the reply to a connection ztunnel
        opened from a client's address (IP_TRANSPARENT): RETURN_MARK, table 100's local
        route, so the kernel delivers it to that socket instead of forwarding it. ztunnel's
        ephemeral ports are ZT_PORTS, below the range every other namespace uses: its
        connection for a client has the client's address, and with the client's own port
        too the node would take the client's packets for ztunnel's connection (one 5-tuple,
        as one conntrack entry on a kernel node)."""
        zt = self.zt_ns
        run("ip", "netns", "exec", zt, "sysctl", "-qw", f"net.ipv4.ip_local_port_range={ZT_PORTS}")
        ipt_once(zt, "mangle", "PREROUTING", "-i", "pistioout", "-p", "tcp", "-j", "TPROXY",
                 "--on-port", LISTENER_PORT, "--on-ip", "127.0.0.1", "--tproxy-mark", "0x400/0xfff")
        ipt_once(zt, "mangle", "PREROUTING", "-i", "pistioin", "-p", "tcp", "--dport", HBONE_PORT,
                 "-j", "TPROXY", "--on-port", HBONE_PORT, "--on-ip", "127.0.0.1", "--tproxy-mark",
                 "0x400/0xfff")
        ipt_once(zt, "mangle", "PREROUTING", "-i", "pistioin", "-p", "tcp", "-j", "TPROXY",
                 "--on-port", INBOUND_PORT, "--on-ip", "127.0.0.1", "--tproxy-mark", "0x400/0xfff")
        ipt_once(zt, "mangle", "PREROUTING", "-i", "eth0", "-p", "tcp", "!", "-d", f"{self.zt_ip}/32",
                 "-j", "MARK", "--set-xmark", f"{RETURN_MARK:#x}/0xfff")
        rule_once(zt, 20000, "fwmark", "0x400/0xfff", "lookup", "100")
        run("ip", "-n", zt, "route", "replace", "local", "0.0.0.0/0", "dev", "lo", "table", "100")
        rule_once(zt, 20001, "fwmark", "0x401/0xfff", "lookup", "101")
        rule_once(zt, 20002, "fwmark", f"{INBOUND_MARK:#x}/0xfff", "lookup", "102")
        rule_once(zt, 20003, "fwmark", f"{RETURN_MARK:#x}/0xfff", "lookup", "100")

    def client_up(self, link="v-client"):
        """A client outside the node, for inbound: the namespace <prefix>client, its eth0
        CLIENT_IP/24 (MAC 02:00:00:00:0a:02) with the default route via CLIENT_GW, and the
        node's end `link` (v-client) holding CLIENT_GW/24: a link of the node's kernel, not
        ztgeneve's, as a node's uplink would be; the node routes between it and the pods (no
        NAT). The pods reach CLIENT_NET by their default route. Returns the namespace."""
        node, ns = self.node_ns, self.client_ns
        self.add_ns(ns)
        self.veth(node, link, ns, "eth0")
        self.end(ns, "eth0", "02:00:00:00:0a:02")
        self.end(node, link, "02:00:00:00:0a:01")
        script(ns, [f"ip addr replace {CLIENT_IP}/24 dev eth0", "ip link set eth0 up",
                    f"ip route replace default via {CLIENT_GW} dev eth0"])
        script(node, [f"sysctl -qw net.ipv4.conf.{link}.rp_filter=0",
                      f"ip addr replace {CLIENT_GW}/24 dev {link}", f"ip link set {link} up"])
        return ns

    def address_endpoint_taps(self, wait_s=0):
        """Once ztgeneve (role endpoint) runs in ztunnel's pod: its taps eth0 (the pod's link
        as its kernel sees it: the pod's address and routes) and pistioout (the tunnel's end:
        192.168.127.2/30, MTU 1450, table 101's route via istioout; no static neighbour, the
        node answers ARP for istioout inside the tunnel), waiting up to wait_s for them; and
        pistioin if the endpoint has it (192.168.126.2/30, table 102's route via istioin)."""
        zt = self.zt_ns
        self.wait_links(zt, ["eth0", "pistioout"], wait_s, "endpoint-twins",
                        "is the endpoint ztgeneve running there?")
        lines = []
        for t in ("eth0", "pistioout"):
            lines += [f"sysctl -qw net.ipv6.conf.{t}.disable_ipv6=1 >/dev/null 2>&1 || true",
                      f"sysctl -qw net.ipv4.conf.{t}.rp_filter=0"]
        script(zt, lines + [
            "sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0",
            f"ip addr replace {self.zt_ip}/32 dev eth0", "ip link set eth0 up",
            f"ip route replace {self.gw_ip} dev eth0 scope link",
            f"ip route replace default via {self.gw_ip} dev eth0",
            f"ip link set pistioout mtu {TUNNEL_MTU}",
            f"ip addr replace {PISTIOOUT_IP}/30 dev pistioout", "ip link set pistioout up"])
        self.ztunnel_rules()
        run("ip", "-n", zt, "route", "replace", "default", "via", ISTIOOUT_IP, "dev", "pistioout",
            "table", "101")
        if "pistioin" in links(zt):  # an endpoint configured with the inbound tunnel too
            script(zt, ["sysctl -qw net.ipv6.conf.pistioin.disable_ipv6=1 >/dev/null 2>&1 || true",
                        "sysctl -qw net.ipv4.conf.pistioin.rp_filter=0",
                        f"ip link set pistioin mtu {TUNNEL_MTU}",
                        f"ip addr replace {PISTIOIN_IP}/30 dev pistioin", "ip link set pistioin up",
                        f"ip route replace default via {ISTIOIN_IP} dev pistioin table 102"])


class NodeLab(PodNode):
    """The article's node and its pods as the twin lab (see the module's doc): ztgeneve opens
    the node's ends of the pods' veths, its kernel twins carry the gateway and the routes."""

    def __init__(self, prefix=SESSION_PREFIX, pods=None, zt_name="ztunnel", endpoint=True,
                 dnat_to=f"{SUBNET}.2:{VIP_PORT}", subnet=SUBNET, vip=VIP, vip_port=VIP_PORT,
                 offloads=False, log=log):
        super().__init__(prefix, SESSION_PODS if pods is None else pods, zt_name, endpoint,
                         dnat_to, subnet, vip, vip_port, offloads, log)

    def twins(self, ports=None):
        """The node's kernel twins of the pod ports (default every pod) and of the ztunnel port."""
        return [f"t-{p}" for p in (self.pods if ports is None else ports)] + ["t-ztunnel"]

    # ------------------------------------------------------------ topology
    def up(self):
        """Makes the topology, or completes it: what exists is kept (a running ztgeneve keeps
        its links), what is missing is made."""
        node = self.node_ns
        self.add_ns(node, forwarding=True)
        for pod, octet in self.pods.items():
            ns = self.ns(pod)
            self.add_ns(ns)
            self.veth(node, f"v-{pod}", ns, "eth0")
            self.pod_end(ns, "eth0", pod_mac(octet), self.ip(pod), self.gw_ip)
            self.bare_end(node, f"v-{pod}", node_mac(octet))
        zt = self.zt_ns
        self.add_ns(zt)
        if self.endpoint:
            self.veth(node, "v-ztunnel", zt, ZT_LINK, stale=("eth0",))
            self.bare_end(zt, ZT_LINK, self.zt_mac)
            self.ztunnel_rules()
        else:
            self.veth(node, "v-ztunnel", zt, "eth0", stale=(ZT_LINK,))
            self.pod_end(zt, "eth0", self.zt_mac, self.zt_ip, self.gw_ip)
        self.bare_end(node, "v-ztunnel", node_mac(ZT_OCTET))
        # No way out of the lab: the node has no default route.
        run("ip", "-n", node, "route", "del", "default", check=False)
        self.kube_proxy()
        return self

    def address_twins(self, ports=None, wait_s=0):
        """Once ztgeneve (role node) runs: its twins of ports (default every pod) and of the
        ztunnel port get the gateway address and the route to their pod, waiting up to wait_s
        for them. Returns their names."""
        names = self.twins(ports)
        self.wait_links(self.node_ns, names, wait_s, "twins", "is ztgeneve running there?")
        lines = []
        for pod, t in zip([*(self.pods if ports is None else ports), self.zt_name], names):
            lines += [f"sysctl -qw net.ipv6.conf.{t}.disable_ipv6=1 >/dev/null 2>&1 || true",
                      f"sysctl -qw net.ipv4.conf.{t}.rp_filter=0 >/dev/null 2>&1 || true",
                      f"ip addr replace {self.gw_ip}/32 dev {t}", f"ip link set {t} up",
                      f"ip route replace {self.ip(pod)}/32 dev {t}"]
        script(self.node_ns, lines)
        return names


def cni_pods(n=None):
    """The cni lab's pods, {name: last octet}: the article's six (SESSION_PODS: five meshed,
    legacy at .20) and beyond them pod-<octet> at the lowest free octets of the /24, never .1
    (the gateway) nor .10 (ztunnel). n counts the pods besides ztunnel's (None: six, 1 to
    CNI_MAX_PODS); under six it takes the first n of the article's."""
    if n is None:
        return dict(SESSION_PODS)
    if not 1 <= n <= CNI_MAX_PODS:
        raise LabError(f"pods: {n}: from 1 to {CNI_MAX_PODS} (kubelet's default max-pods)")
    pods = dict(list(SESSION_PODS.items())[:n])
    taken = {GW_OCTET, ZT_OCTET, *SESSION_PODS.values()}
    free = (o for o in range(2, 255) if o not in taken)
    while len(pods) < n:
        o = next(free)
        pods[f"pod-{o}"] = o
    return pods


class CniLab(PodNode):
    """The node as kindnet's ptp CNI plumbs it (see the module's doc): the node's kernel alone
    routes between the pods' veths, nothing is there for ztgeneve yet. pods: None (the
    article's six), a count (cni_pods) or {name: last octet}; endpoint: ztunnel's end of its
    veth is ztlink, for a ztgeneve role endpoint (with ztunnel's TPROXY rules, as NodeLab's),
    instead of an eth0 like every pod's. The veth ends keep the kernel's offloads: nothing
    calls ethtool on them."""

    def __init__(self, prefix=SESSION_PREFIX, pods=None, zt_name="ztunnel", endpoint=False,
                 dnat_to=f"{SUBNET}.2:{VIP_PORT}", subnet=SUBNET, vip=VIP, vip_port=VIP_PORT, log=log):
        pods = cni_pods(pods) if pods is None or isinstance(pods, int) else pods
        super().__init__(prefix, pods, zt_name, endpoint, dnat_to, subnet, vip, vip_port,
                         offloads=True, log=log)
        veths = {self.host_veth(p) for p in self.all_pods()}
        if len(veths) != len(self.all_pods()):
            raise LabError("two pods' host veths have the same name")

    # Istio's tunnel links: name -> (the node's address, the peer's: the routes' next hop)
    TUNNEL_LINKS = {"istioin": (ISTIOIN_IP, PISTIOIN_IP), "istioout": (ISTIOOUT_IP, PISTIOOUT_IP)}

    def tunnel_stand_ins(self, names=("istioin", "istioout")):
        """Veths named istioin / istioout (peers pistioin / pistioout) in the node with the
        node's /30 address each: this kernel has no Geneve module, and with links of those
        names program mode installs table 100's and 101's routes, which the fallback takes.
        Each route's next hop (the peer's address, which no one holds) is a static neighbour
        on the peer's MAC, so what the kernel routes there is captured leaving on p<name>."""
        for name in names:
            ip, peer_ip = self.TUNNEL_LINKS[name]
            sh(self.node_ns, f"ip link add {name} type veth peer name p{name} && "
                             f"ip addr add {ip}/30 dev {name} && ip link set {name} up && ip link set p{name} up")
            mac = json.loads(sh(self.node_ns, f"ip -j link show p{name}"))[0]["address"]
            sh(self.node_ns, f"ip neigh replace {peer_ip} lladdr {mac} dev {name} nud permanent")

    # ------------------------------------------------------------ names
    def all_pods(self):
        """Every pod, ztunnel's last."""
        return [*self.pods, self.zt_name]

    def octet(self, pod):
        return ZT_OCTET if pod == self.zt_name else self.pods[pod]

    def pod_link(self, pod):
        """The pod's end of its veth."""
        return self.zt_link if pod == self.zt_name else "eth0"

    @staticmethod
    def host_veth(pod):
        """The node's end of a pod's veth: veth and 8 hex digits, as ptp names it (ptp's are
        random; these come from the pod's name, so that configs can name them)."""
        return "veth" + hashlib.sha1(pod.encode()).hexdigest()[:8]

    # ------------------------------------------------------------ topology
    def plug(self, pod, veth=None, index=None):
        """(Re-)plumbs a pod's veth at run time, as ptp does for a new pod: the host end veth
        (default host_veth(pod)), with ifindex index if given (a reused one), its /32 route,
        proxy ARP, and the pod's end addressed. The pod's old veth must be gone."""
        veth, o, node = veth or self.host_veth(pod), self.octet(pod), self.node_ns
        batch(node, [f"link add {veth}{f' index {index}' if index else ''} address {node_mac(o)} "
                     f"type veth peer name {self.pod_link(pod)} address {pod_mac(o)} netns {self.ns(pod)}",
                     f"link set {veth} up", f"route replace {self.ip(pod)}/32 dev {veth} scope link"])
        self._made |= {(node, veth), (self.ns(pod), self.pod_link(pod))}
        run("ip", "netns", "exec", node, "sysctl", "-qw", f"net.ipv4.conf.{veth}.proxy_arp=1")
        ipv6 = os.path.isdir("/proc/sys/net/ipv6")
        batch(self.ns(pod), ([f"link set {self.pod_link(pod)} addrgenmode none"] if ipv6 else [])
              + self.pod_addressing(self.pod_link(pod), self.ip(pod), self.gw_ip))
        return veth

    def up(self):
        """Makes the topology in fresh namespaces (LabError if one exists already: down
        first); a failure removes what it made."""
        there = [ns for ns in self.namespaces() if ns_exists(ns)]
        if there:
            raise LabError(f"{' '.join(there[:3])}{' ...' if len(there) > 3 else ''} exist already "
                           "(down first)")
        try:
            self._plumb()
        except BaseException:
            self.down()
            raise
        return self

    def _plumb(self):
        # One ip process per namespace at most, each running a batch: what costs on a node
        # with 110 pods is the processes, not the commands.
        node, pods = self.node_ns, self.all_pods()
        batch(None, [f"netns add {ns}" for ns in self.namespaces()])
        # Forwarding on (ptp turns it on), the reverse-path filter as a new namespace has it
        # (neither kindnet nor ptp touches it), no IPv6 (the veths made next have none).
        self.add_ns(node, forwarding=True, rp_filter=None)
        lines = [f"addr add {self.gw_ip}/32 dev {GW_DEV}"]
        for pod in pods:
            veth, o = self.host_veth(pod), self.octet(pod)
            lines += [f"link add {veth} address {node_mac(o)} type veth peer name {self.pod_link(pod)} "
                      f"address {pod_mac(o)} netns {self.ns(pod)}",
                      f"link set {veth} up", f"route add {self.ip(pod)}/32 dev {veth} scope link"]
            self._made |= {(node, veth), (self.ns(pod), self.pod_link(pod))}
        batch(node, lines)
        run("ip", "netns", "exec", node, "sysctl", "-qw",
            *(f"net.ipv4.conf.{self.host_veth(p)}.proxy_arp=1" for p in pods))
        # A pod: lo up, its link without IPv6 link-local address (so it sends no neighbour
        # discovery: the links stay quiet, as NodeLab's without IPv6, at no extra process),
        # addressed by ptp's rules.
        ipv6 = os.path.isdir("/proc/sys/net/ipv6")
        batches([(self.ns(p), ["link set lo up"]
                  + ([f"link set {self.pod_link(p)} addrgenmode none"] if ipv6 else [])
                  + (self.pod_addressing("eth0", self.ip(p), self.gw_ip) if self.pod_link(p) == "eth0" else []))
                 for p in pods])
        if self.endpoint:
            self.bare_end(self.zt_ns, ZT_LINK, self.zt_mac)
            self.ztunnel_rules()
        self.kube_proxy()


    def xdp_config(self, meshed, kernel_mode="program", workers=1, prefix=None, links=None, uplink=None):
        """A ztgeneve config (YAML text) for this node with `attach: xdp`: one pods port over
        every pod's host veth (links="auto": `links: auto`, the meshed pods' veths found at
        run time), the ztunnel port over ztunnel's; meshed: the pods in the pod list;
        kernel.mode program installs the kernel path the links fall back to. uplink: the
        node's links toward clients outside it (e.g. ["v-client"], client_up's): an uplink
        port over them and the inbound section (istioin, VNI 1000)."""
        import yaml
        cfg = {
            "role": "node",
            "dpdk": {"workers": workers, "memory_mb": 256, "idle_sleep_us": 100,
                     **({"file_prefix": prefix} if prefix else {})},
            "ports": [{"name": "pods", "role": "pods", "attach": "xdp",
                       "links": links or [self.host_veth(p) for p in self.pods]},
                      {"name": "ztunnel", "role": "ztunnel", "attach": "xdp",
                       "links": [self.host_veth(self.zt_name)]}]
            + ([{"name": "uplink", "role": "uplink", "attach": "xdp", "links": list(uplink)}] if uplink else []),
            "tunnel": {"local_ip": self.gw_ip, "remote_ip": self.zt_ip, "mtu": 1500,
                       "inner_src_mac": ISTIOOUT_MAC, "inner_dst_mac": PISTIOOUT_MAC},
            "pods": [self.ip(p) for p in meshed],
            "kernel": {"mode": kernel_mode, "poll_ms": 100,
                       **({"ztunnel_dev": self.host_veth(self.zt_name)} if kernel_mode == "program" else {})},
        }
        if uplink:
            cfg["inbound"] = {"inner_src_mac": ISTIOIN_MAC, "inner_dst_mac": PISTIOIN_MAC}
        return yaml.safe_dump(cfg, sort_keys=False)


# ---------------------------------------------------------------- scripts/lab

USAGE = """\
usage: {prog} COMMAND
  up [--topology twin] [--pod-offloads off|on]
                 the twin lab: create the namespaces and veth pairs, the node's
                 kube-proxy-like DNAT and the ztunnel pod's TPROXY rules (idempotent). Pod
                 offloads (checksum, TSO, GSO, GRO on every veth end): off by default, as
                 ztgeneve needs for now; on keeps the kernel's defaults, as real pods have them
  up --topology cni [--pods N]
                 the node as kindnet's ptp CNI plumbs it, the kernel alone carrying it: the
                 article's six pods, or N pods (1 to {max_pods}: the article's, then pod-<octet>),
                 and ztunnel's, each with its veth; the node address 10.244.2.1 on lo, a route
                 and proxy ARP per host veth; kube-proxy-like DNAT; kernel offloads (fresh
                 namespaces only: down first)
  twins          after ztgeneve runs in ztg-node: address and route its kernel twins
  endpoint-twins after ztgeneve (role endpoint) runs in ztg-ztunnel: address its taps eth0
                 (10.244.2.10, ztunnel's link as its kernel sees it), pistioout
                 (192.168.127.2/30) and, if the endpoint has it, pistioin (192.168.126.2/30),
                 and add table 101's route via istioout (102's via istioin)
  down           kill what runs in the namespaces and delete them, either topology (idempotent)
  status         list namespaces, links and addresses
  exec NS CMD... run CMD in namespace ztg-NS (or NS)
"""

UP_OPTIONS = {"--topology": ("twin", "cni"), "--pod-offloads": ("off", "on"), "--pods": None}


def parse_up(args):
    """up's options as {option: value}, or None if they are not valid."""
    opts = {}
    while args:
        if len(args) < 2 or args[0] not in UP_OPTIONS or args[0] in opts:
            return None
        allowed = UP_OPTIONS[args[0]]
        if allowed is None and not args[1].isdigit() or allowed is not None and args[1] not in allowed:
            return None
        opts[args[0]], args = args[1], args[2:]
    cni = opts.get("--topology") == "cni"
    return None if ("--pods" in opts and not cni) or ("--pod-offloads" in opts and cni) else opts


def main(argv):
    prog = os.environ.get("ZTG_LAB_PROG", "scripts/lab")
    cmd, args = (argv[0], argv[1:]) if argv else ("", [])
    usage = USAGE.format(prog=prog, max_pods=CNI_MAX_PODS)
    if cmd in ("help", "-h", "--help"):
        sys.stdout.write(usage)
        return 0
    opts = parse_up(args) if cmd == "up" else {}
    if cmd == "up" and opts is not None:
        args = []
    if cmd not in ("up", "twins", "endpoint-twins", "down", "status", "exec") or opts is None or \
            (cmd == "exec" and len(args) < 2) or (cmd != "exec" and args):
        sys.stderr.write(usage)
        return 2
    offloads = opts.get("--pod-offloads") == "on"
    try:
        cni = opts.get("--topology") == "cni"
        lab = CniLab(pods=int(opts["--pods"]) if "--pods" in opts else None) if cni \
            else NodeLab(offloads=offloads)
        if cmd in ("up", "twins", "endpoint-twins", "down") and os.geteuid() != 0:
            raise LabError("must run as root")
        if cmd == "up" and cni:
            t0 = time.monotonic()
            lab.up()
            log(f"up: cni topology, {len(lab.pods)} pods and {lab.zt_name} around {lab.node_ns} "
                f"({lab.gw_ip} on {GW_DEV}) in {time.monotonic() - t0:.1f}s")
        elif cmd == "up":
            lab.up()
            log(f"up: namespaces {lab.node_ns} and {' '.join(lab.namespaces()[1:])} "
                f"(pod offloads {'on' if offloads else 'off'})")
        elif cmd == "twins":
            if not ns_exists(lab.node_ns):
                raise LabError(f"{lab.node_ns} does not exist (run: {prog} up)")
            names = lab.address_twins(wait_s=float(os.environ.get("ZTG_TWIN_WAIT_S", "20")))
            log(f"twins: {' '.join(names)} addressed {lab.gw_ip}/32 with their pod routes")
        elif cmd == "endpoint-twins":
            if not ns_exists(lab.zt_ns):
                raise LabError(f"{lab.zt_ns} does not exist (run: {prog} up)")
            lab.address_endpoint_taps(wait_s=float(os.environ.get("ZTG_TWIN_WAIT_S", "20")))
            pin = f", pistioin {PISTIOIN_IP}/30" if "pistioin" in links(lab.zt_ns) else ""
            log(f"endpoint-twins: eth0 {lab.zt_ip}/32, pistioout {PISTIOOUT_IP}/30{pin} (mtu {TUNNEL_MTU}), "
                f"TPROXY to 127.0.0.1:{LISTENER_PORT} (pistioin: {INBOUND_PORT}, {HBONE_PORT})")
        elif cmd == "down":
            lab.down()
        elif cmd == "status":
            sys.stdout.write(lab.status())
        elif cmd == "exec":
            ns = args[0] if ns_exists(args[0]) else f"{lab.prefix}{args[0]}"
            if not ns_exists(ns):
                raise LabError(f"no namespace {ns}")
            os.execvp("ip", ["ip", "netns", "exec", ns, *args[1:]])
    except LabError as e:
        log(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
