"""A UDP echo server for the tests (run inside a pod namespace): every datagram is sent back
to its sender unchanged and logged as one line

    recv <ip>:<port> <length> <payload in hex>

  udp_echo.py [--addr 0.0.0.0] --port N [--log FILE]

Prints `listening <addr>:<port>` on stdout once bound; SIGTERM/SIGINT: exits 0.
"""
import argparse
import signal
import socket
import sys

from tproxy_listener import ListenerProcess


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--addr", default="0.0.0.0")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log")
    a = ap.parse_args()
    log = open(a.log, "a", buffering=1) if a.log else sys.stdout
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((a.addr, a.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    print(f"listening {a.addr}:{a.port}", flush=True)
    while True:
        data, peer = s.recvfrom(65535)
        log.write(f"recv {peer[0]}:{peer[1]} {len(data)} {data.hex()}\n")
        s.sendto(data, peer)


class UdpEcho:
    """This server in a namespace, from a test (import side):

        u = UdpEcho(ns, port, log_path).start()
        u.received()  -> [{"peer": "10.10.1.2:40000", "payload": b"..."}, ...]
        u.stop()
    """

    def __init__(self, ns, port, log_path, addr="0.0.0.0"):
        self.ns, self.port, self.log_path, self.addr = ns, port, log_path, addr
        self.proc = None

    def start(self):
        import os
        import subprocess
        open(self.log_path, "w").close()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "/usr/bin/python3", os.path.abspath(__file__),
             "--addr", self.addr, "--port", str(self.port), "--log", self.log_path],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening"):
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            self.stop()
            raise RuntimeError(f"udp echo did not start in {self.ns}: {line!r} {err}")
        return self

    def received(self):
        out = []
        with open(self.log_path) as f:
            for line in f.read().splitlines():
                parts = line.split()
                if len(parts) == 4 and parts[0] == "recv":
                    out.append({"peer": parts[1], "payload": bytes.fromhex(parts[3])})
        return out

    stop = ListenerProcess.stop  # SIGTERM, SIGKILL if it lingers, pipes closed


if __name__ == "__main__":
    sys.exit(main())
