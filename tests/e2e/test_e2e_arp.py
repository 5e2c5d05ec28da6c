"""Pods resolve their gateway 10.244.2.1 through their port's kernel twin."""
import re

import pytest
from conftest import GW_IP, PODS, ns_of, twin_mac

import netns


@pytest.mark.parametrize("pod", list(PODS))
def test_gateway_resolves_to_twin_mac(lab, pod):
    ns = ns_of(pod)

    def flushed():
        # An ARP request from the node side (an earlier test's flow, a refresh) can
        # re-create the entry as STALE between the flush and the read: flush again.
        netns.run(ns, "ip", "neigh", "flush", "dev", "eth0")
        before = netns.run(ns, "ip", "neigh", "show", GW_IP, "dev", "eth0").stdout
        return None if "lladdr" in before else True

    assert netns.wait_until(flushed, 3.0, what="neighbour flushed"), \
        f"{pod}: {GW_IP} kept a neighbour entry across 3 s of flushes"
    ping = netns.run(ns, "ping", "-n", "-c1", "-W2", GW_IP, check=False, timeout=10)
    assert ping.returncode == 0, f"{pod}: ping {GW_IP} failed:\n{ping.stdout}{ping.stderr}"
    neigh = netns.run(ns, "ip", "neigh", "show", GW_IP, "dev", "eth0").stdout
    m = re.search(r"lladdr ([0-9a-f:]{17})", neigh)
    assert m, f"{pod}: no neighbour entry for {GW_IP}: {neigh!r}"
    assert m.group(1) == twin_mac(pod), f"{pod}: {GW_IP} is at {m.group(1)}, expected {twin_mac(pod)}"
