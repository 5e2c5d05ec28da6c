"""ztgeneve --check: config validation as a user sees it."""
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("ZTG_BINARY", REPO / "build" / "ztgeneve"))
CONFIG = REPO / "config" / "lab-node.yaml"


@pytest.fixture
def binary():
    if not BINARY.exists():
        pytest.fail(f"{BINARY} not built")
    return str(BINARY)


def test_check_lab_config_ok(binary):
    p = subprocess.run([binary, "--check", str(CONFIG)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert "config OK" in p.stdout


@pytest.mark.parametrize("old,new,key", [
    ("vni: 1001", "vni: 16777216", "tunnel.vni"),
    ("remote_ip: 10.244.2.10", "remote_ip: 10.244.2.300", "tunnel.remote_ip"),
])
def test_check_reports_bad_key(binary, tmp_path, old, new, key):
    text = CONFIG.read_text()
    assert old in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace(old, new))
    p = subprocess.run([binary, "--check", str(bad)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2, f"exit {p.returncode}, stderr {p.stderr!r}"
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {lines}"
    assert re.match(rf"^ztgeneve: config error: {re.escape(key)}: \S", lines[0]), lines[0]
