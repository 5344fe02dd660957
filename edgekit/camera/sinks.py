"""Where annotated frames and results go: `display://0`, a video file, an image folder, JSON lines.
Files are written under a temporary name and renamed when closed, so an interrupted run still leaves a
playable video and never a half-written one under the final name."""
from __future__ import annotations

import json
import os
import queue as queue_mod
import sys
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgekit.errors import EdgekitError

VIDEO_EXTS = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "mp4v", ".mov": "mp4v"}


class Sink:
    name = "sink"
    wants_frames = True  # False: results only (JSON lines), no drawing needed for it

    def write(self, frame: np.ndarray, result: dict[str, Any]) -> None: ...

    def close(self) -> None: ...

    @property
    def stop_requested(self) -> bool:
        return False


class VideoSink(Sink):
    """Encodes on its own thread (a bounded queue of frame copies), so encoding does not stall the loop;
    when the encoder falls behind by more than `queue` frames, the loop waits (no frame is lost)."""

    def __init__(self, path: str, fps: float, queue: int = 8) -> None:
        self.path, self.fps = Path(path), fps
        self.tmp = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self.name = str(path)
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None
        self.frames = 0
        self._q: queue_mod.Queue = queue_mod.Queue(maxsize=queue)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def write(self, frame: np.ndarray, result: dict[str, Any]) -> None:
        if self._error is not None:
            raise EdgekitError(f"writing {self.path} failed: {self._error}")
        if self.writer is None:
            self._open(frame)
        if (frame.shape[1], frame.shape[0]) != self.size:  # a source that changes size mid-stream
            frame = cv2.resize(frame, self.size)
        self._q.put(frame.copy())
        self.frames += 1

    def _open(self, frame: np.ndarray) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        h, w = frame.shape[:2]
        self.size = (w, h)
        fourcc = cv2.VideoWriter_fourcc(*VIDEO_EXTS[self.path.suffix.lower()])
        self.writer = cv2.VideoWriter(str(self.tmp), fourcc, self.fps, self.size)
        if not self.writer.isOpened():
            raise EdgekitError(f"OpenCV cannot write {self.path.suffix} video here: try an .avi output")
        self._thread = threading.Thread(target=self._encode, name="edgekit-video-writer", daemon=True)
        self._thread.start()

    def _encode(self) -> None:
        while (frame := self._q.get()) is not None:
            try:
                self.writer.write(frame)
            except Exception as e:  # surfaced to the loop on its next write
                self._error = e

    def close(self) -> None:
        if self.writer is not None:
            self._q.put(None)
            self._thread.join()
            self.writer.release()
            self.writer = None
            os.replace(self.tmp, self.path)


class ImageSequenceSink(Sink):
    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.name = str(folder)
        self.index = 0

    def write(self, frame: np.ndarray, result: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        dest = self.folder / f"frame_{self.index:06d}.jpg"
        tmp = self.folder / f".frame_{self.index:06d}.partial.jpg"
        if not cv2.imwrite(str(tmp), frame):
            raise EdgekitError(f"could not write {dest}")
        os.replace(tmp, dest)
        self.index += 1


class JsonlSink(Sink):
    wants_frames = False

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.name = str(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.partial")
        self.f = open(self.tmp, "w")

    def write(self, frame: np.ndarray, result: dict[str, Any]) -> None:
        self.f.write(json.dumps(result, separators=(",", ":")) + "\n")

    def close(self) -> None:
        if not self.f.closed:
            self.f.close()
            os.replace(self.tmp, self.path)


class DisplaySink(Sink):
    def __init__(self, title: str = "edgekit") -> None:
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise EdgekitError("display://0 needs a display (DISPLAY is not set): run with --headless and an "
                               "output file, or set DISPLAY=:0 when a monitor is attached to the Jetson")
        self.title, self.name, self._stop = title, "display://0", False

    def write(self, frame: np.ndarray, result: dict[str, Any]) -> None:
        cv2.imshow(self.title, frame)
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self._stop = True

    @property
    def stop_requested(self) -> bool:
        return self._stop

    def close(self) -> None:
        cv2.destroyWindow(self.title)


def open_sink(uri: str, fps: float) -> Sink:
    if uri.startswith("display://"):
        return DisplaySink()
    p = Path(uri)
    if p.suffix.lower() in VIDEO_EXTS:
        return VideoSink(uri, fps)
    if p.suffix.lower() in (".jsonl", ".ndjson"):
        return JsonlSink(uri)
    if p.suffix == "" or p.is_dir() or uri.endswith("/"):
        return ImageSequenceSink(uri)
    raise EdgekitError(f"output '{uri}': use display://0, a video file ({', '.join(VIDEO_EXTS)}), a .jsonl file "
                       "or a folder for an image sequence")
