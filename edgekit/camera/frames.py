"""The per-frame path shared by `edgekit camera` (camera.loop.run_camera) and the Python API (edgekit.api.Camera):
take a frame from the source, stamp its capture time, make it 3-channel BGR uint8, run the models. The CLI adds
drawing, sinks, records and the report around it; the API turns each result into typed objects. One
implementation, so a frame gives the same objects whichever way it is read.

numpy and the runners only: no torch, no OpenCV at import."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.camera.overlap import Overlapped, Serial
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
    counts: dict[str, Any] | None = None  # the tracker's line/zone counts after this frame (the record's `counts`)
    staged: Any = None  # camera.overlap's Frame: its stage times and clocks (work_ns, t_got_ns, t_read_ns, prepared)


def frame_results(frames: Iterable[np.ndarray], pipeline: Pipeline, timer: FrameTimer,
                  stop: threading.Event | None = None, tracker: Any = None, *, overlap: bool = False,
                  on_stop: Callable[[], Any] = lambda: None) -> Iterator[FrameResult]:
    """Each frame of `frames` (a FrameSource) through `pipeline`, until the frames end or `stop` is set. Timings go
    to `timer` (capture, preprocess, detect, ... as each frame's stages report them); `timer.frame_ns` restarts
    with each frame. `overlap`: read + letterbox and the detector on threads of their own (camera.overlap; the
    pipeline needs buffers_for(1) input buffers), else in turn here. `tracker` (camera --track): its
    update(objects) sets each object's track_id and returns the counts, or None. Close the generator (or run
    it out) to join the stage threads: contextlib.closing."""
    it = iter(frames)
    staged = (Overlapped(it, pipeline, normalise=normalise, capture_stamp=RecordMaker.now, on_stop=on_stop)
              if overlap else Serial(it, pipeline, normalise=normalise, capture_stamp=RecordMaker.now))
    with staged:
        for f in staged:
            if stop is not None and stop.is_set():
                return
            timer.frame_ns = {}
            for stage, ns in f.stages_ns.items():
                timer.add(stage, ns)
            objects = pipeline.finish(f.image, f.prepared, timer)
            counts = None
            if tracker is not None:
                with timer("track"):
                    counts = tracker.update(objects)
            yield FrameResult(f.index, f.captured, f.image, objects, counts, f)


def normalise(frame: np.ndarray) -> np.ndarray:
    """Any channel count to 3-channel BGR uint8 (gray cameras, BGRA, 16-bit depth-like frames)."""
    if frame.dtype != np.uint8:
        frame = (frame / max(1, np.iinfo(frame.dtype).max if frame.dtype.kind in "ui" else 1) * 255).astype(np.uint8)
    return to_bgr(frame) if frame.ndim != 3 or frame.shape[2] != 3 else frame
