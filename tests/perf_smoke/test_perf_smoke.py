"""Smoke test of the throughput harness: `perf/compare --smoke` (testpmd and ztgeneve, a
second each, in a private network namespace on net_pcap/net_null devices) must produce
numbers, and ztgeneve's output of the correctness pass must decode with tshark as Geneve
VNI 1001 carrying the pod's packet to the VIP untouched. No timing is asserted."""
import csv
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("ZTG_BINARY", REPO / "build" / "ztgeneve"))

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not BINARY.exists() or not shutil.which("dpdk-testpmd") or not shutil.which("tshark"),
    reason="needs root, build/ztgeneve, dpdk-testpmd (dpdk-dev) and tshark")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    work = tmp_path_factory.mktemp("perf-smoke")
    p = subprocess.run(["/usr/bin/python3", str(REPO / "perf" / "compare"), "--smoke", "--no-install",
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
    by_side = {r["side"]: r for r in rows}
    assert {"testpmd", "ztgeneve"} <= set(by_side), rows
    for side in ("testpmd", "ztgeneve"):
        assert float(by_side[side]["rx_mpps"]) > 0 and float(by_side[side]["tx_mpps"]) > 0, by_side[side]
        assert float(by_side[side]["cycles_per_pkt"]) > 0
    assert "ztgeneve" in p.stdout and "cycles/pkt" in p.stdout  # the printed table


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
