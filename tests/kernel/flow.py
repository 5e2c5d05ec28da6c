"""A steady flow for the kernel-mirror tests, run inside a pod namespace:
  flow.py --src IP --dst IP --dport P --dst-mac MAC --count N --pps R [--sport S]
sends N identical-flow TCP frames on eth0 through an AF_PACKET socket at R frames/s and
prints the number sent. Raw frames, so the kernel's TCP state plays no part."""
import argparse
import socket
import struct
import time


def checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def frame(a, src_mac, seq):
    ip_src, ip_dst = socket.inet_aton(a.src), socket.inet_aton(a.dst)
    tcp = struct.pack("!HHIIBBHHH", a.sport, a.dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = ip_src + ip_dst + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, ip_src, ip_dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return bytes.fromhex(a.dst_mac.replace(":", "")) + src_mac + b"\x08\x00" + ip + tcp


def main():
    ap = argparse.ArgumentParser()
    for k in ("--src", "--dst", "--dst-mac"):
        ap.add_argument(k, required=True)
    ap.add_argument("--dport", type=int, default=9080)
    ap.add_argument("--sport", type=int, default=45000)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--pps", type=int, default=1000)
    a = ap.parse_args()
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("eth0", 0))
    src_mac = s.getsockname()[4][:6]
    t0 = time.monotonic()
    sent = 0
    for i in range(a.count):
        s.send(frame(a, src_mac, i))
        sent += 1
        ahead = t0 + sent / a.pps - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    print(sent)


if __name__ == "__main__":
    main()
