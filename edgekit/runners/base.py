"""The runner interface (Polygraphy's runner, smaller).

The base class does the bookkeeping: lifecycle, feed checks against the model's inputs, and timing
around `_infer` + `_sync`, so no backend can time itself wrongly. A backend fills only the hooks.
"""
from __future__ import annotations

import abc
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.manifest import Manifest, TensorSpec
from edgekit.profile.timer import Samples


class Runner(abc.ABC):
    backend: ClassVar[str]
    devices: ClassVar[tuple[str, ...]] = ("cpu",)

    def __init__(self, artifact: str | Path, *, device: str = "cpu", precision: str = "fp32",
                 manifest: Manifest | None = None, **options: Any) -> None:
        # Cheap: store arguments only. Resources are taken in load().
        if device not in self.devices:
            raise EdgekitError(f"the {self.backend} runner runs on {', '.join(self.devices)}, not '{device}'")
        self.artifact = Path(artifact)
        self.device = device
        self.precision = precision
        self.manifest = manifest
        self.options = options
        self.last_infer_ns = 0
        self.last_infer_cpu_ns = 0  # CPU time of the calling thread in that call (not the backend's own threads)
        # one sample per infer() call (_infer + _sync); a fixed-size ring, so a loop that runs for days stays
        # flat (a deque of Python ints grew ~36 bytes a call until full: 3.6 MB a runner)
        self.infer_ns = Samples()
        self._loaded = False
        self._inputs: dict[str, TensorSpec] = {}
        self._outputs: dict[str, TensorSpec] = {}

    # ---- lifecycle ---------------------------------------------------------------------------
    def load(self) -> "Runner":
        if self._loaded:
            return self
        if not self.artifact.exists():
            raise EdgekitError(f"{self.backend}: model file {self.artifact} does not exist")
        self._load()
        self._inputs, self._outputs = self._io()
        self._loaded = True
        return self

    def close(self) -> None:
        if self._loaded:
            self._close()
            self._loaded = False

    def __enter__(self) -> "Runner":
        return self.load()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_loaded", False):
            warnings.warn(f"{type(self).__name__} for {self.artifact} was never closed; use `with` or close()",
                          ResourceWarning, stacklevel=2)
            try:
                self._close()
            except Exception:  # interpreter shutdown: nothing more to do
                pass

    @property
    def loaded(self) -> bool:
        return self._loaded

    # ---- I/O -----------------------------------------------------------------------------------
    def inputs(self) -> dict[str, TensorSpec]:
        self._require_loaded()
        return dict(self._inputs)

    def outputs(self) -> dict[str, TensorSpec]:
        self._require_loaded()
        return dict(self._outputs)

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once. The feed must name every input with the right dtype and shape."""
        self._require_loaded()
        self.check_feed(feed)
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        raw = self._infer(feed)
        self._sync()
        self.last_infer_ns = time.perf_counter_ns() - t0
        self.last_infer_cpu_ns = time.thread_time_ns() - c0
        self.infer_ns.append(self.last_infer_ns)
        return self._fetch(raw)

    def max_batch(self, name: str) -> int | None:
        """The largest batch input `name` accepts on a dynamic batch axis; None = no limit here (a TensorRT
        engine's optimization profile sets one)."""
        return None

    def check_feed(self, feed: Mapping[str, np.ndarray]) -> None:
        specs = self._inputs
        if feed.keys() != specs.keys():
            missing, extra = sorted(specs.keys() - feed.keys()), sorted(feed.keys() - specs.keys())
            raise EdgekitError(f"{self.backend}: feed has inputs {sorted(feed)}, the model takes {sorted(specs)}"
                               + (f"; missing {missing}" if missing else "") + (f"; unexpected {extra}" if extra else ""))
        for name, spec in specs.items():
            arr = feed[name]
            if not isinstance(arr, np.ndarray):
                raise EdgekitError(f"{self.backend}: input '{name}' must be a numpy array, got {type(arr).__name__}")
            if arr.dtype != spec.dtype:
                raise EdgekitError(f"{self.backend}: input '{name}' must be {spec.dtype}, got {arr.dtype}; "
                                   f"convert it with .astype(np.{spec.dtype})")
            if arr.ndim != len(spec.shape) or any(
                isinstance(want, int) and want != got for want, got in zip(spec.shape, arr.shape)
            ):
                raise EdgekitError(f"{self.backend}: input '{name}' must have shape {spec.shape}, got {list(arr.shape)}"
                                   " (preprocess with the manifest's input spec)")

    # ---- hooks ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def _load(self) -> None: ...

    @abc.abstractmethod
    def _io(self) -> tuple[dict[str, TensorSpec], dict[str, TensorSpec]]: ...

    @abc.abstractmethod
    def _infer(self, feed: Mapping[str, np.ndarray]) -> Any: ...

    def _sync(self) -> None:
        """Wait until the work _infer queued is done (stream sync, realize). Synchronous backends: no-op."""

    def _fetch(self, raw: Any) -> dict[str, np.ndarray]:
        """Turn what _infer returned into host numpy arrays (outside the timed region)."""
        return raw

    def _close(self) -> None:
        """Free what _load took."""

    def _require_loaded(self) -> None:
        if not self._loaded:
            raise EdgekitError(f"{self.backend} runner is not loaded: call load() or use `with runner:`")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.artifact)!r}, device={self.device!r}, precision={self.precision!r})"


def feed_batch(runner: Runner, name: str, largest: int = 16) -> int:
    """How many samples to feed `runner` at once: 1 for a fixed batch axis, else `largest`, but never more
    than the runner accepts (a dynamic-batch TensorRT engine takes up to its profile's maximum, 8 by default)."""
    if not runner.inputs()[name].is_dynamic:
        return 1
    limit = runner.max_batch(name)
    return max(1, min(largest, limit)) if limit else largest


def infer_in_batches(runner: Runner, name: str, output: str, x: np.ndarray, largest: int = 16) -> np.ndarray:
    """`output` for every sample of `x` (cast to the input's dtype), fed in batches of feed_batch(), as float32."""
    step = feed_batch(runner, name, largest)
    x = x.astype(runner.inputs()[name].dtype, copy=False)
    return np.concatenate([runner.infer({name: x[i:i + step]})[output].astype(np.float32)
                           for i in range(0, len(x), step)])
