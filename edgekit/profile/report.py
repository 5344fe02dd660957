"""Bench reports: JSON (everything), CSV and Markdown (one row per combination), PNG plots (latency with
p90/p99 whiskers and end-to-end p50, accuracy against latency, memory). Accuracy and parity columns and the
plots' labels are the task's (edgekit.tasks: top-1 for classifiers, mAP50-95 / mAP50 and box
agreement for detectors)."""
from __future__ import annotations

import csv
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from edgekit.fileio import atomic_path, atomic_write_json, atomic_write_text
from edgekit.platform import module_present
from edgekit.tasks import task_for

log = logging.getLogger(__name__)
PLOTS = ("latency.png", "accuracy_latency.png", "memory.png")
# matplotlib is in the train and jetson extras; a device installed without it still gets its tables
NO_PLOTS = "No plots: matplotlib is not installed here (pip install 'matplotlib>=3.7' and rerun for the PNGs)."

LATENCY_COLUMNS = ["backend", "precision", "batch", "status", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "n",
                   "p50_spread_ms", "e2e_p50_ms", "throughput_ips", "cold_start_s", "peak_rss_mb", "power_mw",
                   "mj_per_call"]
JETSON_ONLY = ("power_mw", "mj_per_call")  # INA3221 rails: left out of the Markdown table where no row has them


def columns(task: str) -> list[str]:
    """CSV/Markdown columns: latency and memory, then the task's accuracy and parity columns, then why not run."""
    return LATENCY_COLUMNS + [c for c, _, _ in task_for(task).columns] + ["reason"]


def flat_row(r: dict[str, Any], task: str = "classify") -> dict[str, Any]:
    lat = r.get("latency_ms", {})
    spread = r.get("p50_spread_ms")
    t = task_for(task)
    return {
        "backend": r["backend"], "precision": r["precision"], "batch": r["batch"], "status": r["status"],
        **{k: lat.get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "n")},
        "p50_spread_ms": f"{spread[0]}-{spread[1]}" if spread else None,
        "e2e_p50_ms": (r.get("end_to_end_ms") or {}).get("p50_ms"), "throughput_ips": r.get("throughput_ips"),
        "cold_start_s": r.get("cold_start_s"), "peak_rss_mb": r.get("peak_rss_mb"),
        "power_mw": (r.get("power") or {}).get("mean_mw"), "mj_per_call": (r.get("power") or {}).get("mj_per_call"),
        **{c: t.column_value(r, c) for c, _, _ in t.columns}, "reason": r.get("reason"),
    }


def markdown(report: dict[str, Any], plots: bool = True) -> str:
    task = task_for(report.get("task", "classify"))
    rows = [flat_row(r, task.name) for r in report["results"]]
    m = report["machine"]
    n_eval = next((r["accuracy"]["n"] for r in report["results"] if r.get("accuracy")), None)
    ref = next((r["parity"]["reference"] for r in report["results"] if r.get("parity")), None)
    head = (f"# edgekit bench: {report['model_dir']}\n\n"
            f"{m['cpu']['name']} ({m['cpu']['cores']} cores)"
            f"{', GPU ' + m['gpu']['name'] if m.get('gpu') else ''}"
            f"{', ' + m['jetson']['model'] if m.get('jetson') else ''}; {report['created']}{_load(report)}. "
            f"Latency is inference only (runner timing around infer + sync), after warm-up; e2e (end-to-end, batch 1) is {task.e2e_what}, "
            "per decoded held-out image. p50_spread_ms is the range of p50 over the repeated runs. "
            + (f"Accuracy: held-out {task.metric_label} on {n_eval} images. " if n_eval else "No held-out accuracy. ")
            + (f"Parity against {ref} on the same inputs: max_rel_err is the outputs' max abs error over their "
               f"scale; {task.agreement_label}{task.agreement_note}.\n\n" if ref else "\n\n"))
    cols = [c for c in columns(task.name) if c != "reason" and not (c in JETSON_ONLY and all(r[c] is None for r in rows))]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if r["status"] == "ok":
            lines.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    body = "\n".join(lines)
    stages = [(r, r["end_to_end_ms"]) for r in report["results"] if r.get("end_to_end_ms")]
    if stages:
        body += ("\n\nEnd-to-end stages, p50 ms (each stage's own median: they need not sum to the total's):\n\n"
                 "| backend | precision | preprocess | infer | postprocess | e2e p50 | e2e p99 | n |\n"
                 "|---|---|---|---|---|---|---|---|\n")
        body += "\n".join(f"| {r['backend']} | {r['precision']} | {_fmt(e['stages_p50_ms'].get('preprocess'))} | "
                          f"{_fmt(e['stages_p50_ms'].get('infer'))} | {_fmt(e['stages_p50_ms'].get('postprocess'))} | "
                          f"{_fmt(e['p50_ms'])} | {_fmt(e['p99_ms'])} | {e['n']} |" for r, e in stages)
    skipped = [f"- {r['backend']}/{r['precision']}/b{r['batch']}: {r['status']}: {r['reason']}" for r in rows
               if r["status"] != "ok"]
    if skipped:
        body += "\n\nNot run here:\n" + "\n".join(skipped)
    if not plots:
        return head + body + "\n\n" + NO_PLOTS + "\n"
    return head + body + "\n\n![latency](latency.png) ![accuracy vs latency](accuracy_latency.png) ![memory](memory.png)\n"


def _load(report: dict[str, Any]) -> str:
    la = report.get("loadavg_1m")
    return f"; 1-minute load average {la['before']} before, {la['after']} after" if la else ""


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_report(report: dict[str, Any], folder: str | Path) -> Path:
    """bench.json, .csv, .md and the plots, all rendered into a hidden folder beside them first and moved in
    only when every one succeeded: a failure (a plot, a full disk) leaves the previous report untouched."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".bench-", dir=folder) as tmp:
        staged = Path(tmp)
        atomic_write_json(staged / "bench.json", report)
        buf = io.StringIO()
        task = report.get("task", "classify")
        w = csv.DictWriter(buf, fieldnames=columns(task))
        w.writeheader()
        w.writerows(flat_row(r, task) for r in report["results"])
        atomic_write_text(staged / "bench.csv", buf.getvalue())
        plots = plots_available()
        atomic_write_text(staged / "bench.md", markdown(report, plots=plots))
        if plots:
            plot_all(report, staged)
        else:
            log.warning("%s", NO_PLOTS)
        for f in sorted(staged.iterdir()):
            os.replace(f, folder / f.name)
    return folder / "bench.md"


def plots_available() -> bool:
    return module_present("matplotlib")


def plot_all(report: dict[str, Any], folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    ok = [r for r in report["results"] if r["status"] == "ok"]
    if not ok:
        return
    task = task_for(report.get("task", "classify"))
    labels = [f"{r['backend']}\n{r['precision']} b{r['batch']}" for r in ok]
    colors = {"torch": "#ee4c2c", "onnxrt": "#4c72b0", "trt": "#76b900", "tinygrad": "#8172b3"}
    col = [colors.get(r["backend"], "gray") for r in ok]

    # latency: p50 bars, whiskers to p99, a tick at p90; end-to-end p50 beside (its own marker)
    p50 = [r["latency_ms"]["p50_ms"] for r in ok]
    p90 = [r["latency_ms"]["p90_ms"] for r in ok]
    p99 = [r["latency_ms"]["p99_ms"] for r in ok]
    e2e = [(i, r["end_to_end_ms"]["p50_ms"]) for i, r in enumerate(ok) if r.get("end_to_end_ms")]
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(ok) + 2), 4))
    x = range(len(ok))
    ax.bar(x, p50, color=col)
    ax.errorbar(x, p50, yerr=[[0] * len(ok), [b - a for a, b in zip(p50, p99)]], fmt="none", ecolor="black",
                capsize=4, label="p99")
    ax.scatter(x, p90, marker="_", s=200, color="black", label="p90", zorder=3)
    if e2e:
        ax.scatter([i for i, _ in e2e], [v for _, v in e2e], marker="D", facecolors="none", edgecolors="black",
                   label="end-to-end p50", zorder=4)
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("latency, ms (bar: inference p50)")
    if max(p99 + [v for _, v in e2e]) / max(min(p50), 1e-9) > 30:
        ax.set_yscale("log")
    ax.set_title("inference latency per backend and precision" + (" (diamond: end-to-end)" if e2e else ""))
    ax.legend(loc="upper left", fontsize=8)
    _save(fig, folder / "latency.png", plt)

    # accuracy against latency
    fig, ax = plt.subplots(figsize=(6, 4))
    pts = [(r["latency_ms"]["p50_ms"], (r.get("accuracy") or {}).get("value"), lab.replace("\n", " "), c)
           for r, lab, c in zip(ok, labels, col)]
    pts = [p for p in pts if p[1] is not None]
    if pts:  # room for the labels; a flat line of equal accuracies still reads as one
        lo, hi = min(p[1] for p in pts) * 100, max(p[1] for p in pts) * 100
        pad = max(0.5, (hi - lo) * 0.2)
        ax.set_ylim(max(0.0, lo - pad), hi + pad)
        ax.set_xlim(0, max(p[0] for p in pts) * 1.35)
    placed: list[tuple[float, float]] = []  # label anchors in display pixels
    for lat, acc, lab, c in sorted(pts, key=lambda p: (p[1], p[0])):  # bottom-up, so labels stack upwards
        ax.scatter(lat, acc * 100, color=c, s=40)
        px, py = ax.transData.transform((lat, acc * 100))
        ly = py + 3
        while any(abs(px - qx) < 100 and abs(ly - qy) < 10 for qx, qy in placed):  # (nearly) coinciding points
            ly += 10
        placed.append((px, ly))
        stacked = ly > py + 3  # moved up: a thin leader line says which point it names
        ax.annotate(lab, (lat, acc * 100), fontsize=7, xytext=(6 if stacked else 4, (ly - py) * 72 / fig.dpi),
                    textcoords="offset points", color=c if stacked else "black",
                    arrowprops={"arrowstyle": "-", "lw": 0.5, "color": c} if stacked else None)
    ax.set_xlabel("inference p50 latency, ms")
    ax.set_ylabel(f"held-out {task.metric_label}, %")
    n_eval = next((r["accuracy"]["n"] for r in ok if r.get("accuracy")), None)
    ax.set_title(f"{task.metric_label} on {n_eval} held-out images against latency" if pts
                 else f"{task.metric_label} against latency (no held-out data)")
    _save(fig, folder / "accuracy_latency.png", plt)

    # memory
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(ok) + 2), 4))
    ax.bar(x, [r.get("peak_rss_mb") or 0 for r in ok], color=col)
    handles = [Patch(color="lightgray", label="peak host RSS (bars, coloured by backend)")]
    nv = [r.get("nvmap_mb") for r in ok]
    if any(v is not None for v in nv):
        handles.append(ax.scatter(x, [v or 0 for v in nv], marker="D", color="black", label="Jetson NvMap"))
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("MiB")
    ax.set_title("peak memory of each run (its own process)")
    ax.legend(handles=handles, fontsize=8)
    _save(fig, folder / "memory.png", plt)


def _save(fig, dest: Path, plt) -> None:
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
