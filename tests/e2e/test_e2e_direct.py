"""A meshed pod's TCP to the ztunnel pod itself goes there directly (table 101's
`10.244.2.10 dev veth scope link`), routed, not encapsulated: it arrives plain on ztunnel's
link (ztlink), and the endpoint hands it to ztunnel's kernel through the twin eth0."""
import pytest
from conftest import MESHED, PODS, ZTUNNEL_IP, ns_of, pod_mac, twin_mac

import netns
import pcaputil as pu
from pcaputil import IP, TCP, Ether

PORT = 15001


@pytest.fixture(scope="module")
def direct(lab):
    zt = lab.wire_to_ztunnel(f"tcp port {PORT} or udp port 6081", name="direct-zt")
    pods = {p: lab.capture(p, "eth0", f"tcp port {PORT}", name=f"direct-{p}")
            for p in MESHED}
    with netns.Captures(zt, *pods.values()):
        procs = {p: netns.client_bg(ns_of(p), "tcp", ZTUNNEL_IP, PORT, "--timeout", "2")
                 for p in MESHED}
        results = {p: pr.communicate(timeout=20)[0].strip() for p, pr in procs.items()}
        want = sum(len([x for x in pods[p].packets() if pu.is_tcp(x, src=PODS[p], syn=True)])
                   for p in MESHED)
        zt.wait_for(lambda x: pu.is_tcp(x, dst=ZTUNNEL_IP, dport=PORT), count=want, timeout=4)
    return {"results": results, "zt": zt.packets(), "pods": {p: c.packets() for p, c in pods.items()}}


@pytest.mark.parametrize("pod", MESHED)
def test_tcp_to_remote_ip_arrives_plain_and_routed(direct, pod):
    ip = PODS[pod]
    sent = [p for p in direct["pods"][pod] if pu.is_tcp(p, src=ip, dst=ZTUNNEL_IP, dport=PORT, syn=True)]
    assert sent, f"{pod} sent no SYN to {ZTUNNEL_IP}:{PORT}"
    got = [p for p in direct["zt"] if pu.is_tcp(p, src=ip, dst=ZTUNNEL_IP, dport=PORT, syn=True)]
    enc = pu.geneve_with_inner(direct["zt"], lambda e: pu.is_tcp(e, src=ip, dst=ZTUNNEL_IP))
    assert not enc, f"{pod} -> ztunnel IP was encapsulated"
    assert got, f"{pod}'s SYN to {ZTUNNEL_IP}:{PORT} never reached ztunnel's link (ztlink)"
    s, g = sent[0], got[0]
    assert g[Ether].src == twin_mac("ztunnel"), f"src MAC {g[Ether].src}, expected ztunnel twin MAC"
    assert g[Ether].dst == pod_mac("ztunnel"), f"dst MAC {g[Ether].dst}, expected ztunnel eth0 MAC"
    assert g[IP].ttl == s[IP].ttl - 1, f"TTL {g[IP].ttl}, pod sent {s[IP].ttl}: must drop by one"
    assert pu.ip_header_checksum_ok(bytes(g[IP])), "IPv4 checksum invalid after TTL decrement"

    def norm(p):  # the packet minus TTL and header checksum
        b = bytearray(bytes(p[IP]))
        b[8] = 0
        b[10:12] = b"\0\0"
        return bytes(b)

    assert norm(g) == norm(s), "apart from TTL/checksum the packet must be unchanged"


@pytest.mark.parametrize("pod", ["productpage"])
def test_ztunnel_reply_reaches_pod(direct, pod):
    """Nothing listens on 10.244.2.10:15001 (the listener is bound to 127.0.0.1 and only
    TPROXY from pistioout reaches it): ztunnel's kernel answers RST through eth0, the endpoint
    passes it out of ztlink, and it comes back through the node (ztunnel port -> twin ->
    node kernel -> pod's twin -> pod): the connect is refused."""
    ip = PODS[pod]
    rst = [p for p in direct["pods"][pod] if pu.is_tcp(p, src=ZTUNNEL_IP, dst=ip) and p[TCP].flags & 0x04]
    assert rst, f"{pod} never received ztunnel's RST (connect result: {direct['results'][pod]})"
    assert direct["results"][pod] == "refused"
