"""ztunnel's DNS proxy stand-in (its port 15053), run in ztunnel's namespace:

  dns_responder.py ADDR PORT [--answer IP]

Answers every DNS query (a UDP datagram of at least a 12-byte header) with the same id and
question and one A record (--answer, 10.96.1.1 by default), from ADDR:PORT. Prints
`listening`, then one JSON line per query: {"from": "ip:port", "id": n}.
"""
import argparse
import json
import socket
import struct
import sys


def answer(query, ip):
    """The reply to query: its header with QR, RD, RA set and one answer, its question, an A
    record pointing at the question's name."""
    qid, flags = struct.unpack("!HH", query[:4])
    question = query[12:]
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 30, 4) + socket.inet_aton(ip)
    return struct.pack("!HHHHHH", qid, 0x8180 | (flags & 0x0100), 1, 1, 0, 0) + question + rr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("addr")
    ap.add_argument("port", type=int)
    ap.add_argument("--answer", default="10.96.1.1")
    a = ap.parse_args()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((a.addr, a.port))
    print("listening", flush=True)
    while True:
        q, peer = s.recvfrom(2048)
        if len(q) < 12:
            continue
        s.sendto(answer(q, a.answer), peer)
        print(json.dumps({"from": "%s:%d" % peer, "id": struct.unpack("!H", q[:2])[0]}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
