"""The camera loop end to end with real ONNX Runtime models: results, outputs, report, and a loop that
survives what real cameras do (dying mid-stream, odd frames, Ctrl-C)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgekit.camera.loop import CameraConfig, run_camera
from edgekit.camera.sources import CaptureOptions
from edgekit.errors import EdgekitError

from camera_fakes import FakeCamera

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digit_video(tmp_path_factory, mnist5k) -> tuple[Path, list[int]]:
    """A real video (MJPG avi) whose frames are real MNIST digits, enlarged to 96x96, one digit per frame."""
    images, labels = mnist5k
    pool = np.flatnonzero(labels <= 2)  # the fixture classifier knows digits 0, 1 and 2
    idx = np.random.default_rng(3).choice(pool, 40, replace=False)
    path = tmp_path_factory.mktemp("video") / "digits.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 96))
    for i in idx:
        w.write(cv2.cvtColor(cv2.resize(images[i], (96, 96)), cv2.COLOR_GRAY2BGR))
    w.release()
    return path, [int(labels[i]) for i in idx]


def _frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    return n


def test_classifier_on_a_video_writes_results_video_and_report(digit_video, model_dir, tmp_path):
    video, truth = digit_video
    out = tmp_path / "out"
    r = run_camera(CameraConfig(input=str(video), output=[str(out / "a.avi"), str(out / "r.jsonl")],
                                classifier=str(model_dir), report=str(out / "report.json"), threads=1))
    rows = [json.loads(line) for line in (out / "r.jsonl").read_text().splitlines()]
    assert [row["frame"] for row in rows] == list(range(len(truth)))
    got = [int(row["objects"][0]["label"]) for row in rows]
    assert np.mean(np.array(got) == truth) >= 0.75  # the fixture model gets ~90% of single digits
    assert _frames(out / "a.avi") == len(truth)
    rep = json.loads((out / "report.json").read_text())
    assert rep["frames"] == len(truth) and not rep["interrupted"]
    for stage in ("capture", "classify_pre", "classify", "write", "frame", "overhead"):
        assert rep["stages_ms"][stage]["n"] == len(truth) and rep["stages_ms"][stage]["p50_ms"] >= 0
    # only the video wants frames: it draws the overlays on its own thread, off the loop's frame time
    assert "draw" not in rep["stages_ms"] and rep["draw_on_writer_thread_ms"]["n"] == len(truth)
    f = rep["stages_ms"]["frame"]["p50_ms"]
    assert rep["stages_ms"]["overhead"]["p50_ms"] < f  # inference is part of the frame time
    assert rep["rss"]["peak_mb"] >= rep["rss"]["start_mb"] - 1 > 0  # statm and ru_maxrss round differently
    assert r == rep


def test_image_outputs_get_the_overlays_drawn_in_the_loop(digit_video, model_dir, tmp_path):
    """An image folder shows the loop's own frame, so the loop draws (a 'draw' stage) and the video beside it
    gets the drawn frame as it is; without overlays (--no-draw) the saved frames are the input's."""
    video, truth = digit_video
    cap = cv2.VideoCapture(str(video))
    first = cap.read()[1]
    cap.release()
    saved = {}
    for draw in (True, False):
        out = tmp_path / f"draw_{draw}"
        rep = run_camera(CameraConfig(input=str(video), output=[str(out / "frames") + "/", str(out / "v.avi")],
                                      classifier=str(model_dir), threads=1, max_frames=3, draw=draw))
        assert ("draw" in rep["stages_ms"]) == draw and "draw_on_writer_thread_ms" not in rep
        assert _frames(out / "v.avi") == 3
        saved[draw] = cv2.imread(str(out / "frames" / "frame_000000.jpg")).astype(int)
    assert np.abs(saved[False] - first).mean() < 3  # jpeg round trip of the input frame
    assert np.abs(saved[True] - first).mean() > 10  # the box, label and HUD panel


def test_dying_source_still_finalises_video_and_report(model_dir, tmp_path):
    opts = CaptureOptions(open_capture=lambda s: FakeCamera(12, shape=(40, 56, 3)), reconnect=False,
                          stall_seconds=0.05)
    cfg = CameraConfig(input="/dev/video5", output=[str(tmp_path / "v.avi")], classifier=str(model_dir),
                       report=str(tmp_path / "rep.json"), threads=1)
    with pytest.raises(EdgekitError, match="stopped delivering"):
        run_camera(cfg, capture_options=opts)
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert 1 <= rep["frames"] <= 12 and _frames(tmp_path / "v.avi") == rep["frames"]
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize("shape", [(40, 56), (40, 56, 4), (40, 56, 1), (31, 77, 3)])
def test_odd_frames_are_handled(model_dir, tmp_path, shape):
    opts = CaptureOptions(open_capture=lambda s: FakeCamera(5, shape=shape), reconnect=False, stall_seconds=0.05)
    cfg = CameraConfig(input="0", output=[str(tmp_path / "r.jsonl")], classifier=str(model_dir), threads=1)
    with pytest.raises(EdgekitError, match="stopped delivering"):
        run_camera(cfg, capture_options=opts)
    rows = (tmp_path / "r.jsonl").read_text().splitlines()
    assert rows and all(json.loads(x)["objects"][0]["box"][2:] == [shape[1], shape[0]] for x in rows)


def test_display_without_a_screen_is_a_clear_error(digit_video, model_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    r = subprocess.run([sys.executable, "-m", "edgekit", "camera", str(digit_video[0]), "display://0",
                        "--classifier", str(model_dir)], capture_output=True, text=True, env=env, cwd=REPO,
                       timeout=120)
    assert r.returncode == 2 and "--headless" in r.stderr and "Traceback" not in r.stderr
    # --headless drops the display and runs
    r = subprocess.run([sys.executable, "-m", "edgekit", "camera", str(digit_video[0]), "display://0",
                        str(tmp_path / "r.jsonl"), "--classifier", str(model_dir), "--headless"],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == len(digit_video[1])


def test_the_loop_on_onnxrt_never_imports_torch(digit_video, model_dir):
    code = ("import sys; from edgekit.camera.loop import CameraConfig, run_camera; "
            f"r = run_camera(CameraConfig(input={str(digit_video[0])!r}, classifier={str(model_dir)!r})); "
            "assert r['frames'] > 0; print(sorted(m for m in ('torch', 'torchvision', 'ultralytics', 'tinygrad') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"


@pytest.mark.slow
def test_sigint_stops_cleanly_with_a_playable_video_and_a_report(digit_video, model_dir, tmp_path):
    out, rep = tmp_path / "live.avi", tmp_path / "rep.json"
    p = subprocess.Popen([sys.executable, "-m", "edgekit", "camera", str(digit_video[0]), str(out),
                          "--classifier", str(model_dir), "--loop", "--report", str(rep), "--threads", "1"],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not list(tmp_path.glob(".live.partial.avi")) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 0, stderr[-2000:]
    r = json.loads(rep.read_text())
    assert r["interrupted"] and r["frames"] > len(digit_video[1])  # it looped past the end of the file
    assert _frames(out) == r["frames"] and "(interrupted)" in stdout


@pytest.mark.slow
def test_soak_rss_stays_flat(digit_video, model_dir, tmp_path):
    """5,000 frames on a looping file: resident memory may grow by at most 10 MB after warm-up."""
    rep = tmp_path / "soak.json"
    code = ("from edgekit.camera.loop import CameraConfig, run_camera; "
            f"run_camera(CameraConfig(input={str(digit_video[0])!r}, output=[{str(tmp_path / 'r.jsonl')!r}], "
            f"classifier={str(model_dir)!r}, loop=True, max_frames=5000, report={str(rep)!r}, threads=1))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    samples = json.loads(rep.read_text())["rss"]["samples_mb"]  # every 500 frames
    assert len(samples) == 10
    assert samples[-1] - samples[0] <= 10.0, samples
