"""Latency bookkeeping: nanosecond samples in, percentiles out."""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np


MAX_SAMPLES = 100_000  # per stage: percentiles over the most recent samples, memory bounded


@dataclass
class LatencyStats:
    n: int
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def from_ns(cls, samples_ns) -> "LatencyStats":
        a = np.fromiter(samples_ns, dtype=np.float64) / 1e6
        if a.size == 0:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan, nan, nan, nan)
        p50, p90, p99 = np.percentile(a, [50, 90, 99])
        return cls(int(a.size), float(a.mean()), float(a.std()), float(a.min()), float(p50), float(p90),
                   float(p99), float(a.max()))

    def as_dict(self) -> dict[str, float]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class Timer:
    """Collects samples per named stage; `with timer("detect"): ...` or `timer.add("detect", ns)`. Each stage
    keeps its most recent MAX_SAMPLES samples."""

    samples: dict[str, deque[int]] = field(default_factory=dict)

    def add(self, stage: str, ns: int) -> None:
        q = self.samples.get(stage)
        if q is None:
            q = self.samples[stage] = deque(maxlen=MAX_SAMPLES)
        q.append(ns)

    def __call__(self, stage: str) -> "_Span":
        return _Span(self, stage)

    def stats(self) -> dict[str, LatencyStats]:
        return {k: LatencyStats.from_ns(v) for k, v in self.samples.items()}

    def reset(self) -> None:
        self.samples.clear()


class _Span:
    __slots__ = ("timer", "stage", "t0")

    def __init__(self, timer: Timer, stage: str) -> None:
        self.timer, self.stage = timer, stage

    def __enter__(self) -> None:
        self.t0 = time.perf_counter_ns()

    def __exit__(self, *exc: object) -> None:
        self.timer.add(self.stage, time.perf_counter_ns() - self.t0)
