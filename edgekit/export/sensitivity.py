"""The INT8 fallback: find the layers whose quantization costs the most and keep them in float until the
model is within the accuracy budget, in bounded time.

Ranking (once): each quantizable layer is quantized on its own (every other layer float) and scored by the
error it alone puts into the model's output (relative squared error of the outputs against FP32, on tuning
images). A model with more than MAX_UNITS candidate layers (YOLOv8s has ~64) is ranked in MAX_UNITS groups
of consecutive layers instead: one build and one run per group, not per layer.
Search: the k highest-ranked units (layers or groups) are kept in float, k found by doubling then bisection
over the ranked list on the tuning images (training images that did not calibrate) with a label-free
criterion: INT8 must agree with FP32 on all but `budget` percent of them. Agreement bounds the accuracy drop
(a drop needs a disagreement) and, unlike the labels of memorised training images, it sees the flips. The
held-out images then confirm the real metric and the agreement; if they still miss, k keeps growing. The
held-out images are the check, not what was tuned.
Time: the search stops at `seconds` with the best prefix found so far (the smallest that met the tuning
criterion, else the one closest to it), confirms that one on the held-out images and says it ran out."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.data.inputs import LabelledInputs
from edgekit.export.accuracy import evaluate, run_onnx
from edgekit.export.qdq import candidate_nodes
from edgekit.tasks.base import Agreement, Metric

log = logging.getLogger(__name__)
RANK_IMAGES = 64  # tuning images used to score each unit (the scores only need to order the units)
MAX_UNITS = 16  # more candidate layers than this are ranked (and kept float) in this many groups
Build = Callable[[list[str], Path], Path]  # (nodes kept in float, destination) -> the QDQ model written


class _OutOfTime(Exception):
    pass


@dataclass
class Target:
    """What the fallback must reach, and by when."""

    budget: float  # max loss in points of the metric on the held-out images (and of tuning-image disagreement)
    fp32_held: dict  # FP32's metric on the held-out images
    fp32_held_out: np.ndarray  # FP32's outputs on the held-out images (for the agreement)
    min_agreement: float  # the held-out agreement with FP32 the result must keep
    seconds: float  # the search's time budget


@dataclass
class FallbackResult:
    path: Path | None  # None: nothing better than plain INT8 was confirmed (out of time before any step)
    kept_float: list[str]
    held_accuracy: dict | None
    held_agreement: float | None
    candidates: int
    ranking: list[tuple[list[str], float]]
    steps: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    out_of_time: bool = False
    time_budget: float = 0.0

    def report(self) -> dict:
        grouped = any(len(u) > 1 for u, _ in self.ranking)
        return {"method": "rank layers (groups of consecutive layers when there are more than "
                          f"{MAX_UNITS}) by the output error each adds when quantized alone; keep the top k in "
                          "float, k by doubling + bisection over the ranked list on tuning images (agreement "
                          "with FP32), confirmed on held-out images (the metric and the agreement)",
                "candidates": self.candidates, "grouped": grouped, "kept_float": self.kept_float,
                "steps": self.steps,
                "ranking": [{("nodes" if grouped else "node"): (u if grouped else u[0]),
                             "rel_sq_error": None if s is None else float(f"{s:.4g}")} for u, s in self.ranking],
                "seconds": round(self.seconds, 1), "time_budget_seconds": self.time_budget,
                "out_of_time": self.out_of_time}


def relative_error(ref: np.ndarray, out: np.ndarray) -> float:
    """sum |out - ref|^2 / sum |ref|^2 over a batch of outputs."""
    ref, out = ref.astype(np.float64), out.astype(np.float64)
    return float(((out - ref) ** 2).sum() / max((ref ** 2).sum(), 1e-30))


def group_nodes(nodes: list[str], max_units: int | None = None) -> list[list[str]]:
    """The candidates as ranking units: one per layer, or `max_units` (MAX_UNITS) runs of consecutive layers
    (graph order: neighbours share their activations' ranges, so a run's error is one place in the network)."""
    max_units = max_units or MAX_UNITS
    if len(nodes) <= max_units:
        return [[n] for n in nodes]
    return [list(chunk) for chunk in np.array_split(np.array(nodes, dtype=object), max_units)]


def rank_units(src: Path, build: Build, units: list[list[str]], x: np.ndarray, *, input_name: str, work: Path,
               check: Callable[[], None] = lambda: None) -> tuple[list[tuple[list[str], float | None]], bool]:
    """(units sorted by the output error each adds when it is the only quantized unit, complete). When
    `check` raises _OutOfTime, the units not scored yet follow the scored ones in graph order (score None)
    and complete is False."""
    everything = [n for u in units for n in u]
    ref = run_onnx(src, x, input_name=input_name)
    scores: list[tuple[list[str], float]] = []
    try:
        for i, unit in enumerate(units):
            check()
            path = build([n for n in everything if n not in unit], work / "rank.onnx")
            scores.append((unit, relative_error(ref, run_onnx(path, x, input_name=input_name))))
            log.debug("sensitivity %d/%d %s: %.3e", i + 1, len(units), unit[0], scores[-1][1])
    except _OutOfTime:
        pass
    ranked: list[tuple[list[str], float | None]] = sorted(scores, key=lambda s: -s[1])
    return ranked + [(u, None) for u in units[len(scores):]], len(scores) == len(units)


def keep_float_until_within_budget(src: Path, prepared: Path, build: Build, *, tune: LabelledInputs,
                                   held: LabelledInputs, metric: Metric, agreement: Agreement, target: Target,
                                   max_float: int, input_name: str, work: Path,
                                   exclude: list[str] = ()) -> FallbackResult:
    import onnx

    t0 = time.perf_counter()
    deadline = t0 + target.seconds

    def check() -> None:
        if time.perf_counter() > deadline:
            raise _OutOfTime

    nodes = [n for n in candidate_nodes(onnx.load(str(prepared))) if n not in exclude]
    units = group_nodes(nodes)
    log.info("INT8 over budget: ranking %d %s by sensitivity on %d tuning images (time budget %.0f s)",
             len(units), "layers" if len(units) == len(nodes) else f"groups of {len(nodes)} layers",
             min(len(tune), RANK_IMAGES), target.seconds)
    steps: list[dict] = []
    tried: dict[int, float] = {}
    ranking, ranked = rank_units(src, build, units, tune.x[:RANK_IMAGES], input_name=input_name, work=work,
                                 check=check)
    out_of_time = not ranked
    order = [u for u, _ in ranking]
    cap = min(max_float or max(1, len(nodes) // 4), len(nodes))  # past that it is no longer an INT8 model
    limit = max(1, max(k for k in range(len(order) + 1) if len(_flat(order[:k])) <= cap))

    if not out_of_time:
        try:
            _bisect(src, build, order, tune, agreement, target.budget, limit, tried, steps, input_name, work, check)
        except _OutOfTime:
            out_of_time = True
    within = [k for k, d in tried.items() if d <= target.budget]
    k = min(within) if within else min(tried, key=lambda k: (tried[k], k)) if tried else 0
    if out_of_time:
        log.warning("INT8 sensitivity search: out of its time budget (%.0f s) after %.0f s; checking the best "
                    "found (%d of %d layers in float)", target.seconds, time.perf_counter() - t0,
                    len(_flat(order[:k])), len(nodes))
    path, acc, agree = None, None, None
    while k > 0:  # confirm on the held-out images; grow k while they miss (and time is left)
        path = build(_flat(order[:k]), work / "fallback.onnx")
        acc, out = evaluate(path, held, metric, input_name=input_name)
        agree = agreement(target.fp32_held_out, out)
        drop = round(100 * (target.fp32_held["value"] - acc["value"]), 3)
        steps.append({"float_nodes": len(_flat(order[:k])), "set": "held-out", "drop_points": drop,
                      "agreement": round(agree, 4)})
        log.info("  %d layer(s) in float: held-out drop %.2f points (budget %.2f), agreement %.2f%% (min %.0f%%)",
                 len(_flat(order[:k])), drop, target.budget, 100 * agree, 100 * target.min_agreement)
        if (drop <= target.budget and agree >= target.min_agreement) or k >= limit:
            break
        if time.perf_counter() > deadline:
            out_of_time = True
            break
        k = min(limit, k + max(1, k // 4))
    return FallbackResult(path, _flat(order[:k]) if path else [], acc, agree, len(nodes), ranking, steps,
                          time.perf_counter() - t0, out_of_time, target.seconds)


def _bisect(src, build, order, tune, agreement, budget, limit, tried, steps, input_name, work, check) -> None:
    """Doubling, then bisection between the last k over budget and the first within it; fills `tried`."""
    ref_tune = run_onnx(src, tune.x, input_name=input_name)

    def disagree(k: int) -> float:  # percent of tuning images (or of mAP) where INT8 differs from FP32
        if k not in tried:
            check()
            out = run_onnx(build(_flat(order[:k]), work / f"k{k}.onnx"), tune.x, input_name=input_name)
            tried[k] = round(100 * (1 - agreement(ref_tune, out)), 3)
            steps.append({"float_nodes": len(_flat(order[:k])), "set": "tune", "disagreement_points": tried[k]})
            log.info("  %d layer(s) in float: %.2f%% of tuning images disagree with FP32", len(_flat(order[:k])),
                     tried[k])
        return tried[k]

    lo, hi = 0, 1
    while hi < limit and disagree(hi) > budget:
        lo, hi = hi, min(2 * hi, limit)
    disagree(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if disagree(mid) > budget else (lo, mid)


def _flat(units: list[list[str]]) -> list[str]:
    return [n for u in units for n in u]
