"""The per-frame path shared by `edgekit camera` (camera.loop.run_camera) and the Python API (edgekit.api.Camera):
take a frame from the source, stamp its capture time, make it 3-channel BGR uint8, run the models. The CLI adds
drawing, sinks, records and the report around it; the API turns each result into typed objects. One
implementation, so a frame gives the same objects whichever way it is read.

numpy and the runners only: no torch, no OpenCV at import."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.camera.pipeline import Pipeline
from edgekit.camera.records import RecordMaker
from edgekit.profile.timer import Timer
from edgekit.vision.preprocess import to_bgr


class FrameTimer(Timer):
    """A Timer that also keeps the current frame's stage times (ns, summed per stage), for `on_frame` and the
    live view."""

    def __init__(self) -> None:
        super().__init__()
        self.frame_ns: dict[str, int] = {}

    def add(self, stage: str, ns: int) -> None:
        super().add(stage, ns)
        self.frame_ns[stage] = self.frame_ns.get(stage, 0) + ns


@dataclass
class FrameResult:
    """One frame through the models. `objects` are the record's objects (schema: camera/record.schema.json)."""

    index: int  # from 0, one per frame taken from the source
    captured: tuple[int, int]  # (monotonic ns, wall-clock ns) when the loop received the frame
    image: np.ndarray  # the frame, 3-channel BGR uint8 (the CLI may draw its overlays on it afterwards)
    objects: list[dict[str, Any]]
    started_ns: int  # perf_counter_ns() once the frame was taken: a frame's own time starts here (capture excluded)
    counts: dict[str, Any] | None = None  # the tracker's line/zone counts after this frame (the record's `counts`)


def frame_results(frames: Iterable[np.ndarray], pipeline: Pipeline, timer: FrameTimer,
                  stop: threading.Event | None = None, tracker: Any = None) -> Iterator[FrameResult]:
    """Each frame of `frames` (a FrameSource) through `pipeline`, until the frames end or `stop` is set. Timings go
    to `timer` (stage "capture", then the pipeline's stages); `timer.frame_ns` restarts with each frame.
    `tracker` (camera --track): its update(objects) sets each object's track_id and returns the counts, or None."""
    it = iter(frames)
    index = 0
    while stop is None or not stop.is_set():
        timer.frame_ns = {}
        t0 = time.perf_counter_ns()
        frame = next(it, None)
        if frame is None:
            return
        captured = RecordMaker.now()
        started = time.perf_counter_ns()
        timer.add("capture", started - t0)
        frame = normalise(frame)
        objects = pipeline(frame, timer)
        counts = None
        if tracker is not None:
            with timer("track"):
                counts = tracker.update(objects)
        yield FrameResult(index, captured, frame, objects, started, counts)
        index += 1


def normalise(frame: np.ndarray) -> np.ndarray:
    """Any channel count to 3-channel BGR uint8 (gray cameras, BGRA, 16-bit depth-like frames)."""
    if frame.dtype != np.uint8:
        frame = (frame / max(1, np.iinfo(frame.dtype).max if frame.dtype.kind in "ui" else 1) * 255).astype(np.uint8)
    return to_bgr(frame) if frame.ndim != 3 or frame.shape[2] != 3 else frame
