"""Tiny traffic generator run inside a pod namespace (ip netns exec NS python3 nsclient.py ...).

  tcp HOST PORT [--timeout S] [--sport P]   kernel TCP connect; prints connected|refused|timeout|error:...
  udp HOST PORT [--payload TEXT] [--sport P]  one UDP datagram; prints sent
  dns HOST [--name NAME] [--sport P]          a DNS A query to HOST:53; prints sent (no reply awaited)
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
    if a.cmd == "tcp":
        tcp(a)
    elif a.cmd == "udp":
        udp(a, a.payload.encode())
    else:
        a.port = 53
        udp(a, dns_query(a.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
