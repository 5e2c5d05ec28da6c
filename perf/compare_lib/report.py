"""Medians, spreads, the printed table, CSV files, the RESULTS.md block and the plots."""
import csv
import os
import statistics
from collections import defaultdict
from pathlib import Path

FIELDS = ["mode", "case", "side", "table_pods", "traffic_pods", "flows", "size", "workers", "rep",
          "rx_mpps", "tx_mpps", "cycles_per_pkt", "rss_mb", "load1"]
CPU_FIELDS = [f"cpu{i}_{k}" for i in range(os.cpu_count() or 1) for k in ("busy", "si")]  # % of the window
FIELDS += CPU_FIELDS + ["threads"]
KEY = ["mode", "case", "side", "table_pods", "traffic_pods", "flows", "size", "workers"]
TARGETS = {"testpmd": 0.70, "ovs-pod": 4.0, "1M/10 pods": 0.90, "2/1 workers": 1.8}


def grouped(rows, key):
    """{the values of the fields `key`: the rows that have them}, in the rows' order."""
    groups = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in key)].append(r)
    return groups


def summarize(rows):
    out = []
    for key, rs in grouped(rows, KEY).items():
        rx = [r["rx_mpps"] for r in rs]
        med = statistics.median(rx)
        out.append(dict(zip(KEY, key), n=len(rs), rx_mpps=med,
                        tx_mpps=statistics.median(r["tx_mpps"] for r in rs),
                        cycles_per_pkt=statistics.median(r["cycles_per_pkt"] for r in rs),
                        spread_pct=100 * (max(rx) - min(rx)) / med if med else 0.0, best_mpps=max(rx),
                        rss_mb=max((r["rss_mb"] or 0) for r in rs) or "",
                        **{f: statistics.median(r[f] for r in rs) for f in CPU_FIELDS if all(f in r for r in rs)}))
    return out


def write_csv(path, rows, fields):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def find(summary, mode, case):
    return next((s for s in summary if s["mode"] == mode and s["case"] == case), None)


def ratios(rows, mode, zcase):
    """(name, value, target) of ztgeneve's case zcase against the other sides in `mode`: the
    median over repetitions of the ratio within one repetition (the cases of a repetition run
    back to back, so a slow spell of a shared machine affects both sides of a ratio)."""
    by = defaultdict(dict)
    for r in rows:
        if r["mode"] == mode:
            by[r["case"]][r["rep"]] = r["rx_mpps"]
    out = []
    for case, target in (("testpmd", TARGETS["testpmd"]), ("testpmd-mac", None), ("testpmd-macswap", None),
                         ("ovs-pod", TARGETS["ovs-pod"]), ("ovs-cidr", None)):
        per_rep = [by[zcase][k] / by[case][k] for k in by[zcase] if by[case].get(k)]
        if per_rep:
            out.append((f"{zcase} / {case}", statistics.median(per_rep), target))
    for ref in ("testpmd-mac", "testpmd-macswap"):  # what touching the frame costs testpmd itself
        per_rep = [by[ref][k] / by["testpmd"][k] for k in by[ref] if by["testpmd"].get(k)]
        if per_rep:
            out.append((f"{ref} / testpmd", statistics.median(per_rep), None))
    return out


def scaling_ratio(rows, mode):
    by = defaultdict(dict)
    for r in rows:
        if r["mode"] == mode and r["case"].startswith("scale-pods"):
            by[r["table_pods"]][r["rep"]] = r["rx_mpps"]
    per_rep = [by[1000000][k] / by[10][k] for k in by[1000000] if by[10].get(k)]
    return ("ztgeneve 1M pods / 10 pods", statistics.median(per_rep), TARGETS["1M/10 pods"]) if per_rep else None


def workers_curve(summary, mode, side, zcase):
    """[(workers, summary row)] of one side: 1 worker from the main table (testpmd, zcase),
    more from the workers scan."""
    one = find(summary, mode, "testpmd" if side == "testpmd" else zcase)
    more = [s for s in summary if s["mode"] == mode and s["side"] == side and s["case"].startswith("scale-workers")]
    return sorted(([(1, one)] if one else []) + [(s["workers"], s) for s in more], key=lambda x: x[0])


def workers_ratio(rows, mode, zcase):
    """ztgeneve with 2 workers / with 1, the median over repetitions of the ratio within one."""
    by = defaultdict(dict)
    for r in rows:
        if r["mode"] == mode and r["case"] in (zcase, "scale-workers-2-ztg"):
            by[r["case"]][r["rep"]] = r["rx_mpps"]
    per_rep = [by["scale-workers-2-ztg"][k] / by[zcase][k] for k in by["scale-workers-2-ztg"] if by[zcase].get(k)]
    return ("ztgeneve 2 workers / 1 worker", statistics.median(per_rep), TARGETS["2/1 workers"]) if per_rep else None


def workers_md(summary, modes, zcase):
    lines = []
    for m in modes:
        curves = {side: workers_curve(summary, m, side, zcase) for side in ("testpmd", "ztgeneve")}
        if max((w for c in curves.values() for w, _ in c), default=1) < 2:
            continue
        if not lines:
            lines = ["", "| workers (= rx queues) | mode | testpmd io Rx Mpps (spread) | ztgeneve Rx Mpps (spread) "
                         "| ztgeneve / its 1 worker |", "|---:|---|---:|---:|---:|"]
        tp, zt = dict(curves["testpmd"]), dict(curves["ztgeneve"])
        base = zt.get(1)
        for w in sorted(set(tp) | set(zt)):
            cell = lambda s: f"{s['rx_mpps']:.2f} ({s['spread_pct']:.0f} %)" if s else "–"
            ratio = f"{zt[w]['rx_mpps'] / base['rx_mpps']:.2f} ×" if base and zt.get(w) else "–"
            lines.append(f"| {w} | {m} | {cell(tp.get(w))} | {cell(zt.get(w))} | {ratio} |")
    return lines


def table_md(summary, modes, main_cases, tsc_ghz):
    lines = ["| case | " + " | ".join(f"{m}: Rx Mpps median (best, spread) | cycles/pkt" for m in modes) + " |",
             "|---|" + "---:|---:|" * len(modes)]
    for case, label in main_cases:
        cells = []
        for m in modes:
            s = find(summary, m, case)
            cells += [f"**{s['rx_mpps']:.2f}** ({s['best_mpps']:.2f}, {s['spread_pct']:.0f} %)", f"{s['cycles_per_pkt']:.0f}"] \
                if s else ["–", "–"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Median of the repetitions (best = the fastest one); spread = (max − min) / median; cycles/pkt = TSC "
                 f"({tsc_ghz:.3f} GHz) / Rx pps of the one forwarding core, which busy-polls at 100 %.")
    return lines


def targets_md(rows, modes, zcase):
    lines = ["Ratios: median over repetitions of the ratio within one repetition.", "",
             "| target | " + " | ".join(modes) + " | met? |", "|---|" + "---:|" * len(modes) + "---|"]
    per = defaultdict(dict)
    for m in modes:
        for name, v, t in ratios(rows, m, zcase):
            per[(name, t)][m] = v
        for sr in (scaling_ratio(rows, m), workers_ratio(rows, m, zcase)):
            if sr:
                per[(sr[0], sr[2])][m] = sr[1]
    for (name, t), vals in per.items():
        met = "(reported)" if t is None else \
            ("**met**" if all(v >= t for v in vals.values()) else "**NOT met**")
        cells = [f"{vals[m]:.3f} ×" if m in vals else "–" for m in modes]
        lines.append(f"| {name}" + (f" ≥ {t}" if t else "") + " | " + " | ".join(cells) + f" | {met} |")
    return lines


def scaling_md(summary):
    lines = []
    for prefix, col, title in (("scale-pods", "table_pods", "pods in the table"),
                               ("scale-flows", "flows", "distinct flows"),
                               ("scale-size", "size", "frame size (bytes)"),
                               ("memif", "size", "memif input: frame size (bytes)")):
        rs = sorted((s for s in summary if s["case"].startswith(prefix)),
                    key=lambda s: (s["mode"], s["side"], s[col]))
        if not rs:
            continue
        lines += ["", f"| {title} | side | mode | Rx Mpps (spread) | cycles/pkt | Gbit/s (Rx, L2) | ztgeneve RSS MB |",
                  "|---:|---|---|---:|---:|---:|---:|"]
        for s in rs:
            gbps = s["rx_mpps"] * s["size"] * 8 / 1000
            lines.append(f"| {s[col]:,} | {s['side']} | {s['mode']} | {s['rx_mpps']:.2f} ({s['spread_pct']:.0f} %) "
                         f"| {s['cycles_per_pkt']:.0f} | {gbps:.1f} | {s['rss_mb']} |")
    return lines


def veth_rows(summary):
    return sorted((s for s in summary if s["case"].startswith("veth-")),
                  key=lambda s: (s["table_pods"], s["size"]))


def veth_md(summary, kinds, rows=()):
    """The veth scale: per pod count and size, every kind's Mpps at ztunnel's veth, then the
    busiest threads of each kind's last repetition."""
    rs = veth_rows(summary)
    if not rs:
        return []
    order = {k: i for i, (k, _) in enumerate(kinds)}
    label = dict(kinds)
    cpus = sorted({f.split("_")[0] for f in CPU_FIELDS if f in rs[0]})
    lines = ["", "| pods | frame | what the node runs | Mpps at ztunnel's veth (spread) | offered Mpps | "
                 "Gbit/s (L2) | " + " | ".join(f"{c.upper()} busy (softirq) %" for c in cpus) + " |",
             "|---:|---:|---|---:|---:|---:|" + "---:|" * len(cpus)]
    for s in sorted(rs, key=lambda s: (s["table_pods"], s["size"], order.get(s["side"], 99))):
        cpu = [f"{s[c + '_busy']:.0f} ({s[c + '_si']:.0f})" if c + "_busy" in s else "–" for c in cpus]
        lines.append(f"| {s['table_pods']} | {s['size']} B | {label.get(s['side'], s['side'])} | "
                     f"**{s['rx_mpps']:.2f}** ({s['spread_pct']:.0f} %) | {s['tx_mpps']:.2f} | "
                     f"{s['rx_mpps'] * s['size'] * 8 / 1000:.1f} | " + " | ".join(cpu) + " |")
    last = {r["case"]: r for r in rows if r["case"].startswith("veth-")}
    if last:
        lines += ["", "| case | threads over 2 % of a CPU, last repetition (process/thread) |", "|---|---|"]
        lines += [f"| {c} | {r.get('threads') or '–'} |" for c, r in sorted(last.items())]
    return lines


def plot_veth(summary, out_dir, kinds):
    """perf/compare-veth.png: Mpps at ztunnel's veth per attach kind, one bar per (pods, size)."""
    rs = veth_rows(summary)
    if not rs:
        return []
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [k for k, _ in kinds if any(s["side"] == k for s in rs)]
    groups = sorted({(s["table_pods"], s["size"]) for s in rs})
    fig, ax = plt.subplots(figsize=(7.4, 4))
    w = 0.8 / len(groups)
    for j, (pods, size) in enumerate(groups):
        ys = [next((s["rx_mpps"] for s in rs if s["side"] == k and (s["table_pods"], s["size"]) == (pods, size)), 0)
              for k in names]
        ax.bar([i - 0.4 + w * (j + 0.5) for i in range(len(names))], ys, w, label=f"{pods} pods, {size} B")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names)
    ax.set_xlabel("what the node runs between the pods' veths and ztunnel's")
    ax.set_ylabel("Mpps at ztunnel's veth (median)")
    ax.set_ylim(bottom=0)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("perf/compare --scale veth: attach kinds, one generator pod")
    fig.tight_layout()
    fig.savefig(Path(out_dir) / "compare-veth.png", dpi=100)
    plt.close(fig)
    return ["compare-veth.png"]


def update_results_md(path, block, name="perf/compare"):
    """Replace the text between the `name` markers in RESULTS.md (added at the top if absent)."""
    begin, end = f"<!-- {name}: begin (generated) -->", f"<!-- {name}: end -->"
    text = path.read_text() if path.exists() else ""
    new = f"{begin}\n" + "\n".join(block) + f"\n{end}"
    if begin in text and end in text:
        text = text[:text.index(begin)] + new + text[text.index(end) + len(end):]
    else:
        text = new + "\n\n" + text
    path.write_text(text)


def plot(summary, out_dir, zcase="ztgeneve-10k"):
    """perf/compare-pods.png (Mpps vs pods in the table), compare-sizes.png (vs frame size),
    compare-flows.png (vs flows) and compare-workers.png (vs workers)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    made = []
    for prefix, col, xlabel, fname, logx in (
            ("scale-pods", "table_pods", "pods in the table", "compare-pods.png", True),
            ("scale-size", "size", "frame size (bytes)", "compare-sizes.png", False),
            ("scale-flows", "flows", "distinct flows (5-tuples)", "compare-flows.png", True)):
        rs = [s for s in summary if s["case"].startswith(prefix)]
        if not rs:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4))
        for (mode, side) in sorted({(s["mode"], s["side"]) for s in rs}):
            pts = sorted((s[col], s["rx_mpps"]) for s in rs if s["mode"] == mode and s["side"] == side)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{side} ({mode})")
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Rx Mpps (median)")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"perf/compare: Mpps vs {xlabel}, one forwarding core")
        fig.tight_layout()
        fig.savefig(Path(out_dir) / fname, dpi=100)
        plt.close(fig)
        made.append(fname)
    pts = {(m, side): workers_curve(summary, m, side, zcase)
           for m in sorted({s["mode"] for s in summary}) for side in ("testpmd", "ztgeneve")}
    if any(len(c) > 1 for c in pts.values()):
        fig, ax = plt.subplots(figsize=(6.4, 4))
        for (mode, side), c in sorted(pts.items()):
            if len(c) > 1:
                ax.plot([w for w, _ in c], [s["rx_mpps"] for _, s in c], marker="o", label=f"{side} ({mode})")
        ax.set_xlabel("workers (testpmd: forwarding cores), one rx queue each")
        ax.set_ylabel("Rx Mpps (median)")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title("perf/compare: Mpps vs workers")
        fig.tight_layout()
        fig.savefig(Path(out_dir) / "compare-workers.png", dpi=100)
        plt.close(fig)
        made.append("compare-workers.png")
    return made
