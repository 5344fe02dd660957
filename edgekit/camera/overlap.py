"""The camera loop's stages overlapped: while the detector runs on frame n, frame n+1 is read and letterboxed and
frame n-1 is decoded, classified, drawn and written, so a frame costs about its slowest stage, not their sum.

    reader thread:     capture -> normalise -> Pipeline.prepare      (queue of `depth`)
    inference thread:  Pipeline.infer                                 (queue of `depth`)
    caller's thread:   Pipeline.finish, then the loop draws, writes and reports

The models' runners are only called from the inference thread (the classifier's from the caller's, in finish);
sinks, drawing and on_frame stay on the caller's thread. One thread per stage and FIFO queues: frames come out
in the order they were read. The reader takes a frame only when there is room for it in the queue to the
detector (a free slot), so a live camera's frame waits at most for the inference before it, not for a full
queue; at most 2 * depth + 2 frames are in flight and the pipeline needs depth + 1 input buffers
(Pipeline(buffers=...)).

Each frame carries its own stage times (ns; the threads never share a Timer): `capture`, `preprocess`,
`detect` as before, and `queued` (time spent waiting between the stages: what overlapping hides); and the CPU
time its stages took on each thread (`work_cpu_ns`, capture excluded; the caller's thread adds its part from
`t_got_cpu_ns`). An error on any thread (the source, a runner, KeyboardInterrupt in a runner) ends the stream
and is raised on the caller's thread, in frame order; close() stops the source, unblocks and joins both
threads, whatever state they are in."""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from edgekit.camera.pipeline import Pipeline, Prepared

_END = object()  # end of stream, passed down the queues
JOIN_SECONDS = 10.0  # a stage still running after this (a runner stuck in a call) is left to the daemon flag


def buffers_for(depth: int) -> int:
    """Input buffers a Pipeline needs under Overlapped(depth): `depth` being prepared or queued (the reader takes a
    slot before it reads), one being inferred."""
    return depth + 1


@dataclass
class Frame:
    """One frame through the stages."""
    index: int
    image: np.ndarray
    captured: Any  # what `capture_stamp` returned when the frame was read
    prepared: Prepared | None = None
    stages_ns: dict[str, int] = field(default_factory=dict)
    t_read_ns: int = 0  # when it left the source
    t_put_ns: int = 0  # when it was queued for the next stage
    t_got_ns: int = 0  # when the caller's thread took it
    work_ns: int = 0  # time the reader and inference threads spent on it (queue waits excluded)
    work_cpu_ns: int = 0  # CPU time those threads spent on it: on a CPU with fewer free cores than busy stages,
    # a stage's wall time also holds the other stages' turns on its core; its CPU time does not
    t_got_cpu_ns: int = 0  # the caller's thread's CPU clock (time.thread_time_ns) when it took the frame

    def add(self, stage: str, ns: int) -> None:  # Timer's interface, for Pipeline.prepare / infer
        self.stages_ns[stage] = self.stages_ns.get(stage, 0) + ns

    def __call__(self, stage: str) -> "_Span":
        return _Span(self, stage)

    def took(self, stage: str, since_ns: int) -> int:
        now = time.perf_counter_ns()
        self.add(stage, now - since_ns)
        return now


class _Span:
    __slots__ = ("frame", "stage", "t0")

    def __init__(self, frame: Frame, stage: str) -> None:
        self.frame, self.stage = frame, stage

    def __enter__(self) -> None:
        self.t0 = time.perf_counter_ns()

    def __exit__(self, *exc: object) -> None:
        self.frame.add(self.stage, time.perf_counter_ns() - self.t0)


class Serial:
    """The stages one after another on the caller's thread (--no-overlap): the same Frames as Overlapped."""

    def __init__(self, frames: Iterator[np.ndarray], pipeline: Pipeline, *, normalise: Callable[[np.ndarray], np.ndarray],
                 capture_stamp: Callable[[], Any]) -> None:
        self.frames, self.pipeline, self.normalise, self.capture_stamp = frames, pipeline, normalise, capture_stamp

    def __enter__(self) -> "Serial":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while True:
            t0 = time.perf_counter_ns()
            image = next(self.frames, None)
            if image is None:
                return
            f = Frame(index, image, self.capture_stamp())
            f.t_read_ns, c0 = f.took("capture", t0), time.thread_time_ns()
            f.image = self.normalise(f.image)
            f.prepared = self.pipeline.infer(self.pipeline.prepare(f.image, f), f)
            f.t_got_ns, f.t_got_cpu_ns = time.perf_counter_ns(), time.thread_time_ns()
            f.work_ns, f.work_cpu_ns = f.t_got_ns - f.t_read_ns, f.t_got_cpu_ns - c0
            yield f
            index += 1


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Overlapped:
    """Iterate frames that went through Pipeline.prepare and infer on two threads; the caller runs finish. Use as
    a context manager (or call close()): leaving it joins the threads."""

    def __init__(self, frames: Iterator[np.ndarray], pipeline: Pipeline, *, normalise: Callable[[np.ndarray], np.ndarray],
                 capture_stamp: Callable[[], Any], on_stop: Callable[[], Any] = lambda: None, depth: int = 1) -> None:
        self.frames, self.pipeline, self.normalise, self.capture_stamp = frames, pipeline, normalise, capture_stamp
        self.on_stop = on_stop
        self._stop = threading.Event()
        self._to_infer: queue.Queue = queue.Queue(max(1, depth))
        self._slots = threading.Semaphore(max(1, depth))  # room in _to_infer, taken before a frame is read
        self._done: queue.Queue = queue.Queue(max(1, depth))
        self._threads = [threading.Thread(target=self._guard, args=(self._read,), name="edgekit-read", daemon=True),
                         threading.Thread(target=self._guard, args=(self._infer,), name="edgekit-infer", daemon=True)]
        self._started = False

    def __enter__(self) -> "Overlapped":
        for t in self._threads:
            t.start()
        self._started = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        while True:
            item = self._get(self._done)
            if item is _END or item is None:
                return
            if isinstance(item, _Failed):
                raise item.error
            item.t_got_ns = item.took("queued", item.t_put_ns)
            item.t_got_cpu_ns = time.thread_time_ns()
            yield item

    # ---- the two threads -----------------------------------------------------------------------------------
    def _guard(self, stage: Callable[[], None]) -> None:
        try:
            stage()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread, raised there in frame order
            self._put(self._done if stage == self._infer else self._to_infer, _Failed(e))

    def _read(self) -> None:
        index = 0
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=0.05):
                continue
            t0 = time.perf_counter_ns()
            image = next(self.frames, None)
            if image is None:
                break
            f = Frame(index, image, self.capture_stamp())
            f.t_read_ns, c0 = f.took("capture", t0), time.thread_time_ns()
            f.image = self.normalise(f.image)
            f.prepared = self.pipeline.prepare(f.image, f)
            f.t_put_ns = time.perf_counter_ns()
            f.work_ns += f.t_put_ns - f.t_read_ns
            f.work_cpu_ns += time.thread_time_ns() - c0
            if not self._put(self._to_infer, f):
                self.pipeline.release(f.prepared)
                return
            index += 1
        self._put(self._to_infer, _END)

    def _infer(self) -> None:
        while True:
            f = self._get(self._to_infer)
            if f is None or f is _END or isinstance(f, _Failed):
                if f is not None:
                    self._put(self._done, f)
                return
            self._slots.release()
            t_got, c0 = f.took("queued", f.t_put_ns), time.thread_time_ns()
            self.pipeline.infer(f.prepared, f)
            f.t_put_ns = time.perf_counter_ns()
            f.work_ns += f.t_put_ns - t_got
            f.work_cpu_ns += time.thread_time_ns() - c0
            if not self._put(self._done, f):
                return

    # ---- queues that give up when stopped ------------------------------------------------------------------
    def _put(self, q: queue.Queue, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue) -> Any:
        """The next item, or None once stopped."""
        while not self._stop.is_set():
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                continue
        return None

    def close(self) -> None:
        """Stop both threads and join them (the source is asked to stop, so a live read ends too)."""
        self._stop.set()
        self.on_stop()
        if not self._started:
            return
        for t in self._threads:
            t.join(JOIN_SECONDS)
        for q in (self._to_infer, self._done):  # frames left in flight: drop them, their buffers go back
            while True:
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, Frame) and item.prepared is not None:
                    self.pipeline.release(item.prepared)

    @property
    def alive(self) -> list[str]:
        """Names of the stage threads still running (empty after close())."""
        return [t.name for t in self._threads if t.is_alive()]
