"""The node with several workers: `meson test --suite e2e_workers` runs this file (with the TCP
and redirect tests) with ZTG_WORKERS=2, so every port has two rx/tx queues and the kernel
spreads each veth's frames over its two packet sockets by a flow hash. What a user observes:
the load is shared (every worker redirects and decapsulates), a connection's segments stay in
order on the wire (a flow stays on one worker), the timed ARP for the tunnel peer comes from
worker 0 alone, and the counters are per worker (/metrics) and summed (telemetry, exit line)."""
import json
import subprocess

import pytest
from conftest import NODE_NS, VIP, WORKERS, ns_of

import netns
import pcaputil as pu

pytestmark = pytest.mark.skipif(WORKERS < 2, reason="ZTG_WORKERS < 2 (meson test --suite e2e_workers)")

VIP_PORT = 9080
CONNS, NBYTES = 32, 256 << 10


def per_worker(metrics, name, device):
    return [metrics.get((name, device, w), 0) for w in range(WORKERS)]


def delta(after, before):
    return [a - b for a, b in zip(after, before)]


def test_connections_are_shared_by_the_workers_and_stay_in_order(lab):
    before = lab.metrics()
    tele_before = lab.counters()["ports"]
    cap = lab.wire_to_ztunnel(snaplen=128, buffer_kib=16384).start()
    try:
        proc = netns.client_bg(ns_of("productpage"), "echo", VIP, VIP_PORT, "--bytes", NBYTES,
                               "--conns", CONNS, "--timeout", 60)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    finally:
        cap.stop()
    conns = json.loads(out)["conns"]
    assert len(conns) == CONNS and all(c["ok"] and c["sha_sent"] == c["sha_received"] for c in conns), conns
    after = lab.metrics()
    redirected = delta(per_worker(after, "redirect", "productpage"), per_worker(before, "redirect", "productpage"))
    decapped = delta(per_worker(after, "decap", "ztunnel"), per_worker(before, "decap", "ztunnel"))
    # 32 connections hashed over the workers: each gets some (all on one: p = 2 * 2^-32).
    assert all(n > 0 for n in redirected), f"redirect per worker {redirected}"
    assert all(n > 0 for n in decapped), f"decap per worker {decapped}"
    # telemetry (and so the exit line) sums the workers
    tele = lab.counters()["ports"]
    assert tele["productpage"]["redirect"] - tele_before["productpage"]["redirect"] >= sum(redirected)

    # On the wire to ztunnel, tshark (inner TCP of the Geneve frames) finds no segment out of order.
    r = subprocess.run(["tshark", "-n", "-r", cap.path, "-d", "udp.port==6081,geneve", "-Y",
                        "tcp.analysis.out_of_order", "-T", "fields", "-e", "frame.number"],
                       capture_output=True, text=True, timeout=120, check=True)
    assert r.stdout.strip() == "", f"out-of-order segments: frames {r.stdout.split()[:20]}"
    # scapy, independently: each connection's data segments have non-decreasing sequence
    # numbers, unless tshark called one a retransmission
    retrans = set(subprocess.run(["tshark", "-n", "-r", cap.path, "-d", "udp.port==6081,geneve", "-Y",
                                  "tcp.analysis.retransmission", "-T", "fields", "-e", "frame.number"],
                                 capture_output=True, text=True, timeout=120, check=True).stdout.split())
    last, flows = {}, set()
    for i, pkt in enumerate(cap.packets(), 1):
        if not pkt.haslayer(pu.GENEVE) or str(i) in retrans:
            continue
        inner = pkt[pu.GENEVE][pu.IP]
        if not inner.haslayer(pu.TCP) or inner.dst != VIP:
            continue
        flow = (inner.src, inner[pu.TCP].sport)
        flows.add(flow)
        seq = inner[pu.TCP].seq
        if len(inner[pu.TCP].payload):
            assert seq >= last.get(flow, 0), f"{flow}: segment {seq} after {last[flow]} (frame {i})"
            last[flow] = seq
    assert len(flows) >= CONNS


def test_the_peer_arp_tick_runs_on_worker_0_only(lab):
    m = lab.metrics()
    sent = per_worker(m, "arp_sent", "ztunnel")
    assert sent[0] > 0 and not any(sent[1:]), f"arp_sent per worker {sent}"


def test_every_worker_polls(lab):
    def rounds():
        body = netns.run(NODE_NS, "/usr/bin/python3", "-c",
                         "import urllib.request; print(urllib.request.urlopen("
                         "'http://127.0.0.1:16081/metrics', timeout=5).read().decode())").stdout
        return {l.split('"')[1]: int(l.split()[-1]) for l in body.splitlines()
                if l.startswith("ztgeneve_worker_rounds_total{")}

    a = rounds()
    assert sorted(a) == [str(w) for w in range(WORKERS)], a
    assert netns.wait_until(lambda: all(v > a[w] for w, v in rounds().items()), 5), "a worker stopped polling"
