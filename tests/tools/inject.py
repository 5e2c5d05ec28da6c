"""Send raw Ethernet frames out of an interface (run inside a namespace):

    ip netns exec ztg-ztunnel python3 inject.py ztlink frames.pcap [--gap-ms 1]

Every frame of the pcap file is written as is with an AF_PACKET socket (no padding, no
checksum fixing), so crafted and malformed frames reach the wire exactly as built. Prints
`sent N`. No scapy: starts fast.
"""
import argparse
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("iface")
    ap.add_argument("pcap")
    ap.add_argument("--gap-ms", type=float, default=1.0)
    a = ap.parse_args()
    from pcapraw import raw_frames
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((a.iface, 0))
    n = 0
    for fr in raw_frames(a.pcap):
        s.send(fr)
        n += 1
        if a.gap_ms:
            time.sleep(a.gap_ms / 1000)
    s.close()
    print(f"sent {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
