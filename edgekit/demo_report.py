"""The demo's report page (<out>/report/README.md) from its summary: models, exports, the bench tables, the
camera loop, and what fitting the demo to the machine changed."""
from __future__ import annotations

from pathlib import Path


def render(s: dict) -> str:
    c, d, cam = s["classifier"], s["detector"], s["camera"]
    acc = cam.get("accuracy") or {}
    lines = ["# edgekit demo", "",
             f"{'QUICK smoke run (accuracy means nothing). ' if s['quick'] else ''}"
             f"{s['total_seconds']:.0f} s on {s['machine']['cpu']['name']} ({s['machine']['cpu']['cores']} cores); "
             "per stage: " + ", ".join(f"{k} {v:.0f} s" for k, v in s["stage_seconds"].items()), "",
             *budget_lines(s.get("budget")),
             "## Models", "",
             f"- classifier: {c['arch']} @{c['imgsz']} px on the digit crops, val top-1 **{c['val_top1']:.2%}** "
             f"({c['val_images']} images), {c['train_seconds']:.0f} s of training ({c['recipe']})",
             f"- detector: {d['weights']} fine-tuned {d['epochs']} epoch(s) at {d['imgsz']}, mAP50 "
             f"**{d['mAP50']:.3f}**, mAP50-95 {d['mAP50-95']:.3f} ({d['train_seconds']:.0f} s; {d['note']})", "",
             "## Exports (ONNX Runtime, held-out images)", "",
             "| model | precision | metric | value | drop (points) | agreement with reference | max rel error | "
             "INT8/FP32 latency | float nodes |", "|---|---|---|---|---|---|---|---|---|"]
    for model, rows in s["exports"].items():
        for prec, r in rows.items():
            if "refused" in r:
                lines.append(f"| {model} | {prec} | refused: {r['refused']} | | | | | | |")
                continue
            lines.append(f"| {model} | {prec} | {r['metric'] or ''} | {_pct(r['value'])} | {r['drop_points']:.2f} | "
                         f"{_pct(r['agreement'])} | {_num(r['max_rel'])} | {_num(r['latency_ratio'])} | "
                         f"{r['float_nodes']} |")
    lines += ["", "## Latency, memory, accuracy per backend and precision", ""]
    for model, b in s["bench"].items():
        rel = Path(b["folder"]).name
        lines.append(f"- {model}: [{rel}/bench.md]({rel}/bench.md) ({len(b['ran'])} combinations ran"
                     + (f"; not run: {', '.join(f'{k} ({v})' for k, v in b['not_run'].items())}" if b["not_run"] else "")
                     + f") ![latency]({rel}/latency.png)")
    lines += ["", "## Camera loop on the test video", "",
              f"`edgekit {cam['command']}`: {cam['frames']} frames, {cam['fps']:.1f} FPS, peak RSS "
              f"{cam['rss_peak_mb'] or 0:.0f} MB (its own process, no torch); p50 ms per stage: " + ", ".join(f"{k} {v:.2f}" for k, v in cam["stages_p50_ms"].items() if v is not None), ""]
    if acc:
        lines.append(f"Digit accuracy (found and correctly classified): **{_pct(acc.get('accuracy'))}** of "
                     f"{acc.get('digits')} digits; detection recall {_pct(acc.get('recall'))}, classification "
                     f"{_pct(acc.get('classification_accuracy'))} of those found, {acc.get('false_positives')} "
                     "false positives.")
    lines += ["", "Annotated video: [camera.mp4](camera.mp4); per-frame results: camera.jsonl; report: camera.json",
              "", "![confusion matrix](confusion_matrix.png)", ""]
    return "\n".join(lines)


def budget_lines(b: dict | None) -> list[str]:
    """What fitting the demo to this machine's speed changed (edgekit.demo_budget), in one paragraph."""
    if not b:
        return []
    parts = [f"Fitted to a {b['seconds']:.0f} s budget on this machine:"]
    if "classifier_epochs" in b:
        parts.append(f"classifier {b['classifier_epochs']} of the recipe's {b['recipe_epochs']} epochs "
                     f"({b['classifier_step_seconds']:.3f} s per training step measured here)")
    if "detector_train_minutes" in b:
        parts.append(f"detector training limited to {b['detector_train_minutes']:.1f} min (ultralytics' time mode)")
    return [" ".join(parts[:1]) + " " + "; ".join(parts[1:]) + ". A bench combination the budget left out is "
            "listed as not run, with that reason.", ""]


def _pct(v) -> str:
    return "" if v is None else f"{v:.2%}"


def _num(v) -> str:
    return "" if v is None else f"{v:.3g}"
