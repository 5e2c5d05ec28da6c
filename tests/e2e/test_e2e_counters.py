"""ztgeneve's counters (telemetry while running, the exit line after SIGTERM) agree with
the Geneve frames that ztunnel receives."""
import subprocess
import time

import pytest
from conftest import FILE_PREFIX, MESHED, NODE_NS, PODS, POD_PORTS, VIP, ns_of

import netns
import pcaputil as pu
import telemetry
from ztgeneve import COUNTER_KEYS, delta, port_sum, ports_of

SETTLE = 0.5


class Window:
    """A counting window: captures on ztunnel's eth0 and on the senders' eth0 run across it;
    each sender pod makes n connects with a short timeout (one SYN each, no retransmit)."""

    def __init__(self, lab, senders, name):
        self.senders = senders
        self.zt = lab.capture("ztunnel", "eth0", "udp dst port 6081", direction="in",
                              name=f"{name}-zt")
        self.pods = {p: lab.capture(p, "eth0", "tcp dst port 9080", direction="out",
                                    name=f"{name}-{p}") for p in senders}
        self.caps = netns.Captures(self.zt, *self.pods.values())

    def __enter__(self):
        self.caps.__enter__()
        time.sleep(SETTLE)
        return self

    def __exit__(self, *exc):
        self.caps.__exit__(*exc)

    def send(self):
        procs = [netns.client_bg(ns_of(p), "tcp", VIP, 9080, "--timeout", "0.6")
                 for p, n in self.senders.items() for _ in range(n)]
        for pr in procs:
            pr.communicate(timeout=20)
        self.sent = {p: len([x for x in c.packets() if pu.is_tcp(x, syn=True)])
                     for p, c in self.pods.items()}
        self.zt.wait_for(pu.outer_is_geneve, count=sum(self.sent.values()), timeout=5)
        time.sleep(SETTLE)
        return self.sent

    def geneve(self):
        return [p for p in self.zt.packets() if pu.outer_is_geneve(p)]


def test_counter_shape(lab):
    c = lab.counters()
    assert isinstance(c, dict) and set(c) >= {"ports"}, f"telemetry counters keys {sorted(c)}"
    assert set(c["ports"]) >= {f"{p}.twin" for p in PODS}, f"twins missing: {sorted(c['ports'])}"
    assert set(c["ports"]) >= set(PODS), f"ports {sorted(c['ports'])}"
    for name in PODS:
        pc = c["ports"][name]
        missing = set(COUNTER_KEYS) - set(pc)
        assert not missing, f"port {name} lacks counters {missing}"
        assert all(isinstance(pc[k], int) and pc[k] >= 0 for k in COUNTER_KEYS)


def test_dpdk_ethdev_telemetry(lab):
    with telemetry.Client(FILE_PREFIX) as t:
        ports = t.query("/ethdev/list")
        assert len(ports) >= len(PODS), f"ethdev list {ports}"
        st = t.query(f"/ethdev/stats,{ports[0]}")
        assert "ipackets" in st and "opackets" in st


def test_telemetry_redirect_counts_match_capture(lab):
    with Window(lab, {"ratings": 3, "reviews-v1": 2}, "ctr") as w:
        before = lab.counters()
        per_pod = w.send()
        after = lab.counters()
    geneve = w.geneve()
    sent = sum(per_pod.values())
    d = delta(after, before, "redirect", POD_PORTS)
    assert per_pod == {"ratings": 3, "reviews-v1": 2}, f"SYNs sent per pod: {per_pod}"
    assert len(geneve) == sent, f"pods sent {sent} SYNs, ztunnel got {len(geneve)} Geneve frames"
    assert d == len(geneve), f"redirect counters rose by {d}, ztunnel got {len(geneve)} Geneve frames"
    for p, n in per_pod.items():
        assert delta(after, before, "redirect", [p]) == n, f"redirect counter of {p}"
    assert delta(after, before, "tx", ["ztunnel"]) >= len(geneve)
    assert delta(after, before, "rx", ["ratings", "reviews-v1"]) >= sent


@pytest.mark.last
def test_exit_line_counts_match_session_capture(lab):
    """SIGTERM: exit 0 and a ztgeneve-counters line whose redirect total equals every Geneve
    frame ztunnel received since ztgeneve started."""
    with Window(lab, {"productpage": 2, "reviews-v2": 2}, "exit") as w:
        sent = sum(w.send().values())
        exit_counters = lab.z.stop()
    assert len(w.geneve()) == sent, f"pods sent {sent} SYNs, ztunnel got {len(w.geneve())}"
    time.sleep(SETTLE)
    lab.session_capture.stop()
    total = len([p for p in lab.session_capture.packets() if pu.outer_is_geneve(p)])
    assert lab.z.returncode == 0, f"ztgeneve exited {lab.z.returncode} on SIGTERM:\n{lab.z.stderr()[-2000:]}"
    assert exit_counters is not None, f"no ztgeneve-counters line on stdout:\n{lab.z.stdout()[-2000:]}"
    assert set(exit_counters) >= {"ports", "workers"}
    redirect = port_sum(exit_counters, "redirect", POD_PORTS)
    assert total >= sent
    assert redirect == total, (f"exit line: redirect total {redirect}; ztunnel received {total} "
                               f"Geneve frames during the session")
    direct_total = port_sum(exit_counters, "direct", POD_PORTS)
    assert direct_total >= len(MESHED), "direct counter: the pods' connects to ztunnel's IP"
    workers = exit_counters["workers"]
    assert isinstance(workers, list) and workers


@pytest.mark.last
def test_exit_removes_twins(lab):
    assert not lab.z.running()
    links = subprocess.run(["ip", "-n", NODE_NS, "-o", "link"], capture_output=True, text=True).stdout
    left = [l.split(":")[1].strip() for l in links.splitlines() if ": t-" in l]
    assert not left, f"taps left after ztgeneve exited: {left}"
