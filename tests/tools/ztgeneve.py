"""Start, watch and stop ztgeneve inside the lab's node namespace; parse its counters."""
import json
import os
import re
import signal
import subprocess
import tempfile
import time

from netns import ns_cmd

COUNTERS_PREFIX = "ztgeneve-counters "
RUNNING_RE = re.compile(r"^ztgeneve: (?:\w+: )?running\b", re.M)  # "ztgeneve: [info: ]running"
COUNTER_KEYS = ("rx", "tx", "redirect", "direct", "pass", "drop_no_twin",
                "drop_too_big", "drop_no_nexthop", "drop_tx_full")


def parse_counters(stdout_text):
    """The dict of the last 'ztgeneve-counters {json}' line, or None."""
    found = None
    for line in stdout_text.splitlines():
        if line.startswith(COUNTERS_PREFIX):
            found = json.loads(line[len(COUNTERS_PREFIX):])
    return found


def ports_of(counters):
    """The per-port dict of a counters dict ({"ports": {...}, "workers": [...]})."""
    if not isinstance(counters, dict) or not isinstance(counters.get("ports"), dict):
        raise AssertionError(f"counters without a 'ports' dict: keys {sorted(counters or {})}")
    return counters["ports"]


def port_sum(counters, key, ports=None):
    pc = ports_of(counters)
    if ports is not None:
        missing = [p for p in ports if p not in pc]
        if missing:
            raise AssertionError(f"counters lack ports {missing} (have {sorted(pc)})")
    return sum(int(v.get(key, 0)) for name, v in pc.items() if ports is None or name in ports)


def delta(after, before, key, ports=None):
    return port_sum(after, key, ports) - port_sum(before, key, ports)


class Ztgeneve:
    def __init__(self, binary, config, ns="ztg-node", file_prefix=None, log_dir=None,
                 taps=()):
        self.binary, self.config, self.ns = str(binary), str(config), ns
        self.file_prefix = file_prefix
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="ztgeneve-")
        self.stdout_path = os.path.join(self.log_dir, "ztgeneve.stdout")
        self.stderr_path = os.path.join(self.log_dir, "ztgeneve.stderr")
        self.taps = list(taps)
        self.proc = None
        self.returncode = None
        self.exit_counters = None

    def stdout(self):
        try:
            with open(self.stdout_path) as f:
                return f.read()
        except OSError:
            return ""

    def stderr(self):
        try:
            with open(self.stderr_path) as f:
                return f.read()
        except OSError:
            return ""

    def _taps_exist(self):
        if not self.taps:
            return False
        r = subprocess.run(["ip", "-n", self.ns, "-o", "link", "show"], capture_output=True,
                           text=True)
        names = {l.split(":")[1].strip().split("@")[0] for l in r.stdout.splitlines() if ":" in l}
        return all(t in names for t in self.taps)

    def start(self, timeout=30):
        args = [self.binary, "--config", self.config]
        if self.file_prefix:
            args += ["--file-prefix", self.file_prefix]
        self.out_f = open(self.stdout_path, "w")
        self.err_f = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(ns_cmd(self.ns, *args), stdout=self.out_f,
                                     stderr=self.err_f, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        taps_seen = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ztgeneve exited with {self.proc.returncode} while starting;"
                                   f" stderr:\n{self.stderr()[-4000:]}")
            if RUNNING_RE.search(self.stderr()):
                return self
            if self._taps_exist():
                if taps_seen is None:
                    taps_seen = time.monotonic()
                elif time.monotonic() - taps_seen > 2.0:
                    return self  # all taps up for 2 s but no "running" line: accept
            time.sleep(0.1)
        raise RuntimeError(f"ztgeneve not running after {timeout}s; stderr:\n{self.stderr()[-4000:]}")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15, sig=signal.SIGTERM):
        """Stop ztgeneve; returns the counters from its exit line (or None)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.returncode = self.proc.returncode
        for f in (getattr(self, "out_f", None), getattr(self, "err_f", None)):
            if f:
                f.close()
        try:
            self.exit_counters = parse_counters(self.stdout())
        except ValueError:
            self.exit_counters = None
        return self.exit_counters
