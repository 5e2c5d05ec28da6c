"""End-to-end fixtures: the lab (scripts/lab, tests/tools/lab.py) with ztgeneve on both sides
of the tunnel.

The session fixture `lab` brings the namespaces up (as `scripts/lab up` does), starts
build/ztgeneve twice: role node in ztg-node (config/lab-node.yaml) and role endpoint in
ztg-ztunnel (config/lab-endpoint.yaml; it owns ztunnel's link `ztlink` and makes the taps
eth0, pistioout and pistioin), addresses the kernel twins on both sides, starts ztunnel's stand-in
(the transparent listener on 127.0.0.1:15001 behind TPROXY), and tears everything down with
finalizers, also when a test fails or the run is interrupted.

The wire between node and ztunnel is the veth pair v-ztunnel (ztg-node) / ztlink
(ztg-ztunnel). What the node sends is captured on ztlink (direction in); what the endpoint
sends is captured on v-ztunnel (direction in): net_af_packet transmits with
PACKET_QDISC_BYPASS, which packet taps on the sending end do not see.

Environment: ZTG_BINARY (default build/ztgeneve), ZTG_CONFIG (default config/lab-node.yaml),
ZTG_ENDPOINT_CONFIG (default config/lab-endpoint.yaml), ZTG_KEEP_PCAPS=1 keeps capture
files, ZTG_E2E_LOG_DIR (default a temp dir) for logs. ZTG_WORKERS=N runs the node with N
workers: its config becomes a copy with dpdk.workers N, `qpairs=N` on every net_af_packet
port (the kernel spreads the frames of a veth over the N packet sockets by a flow hash,
PACKET_FANOUT_HASH) and metrics on 127.0.0.1:16081 in ztg-node (per-worker counters).
"""
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tests" / "tools"
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

import lab as labtopo  # noqa: E402  (the topology; `lab` is the fixture)
import netns  # noqa: E402
import telemetry  # noqa: E402
from tproxy_listener import ListenerProcess  # noqa: E402
from ztgeneve import Ztgeneve  # noqa: E402

TOPOLOGY = labtopo.NodeLab()  # the lab of scripts/lab: ztg-*, config/lab-node.yaml's pods
NODE_NS = TOPOLOGY.node_ns
FILE_PREFIX = "ztg-node"
ZT_NS = TOPOLOGY.zt_ns
EP_PREFIX = "ztg-endpoint"
ZT_LINK = labtopo.ZT_LINK   # ztunnel's end of the wire (owned by the endpoint ztgeneve)
NODE_ZT_PORT = "v-ztunnel"  # the node's end of the wire
LISTENER_PORT = labtopo.LISTENER_PORT
ISTIOOUT_IP = labtopo.ISTIOOUT_IP
ISTIOOUT_MAC = labtopo.ISTIOOUT_MAC
PISTIOOUT_MAC = labtopo.PISTIOOUT_MAC
GW_IP = TOPOLOGY.gw_ip
ZTUNNEL_IP = TOPOLOGY.zt_ip
VIP = TOPOLOGY.vip
VNI = 1001

PODS = {p: TOPOLOGY.ip(p) for p in [*TOPOLOGY.pods, "ztunnel"]}  # name -> ip
MESHED = ["productpage", "ratings", "reviews-v1", "reviews-v2", "reviews-v3"]
POD_PORTS = MESHED + ["legacy"]  # ztgeneve ports of role "pods"
WORKERS = int(os.environ.get("ZTG_WORKERS", "1"))
METRICS = "127.0.0.1:16081"  # with ZTG_WORKERS: in ztg-node only


def node_config(base, log_dir):
    """The node's config: base itself, or with ZTG_WORKERS a copy for that many workers."""
    if WORKERS == 1:
        return base
    cfg = yaml.safe_load(Path(base).read_text())
    cfg["dpdk"]["workers"] = WORKERS
    for port in cfg["ports"]:
        if port["devargs"].startswith("net_af_packet"):
            port["devargs"] += f",qpairs={WORKERS}"
    cfg["metrics"] = {"listen": METRICS}
    path = Path(log_dir) / f"node-{WORKERS}-workers.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def octet(pod):
    return int(PODS[pod].rsplit(".", 1)[1])


def pod_mac(pod):
    return labtopo.pod_mac(octet(pod))


def twin_mac(pod):
    return labtopo.twin_mac(octet(pod))


def ns_of(pod):
    return TOPOLOGY.ns(pod)


@dataclass
class Lab:
    z: Ztgeneve
    log_dir: str
    ep: Ztgeneve = None
    listener: ListenerProcess = None
    captures: list = field(default_factory=list)
    session_capture: object = None

    def counters(self):
        return telemetry.counters(FILE_PREFIX)

    def metrics(self):
        """Per-worker counters from /metrics (ZTG_WORKERS only): {(name, device, worker): n}."""
        body = netns.run(NODE_NS, "/usr/bin/python3", "-c",
                         f"import urllib.request; print(urllib.request.urlopen('http://{METRICS}/metrics', "
                         "timeout=5).read().decode())").stdout
        out = {}
        for m in re.finditer(r'^ztgeneve_(\w+)_total\{device="([^"]+)",worker="(\d+)"\} (\d+)$', body, re.M):
            out[(m.group(1), m.group(2), int(m.group(3)))] = int(m.group(4))
        return out

    def ep_counters(self):
        return telemetry.counters(EP_PREFIX)

    def wire_to_ztunnel(self, bpf="udp dst port 6081", name=None, **kw):
        """Capture of what the node sends to ztunnel (on ztlink, direction in)."""
        return self.capture(ZT_NS, ZT_LINK, bpf, direction="in", name=name, **kw)

    def wire_to_node(self, bpf="udp dst port 6081", name=None, **kw):
        """Capture of what ztunnel's side (the endpoint) sends to the node (on v-ztunnel,
        direction in)."""
        return self.capture(NODE_NS, NODE_ZT_PORT, bpf, direction="in", name=name, **kw)

    def capture(self, pod_or_ns, iface, bpf="", direction=None, name=None, **kw):
        """A Capture registered for cleanup; pod_or_ns: pod name, 'node', or a namespace."""
        ns = pod_or_ns if pod_or_ns.startswith(TOPOLOGY.prefix) else TOPOLOGY.ns(pod_or_ns)
        path = os.path.join(self.log_dir, f"{name or ns + '-' + iface}-{len(self.captures)}.pcap")
        c = netns.Capture(ns, iface, bpf=bpf, direction=direction, path=path, **kw)
        self.captures.append(c)
        return c


def pytest_collection_modifyitems(session, config, items):
    """Tests marked `last` (they stop ztgeneve) run after all others."""
    items.sort(key=lambda it: 1 if it.get_closest_marker("last") else 0)


def pytest_configure(config):
    config.addinivalue_line("markers", "last: run at the end of the session (stops ztgeneve)")


@pytest.fixture(scope="session")
def lab(request):
    if os.geteuid() != 0:
        pytest.skip("e2e tests need root (network namespaces)")
    binary = Path(os.environ.get("ZTG_BINARY", REPO / "build" / "ztgeneve"))
    config = Path(os.environ.get("ZTG_CONFIG", REPO / "config" / "lab-node.yaml"))
    ep_config = Path(os.environ.get("ZTG_ENDPOINT_CONFIG", REPO / "config" / "lab-endpoint.yaml"))
    if not binary.exists():
        pytest.fail(f"{binary} not built (meson setup build && ninja -C build)")
    log_dir = os.environ.get("ZTG_E2E_LOG_DIR") or tempfile.mkdtemp(prefix="ztg-e2e-")
    os.makedirs(log_dir, exist_ok=True)

    TOPOLOGY.down()
    request.addfinalizer(TOPOLOGY.down)
    try:
        TOPOLOGY.up()
    except labtopo.LabError as e:
        pytest.fail(f"lab up failed: {e}")

    z = Ztgeneve(binary, node_config(config, log_dir), ns=NODE_NS, log_dir=os.path.join(log_dir, "node"),
                 taps=[f"t-{p}" for p in PODS])
    ep = Ztgeneve(binary, ep_config, ns=ZT_NS, log_dir=os.path.join(log_dir, "endpoint"),
                  taps=["eth0", "pistioout", "pistioin"])
    os.makedirs(z.log_dir, exist_ok=True)
    os.makedirs(ep.log_dir, exist_ok=True)
    lab = Lab(z=z, ep=ep, log_dir=log_dir)
    lab.listener = ListenerProcess(ZT_NS, os.path.join(log_dir, "listener.log"), port=LISTENER_PORT)
    # Every Geneve frame ztunnel receives during the session (checked against the exit
    # line); headers only, a big kernel buffer: the TCP tests move megabytes.
    lab.session_capture = lab.wire_to_ztunnel(name="session-zt", snaplen=160, buffer_kib=16384)

    def teardown():
        for c in lab.captures:
            c.stop()
        lab.listener.stop()
        ep.stop()
        z.stop()
        if os.environ.get("ZTG_KEEP_PCAPS") is None:
            for c in lab.captures:
                c.cleanup()
        sys.stderr.write(f"\n[e2e] ztgeneve logs in {log_dir}\n")

    request.addfinalizer(teardown)
    lab.session_capture.start()
    z.start(timeout=40)
    try:
        TOPOLOGY.address_twins(wait_s=20)
    except labtopo.LabError as e:
        pytest.fail(f"lab twins failed: {e}\nztgeneve stderr:\n{z.stderr()[-3000:]}")
    ep.start(timeout=40)
    try:
        TOPOLOGY.address_endpoint_taps(wait_s=20)
    except labtopo.LabError as e:
        pytest.fail(f"lab endpoint-twins failed: {e}\nendpoint stderr:\n{ep.stderr()[-3000:]}")
    lab.listener.start()
    _warm_up(lab)
    return lab


def _warm_up(lab):
    """Best effort: every pod has resolved its gateway (so the node knows where each pod
    is), both instances have resolved each other's MAC, and ztunnel has resolved istioout,
    so the tests' first packets are not spent on ARP. Never fails; the tests assert."""
    procs = [subprocess.Popen(netns.ns_cmd(ns_of(p), "ping", "-c1", "-W2", GW_IP),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for p in PODS]
    for p in procs:
        p.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            out = netns.client(ns_of("productpage"), "echo", VIP, 9080, "--timeout", "2")
            if '"ok": true' in out:
                break
        except Exception as e:  # noqa: BLE001
            sys.stderr.write(f"[e2e] warm-up: {e}\n")
        time.sleep(0.2)
