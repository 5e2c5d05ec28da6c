"""Shared helpers: packages, namespaces, hugepages, processes, DPDK telemetry, TSC."""
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "tools"))
import telemetry  # noqa: E402  (the project's DPDK telemetry client)

PACKAGES = {"dpdk-testpmd": "dpdk-dev", "tshark": "tshark",
            "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk": "openvswitch-switch-dpdk"}
PY_MODULES = {"scapy": "python3-scapy", "matplotlib": "python3-matplotlib", "yaml": "python3-yaml"}


def log(msg):
    print(f"[compare] {msg}", file=sys.stderr, flush=True)


def install_deps():
    """apt-get install whatever is missing (quick no-op when everything is there)."""
    need = [pkg for path, pkg in PACKAGES.items() if not shutil.which(path) and not os.path.exists(path)]
    for mod, pkg in PY_MODULES.items():
        if subprocess.run(["/usr/bin/python3", "-c", f"import {mod}"], capture_output=True).returncode:
            need.append(pkg)
    if need:
        log(f"installing {' '.join(need)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *need], env=env,
                       check=True, stdout=subprocess.DEVNULL)


def tsc_hz():
    """TSC frequency: the kernel's calibration from the boot log, else cpuinfo's MHz."""
    try:
        out = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
        m = re.findall(r"tsc: Refined TSC clocksource calibration: ([\d.]+) MHz", out) or \
            re.findall(r"tsc: Detected ([\d.]+) MHz", out)
        if m:
            return float(m[-1]) * 1e6
    except OSError:
        pass
    m = re.search(r"cpu MHz\s*:\s*([\d.]+)", Path("/proc/cpuinfo").read_text())
    return float(m.group(1)) * 1e6


@contextlib.contextmanager
def netns(name):
    """A fresh network namespace with only lo (up) and IPv6 off; removed on exit."""
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        ns_run(name, "ip", "link", "set", "lo", "up")
        for k in ("all", "default"):
            ns_run(name, "sysctl", "-qw", f"net.ipv6.conf.{k}.disable_ipv6=1")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def ns_cmd(ns, *args):
    return ["ip", "netns", "exec", ns, *map(str, args)]


def ns_run(ns, *args, check=True, env=None, timeout=60):
    p = subprocess.run(ns_cmd(ns, *args), capture_output=True, text=True, env=env, timeout=timeout)
    if check and p.returncode:
        raise RuntimeError(f"{' '.join(map(str, args))}: rc {p.returncode}: {p.stderr.strip()[-2000:]}")
    return p.stdout


class Proc:
    """A process we started (in a namespace), logging to files; stopped by its pid only."""
    started = []  # every Proc, for stop_all() on the way out

    def __init__(self, ns, args, logdir, name, env=None, stdin_pipe=False):
        Proc.started.append(self)
        self.name, self.logdir = name, Path(logdir)
        self.out = open(self.logdir / f"{name}.out", "w")
        self.err = open(self.logdir / f"{name}.err", "w")
        self.p = subprocess.Popen(ns_cmd(ns, *args), stdout=self.out, stderr=self.err, env=env,
                                  stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL)

    def text(self, which="err"):
        return (self.logdir / f"{self.name}.{which}").read_text(errors="replace")

    def alive(self):
        return self.p.poll() is None

    def stop(self, sig=signal.SIGINT, timeout=20):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self.out.close()
        self.err.close()
        return self.p.returncode

    @classmethod
    def stop_all(cls):
        """Stop whatever we started that still runs (after a failure), SIGKILL if needed."""
        for p in reversed(cls.started):
            if p.alive():
                log(f"stopping leftover {p.name} (pid {p.p.pid})")
                p.stop(signal.SIGTERM, timeout=10)


def wait_for(cond, timeout, what, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.p.returncode}) while {what}:\n{proc.text()[-3000:]}")
        try:
            v = cond()
            if v:
                return v
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        time.sleep(0.2)
    raise RuntimeError(f"timeout ({timeout}s) {what}" + (f":\n{proc.text()[-3000:]}" if proc else ""))


def ethdev_stats(prefix, names):
    """{device name: (ipackets, opackets)} from DPDK telemetry /ethdev/stats of a running process."""
    out = {}
    with telemetry.Client(prefix) as c:
        for pid in c.query("/ethdev/list"):
            name = c.query(f"/ethdev/info,{pid}")["name"]
            if name in names:
                s = c.query(f"/ethdev/stats,{pid}")
                out[name] = (int(s["ipackets"]), int(s["opackets"]))
    missing = set(names) - set(out)
    if missing:
        raise RuntimeError(f"telemetry {prefix}: no ports {sorted(missing)}")
    return out


def dpdk_run_dir_cleanup(prefix):
    shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)


def meminfo(key):
    m = re.search(rf"^{key}:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M)
    return int(m.group(1)) if m else 0


@contextlib.contextmanager
def hugepages(pages, mount_dir):
    """Reserve `pages` 2 MB hugepages and mount a private hugetlbfs; yields the mount dir, or
    None (with the reason logged) when the machine cannot. Restores both on exit."""
    nr = Path("/proc/sys/vm/nr_hugepages")
    before = int(nr.read_text())
    mounted = False
    try:
        try:
            nr.write_text(str(before + pages))
        except OSError as e:
            log(f"hugepages: cannot reserve {pages} x 2 MB ({e}): skipping the hugepage mode")
            yield None
            return
        got = meminfo("HugePages_Free")
        if got < pages:
            log(f"hugepages: asked {pages} x 2 MB, got {got} free: skipping the hugepage mode")
            yield None
            return
        os.makedirs(mount_dir, exist_ok=True)
        subprocess.run(["mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "nodev", str(mount_dir)], check=True)
        mounted = True
        yield str(mount_dir)
    finally:
        if mounted:
            for f in Path(mount_dir).iterdir():
                f.unlink(missing_ok=True)
            subprocess.run(["umount", str(mount_dir)], capture_output=True)
            shutil.rmtree(mount_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            nr.write_text(str(before))
