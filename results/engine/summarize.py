#!/usr/bin/env python3
"""Summarizes results/engine/run-*/: per-iteration figures, medians and the
engine-to-fio ratios; writes summary.json and engine-vs-fio.svg and prints a
Markdown table. Standard library only.

Usage: summarize.py RESULTS_DIR
"""
import glob
import json
import os
import statistics
import sys

SERIES = [
    # (label, file, field, baseline label)
    ("fio seq write 1 MiB QD16", "disk-baseline.json", "fio_seq_write_mib_per_s", None),
    ("engine sync=never", "engine-never.json", "write_mib_per_s", "fio seq write 1 MiB QD16"),
    ("engine sync=interval", "engine-interval.json", "write_mib_per_s", "fio seq write 1 MiB QD16"),
    ("fio seq write 1 MiB QD32", "disk-baseline.json", "fio_seq_write_qd32_mib_per_s", None),
    ("fio 64 KiB + fdatasync", "disk-baseline.json", "fio_fdatasync_64k_mib_per_s", None),
    ("engine every-batch, 16 producers", "engine-every-batch-16.json", "write_mib_per_s", "fio 64 KiB + fdatasync"),
    ("engine every-batch, 64 producers", "engine-every-batch-64.json", "write_mib_per_s", "fio 64 KiB + fdatasync"),
]
# Extra ratios of a series already plotted: (label, series, baseline). The
# engine keeps 32 writes in flight; fio at QD32 is the like-for-like figure.
EXTRA_RATIOS = [
    ("engine sync=never vs QD32", "engine sync=never", "fio seq write 1 MiB QD32"),
]
COLORS = ["#7f7f7f", "#1f77b4", "#6baed6", "#525252", "#bdbdbd", "#d62728", "#ff9896"]


def load(path):
    with open(path) as f:
        return json.loads(f.readline())


def main():
    out = sys.argv[1]
    runs = sorted(glob.glob(os.path.join(out, "run-*")), key=lambda p: int(p.rsplit("-", 1)[1]))
    if not runs:
        sys.exit(f"no run-* directories in {out}")
    values = {label: [] for label, *_ in SERIES}
    for run in runs:
        for label, file, field, _ in SERIES:
            values[label].append(round(load(os.path.join(run, file))[field], 1))
    summary = {"iterations": len(runs), "series": []}
    for label, _, field, base in SERIES:
        entry = {"label": label, "mib_per_s": values[label], "median": statistics.median(values[label])}
        if base:
            ratios = [v / b for v, b in zip(values[label], values[base])]
            entry["versus"] = base
            entry["ratio_per_iteration"] = [round(r, 3) for r in ratios]
            entry["ratio_of_medians"] = round(entry["median"] / statistics.median(values[base]), 3)
        summary["series"].append(entry)
    for label, series, base in EXTRA_RATIOS:
        ratios = [v / b for v, b in zip(values[series], values[base])]
        summary["series"].append({
            "label": label,
            "mib_per_s": values[series],
            "median": statistics.median(values[series]),
            "versus": base,
            "ratio_per_iteration": [round(r, 3) for r in ratios],
            "ratio_of_medians": round(statistics.median(values[series]) / statistics.median(values[base]), 3),
        })
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    write_svg(os.path.join(out, "engine-vs-fio.svg"), values, len(runs))
    print("| run | " + " | ".join(f"iteration {i + 1}" for i in range(len(runs))) + " | median | versus |")
    print("| --- " * (len(runs) + 3) + "|")
    for e in summary["series"]:
        versus = ""
        if "versus" in e:
            per = ", ".join(f"{r:.0%}" for r in e["ratio_per_iteration"])
            mid = statistics.median(e["ratio_per_iteration"])
            versus = f"{e['ratio_of_medians']:.0%} of {e['versus']} (per iteration {per}; their median {mid:.0%})"
        cells = " | ".join(f"{v:.0f}" for v in e["mib_per_s"])
        print(f"| {e['label']} | {cells} | {e['median']:.0f} | {versus} |")


def write_svg(path, values, iterations):
    width, height = 760, 360
    left, right, top, bottom = 60, 230, 30, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = max(max(v) for v in values.values())
    scale = 10 ** (len(str(int(top_value))) - 1)
    y_max = ((int(top_value) // scale) + 1) * scale
    group_w = plot_w / iterations
    bar_w = group_w * 0.8 / len(SERIES)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="18" font-size="14">Engine appends (1 KiB records, 16 KiB batches) against fio, MiB/s</text>',
    ]
    for tick in range(0, y_max + 1, max(1, y_max // 5)):
        y = top + plot_h - tick / y_max * plot_h
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e0e0e0"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>')
    for i in range(iterations):
        x0 = left + i * group_w + group_w * 0.1
        for j, (label, *_rest) in enumerate(SERIES):
            v = values[label][i]
            h = v / y_max * plot_h
            x = x0 + j * bar_w
            parts.append(
                f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" fill="{COLORS[j]}"><title>{label}: {v} MiB/s</title></rect>'
            )
        parts.append(f'<text x="{left + (i + 0.5) * group_w:.1f}" y="{top + plot_h + 18}" text-anchor="middle">iteration {i + 1}</text>')
    parts.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="black"/>')
    parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="black"/>')
    for j, (label, *_rest) in enumerate(SERIES):
        y = top + 10 + j * 20
        parts.append(f'<rect x="{left + plot_w + 15}" y="{y - 10}" width="12" height="12" fill="{COLORS[j]}"/>')
        parts.append(f'<text x="{left + plot_w + 32}" y="{y}">{label}</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
