"""The GPU check for the TensorRT side, run on a machine that has TensorRT + CUDA (an x86 GPU box or a
Jetson): build fp32/fp16 (and int8 when asked) engines for a model directory, compare each against ONNX
Runtime (fp32) on real held-out images, time it, and write everything as JSON with the machine facts.

    python benchmarks/gpu_trt_check.py MODEL_DIR OUT_DIR [--precisions fp32,fp16] [--images 100]

Where TensorRT is missing it says so, writes OUT_DIR/gpu_trt_check.json with the reason, and exits 0.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_write_json
from edgekit.platform import machine_summary

log = logging.getLogger("gpu_trt_check")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("model_dir", help="model directory with manifest.json and model.onnx (edgekit export --to onnx)")
    p.add_argument("out", help="output folder for gpu_trt_check.json")
    p.add_argument("--precisions", default="fp32,fp16", help="comma-separated: fp32,fp16,int8 (default: %(default)s)")
    p.add_argument("--images", type=int, default=100, help="held-out images for parity (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=20, help="untimed calls first (default: %(default)s)")
    p.add_argument("--iters", type=int, default=300, help="timed calls per engine (default: %(default)s)")
    p.add_argument("--memory", default="auto", help="auto | mapped | managed | device (default: %(default)s)")
    p.add_argument("--cuda-graph", action="store_true", help="also time with the enqueue captured in a CUDA graph")
    p.add_argument("--dla-core", type=int, default=-1, help="build for this DLA core (fp16/int8), -1 = GPU")
    p.add_argument("--force", action="store_true", help="rebuild engines even when cached")
    return p


def _infer_all(runner, name: str, out: str, x: np.ndarray) -> np.ndarray:
    from edgekit.runners.base import infer_in_batches

    return infer_in_batches(runner, name, out, x)  # within a dynamic engine's profile (max batch 8 by default)


def check(args: argparse.Namespace) -> dict:
    from edgekit.export.trt import TrtBuildConfig, engine_from_onnx
    from edgekit.manifest import Manifest
    from edgekit.profile.bench import time_runner
    from edgekit.runners import load_runner
    from edgekit.tasks import task_for

    manifest = Manifest.load(args.model_dir)
    task = task_for(manifest)  # its held-out inputs (resize + crop, or letterbox) and its parity (top-1, or boxes)
    name, out = manifest.input.name, manifest.outputs[0].name
    x = task.heldout(manifest, None, args.images).x
    with load_runner(manifest, "onnxrt", precision="fp32") as ref:
        want = _infer_all(ref, name, out, x)
        ref_stats = time_runner(ref, {name: x[:1]}, warmup=args.warmup, iters=args.iters)
    rows = [{"backend": "onnxrt", "precision": "fp32", "device": "cpu", "options": {}, **ref_stats.as_dict()}]
    builds = {}
    for precision in [p.strip() for p in args.precisions.split(",") if p.strip()]:
        t0 = time.perf_counter()
        try:
            art = engine_from_onnx(manifest.model_dir, TrtBuildConfig(precision=precision, dla_core=args.dla_core,
                                                                      force=args.force))
        except EdgekitError as e:
            log.error("%s: %s", precision, e)
            builds[precision] = {"error": str(e)}
            continue
        builds[precision] = {"seconds": round(time.perf_counter() - t0, 1), "built_precision": art.precision,
                             "path": art.path, "options": art.options, "export_parity": art.parity}
        manifest = Manifest.load(manifest.model_dir)
        for options in [{"memory": args.memory}] + ([{"memory": args.memory, "cuda_graph": True}]
                                                    if args.cuda_graph else []):
            with load_runner(manifest, "trt", precision=art.precision, **options) as r:
                parity = task.parity(want, _infer_all(r, name, out, x))
                stats = time_runner(r, {name: x[:1].astype(r.inputs()[name].dtype)}, warmup=args.warmup,
                                    iters=args.iters)
                rows.append({"backend": "trt", "precision": art.precision, "device": "cuda",
                             "options": {**options, "memory": r.memory}, **stats.as_dict(), "parity": parity})
    return {"model_dir": str(manifest.model_dir), "task": task.name, "images": len(x), "builds": builds, "rows": rows}


def format_table(rows: list[dict]) -> str:
    cols = ["backend", "precision", "options", "n", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_rel", "agreement"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        p = r.get("parity", {})
        vals = {**r, "options": ",".join(f"{k}={v}" for k, v in r["options"].items()) or "-",
                "max_rel": f"{p['max_rel']:.1e}" if p else "ref", "agreement": f"{p['agreement']:.2%}" if p else "ref"}
        lines.append("| " + " | ".join(str(vals[c]) for c in cols) + " |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    result: dict = {"script": "benchmarks/gpu_trt_check.py", "argv": sys.argv[1:], "machine": machine_summary()}
    try:
        from edgekit.export.trt_build import import_tensorrt
        from edgekit.runners.cuda_memory import load_cuda_api

        trt = import_tensorrt()
        load_cuda_api()
    except EdgekitError as e:
        print(f"SKIPPED: {e}")
        atomic_write_json(out / "gpu_trt_check.json", {**result, "skipped": str(e)})
        return 0
    result["tensorrt"] = trt.__version__
    try:
        result.update(check(args))
    except Exception as e:  # a GPU session is precious: keep what failed, and how, in the JSON
        result["error"] = f"{type(e).__name__}: {e}"
        result["traceback"] = traceback.format_exc()
        atomic_write_json(out / "gpu_trt_check.json", result)
        print(f"FAILED: {result['error']} (details in {out / 'gpu_trt_check.json'})")
        return 1
    atomic_write_json(out / "gpu_trt_check.json", result)
    print(format_table(result["rows"]))
    print(f"\nTensorRT {trt.__version__}; wrote {out / 'gpu_trt_check.json'}")
    failed = [p for p, b in result["builds"].items() if "error" in b]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
