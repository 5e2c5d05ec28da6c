"""Deployment files (config/deploy): the systemd unit passes `systemd-analyze verify`; the
DaemonSet and ConfigMap parse as YAML and have what a node dataplane needs; the ConfigMap's
config passes `ztgeneve --check`. No namespaces, no network."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from opslab import BINARY, REPO

DEPLOY = REPO / "config" / "deploy"


def load(name):
    docs = list(yaml.safe_load_all((DEPLOY / name).read_text()))
    assert len(docs) == 1
    return docs[0]


@pytest.fixture(scope="module")
def ds():
    return load("daemonset.yaml")


@pytest.fixture(scope="module")
def cm():
    return load("configmap.yaml")


def verify(unit, tmp_path, name="ztgeneve.service"):
    """systemd-analyze verify on the unit, its binary pointed at this build (verify insists
    that ExecStart's file exists; /usr/local/bin is where meson install puts it)."""
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze missing (Debian package systemd)")
    p = tmp_path / name
    p.write_text(unit.replace("/usr/local/bin/ztgeneve", str(BINARY.resolve())))
    return subprocess.run(["systemd-analyze", "verify", str(p)], capture_output=True, text=True,
                          timeout=60)


def test_systemd_unit(tmp_path):
    unit = (DEPLOY / "ztgeneve.service").read_text()
    r = verify(unit, tmp_path)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr
    keys = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    assert keys["Restart"] == "on-failure"
    assert keys["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert keys["RuntimeDirectory"] == "ztgeneve"  # /run/ztgeneve: the interface locks
    assert keys["ExecStartPre"].endswith("--check /etc/ztgeneve/ztgeneve.yaml")
    # The check can fail: verify reports a bad value (as a warning, exit status 0).
    bad = verify(unit.replace("Restart=on-failure", "Restart=sometimes"), tmp_path, "bad.service")
    assert "restart specifier" in bad.stdout + bad.stderr


def test_configmap_config_passes_check(cm, tmp_path):
    assert cm["kind"] == "ConfigMap"
    text = cm["data"]["ztgeneve.yaml"]
    cfg = yaml.safe_load(text)
    assert cfg["kernel"]["mode"] == "observe" and cfg["kernel"]["ipset"] == "ztunnel-pods-ips"
    assert "pods" not in cfg  # observe: the ipset is the pod list
    (tmp_path / "ztgeneve.yaml").write_text(text)
    r = subprocess.run([str(BINARY), "--check", str(tmp_path / "ztgeneve.yaml")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_daemonset(ds, cm):
    assert ds["kind"] == "DaemonSet" and ds["metadata"]["namespace"] == cm["metadata"]["namespace"]
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    assert spec["priorityClassName"] == "system-node-critical"
    [c] = spec["containers"]
    sc = c["securityContext"]
    assert sc.get("privileged") is True or {"NET_ADMIN", "NET_RAW", "IPC_LOCK"} <= set(
        sc.get("capabilities", {}).get("add", []))
    # Guaranteed QoS: requests equal limits for every resource, whole CPUs.
    res = c["resources"]
    assert res["requests"] == res["limits"]
    assert set(res["limits"]) >= {"cpu", "memory", "hugepages-2Mi"}
    assert re.fullmatch(r"[1-9]\d*", str(res["limits"]["cpu"])), res["limits"]["cpu"]
    cfg = yaml.safe_load(cm["data"]["ztgeneve.yaml"])
    assert int(res["limits"]["cpu"]) >= cfg["dpdk"]["workers"] + 1
    huge_mib = int(str(res["limits"]["hugepages-2Mi"]).removesuffix("Mi"))
    assert cfg["dpdk"]["no_huge"] is False and huge_mib >= cfg["dpdk"]["memory_mb"]
    # Volumes: hugepages from the pod's own HugePages emptyDir, the DPDK runtime dir and bpffs.
    vols = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert vols[mounts["/dev/hugepages"]]["emptyDir"]["medium"] == "HugePages"
    assert "/dev/hugepages" in cfg["dpdk"]["eal_args"]
    assert vols[mounts["/var/run/dpdk"]]["hostPath"]["path"] == "/var/run/dpdk"
    assert vols[mounts["/sys/fs/bpf"]]["hostPath"]["path"] == "/sys/fs/bpf"
    assert vols[mounts["/etc/ztgeneve"]]["configMap"]["name"] == cm["metadata"]["name"]
    assert "--config" in c["command"] and "/etc/ztgeneve/ztgeneve.yaml" in c["command"]
    # Probes on the endpoints metrics.listen serves.
    port = int(cfg["metrics"]["listen"].rsplit(":", 1)[1])
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}


def test_containerfile_builds_from_debian_12():
    text = (DEPLOY / "Containerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(f.startswith("debian:12") for f in froms)
    assert "meson install" in text
