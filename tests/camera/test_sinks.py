"""The threaded video sink: every frame written, in order and as it was when handed over (even when the caller
reuses its array at once), a bounded number of buffers with backpressure, errors surfaced, the file renamed
into place only when finalised."""
from __future__ import annotations

import os
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from edgekit.camera import sinks
from edgekit.camera.outputs import open_output
from edgekit.camera.sinks import JsonlSink, VideoSink
from edgekit.errors import EdgekitError


class RecordingWriter:
    """A cv2.VideoWriter stand-in that keeps a copy of each frame, what buffer it came in, and the encoder
    thread's nice value; `gate` (when set up) holds every write until it is opened."""

    slow = 0.0  # seconds each write takes

    def __init__(self, path, fourcc, fps, size):
        self.path, self.size = path, size
        self.frames: list[np.ndarray] = []
        self.buffer_ids: set[int] = set()
        self.nice: list[int] = []
        self.gate: threading.Event | None = None
        self.fail_at: int | None = None
        open(path, "wb").close()

    def isOpened(self):
        return True

    def write(self, frame):
        if self.gate is not None:
            self.gate.wait()
        time.sleep(self.slow)  # the caller overwrites its array meanwhile
        if self.fail_at is not None and len(self.frames) == self.fail_at:
            raise RuntimeError("disk full")
        self.frames.append(frame.copy())
        self.buffer_ids.add(id(frame))
        if sys.platform.startswith("linux"):
            self.nice.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    def release(self):
        pass


@pytest.fixture
def recording(monkeypatch):
    made: list[RecordingWriter] = []

    def factory(*args, **kw):
        made.append(RecordingWriter(*args, **kw))
        return made[-1]

    monkeypatch.setattr(sinks.cv2, "VideoWriter", factory)
    return made


def _frame(i: int, shape=(24, 32, 3)) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, shape, dtype=np.uint8)


def test_frames_written_in_order_and_unmodified_when_the_caller_reuses_its_array(recording, tmp_path):
    sink = VideoSink(str(tmp_path / "v.mp4"), 10, queue=3)
    buf = np.empty((24, 32, 3), np.uint8)
    for i in range(40):
        buf[...] = _frame(i)  # one array for every frame, as a loop that reads into its buffer does
        sink.write(buf, {})
        buf[...] = 255  # and draws on it again at once
    sink.close()
    w = recording[0]
    assert len(w.frames) == 40 and all(np.array_equal(f, _frame(i)) for i, f in enumerate(w.frames))
    assert len(w.buffer_ids) <= 3  # buffers are reused, never more than the queue's bound


def test_slow_encoder_never_sees_a_frame_overwritten(recording, tmp_path, monkeypatch):
    monkeypatch.setattr(RecordingWriter, "slow", 0.002)
    sink = VideoSink(str(tmp_path / "v.mp4"), 10, queue=2)
    buf = np.empty((24, 32, 3), np.uint8)
    for i in range(15):
        buf[...] = _frame(i)
        sink.write(buf, {})
    sink.close()
    assert [f.tobytes() for f in recording[0].frames] == [_frame(i).tobytes() for i in range(15)]


def test_backpressure_bounds_frames_in_flight(recording, tmp_path):
    sink = VideoSink(str(tmp_path / "v.mp4"), 10, queue=4)
    sink.write(_frame(0), {})  # opens the writer and starts the encoder
    gate = recording[0].gate = threading.Event()
    written = []

    def produce():
        for i in range(1, 10):
            sink.write(_frame(i), {})
            written.append(i)

    t = threading.Thread(target=produce)
    t.start()
    time.sleep(0.3)
    assert len(written) <= 4  # the encoder is stuck: the loop waits instead of queueing without bound
    gate.set()
    t.join(5)
    sink.close()
    assert written == list(range(1, 10))
    assert [f.tobytes() for f in recording[0].frames] == [_frame(i).tobytes() for i in range(10)]


def test_encoder_error_surfaces_on_the_next_write_and_the_file_is_still_finalised(recording, tmp_path):
    sink = VideoSink(str(tmp_path / "v.mp4"), 10, queue=2)
    sink.write(_frame(0), {})
    recording[0].fail_at = 1
    sink.write(_frame(1), {})
    with pytest.raises(EdgekitError, match="disk full"):
        for i in range(2, 50):  # the failure shows on some later write, not necessarily the very next
            sink.write(_frame(i), {})
            time.sleep(0.01)
    sink.close()
    assert (tmp_path / "v.mp4").exists() and not list(tmp_path.glob(".*partial*"))


def test_frames_of_another_size_are_resized(recording, tmp_path):
    sink = VideoSink(str(tmp_path / "v.mp4"), 10)
    sink.write(_frame(0), {})
    sink.write(_frame(1, (48, 64, 3)), {})
    sink.close()
    assert [f.shape for f in recording[0].frames] == [(24, 32, 3)] * 2
    assert np.array_equal(recording[0].frames[1], cv2.resize(_frame(1, (48, 64, 3)), (32, 24)))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_encoder_thread_runs_nicer_than_the_loop(recording, tmp_path):
    sink = VideoSink(str(tmp_path / "v.mp4"), 10, encoder_nice=3)
    sink.write(_frame(0), {})
    sink.close()
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert recording[0].nice == [min(19, mine + 3)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine  # the loop's own is untouched


def test_real_video_round_trip_is_renamed_into_place_when_closed(tmp_path):
    path = tmp_path / "out" / "v.avi"
    sink = open_output(str(path), 10)
    assert isinstance(sink, VideoSink)
    buf = np.empty((48, 64, 3), np.uint8)
    levels = [20 + 10 * i for i in range(20)]
    for v in levels:
        buf[...] = v
        sink.write(buf, {})
        buf[...] = 0
    assert not path.exists()  # only the partial file until the video is finalised
    sink.close()
    assert path.exists() and not list(path.parent.glob(".*partial*"))
    cap = cv2.VideoCapture(str(path))
    got = []
    while (r := cap.read())[0]:
        got.append(float(r[1].mean()))
    assert np.allclose(got, levels, atol=3)  # MJPG of flat frames: every frame, in order


def test_jsonl_sink_writes_compact_lines_atomically(tmp_path):
    sink = JsonlSink(str(tmp_path / "r.jsonl"))
    sink.write(None, {"frame": 0, "objects": [{"box": [1.5, 2.0, 3.0, 4.0], "label": "3"}]})
    assert not (tmp_path / "r.jsonl").exists()
    sink.close()
    assert (tmp_path / "r.jsonl").read_text() == '{"frame":0,"objects":[{"box":[1.5,2.0,3.0,4.0],"label":"3"}]}\n'


def test_overlay_is_drawn_on_the_encoder_thread_onto_the_copy_only(recording, tmp_path):
    drawn_on: list[str] = []

    def overlay(img):  # what the loop hands over: draws in place
        drawn_on.append(threading.current_thread().name)
        img[2:6, 3:9] = (0, 255, 0)

    sink = VideoSink(str(tmp_path / "v.mp4"), 10, queue=2)
    frames = [_frame(i) for i in range(6)]
    for i, f in enumerate(frames):
        sink.write(f, {}, overlay if i % 2 == 0 else None)  # odd frames: no overlay
    sink.close()
    assert all(np.array_equal(f, _frame(i)) for i, f in enumerate(frames))  # the caller's frames untouched
    assert drawn_on == ["edgekit-video-writer"] * 3 and len(sink.draw_ns) == 3
    for i, got in enumerate(recording[0].frames):
        want = _frame(i)
        if i % 2 == 0:
            want[2:6, 3:9] = (0, 255, 0)
        assert np.array_equal(got, want)
