"""Latency of one redirected packet (`--scale latency`): perf/ztg_latency stamps each frame
with the TSC and receives it back, in one process on one lcore (CPU 0), through memif:

  ztg_latency port 0 (memif server) -> [side: pods port ... ztunnel port] -> ztg_latency port 1

The side is ztgeneve (role node, 1 worker on CPU 1; busy-poll, or `idle_sleep_us`),
testpmd io (the same memif I/O and one forwarding core, no work: the I/O part), or nothing:
port 1 is then a memif client of port 0's own socket (the generator's and the receiver's
overhead alone). Loads: a low fixed rate, and 80 % of ztgeneve's maximum, measured first
in every repetition by running it flat out (rate 0)."""
import json
import os
import statistics
import time
from pathlib import Path

from . import env, report, sides
from .env import Proc, log

LATENCY = Path(os.environ.get("ZTG_LATENCY", sides.ZTGENEVE.parent / "perf" / "ztg_latency"))
FIELDS = ["case", "side", "idle_sleep_us", "load", "rep", "rate_pps", "offered_pps", "tx_pps", "rx_pps",
          "tx_full", "skipped", "sent", "samples", "rx_nostamp", "mean_us", "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "fwd_cpu_pct", "fwd_preempt_s",
          "load1"]
KEY = ["case", "side", "idle_sleep_us", "load"]


class Generator:
    """ztg_latency as the memif server of the side's input (socket `in`) and output (`out`);
    loopback: its second port is a client of its own first socket."""

    def __init__(self, ns, workdir, rate, warmup, window, size, huge_dir=None, loopback=False, tag=""):
        self.ns, self.workdir, self.huge = ns, Path(workdir), huge_dir
        self.rate, self.warmup, self.window, self.size, self.loopback = rate, warmup, window, size, loopback
        self.prefix = f"zperf-lat-{os.getpid()}"
        self.sock_in = self.workdir / f"lat-in-{os.getpid()}.sock"
        self.sock_out = self.workdir / f"lat-out-{os.getpid()}.sock"
        self.name = f"latency{tag}"

    def start(self):
        for s in (self.sock_in, self.sock_out):
            s.unlink(missing_ok=True)
        out = f"net_memif1,role=client,socket={self.sock_in},socket-abstract=no" if self.loopback else \
            f"net_memif1,role=server,socket={self.sock_out},socket-abstract=no"
        args = [LATENCY, "--lcores=0@0", "--file-prefix", self.prefix, "--no-pci", "--log-level=*:warning",
                *sides.eal_mem_args(self.huge, 512),
                "--vdev", f"net_memif0,role=server,socket={self.sock_in},socket-abstract=no", "--vdev", out, "--",
                "--rate", str(int(self.rate)), "--warmup", str(self.warmup), "--window", str(self.window),
                "--size", str(self.size)]
        self.proc = Proc(self.ns, args, self.workdir, self.name)
        env.wait_for(lambda: "ports started" in self.proc.text("out"), 60, "waiting for ztg_latency", self.proc)
        return self

    def result(self, timeout):
        """Wait for the run to end; its JSON line."""
        env.wait_for(lambda: not self.proc.alive(), timeout, "waiting for ztg_latency's result")
        line = next((l for l in reversed(self.proc.text("out").splitlines()) if l.startswith("{")), None)
        if self.proc.p.returncode or line is None:
            raise RuntimeError(f"ztg_latency exited {self.proc.p.returncode}: {self.proc.text()[-2000:]}")
        return json.loads(line)

    def stop(self):
        self.proc.stop()
        env.dpdk_run_dir_cleanup(self.prefix)
        for s in (self.sock_in, self.sock_out):
            s.unlink(missing_ok=True)


def side_for(case, ns, workdir, gen, a, huge):
    """The process between the generator's two ports, or None (loopback)."""
    devs = sides.Devices.memif(gen.sock_in, gen.sock_out)
    if case["side"] == "testpmd":
        return sides.Testpmd(ns, devs, workdir, huge_dir=huge)
    if case["side"] == "ztgeneve":
        return sides.Ztgeneve(ns, devs, workdir, huge_dir=huge, table_pods=["10.244.2.2"],
                              idle_sleep_us=case["idle_sleep_us"])
    return None


def forwarder_cpu(pid):
    """(CPU seconds, involuntary context switches) of the process's DPDK worker lcore threads
    (`rte-worker-N` in DPDK 22.11, `lcore-worker-N` later): how much of the run the
    forwarding thread really ran, and how often the scheduler took its CPU away."""
    cpu, preempt = 0.0, 0
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            if not (t / "comm").read_text().startswith(("rte-worker", "lcore-worker")):
                continue
            f = (t / "stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
            preempt += int(next(l.split()[1] for l in (t / "status").read_text().splitlines()
                                if l.startswith("nonvoluntary_ctxt_switches")))
        except (OSError, StopIteration):
            continue
    return cpu, preempt


def run_one(case, rate, ns, workdir, a, huge):
    gen = Generator(ns, workdir, rate, a.lat_warmup, a.lat_window, a.size, huge, loopback=case["side"] == "loopback")
    side = None
    try:
        gen.start()
        side = side_for(case, ns, workdir, gen, a, huge)
        if side:
            side.start()
            (c0, p0), t0 = forwarder_cpu(side.proc.p.pid), time.monotonic()
        r = gen.result(a.lat_warmup + a.lat_window + 90)
        if side:
            (c1, p1), dt = forwarder_cpu(side.proc.p.pid), time.monotonic() - t0
            r.update(fwd_cpu_pct=100 * (c1 - c0) / dt, fwd_preempt_s=(p1 - p0) / dt)
        return r
    finally:
        for p in (side, gen):
            if p:
                try:
                    p.stop()
                except Exception as e:  # noqa: BLE001 - stop the other one anyway
                    log(f"stopping {p}: {e}")


def cases(a):
    out = [dict(case="loopback", side="loopback", idle_sleep_us=""),
           dict(case="testpmd-io", side="testpmd", idle_sleep_us=""),
           dict(case="ztgeneve", side="ztgeneve", idle_sleep_us=0)]
    if a.lat_idle_sleep_us:
        out.append(dict(case=f"ztgeneve-idle{a.lat_idle_sleep_us}", side="ztgeneve", idle_sleep_us=a.lat_idle_sleep_us))
    return out


def row(case, load, rep, rate, r):
    us = lambda k: r[k] / 1000.0
    return dict(case, load=load, rep=rep, rate_pps=rate, offered_pps=r["offered_pps"], tx_pps=r["tx_pps"],
                rx_pps=r["rx_pps"], tx_full=r["tx_full"], skipped=r["skipped"], sent=r["w_tx"], samples=r["w_rx"],
                rx_nostamp=r["rx_nostamp"],
                mean_us=us("mean_ns"), p50_us=us("p50_ns"), p90_us=us("p90_ns"), p99_us=us("p99_ns"),
                p999_us=us("p999_ns"), max_us=us("max_ns"),
                fwd_cpu_pct=r.get("fwd_cpu_pct", ""), fwd_preempt_s=r.get("fwd_preempt_s", ""), load1=round(os.getloadavg()[0], 2))


def run_all(ns, workdir, a, huge, failures):
    """Every repetition: ztgeneve flat out (its maximum), then each case at the low rate and
    at 80 % of that maximum. --smoke: once, the loopback and busy-polling ztgeneve at the low
    rate only (a few seconds). Returns the rows."""
    rows = []
    zt = dict(case="ztgeneve", side="ztgeneve", idle_sleep_us=0)
    if a.smoke:
        for c in (c for c in cases(a) if c["case"] in ("loopback", "ztgeneve")):
            try:
                rows.append(row(c, "low", 1, a.lat_low_pps, run_one(c, a.lat_low_pps, ns, workdir, a, huge)))
            except Exception as e:  # noqa: BLE001
                failures.append(f"latency {c['case']} low: {e}".splitlines()[0][:300])
        return rows
    for rep in range(1, a.lat_reps + 1):
        try:
            log(f"[latency rep {rep}] ztgeneve flat out (its maximum) ...")
            r = run_one(zt, 0, ns, workdir, a, huge)
            rows.append(row(zt, "max", rep, 0, r))
        except Exception as e:  # noqa: BLE001 - record, go on
            failures.append(f"latency rep {rep} ztgeneve max: {e}".splitlines()[0][:300])
            log(f"  FAILED: {e}")
            continue
        high = int(a.lat_load * r["rx_pps"])
        log(f"  ztgeneve maximum {r['rx_pps'] / 1e6:.2f} Mpps received; {a.lat_load:.0%} = {high / 1e6:.2f} Mpps")
        for c in cases(a):
            for load, rate in (("low", a.lat_low_pps), (f"{a.lat_load:.0%}", high)):
                log(f"[latency rep {rep}] {c['case']} at {rate / 1e3:.0f} kpps ...")
                try:
                    r2 = run_one(c, rate, ns, workdir, a, huge)
                except Exception as e:  # noqa: BLE001
                    failures.append(f"latency rep {rep} {c['case']} {load}: {e}".splitlines()[0][:300])
                    log(f"  FAILED: {e}")
                    continue
                rows.append(row(c, load, rep, rate, r2))
                x = rows[-1]
                log(f"  rx {x['rx_pps'] / 1e3:.0f} kpps, p50 {x['p50_us']:.2f} us, p99 {x['p99_us']:.2f} us, "
                    f"p99.9 {x['p999_us']:.2f} us ({x['samples']} samples)")
    return rows


def summarize(rows):
    out = []
    for key, rs in report.grouped(rows, KEY).items():
        med = lambda k: statistics.median(r[k] for r in rs) if all(r[k] != "" for r in rs) else ""
        out.append(dict(zip(KEY, key), n=len(rs), **{k: med(k) for k in (
            "rate_pps", "offered_pps", "tx_pps", "rx_pps", "samples", "mean_us", "p50_us", "p90_us", "p99_us",
            "p999_us", "max_us", "fwd_cpu_pct", "fwd_preempt_s", "load1")}, p99_range=f"{min(r['p99_us'] for r in rs):.2f}–{max(r['p99_us'] for r in rs):.2f}"))
    return out


def table_md(summary, low_pps):
    order = {"max": 0, "low": 1}
    rs = sorted(summary, key=lambda s: (order.get(s["load"], 2), s["case"] != "loopback", s["side"] != "testpmd",
                                        str(s["idle_sleep_us"])))
    lines = ["| load | case | idle_sleep_us | offered kpps | received kpps | p50 µs | p99 µs (min–max) | p99.9 µs "
             "| max µs | samples | forwarder on CPU | its preemptions/s | load avg |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in rs:
        cpu = f"{s['fwd_cpu_pct']:.0f} %" if s["fwd_cpu_pct"] != "" else "–"
        pre = f"{s['fwd_preempt_s']:,.0f}" if s["fwd_preempt_s"] != "" else "–"
        offered = "flat out" if s["load"] == "max" else f"{s['offered_pps'] / 1e3:,.0f}"
        lines.append(f"| {s['load']} | {s['case']} | {s['idle_sleep_us']} | {offered} | {s['rx_pps'] / 1e3:,.0f} "
                     f"| {s['p50_us']:.2f} | {s['p99_us']:.2f} ({s['p99_range']}) | {s['p999_us']:.2f} "
                     f"| {s['max_us']:.1f} | {s['samples']:,.0f} | {cpu} | {pre} | {s['load1']:.1f} |")
    lines += ["", f"Medians over {max((s['n'] for s in summary), default=0)} repetitions of each figure; the 'max' "
              "row is ztgeneve sent to flat out (a full memif ring queues in front of it, so its latency is a "
              f"queue's, not a packet's); low = {low_pps:,} frames/s; the 80 % rate is 0.8 × that repetition's "
              "maximum. Latency = TSC after the receiver's rx_burst − TSC before the generator's tx_burst, one "
              "process and one lcore, histogram buckets of 5 ns up to 2 ms, 1 µs up to 500 ms. Forwarder on CPU = CPU "
              "time of the side's forwarding thread (`rte-worker-1`) / wall time from its start to the end of the "
              "run (a busy-poller on a CPU of its own: 100 %); preemptions/s = its involuntary context switches."]
    return lines
