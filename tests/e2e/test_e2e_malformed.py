"""Crafted Geneve from the ztunnel side, written raw onto the wire (AF_PACKET on ztlink, in
ztg-ztunnel, so the endpoint instance does not touch them) toward the node: every defect
is counted on the node's ztunnel device and never delivered wrongly; valid frames (options
of every legal length, ECN per RFC 6040) are delivered exactly once; ztgeneve survives."""
import os
import struct
import time

import pytest
from conftest import (GW_IP, PISTIOOUT_MAC, ISTIOOUT_MAC, VIP, ZT_LINK, ZT_NS, ZTUNNEL_IP, PODS,
                      pod_mac, twin_mac)

import netns
import pcaputil as pu
import telemetry
from pcaputil import IP, UDP, Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

POD = "reviews-v1"
MARK_PORT = 9999
DECAP_KEYS = ["decap", "decap_bad_outer", "decap_bad_version", "decap_oam", "decap_critical",
              "decap_bad_vni", "decap_bad_inner", "decap_ecn_drop", "decap_unknown_pod",
              "tunnel_arp_reply"]


def inner(marker, dst=None, tos=0, ethertype=None):
    e = Ether(src=PISTIOOUT_MAC, dst=ISTIOOUT_MAC)
    if ethertype is not None:
        e.type = ethertype
    return bytes(e / IP(src=VIP, dst=dst or PODS[POD], tos=tos, ttl=63) /
                 UDP(sport=9080, dport=MARK_PORT) / Raw(marker.encode()))


def options(words):
    """`words` 4-byte words of well-formed options (class 0xffff, type 1, as many TLVs as
    the 5-bit length field needs)."""
    out = b""
    while words:
        n = min(words, 32)  # 1 header word + up to 31 data words
        out += struct.pack("!HBB", 0xFFFF, 0x01, n - 1) + bytes(range(4 * (n - 1)))[:4 * (n - 1)]
        words -= n
    return out


def geneve(payload, vni=1001, ver=0, optwords=0, oam=False, crit=False, proto=0x6558,
           opts=None, optlen_field=None):
    opts = options(optwords) if opts is None else opts
    optlen = len(opts) // 4 if optlen_field is None else optlen_field
    return (bytes([(ver << 6) | optlen, (0x80 if oam else 0) | (0x40 if crit else 0)])
            + struct.pack("!H", proto) + vni.to_bytes(3, "big") + b"\0" + opts + payload)


def outer(gen, src=ZTUNNEL_IP, dst=GW_IP, tos=0, chksum=None, udp_chksum=0, udp_len=None,
          flags="DF", frag=0):
    ip = IP(src=src, dst=dst, tos=tos, ttl=64, flags=flags, frag=frag, proto=17)
    if chksum is not None:
        ip.chksum = chksum
    u = UDP(sport=50123, dport=6081, chksum=udp_chksum)
    if udp_len is not None:
        u.len = udp_len
    return bytes(Ether(src=pod_mac("ztunnel"), dst=twin_mac("ztunnel")) / ip / u / Raw(gen))


def node_ctr():
    return telemetry.query("ztg-node", "/ztgeneve/counters,ztunnel")


def inject(lab, frames, name):
    path = os.path.join(lab.log_dir, f"inject-{name}.pcap")
    wrpcap(path, [Ether(f) for f in frames])
    out = netns.run(ZT_NS, netns.PY, os.path.join(netns.TOOLS, "inject.py"), ZT_LINK, path,
                    "--gap-ms", "0.5").stdout.strip()
    assert out == f"sent {len(frames)}", out


@pytest.fixture(scope="module")
def pod_cap(lab):
    c = lab.capture(POD, "eth0", f"udp dst port {MARK_PORT}", direction="in", name="malformed-pod")
    c.start()
    yield c
    c.stop()


def delivered(cap, marker):
    return [p for p in cap.packets() if Raw in p and p[Raw].load == marker.encode()]


def run_case(lab, frames, name, expect, n=1, settle=0.4):
    """Inject; wait until counter `expect` rose by n (or settle for None); return deltas."""
    before = node_ctr()
    inject(lab, frames, name)
    deadline = time.monotonic() + 3
    while expect and time.monotonic() < deadline:
        if node_ctr()[expect] - before[expect] >= n:
            break
        time.sleep(0.05)
    time.sleep(settle)
    after = node_ctr()
    return {k: after[k] - before[k] for k in DECAP_KEYS + ["pass"]}


# name -> (frame builder(marker), counter expected to rise by one)
DROPS = {
    "version-1": (lambda m: outer(geneve(inner(m), ver=1)), "decap_bad_version"),
    "version-2": (lambda m: outer(geneve(inner(m), ver=2)), "decap_bad_version"),
    "version-3-options": (lambda m: outer(geneve(inner(m), ver=3, optwords=2)), "decap_bad_version"),
    "critical-with-options-1": (lambda m: outer(geneve(inner(m), crit=True, optwords=1)), "decap_critical"),
    "critical-with-options-63": (lambda m: outer(geneve(inner(m), crit=True, optwords=63)), "decap_critical"),
    "oam": (lambda m: outer(geneve(inner(m), oam=True)), "decap_oam"),
    "oam-with-options": (lambda m: outer(geneve(inner(m), oam=True, optwords=3)), "decap_oam"),
    "vni-1002": (lambda m: outer(geneve(inner(m), vni=1002)), "decap_bad_vni"),
    "vni-1000": (lambda m: outer(geneve(inner(m), vni=1000)), "decap_bad_vni"),
    "bad-outer-ip-checksum": (lambda m: outer(geneve(inner(m)), chksum=0x1234), "decap_bad_outer"),
    "bad-udp-checksum": (lambda m: outer(geneve(inner(m)), udp_chksum=0x1234), "decap_bad_outer"),
    "udp-length-short": (lambda m: outer(geneve(inner(m)), udp_len=20), "decap_bad_outer"),
    "options-past-the-end": (lambda m: outer(geneve(b"", opts=b"", optlen_field=10)), "decap_bad_outer"),
    "inner-not-ethernet": (lambda m: outer(geneve(inner(m)[14:], proto=0x0800)), "decap_bad_inner"),
    "inner-ipv6-ethertype": (lambda m: outer(geneve(inner(m, ethertype=0x86DD))), "decap_bad_inner"),
    "unknown-pod": (lambda m: outer(geneve(inner(m, dst="10.244.2.77"))), "decap_unknown_pod"),
    "ce-over-not-ect": (lambda m: outer(geneve(inner(m, tos=0)), tos=3), "decap_ecn_drop"),
}


@pytest.mark.parametrize("case", list(DROPS))
def test_malformed_counted_and_not_delivered(lab, pod_cap, case):
    build, counter = DROPS[case]
    marker = f"ztg-drop-{case}"
    d = run_case(lab, [build(marker)], case, counter)
    assert d[counter] == 1, f"{case}: {counter} rose by {d[counter]} ({d})"
    others = {k: v for k, v in d.items() if k not in (counter, "pass") and v}
    assert not others, f"{case}: other counters moved: {others}"
    assert not delivered(pod_cap, marker), f"{case}: delivered to {POD}"
    assert lab.z.running(), f"ztgeneve died on {case}:\n{lab.z.stderr()[-2000:]}"


def test_truncated_frames(lab, pod_cap):
    """A valid frame cut at several lengths (outer lengths left as they were): from the
    UDP header on, the node recognises its tunnel and counts decap_bad_outer; shorter cuts
    are not its tunnel and go to the kernel twin. Never delivered."""
    marker = "ztg-drop-truncated"
    full = outer(geneve(inner(marker), optwords=4))
    long_cuts = [42, 43, 49, 50, 57, 66, 70, len(full) - 20, len(full) - 1]
    d = run_case(lab, [full[:n] for n in long_cuts], "trunc-long", "decap_bad_outer", n=len(long_cuts))
    assert d["decap_bad_outer"] == len(long_cuts), d
    assert d["decap"] == 0
    short_cuts = [14, 20, 33, 34, 41]
    d = run_case(lab, [full[:n] for n in short_cuts], "trunc-short", None)
    assert all(v == 0 for k, v in d.items() if k != "pass"), d
    assert d["pass"] >= len(short_cuts), f"short frames should go to the twin: {d}"
    assert not delivered(pod_cap, marker)
    assert lab.z.running()


def test_wrong_outer_source_goes_to_twin(lab, pod_cap):
    marker = "ztg-drop-wrong-source"
    d = run_case(lab, [outer(geneve(inner(marker)), src="10.244.2.99")], "wrong-src", None)
    assert all(v == 0 for k, v in d.items() if k != "pass"), f"not our tunnel, but {d}"
    assert d["pass"] >= 1, "a Geneve frame from another source belongs to the kernel twin"
    assert not delivered(pod_cap, marker)


def test_outer_fragments_never_delivered(lab, pod_cap):
    """Outer IPv4 fragments of a Geneve frame (a lone first fragment, and a complete set).
    The node never sends fragments and ztunnel's side sets DF; on net_af_packet the kernel
    holds fragments for reassembly (DPDK's PACKET_FANOUT_FLAG_DEFRAG) and, as observed,
    nothing reaches ztgeneve. Whatever the port type, nothing may reach the pod."""
    from scapy.layers.inet import fragment
    m1, m2 = "ztg-drop-lone-fragment", "ztg-frag-set-" + "y" * 300
    lone = outer(geneve(inner(m1)), flags="MF")
    whole = Ether(outer(geneve(inner(m2)), flags=0))
    frags = [bytes(Ether(src=whole.src, dst=whole.dst) / f) for f in fragment(whole[IP], fragsize=200)]
    assert len(frags) == 2
    d = run_case(lab, [lone] + frags, "fragments", None)
    bad = {k: v for k, v in d.items() if v and k not in ("pass", "decap", "decap_bad_outer")}
    assert not bad, f"fragments: {d}"
    assert not delivered(pod_cap, m1), "a lone outer fragment was delivered"
    assert len(delivered(pod_cap, m2)) <= 1, "a fragmented frame was delivered more than once"
    assert lab.z.running()


def test_options_of_every_length_delivered_once(lab, pod_cap):
    frames, markers = [], []
    for words in range(64):
        m = f"ztg-ok-options-{words}"
        markers.append(m)
        frames.append(outer(geneve(inner(m), optwords=words)))
    d = run_case(lab, frames, "options", "decap", n=64)
    assert d["decap"] == 64, d
    pod_cap.wait_for(lambda p: Raw in p and p[Raw].load.startswith(b"ztg-ok-options-"), count=64,
                     timeout=3)
    for words, m in enumerate(markers):
        got = delivered(pod_cap, m)
        assert len(got) == 1, f"{words} option words: delivered {len(got)} times"
        p = got[0]
        assert p[Ether].dst == pod_mac(POD) and p[Ether].src == twin_mac(POD)
        assert p[IP].src == VIP and pu.ip_header_checksum_ok(bytes(p[IP]))


def test_critical_bit_without_options_delivered(lab, pod_cap):
    m = "ztg-ok-critical-no-options"
    d = run_case(lab, [outer(geneve(inner(m), crit=True))], "crit0", "decap")
    assert d["decap"] == 1, d
    assert len(pod_cap.wait_for(lambda p: Raw in p and p[Raw].load == m.encode(), timeout=3)) == 1


@pytest.mark.parametrize("outer_ecn,inner_ecn,want", [
    (3, 2, 3),  # CE over ECT(0): inner becomes CE
    (3, 1, 3),  # CE over ECT(1)
    (1, 2, 1),  # ECT(1) over ECT(0): ECT(1)
    (2, 0, 0),  # ECT(0) over Not-ECT: unchanged
])
def test_ecn_on_decap(lab, pod_cap, outer_ecn, inner_ecn, want):
    m = f"ztg-ok-ecn-{outer_ecn}-{inner_ecn}"
    d = run_case(lab, [outer(geneve(inner(m, tos=0x20 | inner_ecn)), tos=outer_ecn)], "ecn", "decap")
    assert d["decap"] == 1 and d["decap_ecn_drop"] == 0, d
    got = pod_cap.wait_for(lambda p: Raw in p and p[Raw].load == m.encode(), timeout=3)
    assert len(got) == 1
    ip = got[0][IP]
    assert ip.tos == 0x20 | want, f"inner TOS {ip.tos:#x}, expected {0x20 | want:#x}"
    assert pu.ip_header_checksum_ok(bytes(ip)), "inner IPv4 checksum not updated"


def test_still_running_and_forwarding_after_malformed(lab):
    assert lab.z.running() and lab.ep.running()
    out = netns.client("ztg-reviews-v1", "echo", VIP, 9080, "--bytes", "5000", "--timeout", "10")
    assert '"ok": true' in out, out
