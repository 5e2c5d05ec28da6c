"""Correctness before measuring: run a side once over the input pcap with pcap outputs, then
decode what came out with tshark (Geneve VNI 1001, outer 10.244.2.1 -> 10.244.2.10, inner
destination 10.96.0.10:9080) and compare bytes (inner IPv4 packet untouched; non-pod
frames unmodified), and that every flow's frames came out in the order they went in
(with several workers a flow must stay on one of them)."""
import subprocess
import time
from collections import Counter
from pathlib import Path

from . import env, traffic
from .sides import Devices

FIELDS = ["geneve.vni", "ip.src", "ip.dst", "udp.dstport", "tcp.dstport", "frame.len"]


def tshark_rows(path):
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-E", "occurrence=a", "-E", "separator=/t",
                          *sum((["-e", f] for f in FIELDS), [])],
                         capture_output=True, text=True, check=True).stdout
    return [dict(zip(FIELDS, line.split("\t"))) for line in out.splitlines() if line.strip()]


def run_once(name, side_cls, ns, in_pcaps, workdir, n_frames, **kw):
    """One pass of the input (one pcap per queue) through the side; returns the Devices, whose
    check_dir is workdir/check-<name>."""
    check_dir = workdir / f"check-{name}"
    check_dir.mkdir(parents=True, exist_ok=True)
    devs = Devices(in_pcaps, check_dir)
    side = side_cls(ns, devs, check_dir, n_frames=n_frames, **kw)
    try:
        side.start()
        last, stable_since = None, time.monotonic()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the outputs stop growing for 1 s
            cur = side.sample()
            if cur != last:
                last, stable_since = cur, time.monotonic()
            elif cur[0] > 0 and time.monotonic() - stable_since > 1.0:
                break
            time.sleep(0.2)
    finally:
        side.stop()
    return devs


def out_of_order(frames, off):
    """Flows whose frames (IPv4 header at off) are not in increasing sequence-number order."""
    last, bad = {}, set()
    for f in frames:
        flow, seq = traffic.flow_seq(f, off)
        if seq <= last.get(flow, 0):
            bad.add(flow)
        last[flow] = seq
    return bad


def verify(devs, in_pcaps, pods, exact):
    """Problems found (empty list = correct). exact: every frame must come out (ztgeneve);
    otherwise (OVS loses the first frames to upcalls on a new port) at least half."""
    check_dir = devs.check_dir
    inp = [f for p in ([in_pcaps] if isinstance(in_pcaps, (str, Path)) else in_pcaps)
           for f in traffic.read_pcap(p)]
    pod_set = set(pods)
    pod_ip = {f[14:] for f in inp if _src(f) in pod_set}
    other_in = [f for f in inp if _src(f) not in pod_set]
    tun_q = [traffic.read_pcap(p) for p in devs.outputs("tunnel")]
    tun = [f for q in tun_q for f in q]
    oth = [f for p in devs.outputs("other") for f in traffic.read_pcap(p)]
    probs = []
    rows = [r for p in devs.outputs("tunnel") for r in tshark_rows(p)]
    bad = [r for r in rows if not (
        _int(r["geneve.vni"]) == 1001 and r["udp.dstport"] == "6081" and r["tcp.dstport"] == "9080"
        and r["ip.src"].split(",")[0] == "10.244.2.1" and r["ip.src"].split(",")[-1] in pod_set
        and r["ip.dst"].split(",") == ["10.244.2.10", traffic.VIP])]
    if bad:
        probs.append(f"{len(bad)} of {len(rows)} tunnel frames not decoded by tshark as Geneve VNI 1001 "
                     f"10.244.2.1 -> 10.244.2.10 carrying pod -> {traffic.VIP}:9080; first: {bad[0]}")
    changed = sum(1 for f in tun if f[64:] not in pod_ip)
    if changed:
        probs.append(f"{changed} tunnel frames whose inner IPv4 packet is not an input packet byte for byte")
    # A flow's frames leave in the order they arrived: within each output queue (a flow on
    # one worker), and no flow on two queues.
    reordered = set().union(*(out_of_order(q, 64) for q in tun_q))
    queues_of = Counter(flow for q in tun_q for flow in {traffic.flow_seq(f, 64)[0] for f in q})
    split = {flow for flow, n in queues_of.items() if n > 1}
    if reordered or split:
        probs.append(f"{len(reordered)} flows out of order and {len(split)} flows on more than one queue "
                     f"at the tunnel output")
    if any(f not in other_in for f in oth):
        probs.append("a frame on the non-pod output differs from every input non-pod frame")
    want_tun, want_oth = len(inp) - len(other_in), len(other_in)
    need = (lambda w: w) if exact else (lambda w: w // 2)
    if len(tun) < need(want_tun) or len(tun) > want_tun:
        probs.append(f"{len(tun)} tunnel frames out, expected {'' if exact else '>= half of '}{want_tun}")
    if len(oth) < need(want_oth) or len(oth) > want_oth:
        probs.append(f"{len(oth)} non-pod frames out, expected {'' if exact else '>= half of '}{want_oth}")
    env.log(f"check {check_dir.name}: {len(tun)}/{want_tun} Geneve (tshark: VNI 1001, VIP kept), "
            f"{len(oth)}/{want_oth} non-pod unmodified" + ("" if not probs else f": FAILED: {probs}"))
    return probs


def _src(frame):
    return ".".join(str(b) for b in frame[26:30])


def _int(s):
    try:
        return int(s, 0)
    except ValueError:
        return None
