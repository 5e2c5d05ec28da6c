"""DNS capture end to end (inbound.dns_capture), on a lab of its own (prefix ztdns-): a meshed
pod (pp) sends a DNS query to the cluster's DNS VIP 10.96.0.10:53; ztunnel's DNS proxy
stand-in (tests/tools/dns_responder.py) listens on ZT_IP:15053 in ztunnel's namespace. The
node's kernel has the kernel path's own rule for it (as kernel.dns_capture installs it in
program mode, here `-s POD` for the ipset match): `-p udp --dport 53 -j DNAT --to ZT_IP:15053`.

Capture on: ztgeneve rewrites the query itself and sends it to ztunnel (dns_capture), the
stand-in sees it from the pod's address and port, its answer is translated back (dns_answer)
and the pod receives it from 10.96.0.10:53; the node's kernel never sees the query (its DNAT
rule's packet counter stays 0). Capture off: the query goes to the kernel as today (pass),
whose rule does the DNAT and whose conntrack undoes it on the answer; ztgeneve hands the
translated answer to the pod as UDP to a meshed pod (skip_udp). A non-meshed pod's query is
the kernel's in both cases."""
import json
import os
import subprocess

import pytest

import lab as labtopo
import netns
import telemetry
from minilab import MiniLab, unbalanced

PREFIX = "ztdns-"
PODS = {"pp": 3, "lg": 20}
MESHED = ["pp"]
DNS_VIP = "10.96.0.10"
ZT_DNS_PORT = 15053


@pytest.fixture(scope="module")
def dnslab(request):
    t = MiniLab.for_module(request, PREFIX, PODS, MESHED, "dns")
    d = t.log_dir
    t.up()
    for pod in PODS:  # the kernel path's DNS capture, for the meshed pod and the other one
        labtopo.ipt_once(t.node_ns, "nat", "PREROUTING", "-s", t.ip(pod), "-p", "udp", "--dport", 53,
                         "-j", "DNAT", "--to-destination", f"{t.zt_ip}:{ZT_DNS_PORT}")
    log = open(os.path.join(d, "dns-responder.log"), "w")
    request.addfinalizer(log.close)
    p = subprocess.Popen(netns.ns_cmd(t.zt_ns, netns.PY, os.path.join(netns.TOOLS, "dns_responder.py"),
                                      t.zt_ip, ZT_DNS_PORT),
                         stdout=subprocess.PIPE, stderr=log, text=True, stdin=subprocess.DEVNULL)
    request.addfinalizer(lambda: (p.kill(), p.wait(5)))
    assert p.stdout.readline().strip() == "listening"
    t.responder = p
    t.log_dir = d
    yield t


def start_node(lab, capture):
    if lab.z and lab.z.running():
        lab.z.stop(timeout=10)
    name = "node-capture" if capture else "node-off"
    lab.start_node(lab.node_config(os.path.join(lab.log_dir, f"{name}.yaml"), inbound=True,
                                   dns_capture=capture), name=name)
    for pod in PODS:  # each pod sends first (its ARP for the gateway): the node locates it
        assert lab.ping(pod)
    assert lab.ping("zt")


def query(lab, pod):
    out = netns.client(lab.ns(pod), "dns", DNS_VIP, "--wait", 3, timeout=20)
    assert out != "timeout", f"{pod}: no answer to its query to {DNS_VIP}:53"
    return json.loads(out)


def responder_saw(lab):
    return json.loads(lab.responder.stdout.readline())


def kernel_dnat_packets(lab, pod):
    """Packets the node kernel's DNS DNAT rule for pod matched (iptables -L -v)."""
    out = subprocess.run(["ip", "netns", "exec", lab.node_ns, "iptables", "-w", "-t", "nat", "-L", "PREROUTING",
                          "-n", "-v", "-x"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        f = line.split()
        if "DNAT" in f and lab.ip(pod) in f:
            return int(f[0])
    raise AssertionError(f"no DNS DNAT rule for {pod}:\n{out}")


def counters(lab):
    return telemetry.counters(lab.node_prefix)["ports"]


def delta(after, before, dev, key):
    return int(after.get(dev, {}).get(key, 0)) - int(before.get(dev, {}).get(key, 0))


def exchange(lab, pod):
    """pod's query answered from the VIP, the stand-in having seen it from the pod's own
    address and port: (the node's counters before, after, the kernel rule's packets before,
    after)."""
    before, kernel_before = counters(lab), kernel_dnat_packets(lab, pod)
    a = query(lab, pod)
    assert a["from"] == f"{DNS_VIP}:53", a
    assert a["id"] == 0x1234 and a["answers"] == 1, a
    assert responder_saw(lab)["from"] == f"{lab.ip(pod)}:{a['port']}", "the stand-in sees the pod's address"
    return before, counters(lab), kernel_before, kernel_dnat_packets(lab, pod)


def test_capture_on_answers_through_ztunnel_15053(dnslab):
    lab = dnslab
    start_node(lab, capture=True)
    before, after, kernel_before, kernel_after = exchange(lab, "pp")
    assert delta(after, before, "pp", "dns_capture") == 1
    assert delta(after, before, "pp", "flow_insert") == 1
    assert delta(after, before, "ztunnel", "dns_answer") == 1
    assert delta(after, before, "ztunnel", "flow_hit") == 1
    for dev, key in (("ztunnel", "dns_no_entry"), ("pp", "dns_flow_full"), ("pp.twin", "skip_udp")):
        assert delta(after, before, dev, key) == 0, (dev, key)
    assert kernel_after == kernel_before, "the node's kernel saw the query"
    # The non-meshed pod's query is the kernel's: its rule; the answer, for which ztgeneve has
    # no entry, goes to the kernel unchanged (dns_no_entry), whose conntrack translates it.
    before, after, kernel_before, kernel_after = exchange(lab, "lg")
    assert kernel_after == kernel_before + 1
    assert delta(after, before, "lg", "dns_capture") == 0 and delta(after, before, "lg", "pass") >= 1
    assert delta(after, before, "ztunnel", "dns_no_entry") == 1
    assert not unbalanced(telemetry.counters(lab.node_prefix))


def test_capture_off_goes_to_the_kernel_as_today(dnslab):
    lab = dnslab
    start_node(lab, capture=False)
    before, after, kernel_before, kernel_after = exchange(lab, "pp")
    assert kernel_after == kernel_before + 1, "the kernel's rule carried it"
    assert delta(after, before, "pp", "pass") >= 1
    assert delta(after, before, "pp.twin", "skip_udp") == 1, "the kernel's translated answer"
    for dev in ("pp", "ztunnel"):
        for key in ("dns_capture", "dns_answer", "dns_no_entry", "dns_flow_full"):
            assert delta(after, before, dev, key) == 0, (dev, key)
    assert not unbalanced(telemetry.counters(lab.node_prefix))
