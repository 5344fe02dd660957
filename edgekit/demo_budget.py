"""The demo's time budget: `make demo` finishes within 15 minutes on any CPU.

The sizes in DemoPlan were tuned on a 2-core x86 CPU where the whole demo took 819 s; on a 2-core AMD EPYC
with AVX2 only the classifier stage alone took 558 s, so fixed sizes cannot hold the promise. Instead the
demo measures this machine and fits the work to it:

    classify  epochs = what fits its share, from seconds per training step measured on this machine
              (a few steps of the real network on a real-sized batch), at most the recipe's epochs
    detect    ultralytics' own time mode (`time=`): epochs re-fitted after the first, stops at the limit
    export    the INT8 sensitivity search gets at most its share of what is left
    bench     combinations that would start after the bench's share is spent are listed as not run
              (`edgekit bench --max-seconds`), the camera stage keeps its reserve

Each stage's share is of the time left when it starts, so a slow stage shrinks the later ones instead of
the demo running over. What was fitted is written to <out>/plan.json and reused by a re-run (so an
interrupted demo continues the same training run), and the report says what the budget changed."""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.fileio import atomic_write_json

log = logging.getLogger(__name__)
PLAN_FILE = "plan.json"
_now = time.perf_counter  # the budget's clock (a test drives it)


@dataclass(frozen=True)
class Shares:
    """Fractions of the time left when a stage starts (measured on the 819 s machine: classify 32%,
    detect 27%, export 16%, bench 17% of the total), and the seconds kept back for the camera stage."""

    classify: float = 0.33  # of what is left after the data
    detect: float = 0.40  # of what is left after the classifier (training only: its export checks follow)
    int8_search: float = 0.08  # per model, of what is left when the exports start
    camera_reserve: float = 75.0  # the camera loop over the test video and the report
    min_bench: float = 60.0  # the bench always runs the first combinations (onnxrt fp32 at least)


@dataclass
class Budget:
    seconds: float  # the whole demo
    t_start: float = field(default_factory=lambda: _now())
    shares: Shares = Shares()
    fitted: dict[str, Any] = field(default_factory=dict)  # what the budget decided, for plan.json and the report

    def left(self) -> float:
        return self.seconds - (_now() - self.t_start)

    def share(self, name: str) -> float:
        return max(0.0, self.left()) * getattr(self.shares, name)

    def bench_seconds(self, models_left: int) -> float:
        """This model's bench: an equal part of what is left before the camera's reserve."""
        spare = self.left() - self.shares.camera_reserve
        return max(self.shares.min_bench, spare / max(1, models_left))


def epochs_that_fit(seconds: float, step_seconds: float, steps_per_epoch: int, most: int, least: int = 2,
                    overhead: float = 1.15) -> int:
    """Epochs of `steps_per_epoch` steps that fit in `seconds`; `overhead` covers data loading, validation
    and checkpoints (measured 1.1x on the demo's classifier). Never more than the recipe's, never below
    `least` (a head-only epoch and one of the whole network)."""
    per_epoch = step_seconds * steps_per_epoch * overhead
    fit = math.floor(seconds / per_epoch) if per_epoch > 0 else most
    return int(min(most, max(least, fit)))


def load_fitted(out: Path) -> dict[str, Any]:
    """A previous run's fitted plan for this output folder (a re-run continues it); {} when none or unreadable."""
    try:
        data = json.loads((out / PLAN_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_fitted(out: Path, fitted: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / PLAN_FILE, fitted)
