"""ztunnel's stand-in: a transparent TCP listener (run inside ztg-ztunnel).

Outbound (the default): TPROXY (as in the ztunnel pod of the kernel path, DESIGN.md) hands
every TCP connection that arrives on pistioout to 127.0.0.1:15001 without changing its
destination. This listener accepts them (IP_TRANSPARENT), and for each connection sends one
line

    ORIGDST <ip>:<port> FROM <ip>:<port>\\n

(getsockname: the original destination, e.g. the service VIP; getpeername: the pod), then
echoes everything it receives until EOF. The listening socket carries SO_MARK 0x401, which
accepted sockets inherit, so replies take rule 20001 -> table 101 -> pistioout, i.e. go back
to the node Geneve-encapsulated.

Inbound (--relay, on 15006 with mark 0x402): TPROXY hands it the TCP arriving on pistioin,
a client's connection to a meshed pod. It sends nothing of its own: as ztunnel does, it opens
its own connection to the original destination (the pod: the accepted socket's local
address) from the client's address (an IP_TRANSPARENT socket bound to the client's IP, port
chosen by the kernel) and relays both ways until both sides have closed. Its replies to the
client (mark 0x402: rule 20002 -> table 102 -> pistioin) go back to the node encapsulated;
the pod's replies to its spoofed connection arrive on eth0 and are delivered to it by the
pod's policy routing (lab.py, ztunnel_rules). It logs `upstream ORIGDST <pod> FROM <client>
VIA <its own source>` once connected.

  tproxy_listener.py [--addr 127.0.0.1] [--port 15001] [--mark 0x401] [--relay] [--log FILE]
                     [--connect-timeout S] [--many] [--reuseport]

--connect-timeout: how long the relay waits for its connection to the pod (default 10 s).
--many: one asyncio loop instead of a thread per connection (and as many files as the
connections need), for tests that hold thousands of connections at once; the same protocol
and log lines. --reuseport: several listeners on one port (SO_REUSEPORT; TPROXY's listener
lookup spreads the connections over them), where one process's files do not suffice.

Prints `listening <addr>:<port>` on stdout once ready; logs one line per connection
(`accept ...`, `close ... in=N out=N`: bytes from and to the accepted peer) to --log (default
stdout). SIGTERM/SIGINT: stops accepting, closes the listener and exits 0.
"""
import argparse
import os
import signal
import socket
import struct
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


def accepted(conn, log):
    """An accepted connection's (original destination, peer), logged; None (conn closed) if
    it is gone already."""
    try:
        orig, peer = conn.getsockname(), conn.getpeername()
    except OSError as e:
        log(f"error getsockname/getpeername: {e}")
        conn.close()
        return None
    log(f"accept ORIGDST {fmt(orig)} FROM {fmt(peer)} mark 0x{conn.getsockopt(socket.SOL_SOCKET, SO_MARK):x}")
    return orig, peer


def serve(conn, log):
    ends = accepted(conn, log)
    if ends is None:
        return
    orig, peer = ends
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


def pump(src, dst, counted):
    """Copies src to dst until EOF, then half-closes dst; adds the bytes to counted[0]."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
            counted[0] += len(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def relay(conn, log, timeout=10):
    """Inbound: the client's connection (conn, TPROXYed) relayed through our own connection to
    its original destination, sent from the client's address."""
    ends = accepted(conn, log)
    if ends is None:
        return
    orig, peer = ends
    up = None
    n_in, n_out = [0], [0]
    try:
        up = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # EMFILE: an error like any other
        up.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)  # a source address that is not ours
        up.bind((peer[0], 0))
        up.settimeout(timeout)
        up.connect(orig)
        up.settimeout(None)
        log(f"upstream ORIGDST {fmt(orig)} FROM {fmt(peer)} VIA {fmt(up.getsockname())}")
        back = threading.Thread(target=pump, args=(up, conn, n_out), daemon=True)
        back.start()
        pump(conn, up, n_in)
        back.join()
    except OSError as e:
        log(f"error {fmt(peer)}: upstream {fmt(orig)}: {e}")
    finally:
        if up is not None:
            up.close()
        conn.close()
    log(f"close ORIGDST {fmt(orig)} FROM {fmt(peer)} in={n_in[0]} out={n_out[0]}")


async def serve_async(reader, writer, log):
    sock = writer.get_extra_info("socket")
    orig, peer = writer.get_extra_info("sockname"), writer.get_extra_info("peername")
    log(f"accept ORIGDST {fmt(orig)} FROM {fmt(peer)} mark 0x{sock.getsockopt(socket.SOL_SOCKET, SO_MARK):x}")
    n_in = 0
    try:
        writer.write(f"ORIGDST {fmt(orig)} FROM {fmt(peer)}\n".encode())
        while True:
            data = await reader.read(65536)
            if not data:
                break
            n_in += len(data)
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        await writer.drain()
    except OSError as e:
        log(f"error {fmt(peer)}: {e}")
    finally:
        writer.close()
    log(f"close ORIGDST {fmt(orig)} FROM {fmt(peer)} in={n_in} out={n_in}")


async def pump_async(reader, writer, counted):
    """pump() for asyncio streams; a reset of the source is passed on as a reset (SO_LINGER
    0), as a proxy does, a clean EOF as a FIN."""
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
            counted[0] += len(data)
        if writer.can_write_eof():
            writer.write_eof()
    except ConnectionResetError:
        s = writer.get_extra_info("socket")
        if s is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    except OSError:
        pass


async def relay_async(reader, writer, log, timeout):
    import asyncio
    orig, peer = writer.get_extra_info("sockname"), writer.get_extra_info("peername")
    sock = writer.get_extra_info("socket")
    log(f"accept ORIGDST {fmt(orig)} FROM {fmt(peer)} mark 0x{sock.getsockopt(socket.SOL_SOCKET, SO_MARK):x}")
    up = uw = None
    n_in, n_out = [0], [0]
    try:
        up = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # EMFILE: an error like any other
        up.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        up.bind((peer[0], 0))
        up.setblocking(False)
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(up, orig), timeout)
        log(f"upstream ORIGDST {fmt(orig)} FROM {fmt(peer)} VIA {fmt(up.getsockname())}")
        ur, uw = await asyncio.open_connection(sock=up)
        await asyncio.gather(pump_async(reader, uw, n_in), pump_async(ur, writer, n_out))
    except (OSError, asyncio.TimeoutError) as e:
        log(f"error {fmt(peer)}: upstream {fmt(orig)}: {e!r}")
    finally:
        if uw is not None:
            uw.close()
        elif up is not None:
            up.close()
        writer.close()
    log(f"close ORIGDST {fmt(orig)} FROM {fmt(peer)} in={n_in[0]} out={n_out[0]}")


def run_many(ls, relay, log, timeout):
    """The --many loop: every connection a task; SIGTERM/SIGINT stop it."""
    import asyncio
    import resource

    # Two files a relayed connection: as many as the hard limit allows (without
    # CAP_SYS_RESOURCE it cannot be raised; --reuseport spreads the connections over several
    # listeners).
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def main_async():
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if relay:
            handler = lambda r, w: relay_async(r, w, log, timeout)  # noqa: E731
        else:
            handler = lambda r, w: serve_async(r, w, log)  # noqa: E731
        server = await asyncio.start_server(handler, sock=ls, backlog=4096)
        await stop.wait()
        server.close()

    asyncio.run(main_async())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--addr", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=15001)
    ap.add_argument("--mark", type=lambda s: int(s, 0), default=0x401)
    ap.add_argument("--relay", action="store_true",
                    help="inbound: relay to the original destination from the client's address")
    ap.add_argument("--log")
    ap.add_argument("--connect-timeout", type=float, default=10.0)
    ap.add_argument("--many", action="store_true")
    ap.add_argument("--reuseport", action="store_true",
                    help="SO_REUSEPORT: several listeners share the port (the kernel spreads the connections)")
    a = ap.parse_args()
    log = Log(a.log)

    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if a.reuseport:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    ls.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
    ls.setsockopt(socket.SOL_SOCKET, SO_MARK, a.mark)
    ls.bind((a.addr, a.port))
    ls.listen(4096 if a.many else 256)
    if a.many:
        print(f"listening {a.addr}:{a.port} mark 0x{a.mark:x}", flush=True)
        run_many(ls, a.relay, log, a.connect_timeout)
        log("stopped")
        return 0

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
        if a.relay:
            threading.Thread(target=relay, args=(conn, log, a.connect_timeout), daemon=True).start()
        else:
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

    def __init__(self, ns, log_path, port=15001, mark=0x401, addr="127.0.0.1", relay=False,
                 many=False, connect_timeout=None, reuseport=False):
        self.ns, self.log_path, self.port, self.mark, self.addr = ns, log_path, port, mark, addr
        self.relay, self.many, self.connect_timeout = relay, many, connect_timeout
        self.reuseport = reuseport
        self.proc = None

    def start(self, timeout=10):
        import subprocess
        import time
        open(self.log_path, "w").close()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "/usr/bin/python3", os.path.abspath(__file__),
             "--addr", self.addr, "--port", str(self.port), "--mark", hex(self.mark),
             "--log", self.log_path, *(["--relay"] if self.relay else []),
             *(["--many"] if self.many else []), *(["--reuseport"] if self.reuseport else []),
             *(["--connect-timeout", str(self.connect_timeout)] if self.connect_timeout else [])],
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
            m = re.match(r"(accept|close|upstream) ORIGDST (\S+) FROM (\S+)"
                         r"(?: in=(\d+) out=(\d+)| VIA (\S+))?", l)
            if m and m.group(1) == kind:
                d = {"orig": m.group(2), "peer": m.group(3)}
                if kind == "close":
                    d["in"], d["out"] = int(m.group(4)), int(m.group(5))
                if kind == "upstream":
                    d["via"] = m.group(6)
                out.append(d)
        return out

    def upstreams(self):
        """Relay mode: its own connections, [{"orig", "peer", "via": its source ip:port}]."""
        return self._lines("upstream")

    def errors(self):
        try:
            with open(self.log_path) as f:
                return [l for l in f.read().splitlines() if l.startswith("error")]
        except OSError:
            return []

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


class ListenerGroup:
    """Several ListenerProcess on one port (--reuseport), read as one."""

    def __init__(self, listeners):
        self.listeners = list(listeners)

    def start(self):
        for lp in self.listeners:
            lp.start()
        return self

    def running(self):
        return all(lp.running() for lp in self.listeners)

    def upstreams(self):
        return [u for lp in self.listeners for u in lp.upstreams()]

    def errors(self):
        return [e for lp in self.listeners for e in lp.errors()]

    def accepted(self):
        return [a for lp in self.listeners for a in lp.accepted()]

    def closed(self):
        return [c for lp in self.listeners for c in lp.closed()]

    def stop(self, timeout=5):
        for lp in self.listeners:
            lp.stop(timeout)


if __name__ == "__main__":
    sys.exit(main())
