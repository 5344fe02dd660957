"""Where annotated frames and results go: `display://0`, a video file, an image folder, JSON lines (which
URI is which: outputs.py).
Files are written under a temporary name and renamed when closed, so an interrupted run still leaves a
playable video and never a half-written one under the final name. Where they go is checked before the run
starts (`check_output`); a write that fails (a full disk) ends the run with one line and removes that
output's partial file instead of renaming it into place."""
from __future__ import annotations

import json
import os
import queue as queue_mod
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.lazy import lazy_import
from edgekit.profile.timer import Samples

cv2 = lazy_import("cv2")  # imported on first use: `edgekit --help` and `info` work without OpenCV

VIDEO_EXTS = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "mp4v", ".mov": "mp4v"}


Overlay = Callable[[np.ndarray], None]  # draws a frame's results onto a frame, in place


def check_writable(path: str | os.PathLike, what: str, *, folder: bool = False) -> None:
    """Before anything runs: `path` (a file, or a folder when `folder`) can be written. Its nearest existing
    ancestor must be a folder we may write into: not a regular file, not a read-only mount."""
    p = Path(path).absolute()
    if p.exists() and p.is_dir() != folder:
        raise EdgekitError(f"{what} {path} is {'a file' if folder else 'a folder'}: give another path")
    if folder and p.is_dir():
        base = p
    else:
        base = p.parent
        while not base.exists() and base != base.parent:
            base = base.parent
    if not base.is_dir():
        raise EdgekitError(f"{what} {path}: {base} is a file, not a folder: give a path in a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise EdgekitError(f"{what} {path}: cannot write in {base} (read-only file system or no permission): "
                           "give a path in a writable folder")


def _write_failed(path: Path, e: OSError) -> EdgekitError:
    return EdgekitError(f"writing {path} failed: {e.strerror or e} (is the disk full?); the partial file was removed")


class Sink:
    name = "sink"
    wants_frames = True  # False: results only (JSON lines), no drawing needed for it
    draws_later = False  # True: write() takes the overlay and draws it off the loop (on its own thread)

    def write(self, frame: np.ndarray, result: dict[str, Any], overlay: Overlay | None = None) -> None: ...

    def close(self) -> None: ...

    def summary(self) -> dict[str, Any] | None:
        """Counts worth reporting (what was sent, dropped): the run's report and the live page show them."""
        return None

    @property
    def stop_requested(self) -> bool:
        return False


class VideoSink(Sink):
    """Encodes on its own thread, so encoding does not stall the loop. write() copies the frame into one of at
    most `queue` reusable buffers (made on first need) and queues it; the encoder hands each buffer back once
    written. So the caller may reuse or draw on its frame as soon as write() returns, no frame is allocated per
    write, and when the encoder falls `queue` frames behind the loop waits (no frame is lost). The encoder
    thread runs `encoder_nice` steps nicer than the loop (Linux), so the loop wins when both want a core
    (measured on a loaded 2-core machine: at nice 0 the encoder preempted the loop's overhead stages, median
    ~6 ms; at +5 or +10, ~2.3 ms; at +19 or SCHED_IDLE it starved and the loop waited on the full queue).
    An overlay given to write() is drawn on the encoder thread, onto the copy: the loop only copies the frame.
    The time it takes is kept in `draw_ns` (the most recent frames drawn: bounded, like the loop's timer).
    A full disk (OpenCV's writer fails silently there: checked with statvfs after each frame) ends the run,
    and the partial file is removed rather than renamed into place."""

    draws_later = True

    def __init__(self, path: str, fps: float, queue: int = 8, encoder_nice: int = 5) -> None:
        if not fps or fps <= 0:
            raise EdgekitError(f"video output {path} needs a frame rate above 0: the source gives none here, so pass "
                               "one with --fps (e.g. --fps 30)")
        self.path, self.fps = Path(path), fps
        self.tmp = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self.name = str(path)
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None
        self.frames = 0
        self.encoder_nice = encoder_nice
        self._slots = threading.Semaphore(max(1, queue))  # buffers in flight: queued or being encoded
        self._free: list[np.ndarray] = []  # buffers written and ready to reuse; last in, first out (warmest)
        self._todo: queue_mod.SimpleQueue = queue_mod.SimpleQueue()  # (buffer, overlay) to encode, in order; None: stop
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.draw_ns = Samples()
        self._min_free = 0  # bytes: less free space than this counts as a full disk

    def write(self, frame: np.ndarray, result: dict[str, Any], overlay: Overlay | None = None) -> None:
        if isinstance(self._error, OSError):
            raise _write_failed(self.path, self._error)
        if self._error is not None:
            raise EdgekitError(f"writing {self.path} failed: {self._error}")
        if self.writer is None:
            self._open(frame)
        self._take_slot()
        buf = self._free.pop() if self._free else None
        try:
            if buf is None:
                buf = np.empty((self.size[1], self.size[0], *frame.shape[2:]), frame.dtype)
            if frame.shape[:2] != buf.shape[:2]:  # a source that changes size mid-stream
                frame = cv2.resize(frame, self.size)
            np.copyto(buf, frame, casting="no")
        except BaseException:
            if buf is not None:
                self._free.append(buf)
            self._slots.release()
            raise
        self._todo.put((buf, overlay))
        self.frames += 1

    def _take_slot(self) -> None:
        """Wait for a free buffer (backpressure); fail rather than hang if the encoder thread has died."""
        while not self._slots.acquire(timeout=1.0):
            if not self._thread.is_alive():
                raise EdgekitError(f"the video encoder of {self.path} stopped ({self._error or 'no error given'})")

    def _open(self, frame: np.ndarray) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        h, w = frame.shape[:2]
        self.size = (w, h)
        fourcc = cv2.VideoWriter_fourcc(*VIDEO_EXTS[self.path.suffix.lower()])
        self.writer = cv2.VideoWriter(str(self.tmp), fourcc, self.fps, self.size)
        if not self.writer.isOpened():
            self.writer.release()
            self.writer = None
            self.tmp.unlink(missing_ok=True)
            raise EdgekitError(f"OpenCV cannot write {self.path.suffix} video of {w}x{h} at {self.fps:g} FPS here: "
                               "try an .avi output")
        self._min_free = 2 * frame.nbytes  # two raw frames: a compressed frame is far smaller
        self._thread = threading.Thread(target=self._encode, name="edgekit-video-writer", daemon=True)
        self._thread.start()

    def _encode(self) -> None:
        lower_thread_priority(self.encoder_nice)
        while (item := self._todo.get()) is not None:
            buf, overlay = item
            try:
                if overlay is not None:
                    t0 = time.perf_counter_ns()
                    overlay(buf)
                    self.draw_ns.append(time.perf_counter_ns() - t0)
                self.writer.write(buf)
                self._check_space()
            except Exception as e:  # surfaced to the loop on its next write
                self._error = e
            finally:  # the writer copies the pixels (to the codec's own frame) before returning
                self._free.append(buf)
                self._slots.release()

    def _check_space(self) -> None:
        st = os.statvfs(self.tmp)
        if st.f_bavail * st.f_frsize < self._min_free:
            raise OSError(28, "No space left on device")

    def close(self) -> None:
        """Finalise: the video so far, renamed into place; after a disk error, the partial file is removed
        instead. Safe after a failed open and when called twice."""
        if self._thread is not None:
            self._todo.put(None)
            self._thread.join()
            self._thread = None
        if self.writer is None:
            return
        self.writer.release()
        self.writer = None
        self._free.clear()
        if isinstance(self._error, OSError):
            self.tmp.unlink(missing_ok=True)
            raise _write_failed(self.path, self._error)
        os.replace(self.tmp, self.path)


def lower_thread_priority(nice: int) -> None:
    """Make the calling thread `nice` steps nicer. Linux only: there a thread id names one thread, elsewhere
    the call would renice the whole process. Best effort (a container may forbid it)."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:
        pass


class ImageSequenceSink(Sink):
    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.name = str(folder)
        self.index = 0

    def write(self, frame: np.ndarray, result: dict[str, Any], overlay: Overlay | None = None) -> None:
        dest = self.folder / f"frame_{self.index:06d}.jpg"
        tmp = self.folder / f".frame_{self.index:06d}.partial.jpg"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            ok = cv2.imwrite(str(tmp), frame)
            if ok:
                os.replace(tmp, dest)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise _write_failed(dest, e) from None
        if not ok:
            tmp.unlink(missing_ok=True)
            raise EdgekitError(f"could not write {dest} (is the disk full?)")
        self.index += 1


class JsonlSink(Sink):
    wants_frames = False

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.name = str(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.partial")
        self.f = open(self.tmp, "w")

    def write(self, frame: np.ndarray, result: dict[str, Any], overlay: Overlay | None = None) -> None:
        try:
            self.f.write(json.dumps(result, separators=(",", ":")) + "\n")
        except OSError as e:
            self._discard()
            raise _write_failed(self.path, e) from None

    def close(self) -> None:
        if not self.f.closed:
            try:
                self.f.close()
            except OSError as e:
                self._discard()
                raise _write_failed(self.path, e) from None
            os.replace(self.tmp, self.path)

    def _discard(self) -> None:
        try:
            self.f.close()
        except OSError:  # the buffer could not be flushed: the file is removed anyway
            pass
        self.tmp.unlink(missing_ok=True)


class DisplaySink(Sink):
    def __init__(self, title: str = "edgekit") -> None:
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise EdgekitError("display://0 needs a display (DISPLAY is not set): run with --headless and an "
                               "output file, or set DISPLAY=:0 when a monitor is attached to the Jetson")
        self.title, self.name, self._stop = title, "display://0", False

    def write(self, frame: np.ndarray, result: dict[str, Any], overlay: Overlay | None = None) -> None:
        cv2.imshow(self.title, frame)
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self._stop = True

    @property
    def stop_requested(self) -> bool:
        return self._stop

    def close(self) -> None:
        cv2.destroyWindow(self.title)

