"""The lab itself (tests/tools/lab.py, behind scripts/lab), under a prefix of its own (ztl-),
apart from the session lab: pod offloads as asked, and down() removes every namespace,
link and process it made, leaving the root namespace as it was."""
import os
import subprocess

import pytest

import lab as labtopo

PREFIX = "ztl-"
PODS = {"pp": 3, "lg": 20}
FEATURES = ("rx-checksumming", "tx-checksumming", "tcp-segmentation-offload",
            "generic-segmentation-offload", "generic-receive-offload")


@pytest.fixture(autouse=True)
def root_only():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")


def offloads(ns, dev):
    out = labtopo.sh(ns, f"ethtool -k {dev}")
    got = dict(l.split(":", 1) for l in out.splitlines() if ":" in l)
    return {f: got[f].split()[0] for f in FEATURES}


def veth_ends(t):
    """Every veth end the lab makes: (namespace, interface)."""
    ends = [(t.ns(p), "eth0") for p in t.pods] + [(t.node_ns, f"v-{p}") for p in t.pods]
    return ends + [(t.node_ns, "v-ztunnel"), (t.zt_ns, t.zt_link)]


def _root_links():
    r = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return {l.split(":")[1].strip().split("@")[0] for l in r.stdout.splitlines() if ":" in l}


def kernel_defaults(ns):
    """The offloads of a veth made now, without the lab."""
    labtopo.sh(ns, "ip link add probe-a type veth peer name probe-b")
    try:
        return offloads(ns, "probe-a")
    finally:
        labtopo.sh(ns, "ip link del probe-a")


def make(offloads_on):
    return labtopo.NodeLab(PREFIX, pods=PODS, zt_name="zt", dnat_to=None, offloads=offloads_on)


def test_pod_offloads_off_on_and_down_removes_everything():
    root = _root_links()
    off = make(False)
    off.down()
    try:
        off.up()
        defaults = kernel_defaults(off.node_ns)
        for ns, dev in veth_ends(off):
            assert set(offloads(ns, dev).values()) == {"off"}, f"{ns}/{dev}: {offloads(ns, dev)}"
        # up again, offloads on: the links are kept (a running ztgeneve keeps them) and get a
        # new veth's defaults back
        on = make(True).up()
        for ns, dev in veth_ends(on):
            assert offloads(ns, dev) == defaults, f"{ns}/{dev} after up with offloads on"
        # down kills what runs there
        sleeper = subprocess.Popen(["ip", "netns", "exec", on.ns("pp"), "sleep", "60"])
        assert labtopo.wait(lambda: labtopo.ns_pids(on.ns("pp")), 5)
        removed = on.down()
        sleeper.wait(10)  # gone (or TimeoutExpired)
    finally:
        off.down()
    assert sorted(removed) == sorted(on.namespaces())
    assert on.present() == []
    assert _root_links() == root, "the lab changed the root namespace's links"


def test_fresh_lab_with_offloads_on_keeps_the_kernels_defaults():
    t = make(True)
    t.down()
    try:
        t.up()
        defaults = kernel_defaults(t.node_ns)
        assert defaults["tx-checksumming"] == "on"  # what ztgeneve does not handle yet
        for ns, dev in veth_ends(t):
            assert offloads(ns, dev) == defaults, f"{ns}/{dev}"
    finally:
        t.down()
    assert t.present() == []
