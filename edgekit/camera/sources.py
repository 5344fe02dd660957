"""Frame sources by URI, as jetson-inference users write them:

    csi://0                      MIPI CSI camera through GStreamer nvarguscamerasrc (JetPack's OpenCV)
    /dev/video0, v4l2:///dev/video0, 0     USB / V4L2 camera
    rtsp://user:pass@host/stream  network stream (credentials are never logged)
    clip.mp4, file:///path/clip.mp4        video file
    folder/, "frames/*.jpg"       images, in name order

Live sources are read on a thread into a one-slot latest-frame buffer, so latency never grows (older frames
are dropped and counted) and a stalled or dropped stream reconnects with backoff. Files and images are read
in order, so evaluation is deterministic.

No source can hang the loop: a source that gives no frame for `no_frame_seconds` ends the run with an
EdgekitError (reconnect attempts included; 0 waits forever), and so do files that fail deterministically
(a folder whose every image is unreadable, a video that gives nothing after a rewind or a reopen: truncated
while read). Warnings about a failure that repeats are rate-limited (`RepeatLog`).
"""
from __future__ import annotations

import glob
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from edgekit.data.imagefolder import IMAGE_EXTS, read_image
from edgekit.errors import EdgekitError
from edgekit.lazy import lazy_import

cv2 = lazy_import("cv2")  # imported on first use: `edgekit --help` and `info` work without OpenCV

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # csi | v4l2 | rtsp | file | images
    target: str  # device index/path, URL, file path or glob
    live: bool


def redact(uri: str) -> str:
    """The URI without its password (rtsp://user:***@host/...), for logs and reports."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def parse_source(uri: str | int) -> SourceSpec:
    s = str(uri).strip()
    if s.isdigit():
        return SourceSpec("v4l2", s, True)
    if s.startswith("csi://"):
        sensor = s[len("csi://"):] or "0"
        if not sensor.isdigit():
            raise EdgekitError(f"csi source '{s}': expected csi://<sensor-id>, e.g. csi://0")
        return SourceSpec("csi", sensor, True)
    if s.startswith("v4l2://"):
        return SourceSpec("v4l2", s[len("v4l2://"):], True)
    if s.startswith("/dev/video"):
        return SourceSpec("v4l2", s, True)
    if re.match(r"^(rtsp|rtsps|rtmp|http|https)://", s):
        return SourceSpec("rtsp", s, True)
    if s.startswith("file://"):
        s = s[len("file://"):]
    if any(ch in s for ch in "*?["):
        return SourceSpec("images", s, False)
    p = Path(s)
    if p.is_dir():
        return SourceSpec("images", str(p), False)
    if p.is_file():
        kind = "images" if p.suffix.lower() in IMAGE_EXTS else "file"
        return SourceSpec(kind, str(p), False)
    raise EdgekitError(f"input '{redact(s)}' is not a camera URI (csi://0, /dev/video0, rtsp://...) nor an existing "
                       "file or folder")


def csi_pipeline(sensor: str, width: int, height: int, fps: int, flip: int = 0) -> str:
    """GStreamer pipeline for a CSI camera on Jetson: NVMM capture, nvvidconv to BGRx, BGR into appsink."""
    return (f"nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM), width={width}, height={height}, "
            f"framerate={fps}/1, format=NV12 ! nvvidconv flip-method={flip} ! video/x-raw, width={width}, "
            f"height={height}, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! "
            "appsink drop=true max-buffers=1 sync=false")


def has_gstreamer() -> bool:
    m = re.search(r"GStreamer:\s*(\w+)", cv2.getBuildInformation())
    return bool(m and m.group(1).upper() == "YES")


@dataclass
class CaptureOptions:
    width: int = 1280  # CSI / V4L2 capture size
    height: int = 720
    fps: int = 30
    flip: int = 0  # CSI nvvidconv flip-method (0-7)
    loop: bool = False  # restart files at the end
    reconnect: bool = True  # live sources: reopen after a stall or disconnect
    stall_seconds: float = 5.0  # no frame for this long counts as a stall
    max_reconnects: int = 10  # give up after this many attempts in a row; 0: no limit (no_frame_seconds still holds)
    no_frame_seconds: float = 30.0  # end with an error after this long without a frame (any source); 0: never
    backoff: tuple[float, float] = (0.5, 8.0)  # first and largest wait between attempts, doubling
    open_capture: object = field(default=None, repr=False)  # tests: a callable(spec) -> cv2.VideoCapture-like


class RepeatLog:
    """Warnings about a failure that may repeat without end, rate-limited: the first, then one every `every`
    occurrences or `seconds` seconds, whichever comes first, each with the count so far."""

    def __init__(self, logger: logging.Logger, every: int = 100, seconds: float = 10.0) -> None:
        self.log, self.every, self.seconds = logger, every, seconds
        self.count, self._last_n, self._last_t = 0, 0, 0.0

    def warning(self, msg: str, *args: object) -> None:
        self.count += 1
        now = time.monotonic()
        if self.count == 1 or self.count - self._last_n >= self.every or now - self._last_t >= self.seconds:
            suffix = "" if self.count == 1 else f" ({self.count} times so far)"
            self.log.warning(msg + suffix, *args)
            self._last_n, self._last_t = self.count, now


class FrameSource:
    """Iterate frames (uint8 BGR); `stats` counts what was read, dropped and reconnected."""

    def __init__(self, uri: str | int, options: CaptureOptions | None = None) -> None:
        self.spec = parse_source(uri)
        self.name = redact(str(uri))
        self.opt = options or CaptureOptions()
        self.stats = {"frames": 0, "dropped": 0, "reconnects": 0, "bad_frames": 0}
        self._stop = threading.Event()
        self._cap = None
        self._images: list[str] = []
        self._latest: tuple[int, np.ndarray] | None = None
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._seq = 0
        self._bad_log = RepeatLog(log)

    # ---- opening ------------------------------------------------------------------------------------
    def open(self) -> "FrameSource":
        if self.spec.kind == "images":
            self._images = _list_images(self.spec.target)
            return self
        self._cap = self._open_capture()
        if self.spec.live:
            self._thread = threading.Thread(target=self._reader, name="edgekit-capture", daemon=True)
            self._thread.start()
        return self

    def _open_capture(self):
        if self.opt.open_capture is not None:
            cap = self.opt.open_capture(self.spec)
        elif self.spec.kind == "csi":
            if not has_gstreamer():
                raise EdgekitError("csi:// needs OpenCV built with GStreamer: pip's opencv-python has none. On Jetson, "
                                   "use JetPack's OpenCV 4.8 (sudo apt install libopencv-python; Ubuntu's python3-opencv is "
                                   "another build) in a venv made with --system-site-packages, and pip uninstall "
                                   "opencv-python opencv-python-headless")
            o = self.opt
            cap = cv2.VideoCapture(csi_pipeline(self.spec.target, o.width, o.height, o.fps, o.flip), cv2.CAP_GSTREAMER)
        elif self.spec.kind == "v4l2":
            t = self.spec.target
            cap = cv2.VideoCapture(int(t) if t.isdigit() else t, cv2.CAP_V4L2)
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.opt.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.opt.height)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        elif self.spec.kind == "rtsp":  # bounded waits, so a dead stream is noticed and reconnected
            ms = int(self.opt.stall_seconds * 1000)
            cap = cv2.VideoCapture(self.spec.target, cv2.CAP_FFMPEG,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        else:
            cap = cv2.VideoCapture(self.spec.target)
        if cap is None or not cap.isOpened():
            hint = {"v4l2": "is the camera plugged in, and is the device free (v4l2-ctl --list-devices)?",
                    "rtsp": "check the address, the credentials and that the stream is up (try it in ffplay)",
                    "csi": "is the camera connected and nvargus-daemon running (sudo systemctl restart nvargus-daemon)?",
                    "file": "is it a video OpenCV can decode (mp4/avi with H.264/MJPEG)?"}[self.spec.kind]
            raise EdgekitError(f"could not open {self.spec.kind} source '{self.name}': {hint}")
        return cap

    # ---- reading ------------------------------------------------------------------------------------
    def __iter__(self):
        if self.spec.kind == "images":
            yield from self._iter_images()
        elif self.spec.live:
            yield from self._iter_live()
        else:
            yield from self._iter_file()

    def _iter_images(self):
        while True:
            good = 0  # in this pass: a pass with none ends the run (with --loop it would spin for ever)
            for path in self._images:
                if self._stop.is_set():
                    return
                img = _read_quietly(path)
                if img is None:
                    self.stats["bad_frames"] += 1
                    self._bad_log.warning("skipping unreadable image %s", path)
                    continue
                good += 1
                self.stats["frames"] += 1
                yield img
            if not good:
                raise EdgekitError(f"none of the {len(self._images)} image(s) of '{self.name}' could be read: "
                                   "check that they are images (png/jpg/...) and not truncated")
            if not self.opt.loop:
                return

    def _iter_file(self):
        """In order; with `loop`, rewind at the end. A rewind (then a reopen) that gives no frame ends the run:
        a file cut while read would otherwise fail and rewind for ever."""
        since_rewind, retries, last_frame = 0, 0, time.monotonic()
        while not self._stop.is_set():
            ok, frame = self._cap.read()
            if ok and frame is not None:
                since_rewind, retries, last_frame = since_rewind + 1, 0, time.monotonic()
                self.stats["frames"] += 1
                yield frame
                continue
            if not self.stats["frames"]:
                raise EdgekitError(f"video '{self.name}' gave no frame: is it truncated, or in a codec OpenCV "
                                   "cannot decode (mp4/avi with H.264/MJPEG)?")
            if not self.opt.loop:
                return
            if since_rewind == 0:  # the rewind gave nothing: reopen once, then give up
                retries += 1
                if retries > 2 or self._timed_out(last_frame):
                    raise EdgekitError(f"video '{self.name}' gives no frame any more after rewinding and reopening "
                                       f"(it was {self.stats['frames']} frame(s) in): was it truncated or replaced "
                                       "while being read?")
                self._bad_log.warning("video '%s' gave no frame after a rewind; reopening it", self.name)
                self._cap.release()
                try:
                    self._cap = self._open_capture()
                except EdgekitError:
                    self._cap = _Closed()
                continue
            since_rewind = 0
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)

    def _timed_out(self, last_frame: float) -> bool:
        return self.opt.no_frame_seconds > 0 and time.monotonic() - last_frame > self.opt.no_frame_seconds

    def _iter_live(self):
        last, last_frame = 0, time.monotonic()
        while not self._stop.is_set():
            with self._cond:
                self._cond.wait_for(lambda: self._stop.is_set() or self._error is not None
                                    or (self._latest is not None and self._latest[0] != last), timeout=0.5)
                if self._error is not None:
                    raise self._error
                if self._latest is None or self._latest[0] == last:
                    if self._timed_out(last_frame) and not self._stop.is_set():
                        raise EdgekitError(f"source '{self.name}' gave no frame for {self.opt.no_frame_seconds:g} s "
                                           f"({self.stats['reconnects']} reconnect attempt(s)): check the camera or "
                                           "stream, or wait longer with --source-timeout (0: for ever)")
                    continue
                seq, frame = self._latest
                last_frame = time.monotonic()
            self.stats["dropped"] += seq - last - 1  # frames overwritten before the loop took them
            last = seq
            self.stats["frames"] += 1
            yield frame

    def _reader(self) -> None:
        try:
            self._read_forever()
        except BaseException as e:  # a backend that raises: surface it to the loop instead of hanging it
            self._fail(e if isinstance(e, EdgekitError) else
                       EdgekitError(f"source '{self.name}' failed: {type(e).__name__}: {e}"))

    def _read_forever(self) -> None:
        """Capture thread: keep only the newest frame; on stall or error, reopen with backoff."""
        failures, last_ok = 0, time.monotonic()
        while not self._stop.is_set():
            ok, frame = (self._cap.read() if self._cap is not None else (False, None))
            if ok and frame is not None:
                failures, last_ok = 0, time.monotonic()
                with self._cond:
                    self._seq += 1
                    self._latest = (self._seq, frame)
                    self._cond.notify_all()
                continue
            if self._cap is not None and time.monotonic() - last_ok < self.opt.stall_seconds:
                time.sleep(0.005)  # a transient miss: try again until it lasts long enough to be a stall
                continue
            if not self.opt.reconnect or 0 < self.opt.max_reconnects <= failures:
                self._fail(EdgekitError(f"source '{self.name}' stopped delivering frames after {failures} "
                                        "reconnect attempt(s); check the camera or stream"))
                return
            failures += 1
            self.stats["reconnects"] += 1
            wait = min(self.opt.backoff[0] * 2 ** (failures - 1), self.opt.backoff[1])
            log.warning("source '%s' stalled; reconnecting in %.1f s (attempt %d/%d)", self.name, wait, failures,
                        self.opt.max_reconnects)
            if self._stop.wait(wait):
                return
            try:
                if self._cap is not None:
                    self._cap.release()
                self._cap = self._open_capture()
                last_ok = time.monotonic()
            except EdgekitError:
                self._cap = None

    def _fail(self, err: BaseException) -> None:
        with self._cond:
            self._error = err
            self._cond.notify_all()

    # ---- closing ------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask iteration to end (safe from a signal handler or another thread)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> "FrameSource":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def fps(self) -> float:
        if self._cap is not None:
            f = self._cap.get(cv2.CAP_PROP_FPS)
            if f and 1 <= f <= 240:
                return float(f)
        return float(self.opt.fps)


def _read_quietly(path: str) -> np.ndarray | None:
    """read_image without OpenCV's own decoder warnings: one per broken file, printed on stderr past our
    logging, so a looping folder of broken images would print them without end. The skip is logged (RepeatLog)."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        return read_image(path)
    finally:
        cv2.utils.logging.setLogLevel(level)


class _Closed:
    """A capture that could not be reopened: reads nothing."""

    def read(self):
        return False, None

    def set(self, *args: object) -> bool:
        return False

    def get(self, prop: int) -> float:
        return 0.0

    def release(self) -> None:
        pass


def _list_images(target: str) -> list[str]:
    p = Path(target)
    if p.is_dir():
        files = sorted(str(f) for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS)
    elif p.is_file():
        files = [str(p)]
    else:
        files = sorted(f for f in glob.glob(target) if Path(f).suffix.lower() in IMAGE_EXTS)
    if not files:
        raise EdgekitError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) match '{target}'")
    return files
