"""A flood for the exhaustion tests, run inside a pod namespace:
  flood.py --src IP --dst IP --dst-mac MAC --seconds S [--proto tcp|udp] [--size N]
sends 64 flows of IPv4 TCP ACKs (or UDP datagrams) of N bytes (Ethernet header included)
on eth0 through an AF_PACKET socket, as fast as one Python loop can, for S seconds, and
prints the number of frames the socket accepted."""
import argparse, socket, struct, time
ap = argparse.ArgumentParser()
ap.add_argument("--src"); ap.add_argument("--dst"); ap.add_argument("--dst-mac")
ap.add_argument("--seconds", type=float, default=2); ap.add_argument("--proto", default="tcp")
ap.add_argument("--size", type=int, default=64)
a = ap.parse_args()
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4<<20)
src_mac = s.getsockname()[4][:6]
dm = bytes.fromhex(a.dst_mac.replace(":", ""))
frames = []
for i in range(64):
    if a.proto == "tcp":
        l4 = struct.pack("!HHIIBBHHH", 40000+i, 9080, i, 0, 5<<4, 0x10, 64240, 0, 0)
        pr = 6
    else:
        l4 = struct.pack("!HHHH", 40000+i, 9999, 8, 0); pr = 17
    l4 += b"z" * max(0, a.size - 34 - len(l4))
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20+len(l4), 0, 0x4000, 64, pr, 0, socket.inet_aton(a.src), socket.inet_aton(a.dst))
    frames.append(dm + src_mac + b"\x08\x00" + ip + l4)
n = 0
end = time.monotonic() + a.seconds
send = s.send
while time.monotonic() < end:
    for f in frames:
        try:
            send(f); n += 1
        except OSError:
            pass
print(n)
