"""/metrics, scraped by a real Prometheus (Debian's `prometheus`) every second while TCP
runs through both instances: its HTTP API then returns for the productpage port's redirect
counter the value ztgeneve itself reports at exit; promtool accepts the exposition.

Prometheus runs in the node namespace, on 127.0.0.1 only, with a config of its own (one
target: ztgeneve's 127.0.0.1 endpoint), a temporary storage directory, and is killed at the
end: it can reach nothing but that namespace's loopback."""
import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse

import pytest

import netns
from minilab import wait
from opslab import METRICS_ADDR, METRICS_PORT, MESHED, ctl, echo, echo_ok, http_get, ops_lab, settled

PROM_PORT = 19090


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with ops_lab("ztm-", tmp_path_factory.mktemp("metrics")) as lab:
        yield lab


@pytest.fixture(scope="module")
def prometheus(lab, tmp_path_factory):
    if not shutil.which("prometheus"):
        pytest.fail("prometheus not installed (scripts/install-deps)")
    d = tmp_path_factory.mktemp("prometheus")
    cfg = d / "prometheus.yml"
    cfg.write_text(f"""global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1m
scrape_configs:
  - job_name: ztgeneve
    static_configs:
      - targets: ["{METRICS_ADDR}:{METRICS_PORT}"]
""")
    log = open(d / "prometheus.log", "w")
    p = subprocess.Popen(netns.ns_cmd(lab.node_ns, "prometheus", f"--config.file={cfg}",
                                      f"--storage.tsdb.path={d / 'data'}",
                                      f"--web.listen-address=127.0.0.1:{PROM_PORT}",
                                      "--log.level=warn"),
                         stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        assert wait(lambda: http_get(lab.node_ns, "/-/ready", port=PROM_PORT)[0] == 200, 30), \
            (d / "prometheus.log").read_text()[-2000:]
        yield lambda q: query(lab, q)
    finally:
        p.kill()
        p.wait(10)
        log.close()


def query(lab, q):
    """Prometheus instant query: the result vector."""
    status, body = http_get(lab.node_ns, "/api/v1/query?query=" + urllib.parse.quote(q),
                            port=PROM_PORT)
    assert status == 200, body
    r = json.loads(body)
    assert r["status"] == "success", r
    return r["data"]["result"]


def scalar(prom, q):
    res = prom(q)
    return float(res[0]["value"][1]) if res else None


def test_prometheus_scrapes_the_final_counters(lab, prometheus):
    assert wait(lambda: scalar(prometheus, 'up{job="ztgeneve"}') == 1, 10)
    # TCP for about 4 s (several scrapes), from both meshed pods.
    t_end = time.monotonic() + 4
    rounds = 0
    while time.monotonic() < t_end:
        procs = [echo(lab, p, conns=4, nbytes=200000) for p in MESHED]
        for p in procs:
            echo_ok(p)
        rounds += 1
    own = settled(lambda: ctl("--file-prefix", lab.node_prefix, "--json", "counters",
                              "productpage").stdout)
    own = json.loads(own)["ports"]["productpage"]["redirect"]
    t_settled = time.time()
    sel = 'ztgeneve_redirect_total{device="productpage"}'
    # The first scrape that began after the counters settled.
    assert wait(lambda: (scalar(prometheus, f"max(timestamp({sel}))") or 0) > t_settled + 0.1, 5)
    scraped = scalar(prometheus, f"sum({sel})")
    # Prometheus saw the counter grow while traffic ran (several distinct values).
    seen = {v for s in prometheus(f"{sel}[60s]") for _, v in s["values"]}
    final = lab.z.stop()
    assert lab.z.returncode == 0
    assert final["ports"]["productpage"]["redirect"] == own == scraped > 0
    assert len(seen) >= 3, f"only {sorted(seen)} scraped in {rounds} rounds of traffic"


def test_promtool_accepts_the_exposition(lab, tmp_path):
    if not lab.z.running():
        lab.start_node(lab.cfg, name="node-2")
    status, body = http_get(lab.node_ns, "/metrics")
    assert status == 200
    (tmp_path / "metrics.txt").write_text(body)
    r = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr
    # What an operator looks for is there.
    for name in ("ztgeneve_build_info", "ztgeneve_pod_table_pods", "ztgeneve_pod_table_capacity",
                 "ztgeneve_mempool_mbufs_in_use", "ztgeneve_events_lost_total",
                 "ztgeneve_worker_rounds_total", "ztgeneve_drop_kernel_ring_total",
                 "ztgeneve_link_up", "ztgeneve_tunnel_next_hop_resolved"):
        assert re.search(rf"^# TYPE {name} ", body, re.M), name
    assert re.search(r'^ztgeneve_redirect_total\{device="productpage",worker="0"\} \d+$', body, re.M)
    assert re.search(r'^ztgeneve_build_info\{version="[^"]+",dpdk="DPDK [^"]+",role="node"\} 1$',
                     body, re.M)
