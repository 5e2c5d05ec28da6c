"""attach: xdp with ztunnel's side played by a ztgeneve role endpoint (CniLab endpoint=True,
prefix ztxe-): a meshed pod's TCP to the VIP goes through the tunnel to the TPROXY listener
and back through ztunnel's link, ztgeneve's decapsulation and the aggregation device's tc
program to the pod's own link: 1 MiB each way, sha256 checked by the client."""
import json
import os
import tempfile
from pathlib import Path

import pytest

import lab as labtopo
import netns
from tproxy_listener import ListenerProcess
from ztgeneve import Ztgeneve

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lab(request):
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    binary = Path(os.environ.get("ZTG_BINARY", REPO / "build" / "ztgeneve"))
    t = labtopo.CniLab("ztxe-", pods=6, zt_name="zt", endpoint=True)
    t.down()
    request.addfinalizer(t.down)
    t.up()
    d = tempfile.mkdtemp(prefix="ztg-e2e-xdpe-")
    cfg = os.path.join(d, "node.yaml")
    with open(cfg, "w") as f:
        f.write(t.xdp_config([p for p in labtopo.SESSION_PODS if p != "legacy"], prefix="ztxe-node"))
    ep = os.path.join(d, "endpoint.yaml")
    with open(ep, "w") as f:
        f.write(open(REPO / "config" / "lab-endpoint.yaml").read().replace("ztg-endpoint", "ztxe-endpoint"))
    procs = []
    request.addfinalizer(lambda: [p.stop() for p in procs if p.running()])
    for name, c, ns in (("node", cfg, t.node_ns), ("endpoint", ep, t.zt_ns)):
        os.makedirs(os.path.join(d, name))
        procs.append(Ztgeneve(binary, c, ns=ns, log_dir=os.path.join(d, name)).start(timeout=60))
    t.address_endpoint_taps(wait_s=20)
    listener = ListenerProcess(t.zt_ns, os.path.join(d, "listener.log")).start()
    request.addfinalizer(listener.stop)
    t.procs = procs
    return t


def test_1mib_echo_through_the_endpoint(lab):
    out = json.loads(netns.client(lab.ns("productpage"), "echo", lab.vip, lab.vip_port,
                                  "--bytes", 1 << 20, timeout=60))
    conn = out["conns"][0]
    assert conn["ok"], conn
    # the listener saw the VIP as the original destination: no DNAT on the way
    assert conn["first"].startswith(f"ORIGDST {lab.vip}:{lab.vip_port} FROM {lab.ip('productpage')}:"), conn
    node = lab.procs[0].stop()
    assert node["ports"]["ztunnel"]["decap"] > 0 and node["ports"]["pods"]["redirect"] > 0, node["ports"]
