"""Kernel mirror (issue 4), in a small topology of its own (namespaces ztk-*):

  ztk-pod (10.244.2.3) --- v-pod  [ztk-node: ztgeneve node, twins t-pod/t-pod2/t-zt]  v-zt --- ztk-zt (10.244.2.10)
  ztk-pod2 (10.244.2.2) -- v-pod2

observe: the ipset drives the pod table and what is missing of the reference is reported;
program: ztgeneve installs the reference node configuration (iptables chains, ip rules
100-103, tables 100-102, istioin/istioout: this kernel has no geneve module, so stand-in veths
named istioin/istioout let the routes through them be checked) and removes exactly it on
--cleanup; an ipset of the name made by someone else is adopted or refused; fallback after
SIGKILL; and a live update of 10,000 pods that must not cost a steady flow one packet.
"""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "tools"))
import telemetry  # noqa: E402
from ztgeneve import Ztgeneve  # noqa: E402

BINARY = Path(os.environ.get("ZTG_BINARY", REPO / "build" / "ztgeneve"))
NODE, POD, POD2, ZT = "ztk-node", "ztk-pod", "ztk-pod2", "ztk-zt"
PREFIX = "ztk-node"
POLL_MS = 100
PODS = {POD: ("10.244.2.3", "02:00:00:00:02:03", "v-pod", "t-pod", "02:00:00:00:01:03"),
        POD2: ("10.244.2.2", "02:00:00:00:02:02", "v-pod2", "t-pod2", "02:00:00:00:01:02"),
        ZT: ("10.244.2.10", "02:00:00:00:02:0a", "v-zt", "t-zt", "02:00:00:00:01:0a")}


def sh(ns, cmd, check=True):
    r = subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", cmd], capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"[{ns}] {cmd}: rc {r.returncode}: {r.stderr}")
    return r.stdout


def down():
    for ns in (NODE, POD, POD2, ZT):
        subprocess.run(["ip", "netns", "pids", ns], capture_output=True)
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for p in pids:
            subprocess.run(["kill", "-9", p], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture(scope="module")
def topo():
    down()
    for ns in (NODE, POD, POD2, ZT):
        subprocess.run(["ip", "netns", "add", ns], check=True)
        sh(ns, "ip link set lo up; sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
    sh(NODE, "sysctl -qw net.ipv4.ip_forward=1")
    # Offloads off on both veth ends (as tests/tools/lab.py does by default): ztgeneve's
    # net_af_packet ports cannot yet handle partial checksums nor GSO/GRO frames.
    for ns, (ip, mac, veth, _twin, _tmac) in PODS.items():
        subprocess.run(["ip", "-n", NODE, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns], check=True)
        sh(NODE, f"ip link set {veth} arp off up; sysctl -qw net.ipv4.conf.{veth}.forwarding=0; "
                 f"ethtool -K {veth} tx off rx off tso off gso off gro off >/dev/null 2>&1 || true")
        sh(ns, f"ip link set eth0 address {mac} up; ip addr add {ip}/32 dev eth0; "
               f"ip route add 10.244.2.1 dev eth0 scope link; ip route add default via 10.244.2.1 dev eth0; "
               f"ethtool -K eth0 tx off rx off tso off gso off gro off >/dev/null 2>&1 || true")
    yield
    down()


def config(tmp_path, mode, pods=(), ztunnel_dev="v-zt", kernel_extra="", extra=""):
    ports = "\n".join(
        f'  - {{name: {ns.removeprefix("ztk-")}, role: {"ztunnel" if ns == ZT else "pods"}, '
        f'devargs: "net_af_packet_{i},iface={veth}", twin: "net_tap_{i},iface={twin},mac={tmac}"}}'
        for i, (ns, (_ip, _mac, veth, twin, tmac)) in enumerate(PODS.items()))
    kernel = (f"kernel: {{mode: {mode}, poll_ms: {POLL_MS}, ztunnel_dev: {ztunnel_dev}{kernel_extra}}}\n"
              if mode != "off" else "")
    text = f"""role: node
dpdk: {{workers: 1, memory_mb: 256, file_prefix: {PREFIX}, idle_sleep_us: 100}}
ports:
{ports}
tunnel: {{local_ip: 10.244.2.1, remote_ip: 10.244.2.10, next_hop_mac: "02:00:00:00:02:0a",
          inner_src_mac: "02:00:00:00:7f:01", inner_dst_mac: "02:00:00:00:7f:02"}}
limits: {{pods: 20000}}
{kernel}{extra}""" + (f"pods: [{', '.join(pods)}]\n" if pods else "")
    p = tmp_path / f"{mode}.yaml"
    p.write_text(text)
    return p


class Running:
    def __init__(self, cfg, tmp_path):
        self.z = Ztgeneve(BINARY, cfg, ns=NODE, log_dir=str(tmp_path))

    def __enter__(self):
        self.z.start(timeout=30)
        for ns, (ip, _mac, _veth, twin, _tmac) in PODS.items():
            sh(NODE, f"ip addr replace 10.244.2.1/32 dev {twin}; ip link set {twin} up; "
                     f"ip route replace {ip}/32 dev {twin}")
        return self

    def __exit__(self, *exc):
        if self.z.running():
            self.z.stop()

    def counters(self, dev):
        return telemetry.query(PREFIX, f"/ztgeneve/counters,{dev}")

    def pods(self):
        return telemetry.query(PREFIX, "/ztgeneve/info")["pods"]


def send(ns, count, pps, dport=9080, sport=45000):
    ip, _mac, _veth, _twin, tmac = PODS[ns]
    out = sh(ns, f"/usr/bin/python3 {REPO}/tests/kernel/flow.py --src {ip} --dst 10.96.0.10 --dport {dport} "
                 f"--sport {sport} --dst-mac {tmac} --count {count} --pps {pps}")
    return int(out.strip())


def wait(pred, timeout, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def redirected_after(run, ns, timeout):
    """Sends one frame every 10 ms until the pod's frames are redirected; returns seconds."""
    dev = ns.removeprefix("ztk-")
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        before = run.counters(dev)["redirect"]
        send(ns, 1, 1000)
        if wait(lambda: run.counters(dev)["redirect"] > before, 0.2):
            return time.monotonic() - t0
        time.sleep(0.01)
    return None


# ---------------------------------------------------------------- observe

def test_observe_follows_add_del_flush_destroy(topo, tmp_path):
    sh(NODE, "ipset destroy ztunnel-pods-ips 2>/dev/null; true")
    with Running(config(tmp_path, "observe"), tmp_path) as run:
        assert "ipset ztunnel-pods-ips does not exist" in run.z.stderr()
        sh(NODE, "ipset create ztunnel-pods-ips hash:ip family inet comment")
        t_add = time.monotonic()
        sh(NODE, "ipset add ztunnel-pods-ips 10.244.2.3 comment pod-uid-1")
        # Bound: the poll interval plus one poll (and a telemetry round trip).
        assert wait(lambda: run.pods() == 1, 2 * POLL_MS / 1000 + 0.05, step=0.002), "not mirrored in time"
        print(f"ipset add mirrored after {(time.monotonic() - t_add) * 1000:.0f} ms")
        assert redirected_after(run, POD, timeout=1) is not None, "the mirrored pod is not redirected"
        sh(NODE, "ipset del ztunnel-pods-ips 10.244.2.3")
        assert wait(lambda: run.pods() == 0, 2 * POLL_MS / 1000 + 0.2)
        before = run.counters("pod")
        send(POD, 5, 1000)
        assert wait(lambda: run.counters("pod")["rx"] >= before["rx"] + 5, 2)
        after = run.counters("pod")
        assert after["redirect"] == before["redirect"], "a removed pod is still redirected"
        assert after["pass"] >= before["pass"] + 5
        # flush, then destroy + create + add
        sh(NODE, "ipset add ztunnel-pods-ips 10.244.2.3; ipset add ztunnel-pods-ips 10.244.2.2")
        assert wait(lambda: run.pods() == 2, 1)
        sh(NODE, "ipset flush ztunnel-pods-ips")
        assert wait(lambda: run.pods() == 0, 1)
        sh(NODE, "ipset destroy ztunnel-pods-ips; ipset create ztunnel-pods-ips hash:ip family inet; "
                 "ipset add ztunnel-pods-ips 10.244.2.2")
        assert wait(lambda: run.pods() == 1, 1)
        assert redirected_after(run, POD2, timeout=1) is not None
    counters = run.z.exit_counters
    assert run.z.returncode == 0 and counters["pods"] == 1


def test_observe_mirrors_10000_members_within_bound(topo, tmp_path):
    sh(NODE, "ipset destroy ztunnel-pods-ips 2>/dev/null; ipset create ztunnel-pods-ips hash:ip family inet maxelem 65536")
    with Running(config(tmp_path, "observe"), tmp_path) as run:
        lines = "".join(f"add ztunnel-pods-ips 10.{100 + i // 65536}.{(i // 256) % 256}.{i % 256}\n" for i in range(10000))
        t0 = time.monotonic()
        subprocess.run(["ip", "netns", "exec", NODE, "ipset", "restore"], input=lines, text=True, check=True)
        # The bound we state in the README: 10,000 members mirrored within 1 s.
        assert wait(lambda: run.pods() == 10000, 1.0), f"only {run.pods()} pods after 1 s"
        took = time.monotonic() - t0
        print(f"10000 ipset members mirrored in {took * 1000:.0f} ms")
        sh(NODE, "ipset flush ztunnel-pods-ips")
        assert wait(lambda: run.pods() == 0, 1.0)


def test_observe_never_writes_the_kernel(topo, tmp_path):
    sh(NODE, "ipset destroy ztunnel-pods-ips 2>/dev/null; ipset create ztunnel-pods-ips hash:ip family inet; "
             "ipset add ztunnel-pods-ips 10.244.2.3")
    before = listings()
    with Running(config(tmp_path, "observe", extra="metrics: {listen: '127.0.0.1:16099'}\n"), tmp_path) as run:
        assert wait(lambda: run.pods() == 1, 1)
        metrics = sh(NODE, "/usr/bin/python3 -c \"import urllib.request; "
                           "print(urllib.request.urlopen('http://127.0.0.1:16099/metrics').read().decode())\"")
        for state, n in (("present", 0), ("missing", 24), ("different", 0)):
            assert f'ztgeneve_kernel_reference_objects{{state="{state}"}} {n}\n' in metrics, metrics
        err = run.z.stderr()
        assert "kernel: observe: the kernel differs from the reference configuration: 0 of 24 objects present, 24 missing, 0 different" in err, err
        for line in ("missing ip rule 100: from all fwmark 0x200/0x200 goto 32766",
                     "missing ip rule 101: from all fwmark 0x100/0x100 lookup 101",
                     "missing route table 100 10.244.2.3 via 192.168.126.2 dev istioin src 10.244.2.1",
                     "missing iptables -t mangle chain ztunnel-PREROUTING (15 rules)",
                     "missing link istioin (geneve id 1000 remote 10.244.2.10 dstport 6081)"):
            assert "kernel: observe: " + line in err, line
        # The report follows the kernel: rule 101 appears, the count of present goes up.
        sh(NODE, "ip rule add priority 101 fwmark 0x100/0x100 lookup 101")
        assert wait(lambda: "1 of 24 objects present, 23 missing" in run.z.stderr(), 2), run.z.stderr()[-2000:]
        sh(NODE, "ip rule del priority 101")
    assert listings() == before


# ---------------------------------------------------------------- program

def listings():
    """What an operator would look at, as text, without counters."""
    out = {}
    out["ipset"] = sh(NODE, "ipset list -output save 2>/dev/null | sed 's/ initval 0x[0-9a-f]*//'", check=False)
    # Rules and user chains per table; an untouched table prints nothing at all, a table
    # whose rules were all removed still prints its built-in chains: the same state.
    builtin = {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}
    lines, table = [], ""
    for l in sh(NODE, "iptables-save").splitlines():
        if l.startswith("*"):
            table = l
        elif l.startswith("-A ") or (l.startswith(":") and l[1:].split()[0] not in builtin):
            lines.append(table + " " + re.sub(r"\[\d+:\d+\]", "", l))
    out["iptables"] = "\n".join(lines)
    out["rule"] = sh(NODE, "ip rule")
    for t in (100, 101, 102):
        out[f"table{t}"] = sh(NODE, f"ip route show table {t} 2>/dev/null", check=False)
    out["links"] = sh(NODE, "ip -br link | awk '{print $1}' | grep -v '^t-' | sort")  # not ztgeneve's twins
    return out


def normalize(text):
    """Our ownership marks, which the reference does not show."""
    return text.replace(" -m comment --comment ztgeneve", "").replace(" proto 250", "")


# The reference (../shared kernel-path notes, Istio's node configuration) with this lab's
# values: HOST_IP 10.244.2.1, ZT_IP 10.244.2.10, ZT_VETH v-zt; as iptables-save and ip print it.
REF_MANGLE = """-A PREROUTING -j ztunnel-PREROUTING
-A INPUT -j ztunnel-INPUT
-A FORWARD -j ztunnel-FORWARD
-A OUTPUT -j ztunnel-OUTPUT
-A ztunnel-FORWARD -m mark --mark 0x220/0x220 -j CONNMARK --save-mark --nfmask 0x220 --ctmask 0x220
-A ztunnel-FORWARD -m mark --mark 0x210/0x210 -j CONNMARK --save-mark --nfmask 0x210 --ctmask 0x210
-A ztunnel-INPUT -m mark --mark 0x220/0x220 -j CONNMARK --save-mark --nfmask 0x220 --ctmask 0x220
-A ztunnel-INPUT -m mark --mark 0x210/0x210 -j CONNMARK --save-mark --nfmask 0x210 --ctmask 0x210
-A ztunnel-OUTPUT -s 10.244.2.1/32 -j MARK --set-xmark 0x220/0xffffffff
-A ztunnel-PREROUTING -i istioin -j MARK --set-xmark 0x200/0x200
-A ztunnel-PREROUTING -i istioin -j RETURN
-A ztunnel-PREROUTING -i istioout -j MARK --set-xmark 0x200/0x200
-A ztunnel-PREROUTING -i istioout -j RETURN
-A ztunnel-PREROUTING -p udp -m udp --dport 6081 -j RETURN
-A ztunnel-PREROUTING -m connmark --mark 0x220/0x220 -j MARK --set-xmark 0x200/0x200
-A ztunnel-PREROUTING -m mark --mark 0x200/0x200 -j RETURN
-A ztunnel-PREROUTING ! -i v-zt -m connmark --mark 0x210/0x210 -j MARK --set-xmark 0x40/0x40
-A ztunnel-PREROUTING -m mark --mark 0x40/0x40 -j RETURN
-A ztunnel-PREROUTING ! -s 10.244.2.10/32 -i v-zt -j MARK --set-xmark 0x210/0x210
-A ztunnel-PREROUTING -m mark --mark 0x200/0x200 -j RETURN
-A ztunnel-PREROUTING -i v-zt -j MARK --set-xmark 0x220/0x220
-A ztunnel-PREROUTING -p udp -j MARK --set-xmark 0x220/0x220
-A ztunnel-PREROUTING -m mark --mark 0x200/0x200 -j RETURN
-A ztunnel-PREROUTING -p tcp -m set --match-set ztunnel-pods-ips src -j MARK --set-xmark 0x100/0x100"""
REF_NAT = """-A PREROUTING -j ztunnel-PREROUTING
-A POSTROUTING -j ztunnel-POSTROUTING
-A ztunnel-POSTROUTING -m mark --mark 0x100/0x100 -j ACCEPT
-A ztunnel-PREROUTING -m mark --mark 0x100/0x100 -j ACCEPT"""
REF_DNS = "-A ztunnel-PREROUTING -p udp -m set --match-set ztunnel-pods-ips src -m udp --dport 53 -j DNAT --to-destination 10.244.2.10:15053"
REF_RULES = """100:\tfrom all fwmark 0x200/0x200 goto 32766
101:\tfrom all fwmark 0x100/0x100 lookup 101
102:\tfrom all fwmark 0x40/0x40 lookup 102
103:\tfrom all lookup 100"""


def ref_table100(pods, foreign=("10.9.9.9 dev v-zt scope link",)):
    return sorted(["10.244.2.10 dev v-zt scope link", *foreign] +
                  [f"{p} via 192.168.126.2 dev istioin src 10.244.2.1" for p in pods])


REF_TABLE101 = sorted(["default via 192.168.127.2 dev istioout", "10.244.2.10 dev v-zt scope link"])
REF_TABLE102 = sorted(["default via 10.244.2.10 dev v-zt onlink", "10.244.2.10 dev v-zt scope link"])


def ours_only(table_text, chains_of=("ztunnel-",)):
    """The ztunnel chains and the jumps into them, from iptables-save, in its order."""
    out = []
    for l in normalize(table_text).splitlines():
        if not l.startswith("-A "):
            continue
        chain, rest = l.split()[1], l
        if chain.startswith("ztunnel-") or "-j ztunnel-" in rest:
            out.append(l)
    return "\n".join(out)


def routes(text):
    """ip route lines, without our proto and the state flags the peer's link adds, sorted
    (the kernel lists a table in address order)."""
    return sorted(" ".join(normalize(l).replace(" linkdown", "").split()) for l in text.splitlines() if l.strip())


def foreign_objects():
    """Placed before every program test, to survive everything: a rule, a route in table 100
    and in a table of its own, a mangle rule, an ipset member."""
    sh(NODE, "ipset destroy ztunnel-pods-ips 2>/dev/null; iptables -t mangle -F; iptables -t mangle -X; "
             "iptables -t nat -F; iptables -t nat -X; true")
    sh(NODE, "ip rule add priority 500 fwmark 0x1/0x1 lookup 200; "
             "ip route add 10.9.9.0/24 dev v-zt table 200; ip route add 10.9.9.9 dev v-zt table 100; "
             "iptables -t mangle -A PREROUTING -p icmp -j ACCEPT; "
             "ipset create ztunnel-pods-ips hash:ip family inet comment; "
             "ipset add ztunnel-pods-ips 10.244.2.77 comment foreign-uid")


def remove_foreign_objects():
    sh(NODE, "ip rule del priority 500; ip route flush table 200; ip route del 10.9.9.9 table 100; "
             "iptables -t mangle -D PREROUTING -p icmp -j ACCEPT; ipset destroy ztunnel-pods-ips", check=False)


def stand_ins(up=True):
    """This kernel has no geneve module: veths named istioin / istioout with Istio's
    addresses stand in for the Geneve links, so the routes through them can be installed."""
    if up:
        sh(NODE, "ip link add istioin type veth peer name pistioin; ip link add istioout type veth peer name pistioout; "
                 "ip addr add 192.168.126.1/30 dev istioin; ip addr add 192.168.127.1/30 dev istioout; "
                 "for l in istioin pistioin istioout pistioout; do ip link set $l up; done")
    else:
        sh(NODE, "ip link del istioin; ip link del istioout", check=False)


def cleanup(cfg):
    r = subprocess.run(["ip", "netns", "exec", NODE, str(BINARY), "--cleanup", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r


def sighup_pods(run, cfg, pods):
    text = re.sub(r"^pods: .*\n?", "", cfg.read_text(), flags=re.M)
    cfg.write_text(text + (f"pods: [{', '.join(pods)}]\n" if pods else ""))
    run.z.proc.send_signal(signal.SIGHUP)


def test_program_without_geneve_installs_the_rest_and_names_each_missing_piece(topo, tmp_path):
    foreign_objects()
    pristine = listings()
    cfg = config(tmp_path, "program", pods=["10.244.2.3", "10.244.2.2"])
    with Running(cfg, tmp_path) as run:
        assert wait(lambda: "running:" in run.z.stderr(), 5)
        err = run.z.stderr()
        for dev, vni in (("istioin", 1000), ("istioout", 1001)):
            pat = (rf"ztgeneve: error: kernel: {dev}: cannot create the Geneve link \(vni {vni}, remote "
                   rf"10\.244\.2\.10, dstport 6081\): .*geneve module")
            assert len(re.findall(pat, err)) == 1, err
        assert ("ztgeneve: error: kernel: table 100 10.244.2.2 via 192.168.126.2 dev istioin src 10.244.2.1 "
                "(and 1 more like it): not installed: link istioin does not exist") in err, err
        assert ("ztgeneve: error: kernel: table 101 default via 192.168.127.2 dev istioout: not installed: "
                "link istioout does not exist") in err, err
        assert run.pods() == 2
        first = listings()
        assert ours_only(sh(NODE, "iptables-save -t mangle")) == REF_MANGLE
        assert ours_only(sh(NODE, "iptables-save -t nat")) == REF_NAT
    assert normalize(first["rule"]).count("\n") == pristine["rule"].count("\n") + 4
    assert REF_RULES in normalize(first["rule"])
    assert routes(first["table100"]) == ref_table100([])
    assert routes(first["table101"]) == ["10.244.2.10 dev v-zt scope link"]
    assert routes(first["table102"]) == REF_TABLE102
    cleanup(cfg)
    assert listings() == pristine
    remove_foreign_objects()


def test_program_installs_the_reference_and_table_100_follows_the_pods(topo, tmp_path):
    foreign_objects()
    stand_ins()
    pristine = listings()
    pods = ["10.244.2.3", "10.244.2.2"]
    cfg = config(tmp_path, "program", pods=pods)
    with Running(cfg, tmp_path) as run:
        assert wait(lambda: "running:" in run.z.stderr(), 5)
        err = run.z.stderr()
        for dev in ("istioin", "istioout"):
            assert f"kernel: {dev}: a link of that name exists but is a veth device, not geneve; left alone" in err
        # HOST_IP (the pod routes' src) appears on the twins after ztgeneve made them (Running
        # adds it): the address's route notifications make ztgeneve install the pod routes.
        assert wait(lambda: len(routes(sh(NODE, "ip route show table 100"))) == 4, 2), err
        first = listings()
        mangle = sh(NODE, "iptables-save -t mangle")
        nat = sh(NODE, "iptables-save -t nat")
        assert ours_only(mangle) == REF_MANGLE, ours_only(mangle)
        assert ours_only(nat) == REF_NAT, ours_only(nat)
        assert "-A PREROUTING -p icmp -j ACCEPT" in mangle, "a foreign rule went away"
        assert REF_RULES in normalize(first["rule"]), first["rule"]
        assert "500:\tfrom all fwmark 0x1/0x1 lookup 200" in first["rule"]
        assert routes(first["table100"]) == ref_table100(pods)
        assert routes(first["table101"]) == REF_TABLE101
        assert routes(first["table102"]) == REF_TABLE102
        # SIGHUP with the file unchanged changes nothing.
        run.z.proc.send_signal(signal.SIGHUP)
        assert wait(lambda: run.z.stderr().count("reloaded ") == 1, 2)
        assert listings() == first
        # 5 pods added, then 2 removed, at run time: table 100 and the ipset follow.
        added = pods + [f"10.244.2.{i}" for i in (31, 32, 33, 34, 35)]
        sighup_pods(run, cfg, added)
        assert wait(lambda: run.pods() == 7, 2)
        assert wait(lambda: routes(sh(NODE, "ip route show table 100")) ==
                    ref_table100(added), 2), sh(NODE, "ip route show table 100")
        kept = [p for p in added if p not in ("10.244.2.2", "10.244.2.33")]
        sighup_pods(run, cfg, kept)
        assert wait(lambda: run.pods() == 5, 2)
        assert wait(lambda: routes(sh(NODE, "ip route show table 100")) ==
                    ref_table100(kept), 2), sh(NODE, "ip route show table 100")
        members = sorted(l for l in sh(NODE, "ipset list -output save ztunnel-pods-ips").splitlines() if l.startswith("add "))
        assert members == sorted([f'add ztunnel-pods-ips {p} comment "ztgeneve"' for p in kept] +
                                 ['add ztunnel-pods-ips 10.244.2.77 comment "foreign-uid"'])
        # Someone deletes one of the repeated RETURNs: put back, in its place, within the 5 s check.
        sh(NODE, "iptables -t mangle -D ztunnel-PREROUTING -m mark --mark 0x200/0x200 -m comment --comment ztgeneve -j RETURN")
        assert wait(lambda: ours_only(sh(NODE, "iptables-save -t mangle")) == REF_MANGLE, 7)
        sighup_pods(run, cfg, pods)
        assert wait(lambda: run.pods() == 2, 2)
        assert wait(lambda: listings() == first, 2)
    # A second start changes nothing.
    with Running(cfg, tmp_path) as run:
        assert wait(lambda: "running:" in run.z.stderr(), 5)
        assert listings() == first
    # --cleanup: exactly what was there before, foreign objects (the stand-ins too) included.
    cleanup(cfg)
    assert listings() == pristine
    stand_ins(up=False)
    remove_foreign_objects()


def test_program_dns_capture_rule_only_when_configured(topo, tmp_path):
    sh(NODE, "ipset destroy ztunnel-pods-ips 2>/dev/null; true")
    cfg = config(tmp_path, "program", pods=["10.244.2.3"], kernel_extra=", dns_capture: true")
    with Running(cfg, tmp_path) as run:
        assert wait(lambda: "running:" in run.z.stderr(), 5)
        nat = ours_only(sh(NODE, "iptables-save -t nat"))
    assert nat == REF_NAT + "\n" + REF_DNS, nat
    # Restarted without it, the rule goes; --cleanup leaves no ztunnel chain.
    cfg2 = config(tmp_path, "program", pods=["10.244.2.3"])
    with Running(cfg2, tmp_path) as run:
        assert wait(lambda: "running:" in run.z.stderr(), 5)
        assert ours_only(sh(NODE, "iptables-save -t nat")) == REF_NAT
    cleanup(cfg2)
    assert "ztunnel-" not in sh(NODE, "iptables-save")


def test_program_adopts_an_ipset_made_without_comments(topo, tmp_path):
    sh(NODE, "ipset destroy ztunnel-pods-ips 2>/dev/null; ipset create ztunnel-pods-ips hash:ip; "
             "ipset add ztunnel-pods-ips 10.244.2.77")
    cfg = config(tmp_path, "program", pods=["10.244.2.3", "10.244.2.2"])
    with Running(cfg, tmp_path) as run:
        assert wait(lambda: "running:" in run.z.stderr(), 5)
        err = run.z.stderr()
        assert "Set cannot be created" not in err, err
        assert "kernel: ipset ztunnel-pods-ips exists without comment support: adopted" in err
        assert "ipset ztunnel-pods-ips, 2 pods in the table" in err
        members = sorted(l for l in sh(NODE, "ipset list -output save ztunnel-pods-ips").splitlines() if l.startswith("add "))
        assert members == ["add ztunnel-pods-ips 10.244.2.2", "add ztunnel-pods-ips 10.244.2.3",
                           "add ztunnel-pods-ips 10.244.2.77"]
        assert redirected_after(run, POD, timeout=1) is not None, "the adopted set's pod is not redirected"
        sighup_pods(run, cfg, ["10.244.2.3"])
        assert wait(lambda: "add ztunnel-pods-ips 10.244.2.2" not in sh(NODE, "ipset list -output save"), 2)
    cleanup(cfg)
    save = sh(NODE, "ipset list -output save ztunnel-pods-ips")
    assert [l for l in save.splitlines() if l.startswith("add ")] == ["add ztunnel-pods-ips 10.244.2.77"], save
    sh(NODE, "ipset destroy ztunnel-pods-ips")


@pytest.mark.parametrize("create,why", [
    ("hash:net", "exists as hash:net family inet"),
    ("hash:ip family inet6", "exists as hash:ip family inet6"),
])
def test_program_refuses_an_ipset_it_cannot_use(topo, tmp_path, create, why):
    sh(NODE, f"ipset destroy ztunnel-pods-ips 2>/dev/null; ipset create ztunnel-pods-ips {create}")
    before = listings()
    cfg = config(tmp_path, "program", pods=["10.244.2.3"])
    r = subprocess.run(["ip", "netns", "exec", NODE, str(BINARY), "--config", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert (f"ztgeneve: error: kernel: ipset ztunnel-pods-ips {why}, not hash:ip family inet: ztgeneve "
            "cannot keep its pods in it") in r.stderr, r.stderr
    assert "running:" not in r.stderr
    assert listings() == before, "nothing else may be installed for a refused set"
    sh(NODE, "ipset destroy ztunnel-pods-ips")


def test_program_fallback_survives_sigkill_and_is_adopted(topo, tmp_path):
    cfg = config(tmp_path, "program", pods=["10.244.2.3"])
    with Running(cfg, tmp_path) as run:
        assert wait(lambda: "running:" in run.z.stderr(), 5)
        installed = listings()
        run.z.stop(sig=signal.SIGKILL)
    assert listings() == installed, "SIGKILL must leave the kernel configuration in place"
    # The kernel path: a marked packet to ztunnel is looked up in table 101.
    got = sh(NODE, "ip route get 10.244.2.10 mark 0x100")
    assert "table 101" in got and "dev v-zt" in got, got
    # Unmarked, the main table decides (here: unreachable, the twins went with ztgeneve).
    assert "table 101" not in sh(NODE, "ip route get 10.244.2.10 2>&1", check=False)
    with Running(cfg, tmp_path) as run:
        assert wait(lambda: "running:" in run.z.stderr(), 5)
        assert listings() == installed, "a restart must adopt, not duplicate"
    subprocess.run(["ip", "netns", "exec", NODE, str(BINARY), "--cleanup", str(cfg)], check=True, capture_output=True)


# ---------------------------------------------------------------- live updates

def test_10000_pods_added_and_removed_under_a_steady_flow_lose_nothing(topo, tmp_path):
    sh(NODE, "ipset destroy ztunnel-pods-ips 2>/dev/null; ipset create ztunnel-pods-ips hash:ip family inet maxelem 65536; "
             "ipset add ztunnel-pods-ips 10.244.2.2")
    with Running(config(tmp_path, "observe"), tmp_path) as run:
        assert wait(lambda: run.pods() == 1, 1)
        assert redirected_after(run, POD2, timeout=1) is not None
        zt_rx0 = int(sh(ZT, "cat /sys/class/net/eth0/statistics/rx_packets"))
        before = run.counters("pod2")
        flow = subprocess.Popen(["ip", "netns", "exec", POD2, "/usr/bin/python3", str(REPO / "tests/kernel/flow.py"),
                                 "--src", "10.244.2.2", "--dst", "10.96.0.10", "--dst-mac", PODS[POD2][4],
                                 "--count", "6000", "--pps", "2000", "--sport", "46000"],
                                stdout=subprocess.PIPE, text=True)
        adds = "".join(f"add ztunnel-pods-ips 10.{100 + i // 65536}.{(i // 256) % 256}.{i % 256}\n" for i in range(10000))
        dels = adds.replace("add ", "del ")
        time.sleep(0.3)  # the flow is running
        subprocess.run(["ip", "netns", "exec", NODE, "ipset", "restore"], input=adds, text=True, check=True)
        assert wait(lambda: run.pods() == 10001, 2)
        subprocess.run(["ip", "netns", "exec", NODE, "ipset", "restore"], input=dels, text=True, check=True)
        assert wait(lambda: run.pods() == 1, 2)
        sent = int(flow.communicate(timeout=30)[0].strip())
        assert wait(lambda: run.counters("pod2")["rx"] - before["rx"] >= sent, 2)
        after = run.counters("pod2")
        zt = run.counters("zt")
    d = {k: after[k] - before[k] for k in after}
    assert d["rx"] == sent, f"sent {sent}, the pods port received {d['rx']}"
    assert d["redirect"] == sent, f"only {d['redirect']} of {sent} redirected: {d}"
    assert all(v == 0 for k, v in d.items() if k.startswith("drop_")), d
    assert zt["drop_tx_full"] == 0
    zt_rx = int(sh(ZT, "cat /sys/class/net/eth0/statistics/rx_packets")) - zt_rx0
    assert zt_rx >= sent, f"ztunnel's eth0 received {zt_rx} frames, {sent} were sent"


# ---------------------------------------------------------------- SIGHUP reload

def test_sighup_applies_pods_and_refuses_other_changes(topo, tmp_path):
    cfg = config(tmp_path, "off", pods=["10.244.2.3"])
    with Running(cfg, tmp_path) as run:
        assert run.pods() == 1
        text = cfg.read_text()
        cfg.write_text(text.replace("pods: [10.244.2.3]", "pods: [10.244.2.3, 10.244.2.2]"))
        run.z.proc.send_signal(signal.SIGHUP)
        assert wait(lambda: run.pods() == 2, 2), "a pod added by SIGHUP was not applied"
        assert redirected_after(run, POD2, timeout=1) is not None
        # A key that cannot change live: refused, named, nothing applied (not even pods).
        cfg.write_text(text.replace("pods: [10.244.2.3]", "pods: [10.244.2.3]")
                       .replace('next_hop_mac: "02:00:00:00:02:0a"', 'next_hop_mac: "02:00:00:00:02:0b"'))
        run.z.proc.send_signal(signal.SIGHUP)
        assert wait(lambda: "reload refused" in run.z.stderr(), 2)
        assert "tunnel cannot change while running (restart ztgeneve); nothing was applied" in run.z.stderr()
        assert run.pods() == 2
