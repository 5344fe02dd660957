"""The loop's overlapped stages (edgekit.camera.overlap): frames in order, the stages really overlap, errors and
Ctrl-C reach the caller's thread, and both stage threads are joined however the stream ends. A fake pipeline
drives the mechanics; the loop itself runs a real tiny YOLO on ONNX Runtime."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgekit.camera.loop import CameraConfig, run_camera, runner_threads
from edgekit.camera.overlap import Overlapped, buffers_for
from edgekit.camera.pipeline import Prepared
from edgekit.errors import EdgekitError

STAGE_THREADS = ("edgekit-read", "edgekit-infer")


def _stage_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in STAGE_THREADS]


class FakePipeline:
    """prepare / infer / release as Pipeline has them; infer sleeps a seeded random time and can be told to wait
    for an event or to raise. Mechanics only: no model."""

    def __init__(self, seed: int = 0, fail_at: int = -1, fail_with: type[BaseException] = RuntimeError) -> None:
        self.rng = np.random.default_rng(seed)
        self.fail_at, self.fail_with = fail_at, fail_with
        self.prepared_while_inferring: list[int] = []
        self.inferring: int | None = None
        self.gate: dict[int, threading.Event] = {}  # frame -> event infer waits for
        self.released = 0

    def prepare(self, frame: np.ndarray, timer) -> Prepared:
        with timer("preprocess"):
            n = int(frame[0, 0, 0])
            if self.inferring is not None:
                self.prepared_while_inferring.append(n)
            if n - 1 in self.gate:
                self.gate[n - 1].set()
            time.sleep(float(self.rng.uniform(0, 0.004)))
            return Prepared(blob=frame[:1, :1].copy())

    def infer(self, p: Prepared, timer) -> Prepared:
        n = int(p.blob[0, 0, 0])
        with timer("detect"):
            self.inferring = n
            if n == self.fail_at:
                raise self.fail_with(f"infer failed on frame {n}")
            if n in self.gate and not self.gate[n].wait(30):
                raise AssertionError(f"frame {n + 1} was not prepared while frame {n} was being inferred")
            time.sleep(float(self.rng.uniform(0, 0.004)))
            p.pred = np.array([n])
            self.inferring = None
        return p

    def release(self, p: Prepared) -> None:
        self.released += 1


def _frames(n: int, error_at: int = -1):
    for i in range(n):
        if i == error_at:
            raise EdgekitError(f"source failed at frame {i}")
        yield np.full((4, 4, 3), i, np.uint8)


def _overlapped(frames, pipeline) -> Overlapped:
    return Overlapped(frames, pipeline, normalise=lambda f: f, capture_stamp=time.monotonic)


def test_frames_come_out_in_order_with_their_stage_times():
    fake = FakePipeline()
    with _overlapped(_frames(60), fake) as staged:
        got = [(f.index, int(f.image[0, 0, 0]), int(f.prepared.pred[0]), sorted(f.stages_ns)) for f in staged]
    assert [g[:3] for g in got] == [(i, i, i) for i in range(60)]
    assert all(g[3] == ["capture", "detect", "preprocess", "queued"] for g in got)
    assert staged.alive == [] and _stage_threads() == []


def test_the_next_frame_is_prepared_while_one_is_inferred():
    """Frame 3's inference waits until frame 4 has been prepared: without overlap it would wait for ever."""
    fake = FakePipeline()
    fake.gate[3] = threading.Event()
    with _overlapped(_frames(8), fake) as staged:
        assert [f.index for f in staged] == list(range(8))
    assert 4 in fake.prepared_while_inferring


@pytest.mark.parametrize("where", ["infer", "source"])
def test_an_error_on_a_stage_thread_is_raised_in_frame_order(where):
    fake = FakePipeline(fail_at=5 if where == "infer" else -1)
    seen = []
    with pytest.raises((RuntimeError, EdgekitError), match="frame 5"):
        with _overlapped(_frames(20, error_at=5 if where == "source" else -1), fake) as staged:
            for f in staged:
                seen.append(f.index)
    assert seen == [0, 1, 2, 3, 4]  # every frame before the failing one, then the error
    assert staged.alive == [] and _stage_threads() == []


def test_keyboard_interrupt_in_the_runner_reaches_the_caller_and_joins_the_threads():
    fake = FakePipeline(fail_at=2, fail_with=KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        with _overlapped(_frames(20), fake) as staged:
            for _ in staged:
                pass
    assert staged.alive == [] and _stage_threads() == []


def test_leaving_early_joins_the_threads_and_gives_the_buffers_back():
    """Ctrl-C in the caller's loop (or --max-frames) while frames are still in flight: both threads end, and the
    frames left between the stages give their input buffers back."""
    fake = FakePipeline()
    with pytest.raises(KeyboardInterrupt):
        with _overlapped(_frames(1000), fake) as staged:
            for f in staged:
                if f.index == 3:
                    time.sleep(0.1)  # let the stage threads fill the queues
                    raise KeyboardInterrupt
    assert staged.alive == [] and _stage_threads() == []
    assert fake.released >= 1


def test_frames_between_prepare_and_infer_never_outnumber_the_buffers():
    """The real Pipeline's pool of input buffers is sized by buffers_for(depth): it raises when a frame finds none."""
    depth, held, most = 2, [0], [0]
    lock = threading.Lock()

    class Counting(FakePipeline):
        def prepare(self, frame, timer):
            with lock:
                held[0] += 1
                most[0] = max(most[0], held[0])
            return super().prepare(frame, timer)

        def infer(self, p, timer):
            try:
                return super().infer(p, timer)
            finally:
                with lock:
                    held[0] -= 1

    with Overlapped(_frames(40), Counting(seed=1), normalise=lambda f: f, capture_stamp=time.monotonic,
                    depth=depth) as staged:
        assert [f.index for f in staged] == list(range(40))
    assert most[0] <= buffers_for(depth)


# ---- the loop, with a real tiny YOLO on ONNX Runtime -------------------------------------------------------------

@pytest.fixture(scope="module")
def detect_video(tmp_path_factory, tiny_yolo_dir) -> Path:
    """A real MJPG video of the tiny detector's val images (real digits on real video frames), 24 frames."""
    data = Path(json.loads((tiny_yolo_dir / "manifest.json").read_text())["source"]["dataset"]["yaml"]).parent
    images = [cv2.imread(str(p)) for p in sorted((data / "images" / "val").glob("*.jpg"))]
    h, w = images[0].shape[:2]
    path = tmp_path_factory.mktemp("detect_video") / "v.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    for i in range(24):
        writer.write(np.roll(cv2.resize(images[i % len(images)], (w, h)), i, axis=1))
    writer.release()
    return path


def _run(video: Path, model: Path, out: Path, **kw) -> tuple[dict, list[dict]]:
    rep = run_camera(CameraConfig(input=str(video), output=[str(out / "r.jsonl")], detector=str(model),
                                  headless=True, threads=1, **kw))
    return rep, [json.loads(line) for line in (out / "r.jsonl").read_text().splitlines()]


def test_overlapped_loop_finds_what_the_serial_loop_finds_in_the_same_order(detect_video, tiny_yolo_dir, tmp_path):
    import sys

    before = cv2.getNumThreads(), sys.getswitchinterval()
    rep_o, rows_o = _run(detect_video, tiny_yolo_dir, tmp_path / "o", overlap=True)
    rep_s, rows_s = _run(detect_video, tiny_yolo_dir, tmp_path / "s", overlap=False)
    assert (cv2.getNumThreads(), sys.getswitchinterval()) == before  # the loop's settings are undone
    assert [r["frame"] for r in rows_o] == list(range(24))
    assert sum(len(r["objects"]) for r in rows_o) > 0  # the check below is not vacuous
    assert [r["objects"] for r in rows_o] == [r["objects"] for r in rows_s]
    assert rep_o["status"] == rep_s["status"] == "ok" and rep_o["frames"] == 24
    for stage in ("capture", "preprocess", "detect", "postprocess", "write", "frame", "overhead", "latency"):
        assert rep_o["stages_ms"][stage]["n"] == 24, stage
        assert rep_s["stages_ms"][stage]["n"] == 24, stage
    assert rep_o["stages_ms"]["queued"]["n"] == 24 and "queued" not in rep_s["stages_ms"]
    assert rep_o["threads"]["overlap"] is True and rep_s["threads"]["overlap"] is False
    assert rep_o["threads"]["detector"] == {"threads": 1, "spin": False}
    assert _stage_threads() == []


def test_max_frames_stops_the_overlapped_loop_with_the_threads_joined(detect_video, tiny_yolo_dir, tmp_path):
    rep, rows = _run(detect_video, tiny_yolo_dir, tmp_path, max_frames=5)
    assert rep["status"] == "ok" and [r["frame"] for r in rows] == list(range(5))
    assert _stage_threads() == []


def test_sigint_mid_run_ends_the_overlapped_loop_cleanly(detect_video, tiny_yolo_dir, tmp_path):
    """Ctrl-C (SIGINT to this process, handled by the loop) at frame 3 of an endless (looping) video."""
    def on_frame(rec):
        if rec["frame"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    rep = run_camera(CameraConfig(input=str(detect_video), output=[str(tmp_path / "r.jsonl")],
                                  detector=str(tiny_yolo_dir), headless=True, threads=1, loop=True), on_frame=on_frame)
    rows = (tmp_path / "r.jsonl").read_text().splitlines()
    assert rep["status"] == "interrupted" and 4 <= rep["frames"] <= 6 and len(rows) == rep["frames"]
    assert _stage_threads() == []
    assert signal.getsignal(signal.SIGINT) is before  # the loop's handler is gone again


def test_keyboard_interrupt_raised_in_the_loop_joins_the_threads_and_writes_the_report(detect_video, tiny_yolo_dir,
                                                                                      tmp_path):
    """Ctrl-C arriving as KeyboardInterrupt (the loop run off the signal handlers, as from a Python API)."""
    def on_frame(rec):
        if rec["frame"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_camera(CameraConfig(input=str(detect_video), detector=str(tiny_yolo_dir), headless=True, threads=1,
                                loop=True, report=str(tmp_path / "report.json")), on_frame=on_frame)
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["status"] == "failed" and rep["frames"] == 2 and "KeyboardInterrupt" in rep["error"]
    assert _stage_threads() == []


def test_onnxrt_threads_never_spin_and_default_to_the_idle_cores(monkeypatch):
    from edgekit import platform

    monkeypatch.setattr(platform.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(platform, "_read", lambda path: "3.10 2.00 1.00 3/120 999")  # 2 runnable besides us
    assert platform.idle_cores(samples=3, interval=0) == 2
    monkeypatch.setattr(platform, "_read", lambda path: "9.00 9.00 9.00 9/120 999")
    assert platform.idle_cores(samples=3, interval=0) == 1  # never fewer than one
    monkeypatch.setattr(platform, "_read", lambda path: "0.00 0.00 0.00 1/120 999")
    assert platform.idle_cores(samples=3, interval=0) == 4
    files = {"/proc/loadavg": "0.00 0.00 0.00 1/120 999", "/sys/fs/cgroup/cpu.max": "150000 100000"}
    monkeypatch.setattr(platform, "_read", files.get)  # a container limited to 1.5 CPUs: 2 cores, not 4
    assert platform.cpu_quota() == 2 and platform.idle_cores(samples=1) == 2
    files["/sys/fs/cgroup/cpu.max"] = "max 100000"
    assert platform.cpu_quota() is None and platform.idle_cores(samples=1) == 4
    monkeypatch.setattr("edgekit.camera.threads.idle_cores", lambda: 2)
    assert runner_threads("onnxrt", 0) == {"threads": 2, "spin": False}
    assert runner_threads("onnxrt", 3) == {"threads": 3, "spin": False}
    assert runner_threads("torch", 0) == {} and runner_threads("tinygrad", 2) == {"threads": 2}


def test_the_no_spin_option_reaches_onnx_runtime(tiny_yolo_dir):
    from edgekit.runners import load_runner

    with load_runner(tiny_yolo_dir, "onnxrt", threads=1, spin=False) as r:
        so = r.session.get_session_options()
        assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert so.intra_op_num_threads == 1


@pytest.mark.parametrize("overlap", [True, False])
def test_frame_overhead_in_cpu_time_leaves_out_waiting_and_keeps_work(detect_video, tiny_yolo_dir, monkeypatch,
                                                                       overlap):
    """Every frame's postprocess made to wait 20 ms (no CPU) and then work 15 ms of its thread's CPU time: the
    wall-clock overhead holds both, the CPU-time overhead the work only; the models' calls are in neither."""
    from edgekit.camera import pipeline as pipeline_mod

    real = pipeline_mod.yolo.postprocess

    def slow_postprocess(*a, **k):
        time.sleep(0.020)
        end = time.thread_time_ns() + 15_000_000
        while time.thread_time_ns() < end:
            pass
        return real(*a, **k)

    monkeypatch.setattr(pipeline_mod.yolo, "postprocess", slow_postprocess)
    recs = []
    run_camera(CameraConfig(input=str(detect_video), detector=str(tiny_yolo_dir), headless=True, threads=1,
                            max_frames=6, overlap=overlap), on_frame=recs.append)
    assert len(recs) == 6
    for r in recs:
        wall = r["frame_ns"] - r["det_infer_ns"] - r["cls_infer_ns"]
        cpu = r["frame_cpu_ns"] - r["infer_cpu_ns"]
        assert 15_000_000 <= cpu <= wall - 20_000_000, r
        assert 0 < r["infer_cpu_ns"] <= r["frame_cpu_ns"] and r["stages_ns"]["overhead_cpu"] == cpu


def test_loop_says_when_the_classifier_takes_one_crop_per_call(detect_video, tiny_yolo_dir, model_dir, torch_model_copy,
                                                               caplog):
    """A fixed-batch classifier behind a detector gets one call per detection: the loop says so and names the
    fix (--dynamic-batch); with a dynamic-batch export of the same classifier it says nothing."""
    import logging

    from edgekit.camera.loop import CameraConfig, run_camera
    from edgekit.export.onnx import OnnxExportConfig, onnx_from_torch

    onnx_from_torch(torch_model_copy, OnnxExportConfig(dynamic_batch=True, parity_images=8))
    said = {}
    for name, cls in (("fixed", model_dir), ("dynamic", torch_model_copy)):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="edgekit"):
            run_camera(CameraConfig(input=str(detect_video), detector=str(tiny_yolo_dir), classifier=str(cls),
                                    headless=True, threads=1, max_frames=2))
        said[name] = [r.getMessage() for r in caplog.records if "fixed batch of 1" in r.getMessage()]
    assert len(said["fixed"]) == 1 and "--dynamic-batch" in said["fixed"][0]
    assert said["dynamic"] == []
