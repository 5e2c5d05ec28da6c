"""/healthz and /readyz: 200 when up; /readyz 503 with its reason while the tunnel peer is
unresolved (the ztunnel side not running yet) or a port's link is down; /healthz 503 when a
worker stalls (the test-only hook ZTG_TEST_STALL_WORKER). The node runs with kernel.mode
observe on an ipset of the node namespace, as on a node where istio-cni manages it, so the
kernel mirror's metrics and the first-sync condition are seen too."""
import contextlib
import os
import re

import pytest

from minilab import ZT_IP, sh, wait
from opslab import MESHED, http_get, node_config, ops_lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    d = tmp_path_factory.mktemp("health")
    with ops_lab("zth-", d, start=False) as lab:
        sh(lab.node_ns, "ipset create ztunnel-pods-ips hash:ip; " +
           "; ".join(f"ipset add ztunnel-pods-ips {lab.ip(p)}" for p in MESHED))
        lab.cfg = node_config(lab, os.path.join(str(d), "observe.yaml"), pods=[])
        with open(lab.cfg, "a") as f:
            f.write("kernel: {mode: observe, poll_ms: 100}\n")
        yield lab


@contextlib.contextmanager
def env(**kw):
    old = {k: os.environ.get(k) for k in kw}
    os.environ.update(kw)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def metric(body, name):
    m = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", body, re.M)
    return float(m.group(1)) if m else None


def test_ready_only_once_the_tunnel_peer_resolves(lab):
    lab.start_node(lab.cfg)
    try:
        assert http_get(lab.node_ns, "/healthz") == (200, "ok\n")
        status, body = http_get(lab.node_ns, "/readyz")
        assert status == 503
        assert body.splitlines() == [f"tunnel next hop {ZT_IP} not resolved (no ARP reply yet)"]
        _, m = http_get(lab.node_ns, "/metrics")
        assert metric(m, "ztgeneve_tunnel_next_hop_resolved") == 0
        assert metric(m, "ztgeneve_pod_table_pods") == len(MESHED)  # from the ipset
        assert 0 <= metric(m, "ztgeneve_kernel_sync_age_seconds") < 1.0  # poll_ms 100
        assert metric(m, "ztgeneve_kernel_sync_errors_total") == 0

        lab.start_endpoint(lab.ep_cfg)  # its twin eth0 answers the node's next ARP (1/s)
        assert wait(lambda: http_get(lab.node_ns, "/readyz") == (200, "ok\n"), 5), \
            http_get(lab.node_ns, "/readyz")
        _, m = http_get(lab.node_ns, "/metrics")
        assert metric(m, "ztgeneve_tunnel_next_hop_resolved") == 1

        # A pod's link going down makes the node unready, naming the port.
        sh(lab.node_ns, "ip link set v-productpage down")
        try:
            assert wait(lambda: http_get(lab.node_ns, "/readyz")[0] == 503, 3)
            status, body = http_get(lab.node_ns, "/readyz")
            assert "port productpage: link down" in body.splitlines(), body
            assert http_get(lab.node_ns, "/healthz")[0] == 200  # alive all the same
        finally:
            sh(lab.node_ns, "ip link set v-productpage up")
        assert wait(lambda: http_get(lab.node_ns, "/readyz") == (200, "ok\n"), 3)
    finally:
        lab.z.stop()
    assert lab.z.returncode == 0


def test_healthz_fails_when_a_worker_stalls(lab):
    """Worker 0 stops polling 3 s after start (test-only hook): /healthz turns 503 naming it
    within about a second (the stall threshold), and ztgeneve still stops cleanly."""
    with env(ZTG_TEST_STALL_WORKER="0@3000"):
        lab.start_node(lab.cfg, name="stalled")
    try:
        assert http_get(lab.node_ns, "/healthz") == (200, "ok\n")
        assert wait(lambda: http_get(lab.node_ns, "/healthz")[0] == 503, 8)
        status, body = http_get(lab.node_ns, "/healthz")
        assert status == 503 and re.fullmatch(r"worker 0 stalled: no poll round for \d+ ms\n", body), body
        status, body = http_get(lab.node_ns, "/readyz")
        assert status == 503 and body.startswith("worker 0 stalled"), body
    finally:
        lab.z.stop()
    assert lab.z.returncode == 0
