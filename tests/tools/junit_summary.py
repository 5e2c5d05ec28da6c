"""Count test cases from gtest XML files (one per unit executable, matched to meson's
testlog.json) and pytest junit XML; print one line per suite, then as the very last line
`N passed, M failed` (`, K skipped` when K > 0). Exit 1 if anything failed or nothing ran.

  junit_summary.py [--meson-testlog F --gtest-dir D] [--junit NAME=FILE ...] [--extra-failed NAME=N]
"""
import argparse
import json
import os
import sys
import xml.etree.ElementTree as ET


def cases_from_xml(path):
    """{case id: 'passed'|'failed'|'skipped'} from a gtest or pytest junit XML file."""
    out = {}
    rank = {"passed": 0, "skipped": 1, "failed": 2}
    root = ET.parse(path).getroot()
    for tc in root.iter("testcase"):
        cid = f"{tc.get('classname', '')}::{tc.get('name', '')}"
        kids = {c.tag for c in tc}
        if kids & {"failure", "error"}:
            res = "failed"
        elif "skipped" in kids or tc.get("result") == "skipped" or tc.get("status") == "notrun":
            res = "skipped"
        else:
            res = "passed"
        if cid not in out or rank[res] > rank[out[cid]]:
            out[cid] = res
    return out


def tally(results):
    c = {"passed": 0, "failed": 0, "skipped": 0}
    for r in results:
        c[r] += 1
    return c


def fmt(c):
    s = f"{c['passed']} passed, {c['failed']} failed"
    if c["skipped"]:
        s += f", {c['skipped']} skipped"
    return s


def unit_results(testlog, gtest_dir):
    """Per gtest case where an XML exists; else one case per meson test."""
    results, notes = [], []
    if not testlog or not os.path.exists(testlog):
        return results, notes
    with open(testlog) as f:
        entries = [json.loads(l) for l in f if l.strip()]
    for e in entries:
        name, res = e.get("name", "?"), e.get("result", "ERROR")
        ok = res in ("OK", "EXPECTEDFAIL")
        cmd = e.get("command") or e.get("cmd") or []
        exe = os.path.basename(cmd[0]) if cmd else name
        xml = os.path.join(gtest_dir, exe + ".xml") if gtest_dir else None
        if xml and os.path.exists(xml):
            cases = cases_from_xml(xml)
            results += cases.values()
            failed_cases = [k for k, v in cases.items() if v == "failed"]
            if not ok and not failed_cases:
                results.append("failed")  # crashed, leaked, timed out after its cases
                notes.append(f"  {name}: {res} (exit status) although all its cases passed")
            for k in failed_cases:
                notes.append(f"  FAILED {name}: {k}")
        else:
            results.append("skipped" if res == "SKIP" else ("passed" if ok else "failed"))
            if not ok and res != "SKIP":
                notes.append(f"  FAILED {name}: {res} (no gtest XML)")
    return results, notes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--meson-testlog")
    ap.add_argument("--gtest-dir")
    ap.add_argument("--junit", action="append", default=[], help="NAME=FILE")
    ap.add_argument("--extra-failed", action="append", default=[], help="NAME=N (e.g. build=1)")
    a = ap.parse_args()

    total = {"passed": 0, "failed": 0, "skipped": 0}
    lines = []

    def add(name, c, notes=()):
        for k in total:
            total[k] += c[k]
        lines.append(f"{name:<14} {fmt(c)}")
        lines.extend(notes)

    for spec in a.extra_failed:
        name, n = spec.split("=", 1)
        add(name, {"passed": 0, "failed": int(n), "skipped": 0})
    if a.meson_testlog:
        res, notes = unit_results(a.meson_testlog, a.gtest_dir)
        add("unit (gtest)", tally(res), notes)
    for spec in a.junit:
        name, path = spec.split("=", 1)
        if not os.path.exists(path):
            add(name, {"passed": 0, "failed": 1, "skipped": 0}, [f"  {path}: no junit XML (runner crashed?)"])
            continue
        cases = cases_from_xml(path)
        notes = [f"  FAILED {k}" for k, v in cases.items() if v == "failed"]
        add(name, tally(cases.values()), notes)

    print("---- summary ----")
    for l in lines:
        print(l)
    print(fmt(total))
    ran = total["passed"] + total["failed"]
    return 1 if total["failed"] or ran == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
