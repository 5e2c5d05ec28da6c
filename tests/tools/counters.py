"""Print ztgeneve counters readably.

  counters.py FILE        FILE holds ztgeneve's stdout (the `ztgeneve-counters {json}` line)
  counters.py --telemetry [--prefix ztg-node]   ask the running ztgeneve
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

ORDER = ["rx", "tx", "redirect", "direct", "pass", "drop_no_twin", "drop_too_big",
         "drop_no_nexthop", "drop_tx_full"]


def table(counters, all_zero=False):
    ports = counters.get("ports", counters)
    keys = list(ORDER)
    for pc in ports.values():
        for k in pc:
            if k not in keys:
                keys.append(k)
    shown = [k for k in keys if all_zero or any(int(pc.get(k, 0)) for pc in ports.values())]
    w = max([len(n) for n in ports] + [4])
    cw = {k: max(12, len(k) + 2) for k in shown}
    lines = ["port".ljust(w) + "".join(f"{k:>{cw[k]}}" for k in shown)]
    for name, pc in ports.items():
        if not all_zero and not any(int(v) for v in pc.values()):
            continue
        lines.append(name.ljust(w) + "".join(f"{int(pc.get(k, 0)):>{cw[k]}}" for k in shown))
    if not shown:
        lines.append("(all counters are zero)")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file", nargs="?")
    ap.add_argument("--telemetry", action="store_true")
    ap.add_argument("--prefix", default="ztg-node")
    ap.add_argument("--all", action="store_true", help="also ports and columns that are all zero")
    a = ap.parse_args()
    if a.telemetry:
        import telemetry
        c = telemetry.counters(a.prefix)
    else:
        from ztgeneve import parse_counters
        with open(a.file) as f:
            c = parse_counters(f.read())
        if c is None:
            print(f"no ztgeneve-counters line in {a.file}", file=sys.stderr)
            return 1
    print(table(c, a.all))
    return 0


if __name__ == "__main__":
    sys.exit(main())
