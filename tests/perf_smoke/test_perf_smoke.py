"""Smoke test of the throughput harness: `perf/compare --smoke --workers 2 --scale workers,latency`
(testpmd and ztgeneve with 1 and with 2 workers, a second each, in a private network namespace
on net_pcap/net_null devices; the latency generator looped back and through ztgeneve, a second
each, over memif) must produce numbers, and ztgeneve's output of the correctness pass must
decode with tshark as Geneve VNI 1001 carrying the pod's packet to the VIP untouched, with 2
workers too (each flow on one queue, in order). No timing is asserted."""
import csv
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("ZTG_BINARY", REPO / "build" / "ztgeneve"))
LATENCY = BINARY.parent / "perf" / "ztg_latency"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not BINARY.exists() or not LATENCY.exists() or not shutil.which("dpdk-testpmd")
    or not shutil.which("tshark"),
    reason="needs root, build/ztgeneve, build/perf/ztg_latency, dpdk-testpmd (dpdk-dev) and tshark")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    work = tmp_path_factory.mktemp("perf-smoke")
    p = subprocess.run(["/usr/bin/python3", str(REPO / "perf" / "compare"), "--smoke", "--workers", "2",
                        "--scale", "workers,latency", "--no-install",
                        "--no-build", "--workdir", str(work), "--out", str(work / "results")],
                       capture_output=True, text=True, timeout=240,
                       env=dict(os.environ, ZTG_BINARY=str(BINARY)))
    assert p.returncode == 0, f"perf/compare --smoke failed ({p.returncode}):\n{p.stderr[-4000:]}"
    return work, p


def tshark(path, *fields):
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-E", "occurrence=a",
                          *sum((["-e", f] for f in fields), [])],
                         capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


def test_produces_numbers(smoke):
    work, p = smoke
    rows = list(csv.DictReader(open(work / "results" / "smoke-runs.csv")))
    by_side = {(r["side"], int(r["workers"])): r for r in rows}
    assert {(s, w) for s in ("testpmd", "ztgeneve") for w in (1, 2)} <= set(by_side), rows
    for r in by_side.values():
        assert float(r["rx_mpps"]) > 0 and float(r["tx_mpps"]) > 0, r
        assert float(r["cycles_per_pkt"]) > 0
    assert "ztgeneve" in p.stdout and "cycles/pkt" in p.stdout  # the printed table
    assert "| 2 | nohuge |" in p.stdout  # and the workers table


def test_ztgeneve_output_is_geneve_vni_1001_with_vip_untouched(smoke):
    work, _ = smoke
    check = work / "check-ztgeneve-base"
    rows = tshark(check / "tunnel.pcap", "geneve.vni", "ip.src", "ip.dst", "udp.dstport", "tcp.dstport")
    assert len(rows) == 1800  # 90 % of the 2000 input frames come from pods
    for vni, src, dst, udp_dport, tcp_dport in rows:
        assert int(vni, 0) == 1001
        assert src.split(",")[0] == "10.244.2.1" and src.split(",")[1].startswith("10.244.2.")
        assert dst.split(",") == ["10.244.2.10", "10.96.0.10"]  # outer to ztunnel, inner VIP kept
        assert udp_dport == "6081" and tcp_dport == "9080"
    other = tshark(check / "other.pcap", "geneve.vni", "ip.dst", "tcp.dstport")
    assert len(other) == 200 and all(vni == "" and dst == "10.96.0.10" and port == "9080"
                                     for vni, dst, port in other)


def test_two_workers_keep_each_flow_on_one_queue_in_order(smoke):
    """Decoded by scapy (not the harness's own reader): with 2 workers every pod frame comes
    out as Geneve, both workers carry traffic, no flow appears on both output queues, and a
    flow's frames keep their input order (its k-th frame has TCP sequence number k)."""
    from scapy.all import IP, TCP, rdpcap
    from scapy.contrib.geneve import GENEVE

    work, _ = smoke
    check = work / "check-scale-workers-2-ztg"
    flows_by_queue, total = [], 0
    for q in (0, 1):
        last, flows = {}, set()
        for pkt in rdpcap(str(check / f"tunnel.q{q}.pcap")):
            assert pkt.haslayer(GENEVE) and pkt[GENEVE].vni == 1001, pkt.summary()
            inner = pkt[GENEVE][IP]
            flow = (inner.src, inner[TCP].sport)
            assert inner[TCP].seq > last.get(flow, 0), f"queue {q}: {flow} out of order"
            last[flow] = inner[TCP].seq
            flows.add(flow)
            total += 1
        assert flows, f"worker {q} sent nothing"
        flows_by_queue.append(flows)
    assert total == 1800
    assert not flows_by_queue[0] & flows_by_queue[1]


def test_latency_every_stamped_frame_comes_back(smoke):
    """The latency rows: every frame the generator sent in the window came back with its stamp,
    looped back (plain TCP) and through ztgeneve (read past the Geneve headers): ztgeneve
    redirected each one to its ztunnel port. Latencies are positive and ordered; not timed."""
    work, p = smoke
    rows = {r["case"]: r for r in csv.DictReader(open(work / "results" / "smoke-latency-runs.csv"))}
    assert set(rows) == {"loopback", "ztgeneve"}, rows
    for r in rows.values():
        assert int(r["sent"]) > 0 and int(r["samples"]) == int(r["sent"]), r
        assert int(r["rx_nostamp"]) == 0, r
        assert 0 < float(r["p50_us"]) <= float(r["p99_us"]) <= float(r["max_us"]), r
    assert "| low | ztgeneve |" in p.stdout  # the printed latency table


@pytest.fixture(scope="module")
def veth_smoke(tmp_path_factory):
    work = tmp_path_factory.mktemp("perf-smoke-veth")
    p = subprocess.run(["/usr/bin/python3", str(REPO / "perf" / "compare"), "--smoke", "--scale", "veth", "--sides",
                        "none", "--no-install", "--no-build", "--workdir", str(work), "--out", str(work / "results")],
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, ZTG_BINARY=str(BINARY)))
    assert p.returncode == 0, f"perf/compare --smoke --scale veth failed ({p.returncode}):\n{p.stderr[-4000:]}"
    return work, p


def test_veth_scale_measures_every_kind_at_ztunnels_veth(veth_smoke):
    """Every kind of the veth scale (generator alone, kernel path, the three ztgeneve
    attaches) gets frames through; the ztgeneve ones deliver to ztunnel's veth what was
    offered to the node, not a trickle."""
    work, p = veth_smoke
    rows = {r["side"]: r for r in csv.DictReader(open(work / "results" / "smoke-runs.csv"))}
    assert set(rows) == {"gen", "kernel", "ztg-afpacket", "ztg-afxdp", "ztg-xdp"}, rows
    for side, r in rows.items():
        assert float(r["rx_mpps"]) > 0.01, r
    assert "Mpps at ztunnel's veth" in p.stdout


def test_veth_scale_output_is_geneve_vni_1001_to_ztunnel(veth_smoke):
    """Decoded by scapy: what each ztgeneve attach put on ztunnel's veth is Geneve VNI 1001
    from the node to ztunnel carrying the generator pod's UDP to the VIP."""
    from scapy.all import IP, UDP, rdpcap
    from scapy.contrib.geneve import GENEVE

    work, _ = veth_smoke
    for kind in ("ztg-afpacket", "ztg-afxdp", "ztg-xdp"):
        pkts = rdpcap(str(work / f"veth-check-{kind}-1p-64.pcap"))
        assert len(pkts) == 64, kind
        for pkt in pkts:
            assert pkt.haslayer(GENEVE) and pkt[GENEVE].vni == 1001, (kind, pkt.summary())
            assert (pkt[IP].src, pkt[IP].dst, pkt[UDP].dport) == ("10.244.2.1", "10.244.2.10", 6081)
            inner = pkt[GENEVE][IP]
            assert (inner.src, inner.dst, inner[UDP].dport) == ("10.244.2.3", "10.96.0.10", 9080), kind
