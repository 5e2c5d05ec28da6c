"""End-to-end fixtures: the lab (scripts/lab) with ztgeneve running in ztg-node.

The session fixture `lab` brings the namespaces up, starts build/ztgeneve with
config/lab-node.yaml, addresses the kernel twins, and tears everything down with
finalizers, also when a test fails or the run is interrupted.

Environment: ZTG_BINARY (default build/ztgeneve), ZTG_CONFIG (default config/lab-node.yaml),
ZTG_KEEP_PCAPS=1 keeps capture files, ZTG_E2E_LOG_DIR (default a temp dir) for logs.
"""
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tests" / "tools"
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

import netns  # noqa: E402
import telemetry  # noqa: E402
from ztgeneve import Ztgeneve  # noqa: E402

LAB = REPO / "scripts" / "lab"
NODE_NS = "ztg-node"
FILE_PREFIX = "ztg-node"
GW_IP = "10.244.2.1"
ZTUNNEL_IP = "10.244.2.10"
VIP = "10.96.0.10"
VNI = 1001

PODS = {  # name -> (ip, last octet)
    "productpage": "10.244.2.3",
    "ratings": "10.244.2.2",
    "reviews-v1": "10.244.2.7",
    "reviews-v2": "10.244.2.5",
    "reviews-v3": "10.244.2.8",
    "legacy": "10.244.2.20",
    "ztunnel": ZTUNNEL_IP,
}
MESHED = ["productpage", "ratings", "reviews-v1", "reviews-v2", "reviews-v3"]
POD_PORTS = MESHED + ["legacy"]  # ztgeneve ports of role "pods"


def octet(pod):
    return int(PODS[pod].rsplit(".", 1)[1])


def pod_mac(pod):
    return f"02:00:00:00:02:{octet(pod):02x}"


def twin_mac(pod):
    return f"02:00:00:00:01:{octet(pod):02x}"


def ns_of(pod):
    return f"ztg-{pod}"


@dataclass
class Lab:
    z: Ztgeneve
    log_dir: str
    captures: list = field(default_factory=list)
    session_capture: object = None

    def counters(self):
        return telemetry.counters(FILE_PREFIX)

    def capture(self, pod_or_ns, iface, bpf="", direction=None, name=None):
        """A Capture registered for cleanup; pod_or_ns: pod name, 'node', or a namespace."""
        ns = pod_or_ns if pod_or_ns.startswith("ztg-") else f"ztg-{pod_or_ns}"
        path = os.path.join(self.log_dir, f"{name or ns + '-' + iface}-{len(self.captures)}.pcap")
        c = netns.Capture(ns, iface, bpf=bpf, direction=direction, path=path)
        self.captures.append(c)
        return c


def pytest_collection_modifyitems(session, config, items):
    """Tests marked `last` (they stop ztgeneve) run after all others."""
    items.sort(key=lambda it: 1 if it.get_closest_marker("last") else 0)


def pytest_configure(config):
    config.addinivalue_line("markers", "last: run at the end of the session (stops ztgeneve)")


def _lab(cmd, check=True):
    return subprocess.run([str(LAB), cmd], capture_output=True, text=True, timeout=120,
                          check=check)


@pytest.fixture(scope="session")
def lab(request):
    if os.geteuid() != 0:
        pytest.skip("e2e tests need root (network namespaces)")
    binary = Path(os.environ.get("ZTG_BINARY", REPO / "build" / "ztgeneve"))
    config = Path(os.environ.get("ZTG_CONFIG", REPO / "config" / "lab-node.yaml"))
    if not binary.exists():
        pytest.fail(f"{binary} not built (meson setup build && ninja -C build)")
    log_dir = os.environ.get("ZTG_E2E_LOG_DIR") or tempfile.mkdtemp(prefix="ztg-e2e-")
    os.makedirs(log_dir, exist_ok=True)

    _lab("down", check=False)
    request.addfinalizer(lambda: _lab("down", check=False))
    r = _lab("up", check=False)
    if r.returncode != 0:
        pytest.fail(f"scripts/lab up failed:\n{r.stderr}")

    z = Ztgeneve(binary, config, ns=NODE_NS, log_dir=log_dir,
                 taps=[f"t-{p}" for p in PODS])
    lab = Lab(z=z, log_dir=log_dir)
    # Every Geneve frame ztunnel receives during the session (checked against the exit line).
    lab.session_capture = lab.capture("ztunnel", "eth0", "udp dst port 6081", direction="in",
                                      name="session-zt")

    def teardown():
        for c in lab.captures:
            c.stop()
        z.stop()
        if os.environ.get("ZTG_KEEP_PCAPS") is None:
            for c in lab.captures:
                c.cleanup()
        sys.stderr.write(f"\n[e2e] ztgeneve logs in {log_dir}\n")

    request.addfinalizer(teardown)
    lab.session_capture.start()
    z.start(timeout=40)
    r = _lab("twins", check=False)
    if r.returncode != 0:
        pytest.fail(f"scripts/lab twins failed:\n{r.stderr}\nztgeneve stderr:\n{z.stderr()[-3000:]}")
    _warm_up(lab)
    return lab


def _warm_up(lab):
    """Best effort: every pod has resolved its gateway and ztgeneve the ztunnel MAC, so the
    tests' first packets are not spent on ARP. Never fails; the tests assert."""
    procs = [subprocess.Popen(netns.ns_cmd(ns_of(p), "ping", "-c1", "-W2", GW_IP),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for p in PODS]
    for p in procs:
        p.wait(10)
    cap = lab.capture("ztunnel", "eth0", "udp dst port 6081", direction="in", name="warmup")
    try:
        cap.start()
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            netns.client("ztg-productpage", "tcp", VIP, 9080, "--timeout", "1.2")
            if cap.packets():
                break
    except Exception as e:  # noqa: BLE001
        sys.stderr.write(f"[e2e] warm-up: {e}\n")
    finally:
        cap.stop()
