"""The command line as a user meets it: --help, --version, --check on the shipped configs
and on every bad config in tests/configs (each names its expected message in a first-line
comment '# expect: ...'), and a start-up failure that must exit non-zero with one clear
line instead of running half-configured."""
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BINARY = str(Path(os.environ.get("ZTG_BINARY", REPO / "build" / "ztgeneve")))
BAD = sorted((REPO / "tests" / "configs").glob("bad-*.yaml"))
GOOD = sorted((REPO / "config").glob("*.yaml"))


def run(*args, **kw):
    return subprocess.run([BINARY, *args], capture_output=True, text=True, cwd=REPO, timeout=60, **kw)


def test_help_and_version():
    h = run("--help")
    assert h.returncode == 0 and "--config FILE" in h.stdout and "--check FILE" in h.stdout
    v = run("--version")
    assert v.returncode == 0 and v.stdout.startswith("ztgeneve ")


def test_usage_errors_exit_64():
    r = run("--frobnicate")
    assert r.returncode == 64
    assert "ztgeneve: error: unknown argument '--frobnicate'" in r.stderr
    assert run().returncode == 64


@pytest.mark.parametrize("cfg", GOOD, ids=lambda p: p.name)
def test_shipped_configs_are_valid(cfg):
    r = run("--check", str(cfg.relative_to(REPO)))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("config OK")


@pytest.mark.parametrize("cfg", BAD, ids=lambda p: p.name)
def test_bad_config_names_key_and_reason(cfg):
    expect = cfg.read_text().splitlines()[0].removeprefix("# expect: ")
    r = run("--check", str(cfg.relative_to(REPO)))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("ztgeneve: config error: ")
    assert expect in lines[0]
    assert r.stdout == ""


def test_missing_interface_fails_start_with_one_clear_line(tmp_path):
    """A port whose interface does not exist: exit 1 and our last line names the key."""
    ns = "ztg-cli"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        cfg = tmp_path / "c.yaml"
        cfg.write_text("""role: node
dpdk: {memory_mb: 128, file_prefix: ztg-cli}
ports:
  - {name: pp, role: pods, devargs: "net_af_packet0,iface=no-such-if"}
  - {name: zt, role: ztunnel, devargs: "net_af_packet1,iface=lo"}
tunnel: {local_ip: 10.244.2.1, remote_ip: 10.244.2.10, inner_src_mac: "02:00:00:00:7f:01", inner_dst_mac: "02:00:00:00:7f:02"}
""")
        r = subprocess.run(["ip", "netns", "exec", ns, BINARY, "--config", str(cfg)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("ztgeneve: error: ports[0].devargs: DPDK device 'net_af_packet0' did not probe"), r.stderr
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
