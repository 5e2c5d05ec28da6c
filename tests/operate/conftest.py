"""Fixtures of the operator-facing tests (issue 15): a small lab of its own (MiniLab,
namespaces zto*-), ztgeneve with metrics.listen on 127.0.0.1 inside the node namespace.
Run: /usr/bin/python3 -m pytest tests/operate (as root, under flock /tmp/ztg-ns.lock)."""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOOLS = HERE.parents[0] / "tools"
for p in (str(TOOLS), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)
