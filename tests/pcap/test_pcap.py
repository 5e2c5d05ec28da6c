"""Packet-in/packet-out: each directory under tests/pcap/cases is one case (make_cases.py
writes them): case.yaml names the role, the ports, the tunnel and pods, the input pcaps
in order and, per device, the frames that must leave it and its counters. ztgeneve runs
the case with every port and twin a net_pcap device, inside a private network namespace;
what each device sends must equal the expected pcap byte for byte and in order, and every
counter must be as expected (all others 0). The expected pcaps come from
tests/pcap/geneve_ref.py (scapy), never from ztgeneve.

Inputs: the first one is read from its pcap file as ztgeneve starts (rx_pcap). Each later
one (a pod must have been seen before ztunnel answers it) comes from a veth in the
namespace (rx_iface_in), written with an AF_PACKET socket once every frame before it was
received and the pods it located are logged. ZTG_PCAP_CASES=<dir> runs the cases of
another directory (ZTG_BINARY: another ztgeneve)."""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "tools"))
import telemetry  # noqa: E402
from netns import PY, TOOLS, ns_cmd  # noqa: E402
from pcapraw import raw_frames  # noqa: E402
from ztgeneve import Ztgeneve  # noqa: E402

BINARY = Path(os.environ.get("ZTG_BINARY", REPO / "build" / "ztgeneve"))
CASES_DIR = Path(os.environ.get("ZTG_PCAP_CASES", REPO / "tests" / "pcap" / "cases"))
CASES = sorted(p.name for p in CASES_DIR.iterdir() if (p / "case.yaml").exists())
NS = "ztg-pcap"
WAIT_S = 20
# tshark fields a case's `decode` rows may name
FIELDS = ("eth.dst", "geneve.vni", "ip.src", "ip.dst", "ip.ttl", "ip.dsfield.ecn", "icmp.type", "icmp.code",
          "icmp.mtu", "arp.opcode", "arp.src.proto_ipv4", "arp.dst.proto_ipv4",
          "udp.srcport", "udp.dstport", "udp.checksum.status")  # status (checked): 1 good, 3 none


def load(case):
    return yaml.safe_load((CASES_DIR / case / "case.yaml").read_text())


def run_params():
    """One test per case and fast path (dpdk.fast_path: the node's pods stage has a vector
    path and the scalar reference, which must give the same bytes; the endpoint has one
    path); a case that shows a known bug (`known_bug: why`) is expected to fail until the
    bug is fixed (strict: then it must be noticed and the mark dropped)."""
    for case in CASES:
        spec = load(case)
        bug = spec.get("known_bug")
        for path in ("vector", "scalar") if spec["role"] == "node" else ("vector",):
            marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
            yield pytest.param(case, path, marks=marks, id=f"{case}-{path}")


def devices(spec):
    """Every device of the case in the order ztgeneve creates them (a port, then its twin):
    net_pcap numbers its MACs in that order, and make_cases.py relies on it."""
    for p in spec["ports"]:
        yield p["name"]
        if p["twin"]:
            yield p["name"] + ".twin"


def ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def netns():
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    ip("netns", "add", NS)
    try:
        # Nothing but the injected frames may reach a veth: no IPv6 (router solicitations), no ARP.
        subprocess.run(ns_cmd(NS, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                              "net.ipv6.conf.default.disable_ipv6=1"), check=True)
        yield NS
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def config_for(case, spec, d, out, feeds, path="vector"):
    """The ztgeneve config of a case: its role, tunnel and pods; each device a net_pcap
    writing out/<device>.pcap and reading its input (the first from a file, the others
    from a veth: feeds maps a device to its veth)."""
    first = spec["input"][0]["device"]

    def devargs(dev, n):
        rx = ""
        if dev == first:
            rx = f"rx_pcap={d / spec['input'][0]['pcap']},"
        elif dev in feeds:
            rx = f"rx_iface_in={feeds[dev]},"
        return f"net_pcap_d{n},{rx}tx_pcap={out / (dev + '.pcap')}"

    ports, n = [], 0
    for p in spec["ports"]:
        port = {"name": p["name"], "role": p["role"], "devargs": devargs(p["name"], n)}
        n += 1
        for k in ("mac", "vni"):
            if k in p:
                port[k] = p[k]
        if p["twin"]:
            port["twin"] = devargs(p["name"] + ".twin", n)
            n += 1
        ports.append(port)
    cfg = {"role": spec["role"],
           "dpdk": {"workers": 1, "memory_mb": 128, "file_prefix": f"ztg-pcap-{case}", "idle_sleep_us": 100,
                    "fast_path": path},
           "ports": ports, "tunnel": spec["tunnel"]}
    for k in ("redirect", "pods", "inbound"):
        if k in spec:
            cfg[k] = spec[k]
    return cfg


def describe_diff(got, want):
    lines = [f"got {len(got)} frames, expected {len(want)}"]
    for i in range(max(len(got), len(want))):
        g = got[i] if i < len(got) else None
        w = want[i] if i < len(want) else None
        if g != w:
            first = next((k for k in range(min(len(g or b""), len(w or b""))) if g[k] != w[k]), None)
            lines.append(f"frame {i}: lengths {len(g or b'')} vs {len(w or b'')}, first differing byte {first}")
            if g:
                lines.append("  got:  " + g[:96].hex())
            if w:
                lines.append("  want: " + w[:96].hex())
            break
    return "\n".join(lines)


def accounted(name, c):
    """The README's identity: every frame received is under exactly one verdict."""
    inbound = ("inbound", "skip_ztunnel", "skip_udp", "skip_host", "skip_proxied", "proxied",
               "proxied_kernel", "proxy_return", "dns_capture", "dns_answer", "dns_no_entry", "dns_flow_full")
    if name.endswith(".twin"):  # a pods port's twin with inbound on classifies, any other passes
        return c["rx"] == c["pass"] + sum(c[k] for k in inbound) + sum(
            v for k, v in c.items() if k.startswith("drop_") and k not in ("drop_tx_full", "drop_kernel_ring"))
    verdicts = ("redirect", "direct", "pass", "fragmented", "decap", "tunnel_arp_reply") + inbound
    return c["rx"] == sum(c[k] for k in verdicts) + sum(
        v for k, v in c.items() if (k.startswith("decap_") or k.startswith("drop_"))
        and k not in ("drop_tx_full", "drop_kernel_ring"))


@pytest.mark.parametrize("case,path", run_params())
def test_case(case, path, netns, tmp_path):
    d = CASES_DIR / case
    spec = load(case)
    feeds = {}
    for i, step in enumerate(spec["input"][1:], 1):
        feeds[step["device"]] = f"zin{i}"
        ip("-n", netns, "link", "add", f"zin{i}", "mtu", "9000", "type", "veth", "peer", "name", f"zinj{i}",
           "mtu", "9000")
        for v in (f"zin{i}", f"zinj{i}"):
            ip("-n", netns, "link", "set", v, "arp", "off", "up")
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config_for(case, spec, d, tmp_path, feeds, path)))

    zt = Ztgeneve(BINARY, cfg_path, ns=netns, log_dir=str(tmp_path))
    zt.start(timeout=30)
    prefix = f"ztg-pcap-{case}"
    try:
        for i, step in enumerate(spec["input"]):
            if i > 0:
                p = subprocess.run(ns_cmd(netns, PY, os.path.join(TOOLS, "inject.py"), f"zinj{i}",
                                          str(d / step["pcap"]), "--gap-ms", "0"),
                                   capture_output=True, text=True, timeout=30)
                assert p.stdout.strip() == f"sent {step['frames']}", p.stdout + p.stderr

            def received(dev=step["device"], n=step["frames"]):
                try:
                    return telemetry.query(prefix, f"/ztgeneve/counters,{dev}")["rx"] >= n
                except telemetry.TelemetryError:
                    return False

            def located(step=step):
                log = zt.stderr()
                return all(re.search(rf"pod {re.escape(p['ip'])} is at {p['mac']} on port {p['port']}\b", log, re.I)
                           for p in step["located"])

            deadline = time.monotonic() + WAIT_S
            while not (received() and located()):
                assert time.monotonic() < deadline, \
                    f"input {i} ({step['device']}): not all {step['frames']} frames received, or pods " \
                    f"{step['located']} not located, within {WAIT_S} s; stderr:\n{zt.stderr()}"
                time.sleep(0.05)
    finally:
        counters = zt.stop()
    assert zt.returncode == 0, zt.stderr()
    assert counters is not None, zt.stdout()
    assert counters["mbufs_in_use"] == 0

    for dev in devices(spec):
        want = list(raw_frames(d / spec["expect"][dev]["pcap"]))
        got = list(raw_frames(tmp_path / (dev + ".pcap")))
        assert got == want, f"{dev}: " + describe_diff(got, want)
    for dev in devices(spec):
        c = counters["ports"][dev]
        exp = spec["expect"][dev]["counters"]
        assert set(exp) <= set(c), f"{dev}: no counter {set(exp) - set(c)}"
        wrong = {k: (v, exp.get(k, 0)) for k, v in c.items() if v != exp.get(k, 0)}
        assert not wrong, f"{dev}: counters (got, expected): {wrong}"
        assert accounted(dev, c), f"{dev}: frames not accounted for: {c}"


def normalise(v):
    try:
        return int(v, 0)
    except ValueError:
        return v


@pytest.mark.parametrize("case", CASES)
def test_tshark_decodes_what_the_case_means(case):
    """An independent decoder (tshark) reads each expected pcap (which ztgeneve's output
    equals byte for byte) as carrying what the case meant: VNI, outer and inner addresses,
    TTL and ECN, ICMP type and MTU, ARP opcode and addresses, taken from the input and the
    config rather than from the reference's bytes."""
    spec = load(case)
    port = spec["tunnel"]["udp_port"]
    checked = 0
    for dev in devices(spec):
        rows = spec["expect"][dev]["decode"]
        if not any(rows):
            continue
        cmd = ["tshark", "-n", "-r", str(CASES_DIR / case / spec["expect"][dev]["pcap"]),
               "-o", "ip.defragment:FALSE", "-o", "udp.check_checksum:TRUE", "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,"]
        if port != 6081:
            cmd += ["-d", f"udp.port=={port},geneve"]
        for f in FIELDS:
            cmd += ["-e", f]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split("\n")[:-1]
        assert len(out) == len(rows), f"{dev}: tshark read {len(out)} frames, the case has {len(rows)}"
        for i, (line, want) in enumerate(zip(out, rows)):
            if not want:
                continue
            got = {f: [normalise(v) for v in col.split(",")] if col else []
                   for f, col in zip(FIELDS, line.split("\t"))}
            diff = {f: (got[f], v) for f, v in want.items() if got[f] != v}
            assert not diff, f"{dev} frame {i}: tshark (got, meant): {diff}"
            checked += 1
    assert checked > 0, "a case must say what at least one of its outputs carries"


def test_partial_checksums_leave_complete():
    """A pod's partial TCP/UDP checksums (its kernel left them to offload) leave ztgeneve
    complete on every output, as tshark and scapy both judge them, while the one frame
    whose checksum is simply wrong leaves as wrong as it came."""
    from scapy.all import IP, TCP, UDP, rdpcap

    d = CASES_DIR / "node-pods-partial-csum"
    status = {}
    for name in ("in-pods.pcap", "expected-ztunnel.pcap", "expected-pods.twin.pcap",
                 "expected-ztunnel.twin.pcap"):
        out = subprocess.run(["tshark", "-n", "-r", str(d / name), "-o", "tcp.check_checksum:TRUE",
                              "-o", "udp.check_checksum:TRUE", "-T", "fields", "-e", "tcp.checksum.status",
                              "-e", "udp.checksum.status"], capture_output=True, text=True, check=True)
        # per frame the inner TCP checksum's status, else the UDP one's: 1 good, 0 bad (the
        # outer UDP checksum of a Geneve frame is 0: "not present")
        status[name] = [(tcp or udp).split(",")[-1]
                        for tcp, udp in (line.split("\t") for line in out.stdout.splitlines())]
    assert status["in-pods.pcap"] == ["0"] * 7, "the inputs carry partial (bad) checksums"
    assert status["expected-ztunnel.pcap"] == ["1", "1", "1", "1", "0"], status
    assert status["expected-pods.twin.pcap"] == ["1", "1"], status
    assert status["expected-ztunnel.twin.pcap"] == ["1"], status

    from scapy.contrib.geneve import GENEVE  # noqa: F401 (binds UDP 6081 to Geneve)
    for name in ("expected-ztunnel.pcap", "expected-pods.twin.pcap"):
        for i, pkt in enumerate(rdpcap(str(d / name))):
            ip = pkt.getlayer(IP, nb=2) if pkt.haslayer("GENEVE") else pkt[IP]
            proto = TCP if ip.haslayer(TCP) else UDP
            again = IP(bytes(ip))
            del again[proto].chksum  # scapy computes it anew
            again = IP(bytes(again))
            wrong = name == "expected-ztunnel.pcap" and i == 4
            assert (again[proto].chksum == ip[proto].chksum) != wrong, f"{name} frame {i}: scapy disagrees"
