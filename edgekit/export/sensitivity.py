"""The INT8 fallback: find the layers whose quantization costs the most and keep them in float until the
model is within the accuracy budget.

Ranking: each quantizable node is quantized on its own (every other node float) and scored by the error it
alone puts into the model's output (relative squared error of the outputs against FP32, on tuning images).
Search: the k highest-ranked nodes are kept in float, k found by doubling then bisection on the tuning
images (training images that did not calibrate) with a label-free criterion: INT8 must agree with FP32 on
all but `budget` percent of them. Agreement bounds the accuracy drop (a drop needs a disagreement) and,
unlike the labels of memorised training images, it sees the flips. The held-out images then confirm the
real metric; if they still miss the budget, k keeps growing. The held-out images are the check, not what
was tuned."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.export.accuracy import Agreement, LabelledInputs, Metric, evaluate, run_onnx
from edgekit.export.qdq import candidate_nodes

log = logging.getLogger(__name__)
RANK_IMAGES = 64  # tuning images used to score each node (the scores only need to order the nodes)
Build = Callable[[list[str], Path], Path]  # (nodes kept in float, destination) -> the QDQ model written


@dataclass
class FallbackResult:
    path: Path
    kept_float: list[str]
    held_accuracy: dict
    candidates: int
    ranking: list[tuple[str, float]]
    steps: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def report(self) -> dict:
        return {"method": "rank nodes by the output error each adds when quantized alone; keep the top k in "
                          "float, k by doubling + bisection on tuning images (agreement with FP32), confirmed on "
                          "held-out images (the metric)",
                "candidates": self.candidates, "kept_float": self.kept_float, "steps": self.steps,
                "ranking": [{"node": n, "rel_sq_error": float(f"{s:.4g}")} for n, s in self.ranking],
                "seconds": round(self.seconds, 1)}


def relative_error(ref: np.ndarray, out: np.ndarray) -> float:
    """sum |out - ref|^2 / sum |ref|^2 over a batch of outputs."""
    ref, out = ref.astype(np.float64), out.astype(np.float64)
    return float(((out - ref) ** 2).sum() / max((ref ** 2).sum(), 1e-30))


def rank_nodes(src: Path, prepared: Path, build: Build, x: np.ndarray, *, input_name: str, work: Path,
               exclude: list[str] = ()) -> tuple[list[tuple[str, float]], list[str]]:
    """(nodes sorted by the output error each adds when it is the only quantized node, all candidates)."""
    import onnx

    nodes = [n for n in candidate_nodes(onnx.load(str(prepared))) if n not in exclude]
    ref = run_onnx(src, x, input_name=input_name)
    scores = []
    for i, node in enumerate(nodes):
        path = build([n for n in nodes if n != node], work / "rank.onnx")
        scores.append((node, relative_error(ref, run_onnx(path, x, input_name=input_name))))
        log.debug("sensitivity %d/%d %s: %.3e", i + 1, len(nodes), node, scores[-1][1])
    return sorted(scores, key=lambda s: -s[1]), nodes


def keep_float_until_within_budget(src: Path, prepared: Path, build: Build, *, tune: LabelledInputs,
                                   held: LabelledInputs, metric: Metric, agreement: Agreement, budget: float,
                                   fp32_held: dict, max_float: int, input_name: str, work: Path,
                                   exclude: list[str] = ()) -> FallbackResult:
    t0 = time.perf_counter()
    log.info("INT8 over budget: ranking layers by sensitivity on %d tuning images", min(len(tune), RANK_IMAGES))
    ranking, nodes = rank_nodes(src, prepared, build, tune.x[:RANK_IMAGES], input_name=input_name, work=work,
                                exclude=exclude)
    order = [n for n, _ in ranking]
    limit = min(max_float or max(1, len(order) // 4), len(order))  # past that it is no longer an INT8 model
    ref_tune = run_onnx(src, tune.x, input_name=input_name)
    steps: list[dict] = []
    tried: dict[int, float] = {}

    def disagree(k: int) -> float:  # percent of tuning images whose INT8 top-1 differs from FP32's
        if k not in tried:
            out = run_onnx(build(order[:k], work / f"k{k}.onnx"), tune.x, input_name=input_name)
            tried[k] = round(100 * (1 - agreement(ref_tune, out)), 3)
            steps.append({"float_nodes": k, "set": "tune", "disagreement_points": tried[k]})
            log.info("  %d layer(s) in float: %.2f%% of tuning images disagree with FP32", k, tried[k])
        return tried[k]

    # doubling, then bisection between the last k over budget and the first within it
    lo, hi = 0, 1
    while hi < limit and disagree(hi) > budget:
        lo, hi = hi, min(2 * hi, limit)
    disagree(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if disagree(mid) > budget else (lo, mid)
    k = hi
    while True:  # confirm on the held-out images; grow k while they miss the budget
        path = build(order[:k], work / "fallback.onnx")
        acc, _ = evaluate(path, held, metric, input_name=input_name)
        drop = round(100 * (fp32_held["value"] - acc["value"]), 3)
        steps.append({"float_nodes": k, "set": "held-out", "drop_points": drop})
        log.info("  %d layer(s) in float: held-out drop %.2f points (budget %.2f)", k, drop, budget)
        if drop <= budget or k >= limit:
            break
        k = min(limit, k + max(1, k // 4))
    return FallbackResult(path, order[:k], acc, len(nodes), ranking, steps, time.perf_counter() - t0)
