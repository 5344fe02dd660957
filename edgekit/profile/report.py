"""Bench reports: JSON (everything), CSV and Markdown (one row per combination), PNG plots (latency with
p90/p99 whiskers, accuracy against latency, memory)."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from edgekit.fileio import atomic_path, atomic_write_json, atomic_write_text

COLUMNS = ["backend", "precision", "batch", "status", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "n",
           "p50_spread_ms", "e2e_p50_ms", "throughput_ips", "cold_start_s", "peak_rss_mb", "accuracy",
           "max_rel_err", "top1_agreement", "reason"]


def flat_row(r: dict[str, Any]) -> dict[str, Any]:
    lat = r.get("latency_ms", {})
    acc = r.get("accuracy") or {}
    par = r.get("parity") or {}
    spread = r.get("p50_spread_ms")
    return {
        "backend": r["backend"], "precision": r["precision"], "batch": r["batch"], "status": r["status"],
        **{k: lat.get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "n")},
        "p50_spread_ms": f"{spread[0]}-{spread[1]}" if spread else None,
        "e2e_p50_ms": (r.get("end_to_end_ms") or {}).get("p50_ms"), "throughput_ips": r.get("throughput_ips"),
        "cold_start_s": r.get("cold_start_s"), "peak_rss_mb": r.get("peak_rss_mb"), "accuracy": acc.get("value"),
        "max_rel_err": par.get("max_rel"), "top1_agreement": par.get("top1_agreement"), "reason": r.get("reason"),
    }


def markdown(report: dict[str, Any]) -> str:
    rows = [flat_row(r) for r in report["results"]]
    m = report["machine"]
    head = (f"# edgekit bench: {report['model_dir']}\n\n"
            f"{m['cpu']['name']} ({m['cpu']['cores']} cores)"
            f"{', GPU ' + m['gpu']['name'] if m.get('gpu') else ''}"
            f"{', ' + m['jetson']['model'] if m.get('jetson') else ''}; {report['created']}. Latency is inference "
            "only (runner timing around infer + sync), after warm-up; e2e adds preprocessing and top-5. "
            "p50_spread_ms is the range of p50 over the repeated runs.\n\n")
    cols = [c for c in COLUMNS if c != "reason"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if r["status"] == "ok":
            lines.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    skipped = [f"- {r['backend']}/{r['precision']}/b{r['batch']}: {r['status']}: {r['reason']}" for r in rows
               if r["status"] != "ok"]
    body = "\n".join(lines)
    if skipped:
        body += "\n\nNot run here:\n" + "\n".join(skipped)
    return head + body + "\n\n![latency](latency.png) ![accuracy vs latency](accuracy_latency.png) ![memory](memory.png)\n"


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_report(report: dict[str, Any], folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "bench.json", report)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS)
    w.writeheader()
    w.writerows(flat_row(r) for r in report["results"])
    atomic_write_text(folder / "bench.csv", buf.getvalue())
    atomic_write_text(folder / "bench.md", markdown(report))
    plot_all(report, folder)
    return folder / "bench.md"


def plot_all(report: dict[str, Any], folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in report["results"] if r["status"] == "ok"]
    if not ok:
        return
    labels = [f"{r['backend']}\n{r['precision']} b{r['batch']}" for r in ok]
    colors = {"torch": "#ee4c2c", "onnxrt": "#4c72b0", "trt": "#76b900", "tinygrad": "#8172b3"}
    col = [colors.get(r["backend"], "gray") for r in ok]

    # latency: p50 bars, whiskers to p99, a tick at p90
    p50 = [r["latency_ms"]["p50_ms"] for r in ok]
    p90 = [r["latency_ms"]["p90_ms"] for r in ok]
    p99 = [r["latency_ms"]["p99_ms"] for r in ok]
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(ok) + 2), 4))
    x = range(len(ok))
    ax.bar(x, p50, color=col)
    ax.errorbar(x, p50, yerr=[[0] * len(ok), [b - a for a, b in zip(p50, p99)]], fmt="none", ecolor="black",
                capsize=4, label="p99")
    ax.scatter(x, p90, marker="_", s=200, color="black", label="p90", zorder=3)
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("latency, ms (bar: p50)")
    if max(p99) / max(min(p50), 1e-9) > 30:
        ax.set_yscale("log")
    ax.set_title("inference latency per backend and precision")
    ax.legend(loc="upper left", fontsize=8)
    _save(fig, folder / "latency.png", plt)

    # accuracy against latency
    fig, ax = plt.subplots(figsize=(6, 4))
    pts = [(r["latency_ms"]["p50_ms"], (r.get("accuracy") or {}).get("value"), lab.replace("\n", " "), c)
           for r, lab, c in zip(ok, labels, col)]
    pts = [p for p in pts if p[1] is not None]
    for lat, acc, lab, c in pts:
        ax.scatter(lat, acc * 100, color=c, s=40)
        ax.annotate(lab, (lat, acc * 100), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel("p50 latency, ms")
    ax.set_ylabel("held-out top-1, %")
    ax.set_title("accuracy against latency" if pts else "accuracy against latency (no held-out data)")
    _save(fig, folder / "accuracy_latency.png", plt)

    # memory
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(ok) + 2), 4))
    ax.bar(x, [r.get("peak_rss_mb") or 0 for r in ok], color=col, label="peak host RSS")
    nv = [r.get("nvmap_mb") for r in ok]
    if any(v is not None for v in nv):
        ax.scatter(x, [v or 0 for v in nv], marker="D", color="black", label="Jetson NvMap")
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("MiB")
    ax.set_title("peak memory of each run (its own process)")
    ax.legend(fontsize=8)
    _save(fig, folder / "memory.png", plt)


def _save(fig, dest: Path, plt) -> None:
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
