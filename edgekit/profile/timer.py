"""Latency bookkeeping: nanosecond samples in, percentiles out."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np


MAX_SAMPLES = 100_000  # per stage: percentiles over the most recent samples, memory bounded


class Samples:
    """The most recent `capacity` integer samples (nanoseconds) in one int64 ring, allocated and touched when
    made: 8 bytes a sample, and resident memory does not grow as it fills (a deque of Python ints costs ~36
    bytes a sample and grows page by page for the first `capacity` samples: a slow "leak" in a loop that runs
    for hours). Iterates oldest first; supports len(), [-1] (newest), clear()."""

    __slots__ = ("_a", "_n", "_i")

    def __init__(self, capacity: int | None = None) -> None:
        self._a = np.zeros(max(1, MAX_SAMPLES if capacity is None else capacity), np.int64)
        self._a.fill(0)  # touch every page now (np.zeros maps them lazily)
        self._n = self._i = 0  # samples held, next slot

    @property
    def capacity(self) -> int:
        return len(self._a)

    def append(self, ns: int) -> None:
        self._a[self._i] = ns
        self._i = (self._i + 1) % len(self._a)
        self._n = min(self._n + 1, len(self._a))

    def extend(self, values) -> None:
        for v in values:
            self.append(v)

    def values(self) -> np.ndarray:
        """A copy, oldest first."""
        if self._n < len(self._a):
            return self._a[:self._n].copy()
        return np.concatenate([self._a[self._i:], self._a[:self._i]])

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    def __iter__(self):
        return iter(self.values().tolist())

    def __getitem__(self, k: int) -> int:
        if not -self._n <= k < self._n:
            raise IndexError("sample index out of range")
        start = (self._i - self._n) % len(self._a)
        return int(self._a[(start + k % self._n) % len(self._a)])

    def clear(self) -> None:
        self._n = self._i = 0


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
        if isinstance(samples_ns, Samples):
            samples_ns = samples_ns.values()
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
    keeps its most recent MAX_SAMPLES samples (`Samples`: memory fixed when the stage first appears)."""

    samples: dict[str, Samples] = field(default_factory=dict)

    def add(self, stage: str, ns: int) -> None:
        q = self.samples.get(stage)
        if q is None:
            q = self.samples[stage] = Samples()
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
