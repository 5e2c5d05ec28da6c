"""Run commands and packet captures inside the lab's network namespaces."""
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

PY = "/usr/bin/python3"  # Debian's, which has scapy
TOOLS = os.path.dirname(os.path.abspath(__file__))


def ns_cmd(ns, *args):
    return ["ip", "netns", "exec", ns, *[str(a) for a in args]]


def run(ns, *args, check=True, timeout=30, capture=True):
    """Run a command in namespace ns; returns CompletedProcess (text)."""
    p = subprocess.run(ns_cmd(ns, *args), capture_output=capture, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"[{ns}] {' '.join(map(str, args))} -> rc {p.returncode}\n"
                           f"stdout: {p.stdout}\nstderr: {p.stderr}")
    return p


def client(ns, *args, timeout=30):
    """Run tests/tools/nsclient.py in namespace ns; returns its stdout (one line)."""
    p = run(ns, PY, os.path.join(TOOLS, "nsclient.py"), *args, check=False, timeout=timeout)
    if p.returncode not in (0,):
        raise RuntimeError(f"[{ns}] nsclient {' '.join(map(str, args))} rc {p.returncode}: {p.stderr}")
    return p.stdout.strip()


def client_bg(ns, *args):
    """Start nsclient.py in the background; returns the Popen."""
    return subprocess.Popen(ns_cmd(ns, PY, os.path.join(TOOLS, "nsclient.py"), *args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(pred, timeout, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return v
        time.sleep(interval)


class Capture:
    """tcpdump -w in a namespace.

    start() returns once tcpdump reports "listening on" (bounded); packets() reads what has
    been written so far (tcpdump runs with -U --immediate-mode); wait_for(pred, n) polls until
    n packets satisfy pred (bounded); stop() sends SIGINT and waits.
    """

    def __init__(self, ns, iface, bpf="", direction=None, path=None, name=None, snaplen=0,
                 buffer_kib=4096):
        self.ns, self.iface, self.bpf, self.direction = ns, iface, bpf, direction
        self.name = name or f"{ns}-{iface}"
        if path is None:
            fd, path = tempfile.mkstemp(prefix=f"ztg-{self.name}-", suffix=".pcap")
            os.close(fd)
        self.path = path
        self.snaplen = snaplen
        self.buffer_kib = buffer_kib
        self.proc = None
        self.stderr_lines = []
        self._listening = threading.Event()

    def start(self, timeout=10):
        args = ["tcpdump", "-i", self.iface, "-U", "--immediate-mode", "-n", "-Z", "root",
                "-w", self.path]
        if self.snaplen:
            args += ["-s", str(self.snaplen)]
        if self.buffer_kib:
            args += ["-B", str(self.buffer_kib)]
        if self.direction:
            args += ["-Q", self.direction]
        if self.bpf:
            args += [self.bpf]
        self.proc = subprocess.Popen(ns_cmd(self.ns, *args), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)

        def reader():
            for line in self.proc.stderr:
                self.stderr_lines.append(line.rstrip())
                if "listening on" in line:
                    self._listening.set()
            self._listening.set()

        threading.Thread(target=reader, daemon=True).start()
        self._listening.wait(timeout)
        if self.proc.poll() is not None or not any("listening on" in l for l in self.stderr_lines):
            self.stop()
            raise RuntimeError(f"tcpdump on {self.ns}/{self.iface} did not start: {self.stderr_lines}")
        return self

    def packets(self):
        import pcaputil  # noqa: F401  (registers Ethernet and Geneve with scapy)
        from scapy.utils import rdpcap
        try:
            if os.path.getsize(self.path) < 24:
                return []
            return list(rdpcap(self.path))
        except Exception:  # a partially written record while tcpdump runs
            time.sleep(0.05)
            try:
                return list(rdpcap(self.path))
            except Exception:
                return []

    def frames(self):
        """Raw frames (bytes) captured so far, without scapy (fast; see pcaputil.raw_frames)."""
        import pcaputil
        return list(pcaputil.raw_frames(self.path))

    def dropped(self):
        """Packets tcpdump reported as dropped (after stop), or None if unknown."""
        import re
        for l in self.stderr_lines:
            m = re.match(r"(\d+) packets? dropped by kernel", l)
            if m:
                return int(m.group(1))
        return None

    def wait_for(self, pred=lambda p: True, count=1, timeout=8.0):
        """Poll until at least count captured packets satisfy pred; returns them."""
        got = []

        def check():
            nonlocal got
            got = [p for p in self.packets() if pred(p)]
            return len(got) >= count

        wait_until(check, timeout, interval=0.1)
        return got

    def stop(self, timeout=5):
        if self.proc and self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGINT)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def cleanup(self):
        self.stop()
        if os.environ.get("ZTG_KEEP_PCAPS") is None:
            try:
                os.unlink(self.path)
            except OSError:
                pass


class CaptureSet:
    """A test module's captures: each written under log_dir as <ns>-<iface>-<n>.pcap (headers
    only by default, a big kernel buffer: the TCP tests move megabytes), all removed by
    cleanup() (kept with ZTG_KEEP_PCAPS)."""

    def __init__(self, log_dir):
        self.log_dir, self.caps = log_dir, []

    def __call__(self, ns, iface, bpf, direction=None, snaplen=200, buffer_kib=16384):
        c = Capture(ns, iface, bpf=bpf, direction=direction, snaplen=snaplen, buffer_kib=buffer_kib,
                    path=os.path.join(self.log_dir, f"{ns}-{iface}-{len(self.caps)}.pcap"))
        self.caps.append(c)
        return c

    def cleanup(self):
        for c in self.caps:
            c.cleanup()


class Captures:
    """Several captures started together, all stopped on exit."""

    def __init__(self, *caps):
        self.caps = list(caps)

    def __enter__(self):
        try:
            for c in self.caps:
                c.start()
        except Exception:
            self.__exit__()
            raise
        return self.caps

    def __exit__(self, *exc):
        for c in self.caps:
            c.stop()
