"""Tiny traffic generator run inside a pod namespace (ip netns exec NS python3 nsclient.py ...).

  tcp HOST PORT [--timeout S] [--sport P]   kernel TCP connect; prints connected|refused|timeout|error:...
  udp HOST PORT [--payload TEXT] [--sport P]  one UDP datagram; prints sent
  dns HOST [--name NAME] [--sport P] [--wait S]
                                              a DNS A query to HOST:53; prints sent (no reply
                                              awaited), or with --wait the first datagram back
                                              within S seconds as JSON {"from": "ip:port", "id":
                                              n, "answers": n, "port": our port}, or timeout
  udpecho HOST PORT [--count N] [--hex PAYLOAD] [--timeout S]
                                              N datagrams (PAYLOAD, default "ztgeneve"), one at a
                                              time, each waiting for its echo; prints one JSON
                                              object {"local", "sent", "echoed"} (echoed: the
                                              replies equal to what was sent)
  echo HOST PORT [--bytes N] [--conns K] [--timeout S]
                                              K concurrent connections; each reads the listener's
                                              first line, sends N random bytes, reads them back
                                              (until EOF after its own shutdown) and compares
                                              sha256; prints one JSON object {"conns": [...]}
  many HOST PORT [--conns N] [--bytes B] [--parallel P] [--timeout S] [--hold] [--rst EVERY]
                                              N connections held open at once (asyncio, at most P
                                              being opened at a time): each reads the first line,
                                              sends B bytes and reads them back; prints one JSON
                                              line {"ok", "failed", "conns": [{"local", "first",
                                              "ok", "error"}], "seconds"}; with --hold then waits
                                              for a line on stdin before it closes them, P at a
                                              time (every EVERY-th with a reset, the others with
                                              a FIN, each waiting for the peer's FIN) and prints
                                              {"closed", "reset", "eof"}
  rawtcp HOST PORT --ip-len N --src IP --dst-mac MAC [--sport P]
                                              one crafted TCP ACK of N IPv4 bytes (DF), sent with
                                              scapy on eth0; prints sent
"""
import argparse
import errno
import socket
import struct
import sys


def tcp(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if a.sport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", a.sport))
    s.settimeout(a.timeout)
    try:
        s.connect((a.host, a.port))
        res = "connected"
    except socket.timeout:
        res = "timeout"
    except ConnectionRefusedError:
        res = "refused"
    except OSError as e:
        res = f"error:{errno.errorcode.get(e.errno, e.errno)}"
    finally:
        s.close()
    print(res)


def echo_one(host, port, nbytes, timeout, seed):
    """One connection: first line, then nbytes out and back. Returns a result dict."""
    import hashlib
    import random
    import threading
    import time

    r = {"ok": False, "first": None, "local": None, "sent": 0, "received": 0, "error": None}
    data = random.Random(seed).randbytes(nbytes) if nbytes else b""
    t0 = time.monotonic()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        r["local"] = "%s:%d" % s.getsockname()
        buf = b""
        while b"\n" not in buf:
            b = s.recv(4096)
            if not b:
                break
            buf += b
        line, _, rest = buf.partition(b"\n")
        r["first"] = line.decode(errors="replace")
        err = []

        def writer():
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
            except OSError as e:
                err.append(repr(e))

        w = threading.Thread(target=writer)
        w.start()
        h = hashlib.sha256(rest)
        n = len(rest)
        while True:
            b = s.recv(262144)
            if not b:
                break
            h.update(b)
            n += len(b)
        w.join()
        r["sent"], r["received"] = len(data), n
        r["sha_sent"] = hashlib.sha256(data).hexdigest()
        r["sha_received"] = h.hexdigest()
        if err:
            r["error"] = err[0]
        r["ok"] = not err and n == len(data) and r["sha_sent"] == r["sha_received"]
    except (OSError, socket.timeout) as e:
        r["error"] = repr(e)
    finally:
        s.close()
    r["seconds"] = round(time.monotonic() - t0, 3)
    return r


def echo(a):
    import json
    import threading
    results = [None] * a.conns

    def run(i):
        results[i] = echo_one(a.host, a.port, a.bytes, a.timeout, seed=i)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(a.conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(json.dumps({"conns": results}))


def dns_query(name, qid=0x1234):
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", 1, 1)


def udp(a, payload):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if a.sport:
        s.bind(("0.0.0.0", a.sport))
    s.sendto(payload, (a.host, a.port))
    s.close()
    print("sent")


def dns_exchange(a):
    import json
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", a.sport))
    s.settimeout(a.wait)
    s.sendto(dns_query(a.name), (a.host, 53))
    try:
        r, peer = s.recvfrom(2048)
    except socket.timeout:
        print("timeout")
        return
    qid, _, _, answers = struct.unpack("!HHHH", r[:8]) if len(r) >= 8 else (None, 0, 0, 0)
    print(json.dumps({"from": "%s:%d" % peer, "id": qid, "answers": answers, "port": s.getsockname()[1]}))


def udpecho(a):
    import json
    payload = bytes.fromhex(a.hex) if a.hex else b"ztgeneve"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(a.timeout)
    s.connect((a.host, a.port))
    sent = echoed = 0
    for _ in range(a.count):
        s.send(payload)
        sent += 1
        try:
            if s.recv(65535) == payload:
                echoed += 1
        except (socket.timeout, OSError):
            pass
    print(json.dumps({"local": "%s:%d" % s.getsockname(), "sent": sent, "echoed": echoed}))
    s.close()


def many(a):
    """The `many` command (see the module's doc)."""
    import asyncio
    import json
    import resource
    import time

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def one(i, gate, res):
        r = {"local": None, "first": None, "ok": False, "error": None}
        res[i] = r
        data = (b"%08d" % i) * max(1, a.bytes // 8)
        conn = None
        async with gate:
            try:
                conn = rd, wr = await asyncio.wait_for(asyncio.open_connection(a.host, a.port), a.timeout)
                r["local"] = "%s:%d" % wr.get_extra_info("sockname")
                r["first"] = (await asyncio.wait_for(rd.readline(), a.timeout)).decode(errors="replace").rstrip("\n")
                wr.write(data)
                await wr.drain()
                back = await asyncio.wait_for(rd.readexactly(len(data)), a.timeout)
                r["ok"] = back == data and r["first"] != ""
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
                r["error"] = type(e).__name__
        return conn  # held open, failed or not, until the end

    async def close(i, conn):
        rd, wr = conn
        if a.rst and i % a.rst == 0:
            wr.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            wr.transport.abort()
            return "reset"
        try:
            wr.write_eof()
            rest = await asyncio.wait_for(rd.read(), a.timeout)
        except (OSError, asyncio.TimeoutError):
            rest = None
        wr.close()
        return "eof" if rest == b"" else "closed"

    async def main_async():
        t0 = time.monotonic()
        gate = asyncio.Semaphore(a.parallel)
        res = [None] * a.conns
        conns = await asyncio.gather(*(one(i, gate, res) for i in range(a.conns)))
        ok = sum(1 for r in res if r["ok"])
        print(json.dumps({"ok": ok, "failed": a.conns - ok, "conns": res,
                          "seconds": round(time.monotonic() - t0, 3)}), flush=True)
        if a.hold:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        held = [(i, c) for i, c in enumerate(conns) if c is not None]

        async def gated_close(i, c):
            async with gate:
                return await close(i, c)

        ends = await asyncio.gather(*(gated_close(i, c) for i, c in held))
        print(json.dumps({"closed": len(held), "reset": ends.count("reset"), "eof": ends.count("eof")}),
              flush=True)

    asyncio.run(main_async())


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tcp")
    t.add_argument("host")
    t.add_argument("port", type=int)
    t.add_argument("--timeout", type=float, default=2.0)
    t.add_argument("--sport", type=int, default=0)
    u = sub.add_parser("udp")
    u.add_argument("host")
    u.add_argument("port", type=int)
    u.add_argument("--payload", default="ztgeneve")
    u.add_argument("--sport", type=int, default=0)
    d = sub.add_parser("dns")
    d.add_argument("host")
    d.add_argument("--name", default="reviews.default.svc.cluster.local")
    d.add_argument("--sport", type=int, default=0)
    d.add_argument("--wait", type=float, default=0)
    ue = sub.add_parser("udpecho")
    ue.add_argument("host")
    ue.add_argument("port", type=int)
    ue.add_argument("--count", type=int, default=1)
    ue.add_argument("--hex", default="")
    ue.add_argument("--timeout", type=float, default=5.0)
    e = sub.add_parser("echo")
    e.add_argument("host")
    e.add_argument("port", type=int)
    e.add_argument("--bytes", type=int, default=0)
    e.add_argument("--conns", type=int, default=1)
    e.add_argument("--timeout", type=float, default=20.0)
    m = sub.add_parser("many")
    m.add_argument("host")
    m.add_argument("port", type=int)
    m.add_argument("--conns", type=int, default=100)
    m.add_argument("--bytes", type=int, default=64)
    m.add_argument("--parallel", type=int, default=100)
    m.add_argument("--timeout", type=float, default=30.0)
    m.add_argument("--hold", action="store_true")
    m.add_argument("--rst", type=int, default=0)
    r = sub.add_parser("rawtcp")
    r.add_argument("host")
    r.add_argument("port", type=int)
    r.add_argument("--ip-len", type=int, required=True)
    r.add_argument("--src", required=True)
    r.add_argument("--dst-mac", required=True)
    r.add_argument("--sport", type=int, default=40000)
    a = ap.parse_args()
    if a.cmd == "rawtcp":
        from scapy.layers.inet import IP, TCP
        from scapy.layers.l2 import Ether
        from scapy.packet import Raw
        from scapy.sendrecv import sendp
        pkt = IP(src=a.src, dst=a.host, flags="DF", ttl=64) / TCP(sport=a.sport, dport=a.port, flags="A")
        pkt = pkt / Raw(b"z" * (a.ip_len - len(pkt)))
        sendp(Ether(dst=a.dst_mac) / pkt, iface="eth0", verbose=False)
        print("sent")
        return 0
    if a.cmd == "echo":
        echo(a)
    elif a.cmd == "udpecho":
        udpecho(a)
    elif a.cmd == "many":
        many(a)
    elif a.cmd == "tcp":
        tcp(a)
    elif a.cmd == "udp":
        udp(a, a.payload.encode())
    elif a.wait:
        dns_exchange(a)
    else:
        a.port = 53
        udp(a, dns_query(a.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
