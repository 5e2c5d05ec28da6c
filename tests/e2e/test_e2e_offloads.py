"""Pods with their default offloads (issue 10), in a small lab of its own (namespaces zto-*,
tests/tools/minilab.py) whose veths keep the kernel's defaults: tx checksumming, TSO and
GSO on, GRO off (a new veth's default on this kernel).

  zto-pp (10.244.2.3) -- v-pp  [zto-node: ztgeneve node]  v-ztunnel -- ztlink  [zto-zt: ztgeneve endpoint,
  zto-ra (10.244.2.2) -- v-ra                                                    pistioout, TPROXY listener]

Checksums: the pods leave their TCP checksums partial; ztgeneve completes them
(csum_completed) before they enter the tunnel. Segmentation: ztgeneve attaches its XDP pass
program to the host end of every veth it opens with net_af_packet (ports[].segment: kernel);
the veth driver then takes TSO/GSO away from the other end, so *the pod's kernel* segments
its TCP to the MTU before the frame crosses the veth, and the packet socket never sees a
frame larger than its ring's frames. The program is attached through a BPF link: gone when
ztgeneve stops, and when it is killed.
"""
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import netns
import pcaputil as pu
import telemetry
from minilab import VIP, MiniLab, sh, wait
from pcaputil import IP, TCP

REPO = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("ZTG_BINARY", REPO / "build" / "ztgeneve"))
PODS = {"pp": 3, "ra": 2}
VIP_PORT = 9080
MB = 1 << 20
BULK = 64 * MB
TUNNEL_MTU = 1500  # the node config's tunnel.mtu (default): the link's MTU
MAX_FRAME = TUNNEL_MTU + 14


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    if not BINARY.exists():
        pytest.fail(f"{BINARY} not built")
    log_dir = str(tmp_path_factory.mktemp("offloads"))
    lab = MiniLab("zto-", pods=PODS, meshed=list(PODS), endpoint=True, log_dir=log_dir,
                  binary=BINARY, offloads=True)
    try:
        lab.up()
        lab.node_cfg = lab.node_config(os.path.join(log_dir, "node.yaml"))
        lab.start_node(lab.node_cfg)
        lab.start_endpoint(lab.endpoint_config(os.path.join(log_dir, "endpoint.yaml")))
        lab.start_listener()
        for p in PODS:
            lab.ping(p)
        wait(lambda: echo(lab, "pp", 100, timeout=2)[0]["ok"], 10, step=0.2)
        yield lab
    finally:
        lab.down()


def echo(lab, pod, nbytes, timeout=30, bg=False):
    p = netns.client_bg(lab.ns(pod), "echo", VIP, VIP_PORT, "--bytes", nbytes, "--timeout", timeout)
    if bg:
        return p
    out, err = p.communicate(timeout=timeout * 2 + 30)
    assert p.returncode == 0, f"nsclient echo failed: {err}"
    return json.loads(out)["conns"]


def check_echo(r, nbytes):
    assert r["error"] is None and r["ok"], f"connection failed or data differs: {r}"
    assert r["sent"] == nbytes and r["received"] == nbytes
    assert r["sha_sent"] == r["sha_received"]
    assert r["first"].startswith(f"ORIGDST {VIP}:{VIP_PORT} FROM "), r["first"]


def features(ns, dev):
    """ethtool -k as {feature: 'on'|'off'}."""
    out = sh(ns, f"ethtool -k {dev}")
    return {m.group(1): m.group(2) for m in re.finditer(r"^\s*([\w-]+): (on|off)", out, re.M)}


def xdp_prog(ns, dev):
    """The name of the XDP program attached to dev, or None."""
    m = re.search(r"prog/xdp id \d+ name (\S+)", sh(ns, f"ip -d link show dev {dev}"))
    return m.group(1) if m else None


def drops(counters):
    """Every non-zero drop_* counter: {(device, counter): value}."""
    return {(d, k): int(v) for d, c in counters["ports"].items() for k, v in c.items()
            if k.startswith("drop_") and int(v)}


def frame_lengths(path):
    """The original length of every frame of a classic pcap file (the capture may be cut
    short by its snaplen)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"\xd4\xc3\xb2\xa1", f"{path}: not a little-endian classic pcap"
    off, out = 24, []
    while off + 16 <= len(data):
        _, _, incl, orig = struct.unpack_from("<IIII", data, off)
        out.append(orig)
        off += 16 + incl
    return out


def capture(lab, ns, iface, bpf, name, **kw):
    return netns.Capture(ns, iface, bpf=bpf, direction="in",
                         path=os.path.join(lab.log_dir, f"{name}.pcap"), **kw)


# ---------------------------------------------------------------- the lab as real pods have it

def test_pods_keep_the_kernels_offloads(lab):
    for p in PODS:
        f = features(lab.ns(p), "eth0")
        assert f["tx-checksumming"] == "on", f"{p}: {f}"
        assert f["generic-segmentation-offload"] == "on", f"{p}: {f}"
        host = features(lab.node_ns, f"v-{p}")
        assert host["generic-receive-offload"] == "off", f"v-{p}: GRO would merge the segments again"


def test_xdp_program_attached_to_the_pods_host_ends(lab):
    """While ztgeneve runs: its program on every veth it opens (the pods' host ends, ztunnel's
    link on both sides), and the pods' TSO taken away by the veth driver because of it."""
    for p in PODS:
        assert xdp_prog(lab.node_ns, f"v-{p}") == "ztg_xdp_pass"
        assert features(lab.ns(p), "eth0")["tcp-segmentation-offload"] == "off", \
            f"{p}: the veth did not take TSO from the pod"
        assert f"XDP pass program attached to veth v-{p}" in lab.z.stderr()
    assert xdp_prog(lab.node_ns, "v-ztunnel") == "ztg_xdp_pass"
    assert xdp_prog(lab.zt_ns, "ztlink") == "ztg_xdp_pass"
    assert "GRO is on" not in lab.z.stderr() + lab.ep.stderr()


# ---------------------------------------------------------------- partial checksums completed

@pytest.fixture(scope="module")
def exchange(lab):
    """1 MiB each way from pp through both instances and the listener; every frame on the
    wire both ways, whole."""
    zt = capture(lab, lab.zt_ns, "ztlink", "udp dst port 6081", "exchange-zt", buffer_kib=16384)
    nd = capture(lab, lab.node_ns, "v-ztunnel", "udp dst port 6081", "exchange-node",
                 buffer_kib=16384)
    before = telemetry.counters(lab.node_prefix)
    with netns.Captures(zt, nd):
        [r] = echo(lab, "pp", MB)
        time.sleep(0.5)
    return {"r": r, "caps": {"zt": zt, "node": nd}, "before": before,
            "after": telemetry.counters(lab.node_prefix)}


def test_1mib_each_way_through_the_tunnel(exchange):
    check_echo(exchange["r"], MB)


def inner_tcp(cap):
    """The inner IPv4/TCP packets of the Geneve frames of a capture (scapy)."""
    out = []
    for p in cap.packets():
        if pu.outer_is_geneve(p):
            e = pu.inner_frame(p)
            if TCP in e:
                out.append(e[IP])
    return out


@pytest.mark.parametrize("direction", ["zt", "node"])
def test_every_tcp_checksum_on_the_wire_is_correct_scapy(exchange, direction):
    from scapy.layers.inet import in4_chksum
    pkts = inner_tcp(exchange["caps"][direction])
    assert len(pkts) >= MB // 1410, f"{direction}: {len(pkts)} TCP segments in Geneve"
    bad = []
    for ip in pkts:
        seg = bytes(ip)[ip.ihl * 4:ip.len]
        if in4_chksum(socket.IPPROTO_TCP, ip, seg) != 0:
            bad.append(ip.summary())
    assert not bad, f"{direction}: {len(bad)} of {len(pkts)} TCP checksums wrong: {bad[:5]}"


@pytest.mark.parametrize("direction", ["zt", "node"])
def test_every_tcp_checksum_on_the_wire_is_correct_tshark(exchange, direction):
    path = exchange["caps"][direction].path
    p = subprocess.run(["tshark", "-n", "-r", path, "-o", "tcp.check_checksum:TRUE",
                        "-d", "udp.port==6081,geneve", "-Y", "tcp", "-T", "fields",
                        "-e", "tcp.checksum.status"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    status = p.stdout.split()
    n_scapy = len(inner_tcp(exchange["caps"][direction]))
    assert len(status) == n_scapy, f"{direction}: tshark {len(status)} TCP segments, scapy {n_scapy}"
    bad = [s for s in status if s != "1"]  # 1: good; 0: bad; 2: not checked
    assert not bad, f"{direction}: tshark calls {len(bad)} of {len(status)} TCP checksums not good"


def test_node_completed_the_pods_partial_checksums(exchange):
    from ztgeneve import delta
    done = delta(exchange["after"], exchange["before"], "csum_completed", ["pp"])
    assert done > 0, "the pods port completed no partial checksum: the pod's offload is off?"


# ---------------------------------------------------------------- TSO: the pod's kernel segments

@pytest.fixture(scope="module")
def bulk(lab):
    """64 MiB each way from pp (TSO on in its kernel's defaults). Headers only: what the
    packet socket on pp's host end receives, and what the node sends to ztunnel."""
    host = capture(lab, lab.node_ns, "v-pp", "tcp", "bulk-host", snaplen=64, buffer_kib=32768)
    zt = capture(lab, lab.zt_ns, "ztlink", "", "bulk-zt", snaplen=64, buffer_kib=32768)
    before = {"node": telemetry.counters(lab.node_prefix), "ep": telemetry.counters(lab.ep_prefix)}
    with netns.Captures(host, zt):
        t0 = time.monotonic()
        [r] = echo(lab, "pp", BULK, timeout=120)
        secs = time.monotonic() - t0
        time.sleep(0.5)
    after = {"node": telemetry.counters(lab.node_prefix), "ep": telemetry.counters(lab.ep_prefix)}
    return {"r": r, "secs": secs, "host": host, "zt": zt, "before": before, "after": after}


def test_64mib_from_a_pod_with_tso_completes(bulk):
    check_echo(bulk["r"], BULK)
    sys.stderr.write(f"[offloads] 64 MiB each way in {bulk['secs']:.1f} s, "
                     f"{len(frame_lengths(bulk['host'].path))} frames from pp\n")


def test_the_pods_kernel_segmented_before_the_packet_socket(bulk):
    """What reaches the packet socket on pp's host end is MTU-sized: the pod's kernel cut its
    TSO frames (the veth took TSO from eth0 because of the XDP program), not ztgeneve."""
    lens = frame_lengths(bulk["host"].path)
    assert len(lens) >= BULK // 1448, f"{len(lens)} TCP frames from pp"
    assert max(lens) <= 1514, f"frames of up to {max(lens)} bytes reached the packet socket"


def test_no_frame_on_ztunnels_link_exceeds_the_tunnel_mtu(bulk):
    lens = frame_lengths(bulk["zt"].path)
    assert len(lens) >= BULK // 1410, f"{len(lens)} frames on ztunnel's link"
    assert max(lens) <= MAX_FRAME, f"a frame of {max(lens)} bytes (tunnel MTU {TUNNEL_MTU} + 14)"


@pytest.mark.parametrize("side", ["node", "ep"])
def test_bulk_drops_nothing(bulk, side):
    new = {k: v - drops(bulk["before"][side]).get(k, 0) for k, v in drops(bulk["after"][side]).items()}
    assert not {k: v for k, v in new.items() if v}, f"{side}: drops during the bulk transfer: {new}"


# ---------------------------------------------------------------- segment: off, and detaching

def wait_detached(lab, timeout=5):
    def gone():
        return xdp_prog(lab.node_ns, "v-pp") is None and \
            features(lab.ns("pp"), "eth0")["tcp-segmentation-offload"] == "on"
    return wait(gone, timeout, step=0.1)


def test_segment_off_leaves_tso_frames_cut_short(lab):
    """ports[].segment: off attaches nothing: the pod keeps TSO, its frames larger than the
    ring's frames reach the packet socket and arrive cut short, and a 1 MiB transfer stalls.
    (What the XDP program is there for.)"""
    lab.z.stop()
    assert wait_detached(lab)
    cfg = Path(lab.node_cfg).read_text().replace("{name: pp, ", "{name: pp, segment: off, ")
    off_cfg = Path(lab.log_dir) / "node-segment-off.yaml"
    off_cfg.write_text(cfg)
    try:
        lab.start_node(str(off_cfg), name="node-segment-off")
        assert "segment: ports[0] (pp): segment off: nothing attached to v-pp" in lab.z.stderr()
        assert xdp_prog(lab.node_ns, "v-pp") is None
        assert xdp_prog(lab.node_ns, "v-ra") == "ztg_xdp_pass"
        host = capture(lab, lab.node_ns, "v-pp", "tcp", "off-host", snaplen=64)
        with netns.Captures(host):
            [r] = echo(lab, "pp", MB, timeout=6)
        assert not r["ok"], "1 MiB went through without segmentation: is TSO off in the pod?"
        assert max(frame_lengths(host.path)) > 1514, "no frame larger than the MTU from pp"
    finally:
        lab.z.stop()
        lab.start_node(lab.node_cfg)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_program_detached_when_ztgeneve_ends(lab, sig):
    assert xdp_prog(lab.node_ns, "v-pp") == "ztg_xdp_pass"
    lab.z.stop(sig=sig)
    assert wait_detached(lab), f"after {sig.name}: XDP {xdp_prog(lab.node_ns, 'v-pp')} on v-pp, " \
        f"pp's TSO {features(lab.ns('pp'), 'eth0')['tcp-segmentation-offload']}"
    lab.start_node(lab.node_cfg)
    assert xdp_prog(lab.node_ns, "v-pp") == "ztg_xdp_pass"
