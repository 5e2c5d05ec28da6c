"""Packet-in/packet-out: each case under tests/pcap/cases is an input pcap, the expected
pcaps of the ztunnel port and of the pods port's kernel twin, and the tunnel/pods they
assume. ztgeneve runs the case through net_pcap devices (inside a private network
namespace) and its output must equal the expected bytes, frame by frame, in order.
The expected pcaps come from tests/pcap/geneve_ref.py (scapy), not from ztgeneve."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from scapy.all import rdpcap

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "tools"))
import telemetry  # noqa: E402
from ztgeneve import Ztgeneve  # noqa: E402

BINARY = Path(os.environ.get("ZTG_BINARY", REPO / "build" / "ztgeneve"))
CASES = sorted(p.name for p in (REPO / "tests" / "pcap" / "cases").iterdir() if (p / "case.yaml").exists())
NS = "ztg-pcap"


@pytest.fixture(scope="module")
def netns():
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    yield NS
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def config_for(case, d, out):
    return {
        "role": "node",
        "dpdk": {"workers": 1, "memory_mb": 128, "file_prefix": f"ztg-pcap-{case}", "idle_sleep_us": 100},
        "ports": [
            {"name": "pods", "role": "pods",
             "devargs": f"net_pcap_in,rx_pcap={d / 'in.pcap'},tx_pcap={out / 'pods.pcap'}",
             "twin": f"net_pcap_tw,tx_pcap={out / 'twin.pcap'}"},
            {"name": "ztunnel", "role": "ztunnel", "devargs": f"net_pcap_zt,tx_pcap={out / 'ztunnel.pcap'}",
             "mac": "02:00:00:00:01:0a"},
        ],
        "tunnel": None,  # filled by the caller
        "redirect": None,
        "pods": None,
    }


def frames(path):
    return [bytes(p) for p in rdpcap(str(path))] if path.exists() and path.stat().st_size > 24 else []


def describe_diff(got, want):
    lines = [f"got {len(got)} frames, expected {len(want)}"]
    for i in range(max(len(got), len(want))):
        g = got[i] if i < len(got) else None
        w = want[i] if i < len(want) else None
        if g != w:
            first = next((k for k in range(min(len(g or b""), len(w or b""))) if g[k] != w[k]), None)
            lines.append(f"frame {i}: lengths {len(g or b'')} vs {len(w or b'')}, first differing byte {first}")
            if g:
                lines.append("  got:  " + (g or b"")[:80].hex())
            if w:
                lines.append("  want: " + (w or b"")[:80].hex())
            break
    return "\n".join(lines)


@pytest.mark.parametrize("case", CASES)
def test_case(case, netns, tmp_path):
    d = REPO / "tests" / "pcap" / "cases" / case
    spec = yaml.safe_load((d / "case.yaml").read_text())
    cfg = config_for(case, d, tmp_path)
    cfg["tunnel"] = spec["tunnel"]
    cfg["redirect"] = {"protocols": spec["protocols"]}
    cfg["pods"] = spec["pods"]
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))

    zt = Ztgeneve(BINARY, cfg_path, ns=netns, log_dir=str(tmp_path))
    zt.start(timeout=30)
    try:
        prefix = f"ztg-pcap-{case}"

        def all_received():
            try:
                c = telemetry.counters(prefix)
            except telemetry.TelemetryError:
                return False
            return c["ports"]["pods"]["rx"] >= spec["frames"]

        deadline = time.monotonic() + 20
        while not all_received():
            assert time.monotonic() < deadline, f"ztgeneve did not receive {spec['frames']} frames; stderr:\n{zt.stderr()}"
            time.sleep(0.1)
    finally:
        counters = zt.stop()
    assert zt.returncode == 0, zt.stderr()
    assert counters is not None, zt.stdout()

    want_zt, want_twin = frames(d / "expected-ztunnel.pcap"), frames(d / "expected-twin.pcap")
    got_zt, got_twin = frames(tmp_path / "ztunnel.pcap"), frames(tmp_path / "twin.pcap")
    assert got_zt == want_zt, "ztunnel port: " + describe_diff(got_zt, want_zt)
    assert got_twin == want_twin, "kernel twin: " + describe_diff(got_twin, want_twin)

    pods = counters["ports"]["pods"]
    exp = spec["expect"]
    assert pods["rx"] == spec["frames"]
    assert pods["redirect"] == exp["redirect"]
    assert pods["direct"] == exp["direct"]
    assert pods["pass"] == exp["pass"]
    assert pods["drop_too_big"] == exp["drop"]
    assert pods["fragmented"] == exp.get("fragment", 0)
    assert pods["fragments"] == exp.get("fragments", 0)
    assert counters["ports"]["ztunnel"]["tx"] == exp["redirect"] + exp["direct"] + exp.get("fragments", 0)
    assert counters["ports"]["pods.twin"]["tx"] == exp["pass"]
    # Every frame received is accounted for: sent somewhere or dropped with a reason.
    drops = sum(v for k, v in pods.items() if k.startswith("drop_"))
    assert pods["redirect"] + pods["direct"] + pods["pass"] + pods["fragmented"] + drops == pods["rx"]


def test_tshark_decodes_the_output_as_geneve_vni(netns, tmp_path):
    """An independent decoder (tshark) reads the expected ztunnel output as Geneve with
    the case's VNI and port, so the reference itself is not wrong in the same way."""
    for case in CASES:
        d = REPO / "tests" / "pcap" / "cases" / case
        spec = yaml.safe_load((d / "case.yaml").read_text())
        port = spec["tunnel"].get("udp_port", 6081)
        p = subprocess.run(["tshark", "-n", "-r", str(d / "expected-ztunnel.pcap"), "-d", f"udp.port=={port},geneve",
                            "-Y", "geneve", "-T", "fields", "-e", "geneve.vni", "-e", "geneve.version",
                            "-e", "ip.dst"], capture_output=True, text=True, check=True)
        rows = [r.split("\t") for r in p.stdout.split("\n") if r]
        assert len(rows) == spec["expect"]["redirect"] + spec["expect"].get("fragments", 0), case
        for vni, ver, dst in rows:
            assert int(vni, 0) == spec["tunnel"].get("vni", 1001)
            assert ver == "0"
            assert dst.split(",")[0] == spec["tunnel"]["remote_ip"]
