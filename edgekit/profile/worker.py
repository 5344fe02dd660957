"""One benchmark combination in its own process (`python -m edgekit.profile.worker SPEC.json OUT.json`), so
imports and memory of one backend never mix with another's. Measures cold start (process start to first
result), inference-only latency, end-to-end latency (decode-free: preprocess + infer + postprocess), peak
memory, held-out accuracy, and saves the outputs on the shared inputs for the parity check."""
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
    from edgekit.profile.bench import time_runner
    from edgekit.profile.memory import nvmap_mb, peak_rss_mb, rss_mb
    from edgekit.profile.timer import LatencyStats
    from edgekit.runners import load_runner

    manifest = Manifest.load(spec["model_dir"])
    inputs = np.load(spec["inputs"])  # preprocessed held-out images, float32 [N, C, H, W] (batch 1 each)
    images = np.load(spec["images"], allow_pickle=False) if spec.get("images") else None  # uint8 HWC, same N
    labels = np.load(spec["labels"]) if spec.get("labels") else None
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
        stats = time_runner(runner, {name: x}, warmup=spec["warmup"], iters=spec["iters"])
        result["latency_ms"] = stats.as_dict()
        result["throughput_ips"] = round(1000.0 * batch / stats.p50_ms, 2) if stats.p50_ms > 0 else None
        outputs = np.concatenate([runner.infer({name: inputs[i:i + 1]})[out_name] for i in range(len(inputs))])
        np.save(spec["outputs"], outputs)
        if labels is not None and manifest.task == "classify":
            result["accuracy"] = {"metric": "top1", "value": float((outputs.argmax(1) == labels).mean()),
                                  "n": int(len(labels))}
        if images is not None and manifest.task == "classify":
            result["end_to_end_ms"] = _end_to_end(runner, manifest, images, name, out_name).as_dict()
        result.update(peak_rss_mb=round(peak_rss_mb(), 1), nvmap_mb=nvmap_mb(), device=runner.device,
                      precision_built=runner.precision, info=getattr(runner, "info", None))
    result["cuda_peak_mb"] = _cuda_peak_mb(spec["backend"])
    return result


def _end_to_end(runner, manifest, images, name, out_name):
    """Preprocess (manifest spec) + infer + softmax/top-5 per image, the way an application runs it."""
    from edgekit.profile.timer import LatencyStats
    from edgekit.vision.preprocess import preprocess_classify

    samples = []
    for _ in range(3):
        for img in images:
            t0 = time.perf_counter_ns()
            logits = runner.infer({name: preprocess_classify(img, manifest.input)[None]})[out_name][0]
            e = np.exp(logits - logits.max())
            np.argsort(-(e / e.sum()))[:5]
            samples.append(time.perf_counter_ns() - t0)
    return LatencyStats.from_ns(samples)


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
