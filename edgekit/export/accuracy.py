"""What the reduced-precision exports measure: a model's accuracy on labelled inputs through the ONNX
Runtime runner, its outputs against a reference file's, and the latency ratio of two files timed in one
run. The metric is a function passed in (the task's: edgekit.tasks), so the FP16 and INT8 exporters never
know which task they serve. numpy and ONNX Runtime only (no torch)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgekit.compare import compare_logits
from edgekit.data.inputs import LabelledInputs
from edgekit.errors import EdgekitError
from edgekit.tasks.base import Metric

log = logging.getLogger(__name__)


def run_onnx(path: str | Path, x: np.ndarray, *, input_name: str, threads: int = 0) -> np.ndarray:
    """The first output of an ONNX file over all of `x`, through the onnxrt runner (batch 1 unless the
    file has a dynamic batch axis)."""
    from edgekit.runners.onnxrt import OnnxrtRunner

    with OnnxrtRunner(path, threads=threads) as r:
        spec = r.inputs()[input_name]
        out = next(iter(r.outputs()))
        step = len(x) if isinstance(spec.shape[0], str) else int(spec.shape[0])
        if len(x) % step:
            raise EdgekitError(f"{path}: {len(x)} inputs do not split into batches of {step}")
        return np.concatenate([r.infer({input_name: x[i:i + step]})[out] for i in range(0, len(x), step)])


def evaluate(path: str | Path, data: LabelledInputs, metric: Metric, *, input_name: str,
             reference: np.ndarray | None = None) -> tuple[dict, np.ndarray]:
    """(accuracy dict, outputs). With `reference` outputs, the accuracy dict also holds the parity
    numbers (max error, cosine, top-1 agreement) against them."""
    out = run_onnx(path, data.x, input_name=input_name)
    acc = {**metric(out, data.targets), **data.source}
    if reference is not None:
        acc["vs_reference"] = compare_logits(reference, out)
    return acc, out


def latency_ratio(paths: dict[str, Path], x: np.ndarray, *, input_name: str, rounds: int = 10, iters: int = 20,
                  threads: int = 0) -> dict:
    """p50 latency of each file and each one's ratio to the first, timed in interleaved rounds in this
    process (the machine's load drifts: interleaving keeps the ratio honest). Inference only, batch 1."""
    from edgekit.profile.bench import time_runner
    from edgekit.profile.timer import LatencyStats
    from edgekit.runners.onnxrt import OnnxrtRunner

    runners = {k: OnnxrtRunner(p, threads=threads).load() for k, p in paths.items()}
    samples: dict[str, list[int]] = {k: [] for k in paths}
    try:
        feed = {input_name: x[:1]}
        for _ in range(rounds):
            for k, r in runners.items():
                time_runner(r, feed, warmup=3, iters=iters)
                samples[k] += r.infer_ns
    finally:
        for r in runners.values():
            r.close()
    stats = {k: LatencyStats.from_ns(v) for k, v in samples.items()}
    base = next(iter(stats.values()))
    return {"unit": "ms, batch 1, inference only", "threads": threads or "ort default",
            **{k: {**s.as_dict(), "p50_ratio": round(s.p50_ms / base.p50_ms, 3),
                   "min_ratio": round(s.min_ms / base.min_ms, 3)} for k, s in stats.items()}}
