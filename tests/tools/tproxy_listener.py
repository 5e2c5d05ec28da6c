"""ztunnel's stand-in: a transparent TCP listener (run inside ztg-ztunnel).

TPROXY (as in the ztunnel pod of the kernel path, DESIGN.md) hands every TCP connection that arrives on
pistioout to 127.0.0.1:15001 without changing its destination. This listener accepts them
(IP_TRANSPARENT), and for each connection sends one line

    ORIGDST <ip>:<port> FROM <ip>:<port>\\n

(getsockname: the original destination, e.g. the service VIP; getpeername: the pod), then
echoes everything it receives until EOF. The listening socket carries SO_MARK 0x401, which
accepted sockets inherit, so replies take rule 20001 -> table 101 -> pistioout, i.e. go back
to the node Geneve-encapsulated.

  tproxy_listener.py [--addr 127.0.0.1] [--port 15001] [--mark 0x401] [--log FILE]

Prints `listening <addr>:<port>` on stdout once ready; logs one line per connection
(`accept ...`, `close ... in=N out=N`) to --log (default stdout). SIGTERM/SIGINT: stops
accepting, closes the listener and exits 0.
"""
import argparse
import os
import signal
import socket
import sys
import threading

IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
SO_MARK = getattr(socket, "SO_MARK", 36)


class Log:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1) if path else sys.stdout
        self.lock = threading.Lock()

    def __call__(self, line):
        with self.lock:
            self.f.write(line + "\n")
            self.f.flush()


def fmt(addr):
    return f"{addr[0]}:{addr[1]}"


def serve(conn, log):
    try:
        orig, peer = conn.getsockname(), conn.getpeername()
    except OSError as e:
        log(f"error getsockname/getpeername: {e}")
        conn.close()
        return
    log(f"accept ORIGDST {fmt(orig)} FROM {fmt(peer)} mark 0x{conn.getsockopt(socket.SOL_SOCKET, SO_MARK):x}")
    n_in = n_out = 0
    try:
        conn.sendall(f"ORIGDST {fmt(orig)} FROM {fmt(peer)}\n".encode())
        while True:
            data = conn.recv(65536)
            if not data:
                break
            n_in += len(data)
            conn.sendall(data)
            n_out += len(data)
        conn.shutdown(socket.SHUT_WR)
    except OSError as e:
        log(f"error {fmt(peer)}: {e}")
    finally:
        conn.close()
    log(f"close ORIGDST {fmt(orig)} FROM {fmt(peer)} in={n_in} out={n_out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--addr", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=15001)
    ap.add_argument("--mark", type=lambda s: int(s, 0), default=0x401)
    ap.add_argument("--log")
    a = ap.parse_args()
    log = Log(a.log)

    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
    ls.setsockopt(socket.SOL_SOCKET, SO_MARK, a.mark)
    ls.bind((a.addr, a.port))
    ls.listen(256)

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()
        try:
            ls.shutdown(socket.SHUT_RDWR)  # wakes accept()
        except OSError:
            pass

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"listening {a.addr}:{a.port} mark 0x{a.mark:x}", flush=True)
    while not stop.is_set():
        try:
            conn, _ = ls.accept()
        except OSError:
            if stop.is_set():
                break
            continue
        threading.Thread(target=serve, args=(conn, log), daemon=True).start()
    ls.close()
    log("stopped")
    return 0



class ListenerProcess:
    """Run this listener in a namespace from a test or script (import side).

        lp = ListenerProcess("ztg-ztunnel", log_path).start()
        lp.accepted()   -> [{"orig": "10.96.0.10:9080", "peer": "10.244.2.3:40000"}, ...]
        lp.closed()     -> [{"orig": ..., "peer": ..., "in": N, "out": N}, ...]
        lp.stop()
    """

    def __init__(self, ns, log_path, port=15001, mark=0x401, addr="127.0.0.1"):
        self.ns, self.log_path, self.port, self.mark, self.addr = ns, log_path, port, mark, addr
        self.proc = None

    def start(self, timeout=10):
        import subprocess
        import time
        open(self.log_path, "w").close()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "/usr/bin/python3", os.path.abspath(__file__),
             "--addr", self.addr, "--port", str(self.port), "--mark", hex(self.mark),
             "--log", self.log_path],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()  # "listening ..." or EOF if it died
        if not line.startswith("listening") or time.monotonic() > deadline:
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            self.stop()
            raise RuntimeError(f"tproxy listener did not start in {self.ns}: {line!r} {err}")
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _lines(self, kind):
        import re
        out = []
        try:
            with open(self.log_path) as f:
                text = f.read()
        except OSError:
            return out
        for l in text.splitlines():
            m = re.match(r"(accept|close) ORIGDST (\S+) FROM (\S+)(?: in=(\d+) out=(\d+))?", l)
            if m and m.group(1) == kind:
                d = {"orig": m.group(2), "peer": m.group(3)}
                if kind == "close":
                    d["in"], d["out"] = int(m.group(4)), int(m.group(5))
                out.append(d)
        return out

    def accepted(self):
        return self._lines("accept")

    def closed(self):
        return self._lines("close")

    def stop(self, timeout=5):
        import signal as sig
        import subprocess
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()


if __name__ == "__main__":
    sys.exit(main())
