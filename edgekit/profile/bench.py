"""Latency of a loaded runner on one feed: warm-up, then timed calls (the runner's own timing around
_infer + _sync), reported as percentiles with the machine facts."""
from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edgekit.profile.timer import LatencyStats
from edgekit.runners.base import Runner


def time_runner(runner: Runner, feed: Mapping[str, np.ndarray], *, warmup: int = 10, iters: int = 100,
                min_seconds: float = 0.0) -> LatencyStats:
    """Run `warmup` untimed calls, then at least `iters` timed calls (and at least `min_seconds`)."""
    for _ in range(warmup):
        runner.infer(feed)
    runner.infer_ns.clear()
    t_end = time.perf_counter() + min_seconds
    while len(runner.infer_ns) < iters or time.perf_counter() < t_end:
        runner.infer(feed)
    return LatencyStats.from_ns(runner.infer_ns)


def save_images(images: list[np.ndarray], path: Path) -> None:
    """Decoded images of any sizes in one .npz (plain uint8 arrays: the workers load it without pickle)."""
    np.savez(path, *images)


def load_images(path: str | Path) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]
