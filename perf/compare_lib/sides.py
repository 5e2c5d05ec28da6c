"""The three contenders, one class each, with one shape: start(), sample() -> (rx, tx), stop().

All use the same devices: the input `net_pcap0` replaying in.pcap (infinite_rx) and the
outputs `net_null0` (tunnel side) and `net_null1` (non-pod frames), or, for the
correctness check, pcap files (`Devices(check_dir=...)`). One forwarding core: CPU 1;
everything else on CPU 0."""
import contextlib
import os
import re
import shutil
import signal
import time
from pathlib import Path

import yaml

from . import env
from .env import Proc, log

REPO = env.REPO
ZTGENEVE = Path(os.environ.get("ZTG_BINARY", REPO / "build" / "ztgeneve"))
OVS_VSWITCHD = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk"
FWD_CPU = 1
ZTUNNEL_MAC = "02:00:00:00:02:0a"


class Devices:
    """Devargs of the input and the two outputs; pcap files instead of null when checking.
    in_pcaps: one file per rx queue (net_pcap makes a queue of each rx_pcap; the input is
    spread over them by flow, traffic.write_pcap). The outputs get as many queues: net_null
    any number, a checking net_pcap one tx_pcap file per queue (tunnel.q<i>.pcap)."""

    def __init__(self, in_pcaps, check_dir=None):
        in_pcaps = [in_pcaps] if isinstance(in_pcaps, (str, Path)) else list(in_pcaps)
        self.check_dir, self.queues = check_dir, len(in_pcaps)
        rx = ",".join(f"rx_pcap={p}" for p in in_pcaps)
        if check_dir:  # one pass over the files, outputs captured
            self.inp = f"net_pcap0,{rx}"
            self.tun = "net_pcap_tun," + ",".join(f"tx_pcap={p}" for p in self.outputs("tunnel"))
            self.other = "net_pcap_oth," + ",".join(f"tx_pcap={p}" for p in self.outputs("other"))
        else:
            self.inp = f"net_pcap0,{rx},infinite_rx=1"
            self.tun, self.other = "net_null0,no-rx=1", "net_null1,no-rx=1"

    @classmethod
    def memif(cls, socket, out_socket=None):
        """The input is a memif client of `socket` (a generator process is its server); so is
        the tunnel output of `out_socket` when given (the latency receiver), else net_null."""
        d = cls.__new__(cls)
        d.check_dir, d.queues = None, 1
        d.inp = f"net_memif0,role=client,socket={socket},socket-abstract=no"
        d.tun = f"net_memif1,role=client,socket={out_socket},socket-abstract=no" if out_socket else "net_null0,no-rx=1"
        d.other = "net_null1,no-rx=1"
        return d

    def outputs(self, name):
        """The capture files of output `name` (tunnel, other) when checking, one per queue."""
        if self.queues == 1:
            return [Path(self.check_dir) / f"{name}.pcap"]
        return [Path(self.check_dir) / f"{name}.q{i}.pcap" for i in range(self.queues)]

    @staticmethod
    def name(devargs):
        return devargs.split(",", 1)[0]


def lcores(workers):
    """EAL --lcores for the main lcore on CPU 0 and `workers` forwarding lcores, the first on
    FWD_CPU and the others on the next CPUs (wrapping), as ztgeneve places its workers."""
    ncpu = os.cpu_count() or 1
    return ",".join(["0@0"] + [f"{i}@{(FWD_CPU + i - 1) % ncpu}" for i in range(1, workers + 1)])


def eal_mem_args(huge_dir, mb):
    return ["--no-huge", "-m", str(mb)] if not huge_dir else ["--huge-dir", huge_dir, "-m", str(mb)]


class _DpdkApp:
    """testpmd and ztgeneve: counters from DPDK telemetry /ethdev/stats."""
    prefix = None
    devs = None

    def sample(self):
        s = env.ethdev_stats(self.prefix, [Devices.name(d) for d in (self.devs.inp, *self.outs)])
        rx = s[Devices.name(self.devs.inp)][0]
        return rx, sum(s[Devices.name(d)][1] for d in self.outs)

    def stop(self):
        rc = self.proc.stop()
        env.dpdk_run_dir_cleanup(self.prefix)
        return rc


class Testpmd(_DpdkApp):
    """dpdk-testpmd --forward-mode=io: input -> tunnel output (the I/O ceiling)."""
    label = "testpmd io"
    mode = "io"

    def __init__(self, ns, devs, workdir, huge_dir=None, n_frames=2000, workers=1, **_):
        self.ns, self.devs, self.workdir, self.huge = ns, devs, Path(workdir), huge_dir
        self.prefix, self.outs = f"zperf-tp-{os.getpid()}", [devs.tun]
        self.workers = workers
        self.mbufs = n_frames + 16384 * workers
        self.mem = 256 + self.mbufs * 9 // 2048  # ~4.5 KB per mbuf: 3 KB was too little at 1M

    def start(self):
        n = self.workers
        args = ["dpdk-testpmd", f"--lcores={lcores(n)}", "--main-lcore", "0", "--file-prefix", self.prefix,
                "--no-pci", "--log-level=*:warning", *eal_mem_args(self.huge, self.mem),
                "--vdev", self.devs.inp, "--vdev", self.devs.tun, "--",
                f"--forward-mode={self.mode}", f"--nb-cores={n}", f"--rxq={n}", f"--txq={n}",
                f"--total-num-mbufs={self.mbufs}", "--auto-start"]
        # testpmd runs until its stdin closes
        self.proc = Proc(self.ns, args, self.workdir, "testpmd", stdin_pipe=True)
        env.wait_for(lambda: self.sample()[0] > 0, 60, "waiting for testpmd to forward", self.proc)
        return self

    def stop(self):
        self.proc.p.stdin.close()
        return super().stop()


class TestpmdMac(Testpmd):
    """testpmd --forward-mode=mac: the same I/O, and each frame's two MAC addresses written
    (what any forwarder that edits the frame pays on top of io)."""
    label = "testpmd mac"
    mode = "mac"


class TestpmdMacswap(Testpmd):
    """testpmd --forward-mode=macswap: the same I/O, and each frame's MACs read and swapped
    (what any forwarder that reads the frame pays on top of io)."""
    label = "testpmd macswap"
    mode = "macswap"


class Ztgeneve(_DpdkApp):
    """ztgeneve, role node, 1 worker (CPU 1): pods port = input, twin = net_null1, ztunnel = net_null0."""
    label = "ztgeneve"

    def __init__(self, ns, devs, workdir, huge_dir=None, table_pods=(), n_frames=2000, workers=1,
                 mtu=None, protocols=None, idle_sleep_us=None, **_):
        self.ns, self.devs, self.workdir, self.huge = ns, devs, Path(workdir), huge_dir
        self.prefix, self.outs = f"zperf-ztg-{os.getpid()}", [devs.tun, devs.other]
        self.pods, self.workers, self.n_frames, self.mtu = list(table_pods), workers, n_frames, mtu
        self.protocols, self.idle_sleep_us = protocols, idle_sleep_us

    def config(self):
        cfg = yaml.safe_load((REPO / "perf" / "configs" / "ztgeneve-node.yaml").read_text())
        mbufs = self.n_frames + 8192 * self.workers
        d = cfg["dpdk"]
        d.update(workers=self.workers, file_prefix=self.prefix, no_huge=not self.huge, mbufs=mbufs,
                 memory_mb=256 + mbufs * 9 // 2048 + len(self.pods) * 200 // (1 << 20))
        if self.idle_sleep_us is not None:
            d["idle_sleep_us"] = self.idle_sleep_us
        if self.huge:
            d["eal_args"] = [f"--huge-dir={self.huge}"]
        cfg["ports"][0].update(devargs=self.devs.inp, twin=self.devs.other)
        cfg["ports"][1].update(devargs=self.devs.tun)
        cfg["pods"] = self.pods
        if self.mtu:  # 1500-byte frames + 50 bytes of Geneve need a jumbo ztunnel link
            cfg["tunnel"]["mtu"] = self.mtu
        cfg.setdefault("limits", {})["pods"] = max(1024, len(self.pods) * 5 // 4)
        if self.protocols:  # the memif generator sends UDP
            cfg["redirect"] = {"protocols": self.protocols}
        path = self.workdir / "ztgeneve.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def launch(self):
        """Starts it and waits until it says it runs."""
        self.proc = Proc(self.ns, [ZTGENEVE, "--config", self.config()], self.workdir, "ztgeneve")
        env.wait_for(lambda: re.search(r"^ztgeneve: (\w+: )?running\b", self.proc.text(), re.M),
                     180, "waiting for ztgeneve to run", self.proc)

    def start(self):
        self.launch()
        if not self.devs.check_dir:
            env.wait_for(lambda: self.sample()[0] > 0, 30, "waiting for ztgeneve to forward", self.proc)
        return self


class Ovs:
    """OVS-DPDK userspace Geneve push (ovs-vswitchd-dpdk), as in
    the OVS-DPDK baseline set-up: br-phy (netdev) owns the tunnel output and
    10.244.2.1/24; br-int (netdev, fail_mode=secure) has geneve0 (remote 10.244.2.10, key
    1001), the non-pod output and, added last, the pcap input. rules: "pod" = one /32 per
    pod, or a CIDR string = one rule on it. All state in workdir/ovs, its own namespace."""

    def __init__(self, ns, devs, workdir, huge_dir=None, traffic_pods=(), rules="pod", **_):
        self.ns, self.devs, self.huge = ns, devs, huge_dir
        self.dir = Path(workdir) / "ovs"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.pods, self.rules = list(traffic_pods), rules
        self.label = "OVS /32 per pod" if rules == "pod" else f"OVS {rules}"
        self.prefix = f"zperf-ovs-{os.getpid()}"
        d = str(self.dir)
        self.env = dict(os.environ, OVS_RUNDIR=d, OVS_LOGDIR=d, OVS_DBDIR=d, OVS_SYSCONFDIR=d,
                        OVS_PKGDATADIR="/usr/share/openvswitch")
        self.procs = []

    def vsctl(self, *args):
        return env.ns_run(self.ns, "ovs-vsctl", f"--db=unix:{self.dir}/db.sock", "--timeout=60", *args,
                          env=self.env)

    def appctl(self, *args):
        return env.ns_run(self.ns, "ovs-appctl", "-t", f"{self.dir}/vswitchd.ctl", *args, env=self.env)

    def ofctl(self, *args):
        return env.ns_run(self.ns, "ovs-ofctl", *map(str, args), env=self.env)

    def start(self):
        d = self.dir
        env.ns_run(self.ns, "ovsdb-tool", "create", f"{d}/conf.db", "/usr/share/openvswitch/vswitch.ovsschema")
        self.procs.append(Proc(self.ns, ["taskset", "-c", "0", "ovsdb-server", f"{d}/conf.db",
                                         f"--remote=punix:{d}/db.sock", f"--unixctl={d}/ovsdb.ctl",
                                         f"--log-file={d}/ovsdb.log"], d, "ovsdb", env=self.env))
        env.wait_for(lambda: (d / "db.sock").exists(), 20, "waiting for ovsdb-server", self.procs[0])
        self.vsctl("--no-wait", "init")
        mem = 1024
        extra = " ".join([*eal_mem_args(self.huge, mem), "--no-pci", f"--file-prefix={self.prefix}"] +
                         (["--legacy-mem"] if not self.huge else []))
        self.vsctl("--no-wait", "set", "Open_vSwitch", ".", "other_config:dpdk-init=true",
                   f"other_config:pmd-cpu-mask={1 << FWD_CPU:#x}", f'other_config:dpdk-extra="{extra}"')
        self.procs.append(Proc(self.ns, ["taskset", "-c", "0", OVS_VSWITCHD, f"unix:{d}/db.sock",
                                         f"--unixctl={d}/vswitchd.ctl", f"--log-file={d}/vswitchd.log"],
                               d, "vswitchd", env=self.env))
        env.wait_for(lambda: (d / "vswitchd.ctl").exists(), 60, "waiting for ovs-vswitchd", self.procs[1])
        v = self.vsctl
        v("add-br", "br-phy", "--", "set", "bridge", "br-phy", "datapath_type=netdev")
        v("add-port", "br-phy", "tun0", "--", "set", "Interface", "tun0", "type=dpdk",
          f'options:dpdk-devargs="{self.devs.tun}"', "ofport_request=1")
        env.ns_run(self.ns, "ip", "addr", "add", "10.244.2.1/24", "dev", "br-phy")
        env.ns_run(self.ns, "ip", "link", "set", "br-phy", "up")
        # OVS learns br-phy's address from netlink asynchronously: retry until the route takes
        env.wait_for(lambda: self.appctl("ovs/route/add", "10.244.2.10/32", "br-phy") is not None, 20,
                     "adding the OVS route to 10.244.2.10 via br-phy", self.procs[1])
        self.appctl("tnl/arp/set", "br-phy", "10.244.2.10", ZTUNNEL_MAC)
        v("add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev", "fail_mode=secure")
        v("add-port", "br-int", "geneve0", "--", "set", "Interface", "geneve0", "type=geneve",
          "options:remote_ip=10.244.2.10", "options:key=1001", "ofport_request=2")
        v("add-port", "br-int", "other0", "--", "set", "Interface", "other0", "type=dpdk",
          f'options:dpdk-devargs="{self.devs.other}"', "ofport_request=3")
        flows = self.dir / "flows.txt"
        match = [f"ip,nw_src={p}" for p in self.pods] if self.rules == "pod" else [f"ip,nw_src={self.rules}"]
        flows.write_text("".join(f"priority=100,{m},actions=output:2\n" for m in match) +
                         "priority=10,ip,actions=output:3\n")
        self.ofctl("add-flows", "br-int", flows)
        v("add-port", "br-int", "in0", "--", "set", "Interface", "in0", "type=dpdk",
          f'options:dpdk-devargs="{self.devs.inp}"', "ofport_request=4")
        if not self.devs.check_dir:
            env.wait_for(lambda: self.sample()[0] > 0, 60, "waiting for OVS to forward", self.procs[1])
        return self

    def sample(self):
        """(rx of the input port, tx of both outputs) from dpctl/show -s."""
        out = self.appctl("dpctl/show", "-s", "netdev@ovs-netdev")
        stats, port = {}, None
        for line in out.splitlines():
            m = re.match(r"\s+port \d+: (\S+)", line)
            if m:
                port = m.group(1)
            m = re.match(r"\s+(RX|TX) packets:(\d+)", line)
            if m and port:
                stats[(port, m.group(1))] = int(m.group(2))
        return stats[("in0", "RX")], stats.get(("tun0", "TX"), 0) + stats.get(("other0", "TX"), 0)

    def pmd_cpu(self):
        return self.appctl("dpif-netdev/pmd-rxq-show")

    def stop(self):
        if len(self.procs) < 2:  # vswitchd never started
            for p in self.procs:
                p.stop(signal.SIGTERM)
            return
        for cmd in (["ovs-appctl", "-t", f"{self.dir}/vswitchd.ctl", "exit", "--cleanup"],
                    ["ovs-appctl", "-t", f"{self.dir}/ovsdb.ctl", "exit"]):
            env.ns_run(self.ns, *cmd, check=False, env=self.env, timeout=30)
        for p in reversed(self.procs):
            env.wait_for(lambda p=p: not p.alive(), 20, f"waiting for {p.name} to exit") if p.alive() else None
            p.stop()
        env.dpdk_run_dir_cleanup(self.prefix)


class MemifGenerator:
    """dpdk-testpmd txonly as the memif server that feeds a side: one flow of UDP frames of
    `size` bytes from the pod 10.244.2.2 to the VIP, made by a DPDK process and handed over
    through shared-memory rings as a NIC's rx ring would be filled (not replayed from a
    file). Its forwarding lcore and main lcore share CPU 0; the side keeps CPU 1."""

    def __init__(self, ns, workdir, size, huge_dir=None):
        self.ns, self.workdir, self.size, self.huge = ns, Path(workdir), size, huge_dir
        self.prefix = f"zperf-gen-{os.getpid()}"
        self.socket = self.workdir / f"memif-{os.getpid()}.sock"

    def start(self):
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        args = ["stdbuf", "-oL", "dpdk-testpmd", "--lcores=0@0,1@0", "--main-lcore", "0", "--file-prefix", self.prefix,
                "--no-pci", "--log-level=*:warning", *eal_mem_args(self.huge, 1024),
                "--vdev", f"net_memif0,role=server,socket={self.socket},socket-abstract=no", "--",
                "--forward-mode=txonly", "--tx-ip=10.244.2.2,10.96.0.10", f"--txpkts={self.size}",
                "--nb-cores=1", "--total-num-mbufs=16384", "--auto-start"]
        self.proc = Proc(self.ns, args, self.workdir, "memif-gen", stdin_pipe=True)
        # Listening once forwarding has started (the socket file alone comes before listen(),
        # and a client refused then does not retry).
        env.wait_for(lambda: self.socket.exists() and "Press enter to exit" in self.proc.text("out"), 60,
                     "waiting for the memif generator", self.proc)
        return self

    def stop(self):
        self.proc.p.stdin.close()
        rc = self.proc.stop()
        env.dpdk_run_dir_cleanup(self.prefix)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        return rc


class WithGenerator:
    """A side whose input is fed by a generator process: started first, stopped last."""

    def __init__(self, side, gen, label=None):
        self.side, self.gen, self.label = side, gen, label or f"{side.label} (memif input)"

    @property
    def proc(self):
        return self.side.proc

    def start(self):
        self.gen.start()
        try:
            self.side.start()
        except Exception:
            with contextlib.suppress(Exception):  # a process it started and then gave up on
                self.side.stop()
            self.gen.stop()
            raise
        return self

    def sample(self):
        return self.side.sample()

    def pids(self):
        """[(name, pid)] of the generator's and the side's processes (per-thread CPU)."""
        return [(p.proc.name, p.proc.p.pid) for p in (self.gen, self.side) if hasattr(p, "proc")]

    def stop(self):
        try:
            return self.side.stop()
        finally:
            self.gen.stop()


SIDES = {"testpmd": Testpmd, "testpmd-mac": TestpmdMac, "testpmd-macswap": TestpmdMacswap,
         "ztgeneve": Ztgeneve, "ovs": Ovs}
