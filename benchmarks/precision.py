"""FP32 vs FP16 vs INT8 ONNX Runtime on one model directory: accuracy on held-out data and latency, the
latency of every file timed in one run, interleaved (on a shared machine only ratios measured together
mean anything).

    python benchmarks/precision.py /tmp/r18 --sweep           # the settings table, then the default export
    python benchmarks/precision.py runs/demo/models/mnist_mobilenet_v2

Each INT8 setting is exported with the edgekit exporter (--no-fallback --allow-over-budget for the plain
settings, so their loss is measured rather than refused), its file kept aside, and at the end the model
directory holds the default export (`edgekit export --precision int8`, fallback on). Results go to
benchmarks/results/precision_<model>.json with the machine facts."""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edgekit.errors import EdgekitError  # noqa: E402

PLAIN = {"fallback": False, "allow_over_budget": True}
SWEEP = {  # name -> Int8ExportConfig overrides
    "minmax per-tensor": {**PLAIN, "calibration": "minmax", "per_channel": False},
    "minmax per-channel": {**PLAIN, "calibration": "minmax"},
    "entropy per-channel": {**PLAIN, "calibration": "entropy"},
    "percentile per-channel": {**PLAIN, "calibration": "percentile"},
    "minmax per-channel, int8 symmetric activations": {**PLAIN, "calibration": "minmax", "activations": "int8",
                                                       "symmetric_activations": True},
    "percentile per-tensor": {**PLAIN, "per_channel": False},
    "minmax per-tensor + fallback": {"calibration": "minmax", "per_channel": False},
    "minmax per-channel + fallback, budget 0.5": {"calibration": "minmax", "int8_budget": 0.5},
}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", help="model directory with manifest.json and the FP32 ONNX (edgekit export)")
    p.add_argument("--sweep", action="store_true", help="also export and time the plain INT8 settings")
    p.add_argument("--no-fallback-settings", action="store_true", help="with --sweep: leave out the '+ fallback' "
                   "settings (their layer ranking took over 25 min on YOLOv8s@320 on a loaded 2-core CPU)")
    p.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds (default: %(default)s)")
    p.add_argument("--iters", type=int, default=15, help="timed calls per file per round (default: %(default)s)")
    p.add_argument("--threads", default="1,0", help="ORT intra-op threads to time with, 0 = its default "
                   "(default: %(default)s)")
    p.add_argument("--heldback", action="store_true", help="also score every file on MNIST-5k's 1,000 held-back "
                   "digits (in neither train nor val; for models trained on edgekit data mnist5k)")
    p.add_argument("--out", default=None, help="result JSON (default: benchmarks/results/precision_<model>.json)")
    return p


def main(args: argparse.Namespace) -> int:
    from edgekit.export.accuracy import latency_ratio
    from edgekit.export.fp16 import fp16_from_onnx
    from edgekit.export.int8 import Int8ExportConfig, int8_from_onnx
    from edgekit.tasks import task_for
    from edgekit.manifest import Manifest
    from edgekit.platform import machine_summary

    model_dir = Path(args.model_dir)
    keep = model_dir / "precision_bench"
    keep.mkdir(exist_ok=True)
    rows: dict[str, dict] = {}

    t0 = time.perf_counter()
    fp16 = fp16_from_onnx(model_dir)
    acc32 = Manifest.load(model_dir).find_artifact("onnxrt", "fp32").accuracy
    rows["fp32"] = {"precision": "fp32", "value": acc32["value"], "drop_points": 0.0, "n": acc32["n"],
                    "metric": acc32["metric"], "agreement": 1.0, "max_rel": 0.0}
    rows["fp16"] = _row(fp16, time.perf_counter() - t0)
    files = {"fp32": model_dir / "model.onnx", "fp16": model_dir / "model_fp16.onnx"}
    base = Int8ExportConfig(latency_rounds=0)
    # the default last, timed by the exporter itself too, so the model directory ends with what the CLI builds
    sweep = {k: v for k, v in SWEEP.items() if not (args.no_fallback_settings and "fallback" in k)} if args.sweep else {}
    settings = {**sweep, "default (edgekit export --precision int8)": {"latency_rounds": 10}}
    for name, over in settings.items():
        t0 = time.perf_counter()
        try:
            art = int8_from_onnx(model_dir, replace(base, **over))
        except EdgekitError as e:  # the default refuses to write a model over budget: record why
            rows[name] = {"error": str(e), "seconds": round(time.perf_counter() - t0, 1)}
            continue
        rows[name] = _row(art, time.perf_counter() - t0)
        dest = keep / f"int8_{len(files)}.onnx"
        shutil.copyfile(model_dir / art.path, dest)
        files[name] = dest
        logging.info("%s: %s", name, json.dumps({k: rows[name][k] for k in ("value", "drop_points", "float_nodes")}))

    manifest = Manifest.load(model_dir)
    x = task_for(manifest).heldout(manifest, None, 1).x
    timing = {}
    for threads in (int(t) for t in args.threads.split(",")):
        timing[f"threads={threads or 'default'}"] = latency_ratio(files, x, input_name=manifest.input.name,
                                                                  rounds=args.rounds, iters=args.iters,
                                                                  threads=threads)
    extra = _heldback_top1(manifest, files) if args.heldback else {}
    for name, row in rows.items():
        if name in files:
            row["p50_ratio_vs_fp32"] = {t: timing[t][name]["p50_ratio"] for t in timing}
            row["min_ratio_vs_fp32"] = {t: timing[t][name]["min_ratio"] for t in timing}
        if name in extra:
            row["heldback_top1"] = extra[name]
    result = {"model_dir": str(model_dir), "model": manifest.name, "arch": manifest.source.get("arch"),
              "input": manifest.input.shape, "fp32_accuracy": manifest.find_artifact("onnxrt", "fp32").accuracy,
              "heldback_fp32_top1": extra.get("fp32"), "rows": rows, "latency": timing,
              "files": {k: str(v) for k, v in files.items()},
              "machine": machine_summary(), "command": " ".join(sys.argv)}
    out = Path(args.out or REPO / "benchmarks" / "results" / f"precision_{manifest.source.get('arch', 'model')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(_table(result))
    print(f"wrote {out}")
    return 0


def _heldback_top1(manifest, files: dict[str, Path]) -> dict[str, float]:
    """Top-1 of each file on the 100 digits per class that edgekit's mnist5k writes to neither split."""

    from edgekit.data.mnist import load_mnist5k, split_indices
    from edgekit.export.accuracy import run_onnx
    from edgekit.tasks.classify import top1
    from edgekit.vision.preprocess import batch_classify

    if manifest.labels != [str(d) for d in range(10)]:
        raise EdgekitError("--heldback needs a model trained on edgekit's mnist5k (classes 0-9)")
    images, labels = load_mnist5k()
    idx = split_indices(labels)["heldout"]
    x = batch_classify([images[i] for i in idx], manifest.input)
    out = {k: top1(run_onnx(p, x, input_name=manifest.input.name), labels[idx])["value"] for k, p in files.items()}
    out["n"] = int(len(idx))
    return out


def _row(art, seconds: float) -> dict:
    a, o = art.accuracy, art.options
    row = {"precision": art.precision, "value": a["value"], "drop_points": a["drop_points"], "n": a["n"],
           "metric": a["metric"], "agreement": art.parity["agreement"], "agreement_kind": art.parity["agreement_kind"],
           "max_rel": art.parity["max_rel"],
           "seconds": round(seconds, 1)}
    if art.precision == "int8":
        row.update(float_nodes=o["float_nodes"], within_budget=a["within_budget"],
                   plain_int8_value=a["plain_int8_value"], calibration=o["calibration"]["method"],
                   per_channel=o["per_channel"], cache_hit=o["calibration"]["hit"])
        if o["fallback"]:
            row["fallback_steps"] = o["fallback"]["steps"]
            row["fallback_seconds"] = o["fallback"]["seconds"]
    return row


def _table(result: dict) -> str:
    threads = list(result["latency"])
    metric = next(iter(result["rows"].values())).get("metric", "top1")
    head = ["setting", metric, "drop (points)", "agree w/ fp32", "float layers", "held-back top-1"] + [
        f"latency ratio p50 (min), {t}" for t in threads]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in result["rows"].items():
        if "error" in r:
            lines.append(f"| {name} | refused: {r['error'][:120]} |")
            continue
        ratios = [f"{r['p50_ratio_vs_fp32'][t]:.2f} ({r['min_ratio_vs_fp32'][t]:.2f})" if "p50_ratio_vs_fp32" in r
                  else "" for t in threads]
        hb = f"{r['heldback_top1']:.2%}" if "heldback_top1" in r else ""
        lines.append(f"| {name} | {r['value']:.2%} | {r['drop_points']:.2f} | {r['agreement']:.2%} | "
                     f"{len(r.get('float_nodes', []))} | {hb} | " + " | ".join(ratios) + " |")
    fp32 = result["fp32_accuracy"]
    p50 = {t: result["latency"][t]["fp32"]["p50_ms"] for t in threads}
    hb = result.get("heldback_fp32_top1")
    return "\n".join(lines) + (f"\n\nFP32: {metric} {fp32['value']:.2%} on {fp32['n']} held-out images"
                               + (f", {hb:.2%} on the held-back digits" if hb is not None else "") + f"; p50 {p50} ms")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main(get_args_parser().parse_args()))
