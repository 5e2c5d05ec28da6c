"""Helpers of tests/operate: a MiniLab (tests/tools/minilab.py) with the pods productpage,
ratings (meshed) and legacy, ztgeneve's metrics endpoint in the node namespace, and small
clients for HTTP (run inside a namespace), the ctl tool and traffic.

    with ops_lab("zto-", log_dir, endpoint=True) as lab:   # up, node, endpoint, listener
        status, body = http_get(lab.node_ns, "/readyz")
"""
import contextlib
import json
import os
import subprocess
from pathlib import Path

import pytest

import netns
from minilab import VIP, MiniLab, wait

REPO = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("ZTG_BINARY", REPO / "build" / "ztgeneve"))
CTL = Path(os.environ.get("ZTG_CTL", REPO / "control" / "ztgeneve-ctl"))
PODS = {"productpage": 3, "ratings": 2, "legacy": 20}
MESHED = ["productpage", "ratings"]
METRICS_ADDR = "127.0.0.1"
METRICS_PORT = 16081
PY = "/usr/bin/python3"


def require():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    if not BINARY.exists():
        pytest.fail(f"{BINARY} not built (meson setup build && ninja -C build)")


# The ARP refresh of both instances (every 5 s by default) moves counters while no test
# traffic flows; tests here compare counters read at different moments, so the peers are
# asked again only once an hour (the first resolution is unchanged).
QUIET_ARP_MS = 3600000


def node_config(lab, path, metrics=True, huge_dir=None, **kw):
    """MiniLab's node config plus `metrics.listen` (and hugepages with huge_dir)."""
    kw.setdefault("arp_refresh_ms", QUIET_ARP_MS)
    lab.node_config(path, **kw)
    text = Path(path).read_text()
    if huge_dir:
        text = text.replace("no_huge: true", f"no_huge: false, eal_args: [--huge-dir, {huge_dir}]")
    if metrics:
        text += f'metrics: {{listen: "{METRICS_ADDR}:{METRICS_PORT}"}}\n'
    Path(path).write_text(text)
    return path


@contextlib.contextmanager
def ops_lab(prefix, log_dir, endpoint=True, start=True):
    """A MiniLab, up; with start: node (metrics on), endpoint and the TPROXY listener.
    Everything is removed on exit, also on failure."""
    require()
    lab = MiniLab(prefix, pods=PODS, meshed=MESHED, endpoint=endpoint, log_dir=str(log_dir),
                  binary=BINARY)
    try:
        lab.up()
        lab.cfg = node_config(lab, os.path.join(str(log_dir), "node.yaml"))
        if endpoint:
            lab.ep_cfg = lab.endpoint_config(os.path.join(str(log_dir), "endpoint.yaml"))
            ep = Path(lab.ep_cfg)
            ep.write_text(ep.read_text().replace(
                "next_hop_mac: arp,", f"next_hop_mac: arp, arp_refresh_ms: {QUIET_ARP_MS},"))
        if start:
            lab.start_node(lab.cfg)
            if endpoint:
                lab.start_endpoint(lab.ep_cfg)
                lab.start_listener()
        yield lab
    finally:
        lab.down()


def http_get(ns, path, host=METRICS_ADDR, port=METRICS_PORT, timeout=3):
    """GET http://host:port/path from inside namespace ns: (status, body); status 0 when
    nothing answers."""
    code = ("import sys, urllib.request, urllib.error\n"
            "try:\n"
            f"    r = urllib.request.urlopen(sys.argv[1], timeout={timeout})\n"
            "    print(r.status); sys.stdout.write(r.read().decode())\n"
            "except urllib.error.HTTPError as e:\n"
            "    print(e.code); sys.stdout.write(e.read().decode())\n"
            "except OSError as e:\n"
            "    print(0); sys.stdout.write(str(e))\n")
    url = f"http://{host}:{port}{path}"
    r = subprocess.run(netns.ns_cmd(ns, PY, "-c", code, url), capture_output=True, text=True,
                       timeout=timeout + 10)
    first, _, body = r.stdout.partition("\n")
    return int(first or 0), body


def ctl(*args, timeout=15):
    """The ctl tool (any namespace: the telemetry socket is a file)."""
    return subprocess.run([PY, str(CTL), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def echo(lab, pod, conns=8, nbytes=20000, timeout=10):
    """K TCP echo connections from pod to the VIP through ztunnel's listener, in the
    background (Popen; its stdout is one JSON object)."""
    return netns.client_bg(lab.ns(pod), "echo", VIP, 9080, "--bytes", nbytes, "--conns", conns,
                           "--timeout", timeout)


def echo_ok(proc, timeout=60):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"echo client failed: {err}"
    res = json.loads(out)
    bad = [c for c in res["conns"] if not c.get("ok")]
    assert not bad, f"echo connections failed: {bad[:3]}"
    return res


def settled(read, timeout=5, step=0.3):
    """Reads read() until two reads in a row agree (bounded); returns the value."""
    last = read()
    def same():
        nonlocal last
        now = read()
        ok, last = now == last, now
        return ok
    assert wait(same, timeout, step), "counters did not settle"
    return last
