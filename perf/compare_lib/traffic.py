"""The input pcap: Ethernet/IPv4/TCP frames to the VIP, 90 % from pods (interleaved), 10 % not.

scapy builds one template frame per size; each frame is that template with its source
IP and TCP source port patched in and both checksums recomputed (scapy alone would take
minutes for the million-flow case)."""
import ipaddress
import os
import struct

from scapy.all import IP, TCP, Ether, Raw

VIP, VIP_PORT = "10.96.0.10", 9080
FIRST_POD = int(ipaddress.IPv4Address("10.244.2.2"))  # baseline: 10.244.2.2 .. 10.244.2.200
ZTUNNEL = int(ipaddress.IPv4Address("10.244.2.10"))  # the ztunnel pod: never a meshed pod
FIRST_NONPOD = int(ipaddress.IPv4Address("10.245.0.2"))  # outside any pod CIDR rule
POD_MAC, GW_MAC = "02:00:00:00:01:02", "02:00:00:00:01:01"


def pod_addr(i):
    """The i-th traffic pod: consecutive from 10.244.2.2 (as the baseline), skipping the
    ztunnel's 10.244.2.10 (ztgeneve refuses it as a pod): 199 pods = 10.244.2.2-201."""
    a = FIRST_POD + i
    return a + 1 if a >= ZTUNNEL else a


def traffic_pods(n):
    """The n pod IPs that send traffic."""
    return [str(ipaddress.IPv4Address(pod_addr(i))) for i in range(n)]


def table_pods(n_table, n_traffic):
    """n_table pod IPs for the table: the traffic pods, then extra pods spread over 10/8
    (an odd-multiplier permutation of the low 24 bits), none in 10.244/15."""
    pods = traffic_pods(min(n_table, n_traffic))
    i = 0
    while len(pods) < n_table:
        low = (i * 2654435761 + 12345) & 0xFFFFFF
        i += 1
        if (low >> 16) in (244, 245) or low & 0xFF in (0, 255):
            continue
        pods.append(str(ipaddress.IPv4Address((10 << 24) | low)))
    return pods


def covering_cidr(ips):
    lo, hi = min(map(ipaddress.IPv4Address, ips)), max(map(ipaddress.IPv4Address, ips))
    net = ipaddress.IPv4Network(f"{lo}/32")
    while hi not in net:
        net = net.supernet()
    return str(net)


def _csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def frames(n_frames=2000, pods=199, flows=None, size=64):
    """Yield n_frames raw frames of `size` bytes (without FCS). Every 10th frame comes from a
    non-pod IP; the others cycle over `flows` distinct (pod, source port) 5-tuples whose
    pods cycle over `pods` addresses, so consecutive frames come from different pods. A
    flow's k-th frame has TCP sequence number k, so that its order can be checked at the output."""
    flows = flows or pods
    tmpl = Ether(src=POD_MAC, dst=GW_MAC) / IP(src="10.244.2.2", dst=VIP, ttl=64) / \
        TCP(sport=40000, dport=VIP_PORT, flags="S", seq=1)
    pad = max(0, size - len(tmpl))
    base = bytearray(bytes(tmpl / Raw(b"\0" * pad)))
    n_pod = 0
    seq = {}  # per flow: how many frames it has sent, its TCP sequence number (order checks)
    for k in range(n_frames):
        if k % 10 == 9:
            src, sport = FIRST_NONPOD + (k // 10) % 250, 30000 + (k // 10) % 1000
        else:
            f = n_pod % flows
            n_pod += 1
            src, sport = pod_addr(f % pods), 1024 + (f // pods) % 64000
        n = seq[(src, sport)] = seq.get((src, sport), 0) + 1
        yield _patch(base, src, sport, n)


def _patch(base, src, sport, seq):
    b = bytearray(base)
    b[26:30] = struct.pack("!I", src)
    b[38:42] = struct.pack("!I", seq)
    b[24:26] = b"\0\0"
    b[24:26] = struct.pack("!H", _csum(bytes(b[14:34])))
    b[34:36] = struct.pack("!H", sport)
    tcp_len = len(b) - 34
    b[50:52] = b"\0\0"
    pseudo = bytes(b[26:34]) + struct.pack("!BBH", 0, 6, tcp_len)
    b[50:52] = struct.pack("!H", _csum(pseudo + bytes(b[34:])))
    return bytes(b)


def queue_of(frame, queues):
    """The rx queue a frame goes to when the input is spread over `queues` (one pcap each):
    by its flow (source address and port), so that a flow stays on one queue and one worker,
    as RSS or a packet-fanout hash would keep it."""
    src, sport = struct.unpack_from("!IH", frame, 26)[0], struct.unpack_from("!H", frame, 34)[0]
    return (src * 2654435761 + sport) % (1 << 32) % queues


def write_pcap(path, n_frames=2000, pods=199, flows=None, size=64, queues=1):
    """The input as one pcap (queues=1: returns [path]) or spread by flow over `queues`
    files path.q<i>.pcap (returns their paths)."""
    paths = [path] if queues == 1 else [path.with_suffix(f".q{i}.pcap") for i in range(queues)]
    files = [open(p, "wb") for p in paths]
    count = [0] * queues
    try:
        for f in files:
            f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for fr in frames(n_frames, pods, flows, size):
            q = queue_of(fr, queues) if queues > 1 else 0
            i = count[q]
            count[q] += 1
            files[q].write(struct.pack("<IIII", i // 1000000, i % 1000000, len(fr), len(fr)))
            files[q].write(fr)
    finally:
        for f in files:
            f.close()
    return paths


def flow_seq(frame, off=14):
    """((source address, source port), TCP sequence number) of a frame whose IPv4 header is at off."""
    return (frame[off + 12:off + 16], frame[off + 20:off + 22]), struct.unpack_from("!I", frame, off + 24)[0]


def read_pcap(path):
    """Frames of a classic little-endian pcap file (what net_pcap and write_pcap write)."""
    data = open(path, "rb").read() if os.path.exists(path) else b""
    out, off = [], 24
    while off + 16 <= len(data):
        incl = struct.unpack_from("<IIII", data, off)[2]
        out.append(data[off + 16:off + 16 + incl])
        off += 16 + incl
    return out
