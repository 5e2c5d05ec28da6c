"""Count the test cases of `meson test` runs: per test of each build directory's
meson-logs/testlog.json, its cases from <build>/test-results/<test name>.xml (gtest or
pytest JUnit XML, if written during that run), else the test itself as one case. A test
that failed although its XML shows no failed case (a crash or leak after its cases, a
timeout) adds one failed case. Prints one line per test (a failed case with its message's
first lines), then as the very last line
`N passed, M failed` (`, K skipped` when K > 0). Exit 1 if anything failed or nothing ran.

  junit_summary.py [--failed NAME=N ...] BUILD_DIR ...
"""
import argparse
import json
import os
import sys
import xml.etree.ElementTree as ET

RANK = {"passed": 0, "skipped": 1, "failed": 2}


def why(tc):
    """The first lines of a failed case's message (the assertion), folded into one line of at
    most 300 characters: the summary is the end of the log, what survives a cut middle."""
    for c in tc:
        if c.tag in ("failure", "error"):
            text = c.get("message") or c.text or ""
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            one = " | ".join(lines[:4])
            return one[:300] + ("..." if len(one) > 300 else "")
    return ""


def cases_from_xml(path, reasons=None):
    """{case id: 'passed'|'failed'|'skipped'} from a gtest or pytest JUnit XML file; the
    failed cases' why() into reasons."""
    out = {}
    for tc in ET.parse(path).getroot().iter("testcase"):
        cid = f"{tc.get('classname', '')}::{tc.get('name', '')}"
        kids = {c.tag for c in tc}
        if kids & {"failure", "error"}:
            res = "failed"
            if reasons is not None:
                reasons[cid] = why(tc)
        elif "skipped" in kids or tc.get("result") == "skipped" or tc.get("status") == "notrun":
            res = "skipped"
        else:
            res = "passed"
        if cid not in out or RANK[res] > RANK[out[cid]]:
            out[cid] = res
    return out


def fmt(c):
    s = f"{c['passed']} passed, {c['failed']} failed"
    if c["skipped"]:
        s += f", {c['skipped']} skipped"
    return s


def test_cases(build, entry):
    """(results, notes) of one testlog.json entry."""
    name = entry["name"].rsplit(" / ", 1)[-1]  # "project:suite / name" when suites differ
    res = entry.get("result", "ERROR")
    ok = res in ("OK", "EXPECTEDFAIL")
    xml = os.path.join(build, "test-results", name + ".xml")
    if not os.path.exists(xml) or os.path.getmtime(xml) < entry.get("starttime", 0):
        if res == "SKIP":
            return ["skipped"], []
        return ["passed" if ok else "failed"], [] if ok else [f"  FAILED {name}: {res}"]
    reasons = {}
    try:
        cases = cases_from_xml(xml, reasons)
    except ET.ParseError as e:
        return ["failed"], [f"  FAILED {name}: {res}, unreadable {xml}: {e}"]
    failed = [k for k, v in cases.items() if v == "failed"]
    notes = [f"  FAILED {name}: {k}" + (f"\n    {reasons[k]}" if reasons.get(k) else "") for k in failed]
    results = list(cases.values())
    if not ok and not failed:
        results.append("failed")
        notes.append(f"  FAILED {name}: {res} (exit status {entry.get('returncode')}) "
                     f"although its {len(cases)} cases passed")
    return results, notes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--failed", action="append", default=[], metavar="NAME=N",
                    help="count N failed cases for NAME (e.g. a build that failed)")
    ap.add_argument("builds", nargs="*", help="build directories that ran meson test")
    a = ap.parse_args()

    total = {"passed": 0, "failed": 0, "skipped": 0}
    lines = []

    def add(label, results, notes=()):
        c = {k: results.count(k) for k in total}
        for k in total:
            total[k] += c[k]
        lines.append(f"{label:<28} {fmt(c)}")
        lines.extend(notes)

    for spec in a.failed:
        name, n = spec.split("=", 1)
        add(name, ["failed"] * int(n))
    for build in a.builds:
        log = os.path.join(build, "meson-logs", "testlog.json")
        if not os.path.exists(log):
            add(build, ["failed"], [f"  {log} missing: meson test did not run"])
            continue
        with open(log) as f:
            entries = [json.loads(l) for l in f if l.strip()]
        for e in entries:
            add(f"{os.path.basename(build.rstrip('/'))} {e['name'].rsplit(' / ', 1)[-1]}",
                *test_cases(build, e))

    print("---- summary ----")
    for l in lines:
        print(l)
    print(fmt(total))
    ran = total["passed"] + total["failed"]
    return 1 if total["failed"] or ran == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
