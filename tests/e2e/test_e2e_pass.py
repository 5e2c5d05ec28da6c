"""What the kernel path does not redirect goes to the node's kernel through the port's
twin, unchanged, and never to ztunnel: TCP from a non-meshed pod, UDP (DNS) from a
meshed pod."""
import time

import pytest
from conftest import MESHED, PODS, VIP, ns_of

import netns
import pcaputil as pu
from pcaputil import IP

ABSENCE_WAIT = 1.0  # after the packet reached the twin, how long ztunnel must stay quiet


def _pass_case(lab, pod, send_args, match, name):
    ip = PODS[pod]
    zt = lab.wire_to_ztunnel("", name=f"{name}-zt")
    twin = lab.capture("node", f"t-{pod}", direction="in", name=f"{name}-twin")
    src = lab.capture(pod, "eth0", direction="out", name=f"{name}-pod")
    with netns.Captures(zt, twin, src):
        out = netns.client(ns_of(pod), *send_args)
        sent = src.wait_for(match, count=1, timeout=3)
        seen = twin.wait_for(match, count=len(sent) or 1, timeout=3)
        time.sleep(ABSENCE_WAIT)
    sent = [p for p in src.packets() if match(p)]
    seen = [p for p in twin.packets() if match(p)]
    # Sent by the pod, plain or inside Geneve. (A reply *to* it may be: the legacy pod's
    # connection is DNATed to ratings, a meshed pod whose RST is redirected, as the kernel
    # path would.)
    leaked = [p.summary() for p in zt.packets() if _sent_by(p, ip)]
    return out, sent, seen, leaked


def _sent_by(p, ip):
    if pu.outer_is_geneve(p):
        try:
            e = pu.inner_frame(p)
        except Exception:  # noqa: BLE001
            return False
        return IP in e and e[IP].src == ip
    return IP in p and p[IP].src == ip


def test_non_meshed_pod_tcp_goes_to_twin_unchanged(lab):
    match = lambda p: pu.is_tcp(p, src=PODS["legacy"], dst=VIP, dport=9080, syn=True)
    out, sent, seen, leaked = _pass_case(
        lab, "legacy", ["tcp", VIP, 9080, "--timeout", "1.5"], match, "legacy")
    assert sent, f"legacy did not send a SYN ({out})"
    assert seen, "legacy's SYN to the VIP never appeared on its twin t-legacy"
    assert [bytes(p) for p in seen] == [bytes(p) for p in sent], \
        "the frame on t-legacy differs from what legacy sent"
    assert not leaked, f"legacy's traffic reached ztunnel: {leaked}"


@pytest.mark.parametrize("pod", ["productpage", "reviews-v3"])
def test_meshed_pod_dns_goes_to_twin_unchanged(lab, pod):
    match = lambda p: pu.is_udp(p, src=PODS[pod], dst=VIP, dport=53)
    out, sent, seen, leaked = _pass_case(lab, pod, ["dns", VIP], match, f"dns-{pod}")
    assert sent, f"{pod} did not send the DNS query ({out})"
    assert seen, f"{pod}'s UDP/53 to the VIP never appeared on its twin t-{pod}"
    assert [bytes(p) for p in seen] == [bytes(p) for p in sent], \
        f"the frame on t-{pod} differs from what {pod} sent"
    assert not leaked, f"{pod}'s UDP/53 reached ztunnel: {leaked}"


def test_meshed_pod_udp_other_port_not_redirected(lab):
    pod = "ratings"
    match = lambda p: pu.is_udp(p, src=PODS[pod], dst=VIP, dport=9080)
    out, sent, seen, leaked = _pass_case(lab, pod, ["udp", VIP, 9080], match, "udp-ratings")
    assert sent and seen, "UDP from a meshed pod did not reach its twin"
    assert [bytes(p) for p in seen] == [bytes(p) for p in sent]
    assert not leaked, f"UDP from {pod} reached ztunnel: {leaked}"
