"""The operator's command line (ztgeneve-ctl, also `ztgeneve ctl`): devices, counters (one
shot, --watch, --json), pods (with where each was seen, paged through telemetry), info, and
one clear line with a non-zero exit when no instance runs."""
import ipaddress
import json
import os
import signal
import subprocess
import time

import pytest

import minilab as ml
from minilab import wait
from opslab import BINARY, CTL, MESHED, PODS, PY, ctl, echo, echo_ok, ops_lab, settled


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with ops_lab("zto-", tmp_path_factory.mktemp("ctl")) as lab:
        yield lab


def ctl_json(lab, *args):
    r = ctl("--file-prefix", lab.node_prefix, "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_devices_and_info(lab):
    devices = ctl_json(lab, "devices")["devices"]
    assert devices == [n for p in list(PODS) + ["ztunnel"] for n in (p, p + ".twin")]
    info = ctl_json(lab, "info")
    assert info["role"] == "node" and info["pods"] == len(MESHED)
    assert info["next_hop"] == ml.ZT_MAC, info  # the endpoint's twin answered the ARP
    # The text form and the `ztgeneve ctl` entry point say the same.
    r = subprocess.run([str(BINARY), "ctl", "--file-prefix", lab.node_prefix, "info"],
                       capture_output=True, text=True, timeout=15)
    assert r.returncode == 0, r.stderr
    assert any(line.split() == ["role", "node"] for line in r.stdout.splitlines()), r.stdout


def test_pods_lists_where_each_pod_was_seen(lab):
    for pod in MESHED + ["legacy"]:
        assert lab.ping(pod), f"{pod} cannot ping its gateway"
    want = {lab.ip(p): {"ip": lab.ip(p), "device": p, "mac": ml.pod_mac(PODS[p])} for p in MESHED}

    def listed():
        return {r["ip"]: r for r in ctl_json(lab, "pods")["pods"]}
    got = wait(lambda: listed() == want and listed(), 5)
    assert got == want, f"ctl pods: {listed()}"  # legacy is not meshed: not listed
    text = ctl("--file-prefix", lab.node_prefix, "pods").stdout.splitlines()
    assert text[0].split() == ["ip", "device", "mac"]
    assert sorted(l.split() for l in text[1:]) == sorted(
        [r["ip"], r["device"], r["mac"]] for r in want.values())


def test_pods_pages_through_a_large_table(lab):
    """1,500 pods (a SIGHUP reload) do not fit one telemetry reply: ctl pages through all."""
    extra = [str(ipaddress.ip_address("10.245.0.1") + i) for i in range(1500)]
    cfg = open(lab.cfg).read()
    pods_line = next(l for l in cfg.splitlines() if l.startswith("pods: ["))
    new = pods_line[:-1] + ", " + ", ".join(extra) + "]"
    with open(lab.cfg, "w") as f:
        f.write(cfg.replace(pods_line, new))
    try:
        os.kill(lab.z.proc.pid, signal.SIGHUP)
        assert wait(lambda: ctl_json(lab, "info")["pods"] == 1502, 5)
        rows = ctl_json(lab, "pods")["pods"]
        ips = [r["ip"] for r in rows]
        assert len(ips) == 1502 and len(set(ips)) == 1502
        assert ips == sorted(ips, key=ipaddress.ip_address)
        assert set(extra) <= set(ips)
        assert all(r["device"] is None for r in rows if r["ip"] in extra)  # never seen
    finally:
        with open(lab.cfg, "w") as f:
            f.write(cfg)
        os.kill(lab.z.proc.pid, signal.SIGHUP)
        assert wait(lambda: ctl_json(lab, "info")["pods"] == len(MESHED), 5)


def test_counters_watch_shows_rates(lab):
    p = echo(lab, "productpage", conns=4, nbytes=400000)
    w = subprocess.Popen([PY, str(CTL), "--file-prefix", lab.node_prefix, "--json", "counters",
                          "productpage", "--watch", "0.5"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in w.stdout:
            lines.append(json.loads(line))
            if len(lines) == 3:
                break
    finally:
        w.send_signal(signal.SIGINT)
        w.wait(5)
    echo_ok(p)
    assert w.returncode == 0, w.stderr.read()
    assert lines[0]["rates"] is None and set(lines[0]["ports"]) == {"productpage"}
    assert all(l["rates"]["productpage"]["rx"] >= 0 for l in lines[1:])
    assert any(l["rates"]["productpage"]["redirect"] > 0 for l in lines[1:]), lines
    # The table form: a header with rates, refreshed.
    w = subprocess.Popen([PY, str(CTL), "--file-prefix", lab.node_prefix, "counters", "--watch",
                          "0.3"], stdout=subprocess.PIPE, text=True)
    time.sleep(1.2)  # a few refreshes
    w.send_signal(signal.SIGINT)
    out, _ = w.communicate(5)
    heads = [l.split() for l in out.splitlines() if l.startswith("device")]
    assert len(heads) >= 2 and heads[-1] == ["device", "counter", "total", "per", "s"], out


def test_counters_json_during_traffic_agree_with_final(lab):
    """Read during TCP traffic, the counters only grow; read once it stops, they equal the
    counters ztgeneve prints when it exits (every device, every counter)."""
    during = []
    # Echo rounds until three reads were taken during traffic: on a fast, quiet machine one
    # round can end within two reads.
    for _ in range(5):
        p = echo(lab, "productpage", conns=8, nbytes=1000000)
        while p.poll() is None:
            during.append(ctl_json(lab, "counters", "--all")["ports"])
        echo_ok(p)
        if len(during) >= 3:
            break
    after = settled(lambda: ctl_json(lab, "counters", "--all")["ports"])
    final = lab.z.stop()
    assert lab.z.returncode == 0
    moved = {(dev, k): (v, final["ports"][dev][k]) for dev, ctrs in after.items()
             for k, v in ctrs.items() if final["ports"][dev][k] != v}
    assert after.keys() == final["ports"].keys() and not moved, moved
    assert len(during) >= 3, "traffic too short to sample"
    pp = [d["productpage"]["redirect"] for d in during] + [after["productpage"]["redirect"]]
    assert pp == sorted(pp) and pp[0] < pp[-1], pp
    for d in during:
        for dev, ctrs in d.items():
            assert all(v <= after[dev][k] for k, v in ctrs.items()), (dev, ctrs)


def test_no_instance_one_line_nonzero(lab):
    """After the node stopped (previous test), ctl says so in one line."""
    assert not lab.z.running()
    for args in (["--file-prefix", lab.node_prefix, "counters"], ["--file-prefix", "zto-none", "pods"]):
        r = ctl(*args)
        assert r.returncode == 1 and r.stdout == ""
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("ztgeneve-ctl: no ztgeneve running"), r.stderr
