"""One benchmark combination in its own process (`python -m edgekit.profile.worker SPEC.json OUT.json`), so
imports and memory of one backend never mix with another's. Measures cold start (process start to first
result), inference-only latency, end-to-end latency (decode-free: the task's preprocess + infer + postprocess,
each stage timed; edgekit.tasks), peak memory, and saves the outputs on the shared held-out inputs:
the parent scores accuracy and parity from them, so that work never counts in this process's memory."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

T_PROCESS = time.time()  # as early as this module runs; the parent also passes its spawn time

import numpy as np  # noqa: E402


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from edgekit.manifest import Manifest
    from edgekit.profile.bench import load_images, time_runner
    from edgekit.profile.memory import nvmap_mb, peak_rss_mb, rss_mb
    from edgekit.profile.power import PowerSampler
    from edgekit.runners import load_runner
    from edgekit.tasks import task_for

    manifest = Manifest.load(spec["model_dir"])
    inputs = np.load(spec["inputs"])  # preprocessed held-out images, float32 [N, C, H, W] (batch 1 each)
    images = load_images(spec["images"]) if spec.get("images") else None  # decoded, uint8 BGR
    batch = int(spec["batch"])
    options = {"threads": spec["threads"]} if spec.get("threads") else {}
    runner = load_runner(manifest, spec["backend"], precision=spec["precision"], device=spec.get("device") or None,
                         **options)
    name = manifest.input.name
    out_name = manifest.outputs[0].name
    x = np.ascontiguousarray(np.repeat(inputs[:1], batch, axis=0)) if batch > 1 else inputs[:1]
    result: dict[str, Any] = {"rss_before_load_mb": round(rss_mb(), 1)}
    with runner:
        spec_in = runner.inputs()[name]
        if isinstance(spec_in.shape[0], int) and spec_in.shape[0] != batch:
            raise SystemExit(_unsupported(f"the {spec['backend']}/{spec['precision']} artifact has a fixed batch of "
                                          f"{spec_in.shape[0]}: re-export with --dynamic-batch for batch {batch}"))
        runner.infer({name: x})
        t_first = time.time()
        result["cold_start_s"] = round(t_first - float(spec.get("spawn_time", T_PROCESS)), 3)
        result["rss_after_load_mb"] = round(rss_mb(), 1)
        with PowerSampler() as power:  # Jetson's INA3221 rails during the timed calls (warm-up included)
            stats = time_runner(runner, {name: x}, warmup=spec["warmup"], iters=spec["iters"])
        result["latency_ms"] = stats.as_dict()
        result["power"] = power.summary(calls=spec["warmup"] + spec["iters"])
        result["throughput_ips"] = round(1000.0 * batch / stats.p50_ms, 2) if stats.p50_ms > 0 else None
        outputs = np.concatenate([runner.infer({name: inputs[i:i + 1]})[out_name] for i in range(len(inputs))])
        np.save(spec["outputs"], outputs)
        if images and batch == 1:
            pipeline = task_for(manifest, spec.get("decoder", "")).pipeline(manifest)
            result["end_to_end_ms"] = end_to_end(runner, pipeline, images, name, out_name)
        result.update(peak_rss_mb=round(peak_rss_mb(), 1), nvmap_mb=nvmap_mb(), device=runner.device,
                      precision_built=runner.precision, info=getattr(runner, "info", None))
    result["cuda_peak_mb"] = _cuda_peak_mb(spec["backend"])
    return result


def end_to_end(runner, pipeline, images, name, out_name, passes: int = 3) -> dict[str, Any]:
    """The application's path per image, batch 1: preprocess -> infer -> postprocess (the task's), timed as a
    whole and per stage. OpenCV on one thread in every worker (ultralytics' import sets 0, i.e. none, in the
    torch worker): the pre/post stages are the same work whatever the backend."""
    import cv2

    from edgekit.profile.timer import Timer

    cv2.setNumThreads(1)
    pre, post = pipeline
    timer = Timer()
    for _ in range(passes):
        for img in images:
            t0 = time.perf_counter_ns()
            x, ctx = pre(img)
            t1 = time.perf_counter_ns()
            y = runner.infer({name: x})[out_name]
            t2 = time.perf_counter_ns()
            post(y, ctx)
            t3 = time.perf_counter_ns()
            for stage, ns in (("total", t3 - t0), ("preprocess", t1 - t0), ("infer", t2 - t1),
                              ("postprocess", t3 - t2)):
                timer.add(stage, ns)
    stats = timer.stats()
    return {**stats.pop("total").as_dict(), "opencv_threads": 1,
            "stages_p50_ms": {k: round(v.p50_ms, 4) for k, v in stats.items()}}


def _cuda_peak_mb(backend: str) -> float | None:
    if backend == "torch" and "torch" in sys.modules:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return None


def _unsupported(reason: str) -> str:
    return "UNSUPPORTED: " + reason


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    try:
        result = {"ok": True, **run(spec)}
    except SystemExit as e:
        if isinstance(e.code, str) and e.code.startswith("UNSUPPORTED: "):
            result = {"ok": False, "skipped": e.code[len("UNSUPPORTED: "):]}
        else:
            raise
    except Exception as e:  # reported by the parent beside the others; the traceback goes to stderr
        import traceback

        traceback.print_exc()
        from edgekit.errors import EdgekitError

        key = "skipped" if isinstance(e, EdgekitError) else "error"
        result = {"ok": False, key: f"{type(e).__name__}: {e}" if key == "error" else str(e)}
    Path(argv[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
