"""Frame sources: URI parsing, credentials never shown, files in order, live sources with a latest-frame
buffer that drops (and counts) what the loop cannot take, and reconnects after a stall."""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from edgekit.camera.sources import CaptureOptions, FrameSource, csi_pipeline, parse_source, redact
from edgekit.errors import EdgekitError

from camera_fakes import FakeCamera


@pytest.mark.parametrize("uri, kind, target, live", [
    ("csi://0", "csi", "0", True),
    ("csi://1", "csi", "1", True),
    ("/dev/video0", "v4l2", "/dev/video0", True),
    ("v4l2:///dev/video2", "v4l2", "/dev/video2", True),
    ("0", "v4l2", "0", True),
    ("rtsp://cam.local:8554/live", "rtsp", "rtsp://cam.local:8554/live", True),
])
def test_parse_live_uris(uri, kind, target, live):
    s = parse_source(uri)
    assert (s.kind, s.target, s.live) == (kind, target, live)


def test_parse_files_and_images(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"x")
    (tmp_path / "a.jpg").write_bytes(b"x")
    assert parse_source(str(tmp_path / "clip.mp4")).kind == "file"
    assert parse_source(f"file://{tmp_path}/clip.mp4").target == str(tmp_path / "clip.mp4")
    assert parse_source(str(tmp_path)).kind == "images"
    assert parse_source(str(tmp_path / "*.jpg")).kind == "images"
    assert parse_source(str(tmp_path / "a.jpg")).kind == "images"
    with pytest.raises(EdgekitError, match="not a camera URI"):
        parse_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(EdgekitError, match="csi://<sensor-id>"):
        parse_source("csi://front")


def test_credentials_are_redacted():
    assert redact("rtsp://admin:s3cret@10.0.0.5:554/h264") == "rtsp://admin:***@10.0.0.5:554/h264"
    assert redact("rtsp://cam/live") == "rtsp://cam/live"
    with pytest.raises(EdgekitError) as e:
        parse_source("rtsp-ish://admin:s3cret@host/x")
    assert "s3cret" not in str(e.value)


def test_csi_pipeline_is_a_jetson_argus_pipeline():
    p = csi_pipeline("0", 1920, 1080, 30, flip=2)
    assert p.startswith("nvarguscamerasrc sensor-id=0 ") and "flip-method=2" in p
    assert "width=1920, height=1080" in p and "framerate=30/1" in p and p.endswith("sync=false")


def test_csi_without_gstreamer_names_the_fix(monkeypatch):
    monkeypatch.setattr("edgekit.camera.sources.has_gstreamer", lambda: False)
    with pytest.raises(EdgekitError, match="GStreamer.*JetPack's OpenCV 4.8 .sudo apt install libopencv-python"):
        FrameSource("csi://0").open()


def _write_video(path, n, size=(64, 48)) -> list[np.ndarray]:
    """Frames whose first pixel row encodes the index (robust to compression)."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    frames = []
    for i in range(n):
        f = np.full((size[1], size[0], 3), (i * 20) % 250, np.uint8)
        w.write(f)
        frames.append(f)
    w.release()
    return frames


def test_video_file_in_order_and_loop(tmp_path):
    frames = _write_video(tmp_path / "v.avi", 6)
    with FrameSource(str(tmp_path / "v.avi")) as src:
        got = [int(f[0, 0, 0]) for f in src]
    assert len(got) == 6 and np.all(np.abs(np.array(got) - [int(f[0, 0, 0]) for f in frames]) <= 3)
    with FrameSource(str(tmp_path / "v.avi"), CaptureOptions(loop=True)) as src:
        it = iter(src)
        assert len([next(it) for _ in range(14)]) == 14  # past the end: starts over


def test_image_folder_sorted_and_bad_images_counted(tmp_path):
    for i in (2, 0, 1):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((8, 8, 3), i * 50, np.uint8))
    (tmp_path / "f3.png").write_bytes(b"broken")
    with FrameSource(str(tmp_path)) as src:
        got = [int(f[0, 0, 0]) for f in src]
    assert got == [0, 50, 100] and src.stats["bad_frames"] == 1
    with pytest.raises(EdgekitError, match="no images"):
        FrameSource(str(tmp_path / "*.bmp")).open()


def test_image_folder_judges_images_by_content(tmp_path):
    """A PNG named .jpg is a frame; a truncated JPEG and a text file named .png are counted as bad (issue 11)."""
    png = cv2.imencode(".png", np.full((8, 8, 3), 50, np.uint8))[1].tobytes()
    jpg = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))[1].tobytes()
    (tmp_path / "f0.jpg").write_bytes(png)
    (tmp_path / "f1.jpg").write_bytes(jpg[: len(jpg) // 2])
    (tmp_path / "f2.png").write_text("not a picture\n")
    with FrameSource(str(tmp_path)) as src:
        got = [int(f[0, 0, 0]) for f in src]
    assert got == [50] and src.stats["bad_frames"] == 2


def test_slow_consumer_gets_the_latest_frame_and_drops_are_counted():
    cams = [FakeCamera(400, period=0.001)]
    opts = CaptureOptions(open_capture=lambda spec: cams[0], reconnect=False, stall_seconds=0.2)
    seen = []
    with FrameSource("/dev/video9", opts) as src:
        with pytest.raises(EdgekitError, match="stopped delivering"):
            for f in src:
                seen.append(int(f[0, 0, 0]) + 256 * int(f[0, 0, 1]))
                time.sleep(0.02)  # the loop is slower than the camera
    assert src.stats["dropped"] > 0 and len(seen) + src.stats["dropped"] <= 400
    assert seen == sorted(seen)  # never an older frame after a newer one


def test_stalled_source_reconnects_with_backoff_then_gives_up():
    opened = []

    def open_capture(spec):
        if len(opened) >= 2:  # the camera is gone for good
            raise EdgekitError("gone")
        opened.append(FakeCamera(5))
        return opened[-1]

    opts = CaptureOptions(open_capture=open_capture, stall_seconds=0.05, max_reconnects=3, backoff=(0.01, 0.04))
    src = FrameSource("rtsp://user:pw@cam/live", opts)
    frames = 0
    with pytest.raises(EdgekitError, match=r"stopped delivering frames after 3 reconnect"):
        with src:
            for _ in src:
                frames += 1
    # one reconnect after the first connection died (it worked), then three failed ones
    assert len(opened) == 2 and src.stats["reconnects"] == 4
    assert 2 <= frames <= 10  # frames from both connections came through
    assert "pw" not in src.name


def test_source_that_never_opens():
    class Closed(FakeCamera):
        def isOpened(self):
            return False

    with pytest.raises(EdgekitError, match="could not open v4l2 source.*plugged in"):
        FrameSource("/dev/video7", CaptureOptions(open_capture=lambda s: Closed(0))).open()


def test_stop_from_another_thread_ends_iteration():
    opts = CaptureOptions(open_capture=lambda spec: FakeCamera(10**6, period=0.001))
    with FrameSource("0", opts) as src:
        threading.Timer(0.2, src.stop).start()
        n = sum(1 for _ in src)
    assert n > 0 and not src._thread.is_alive()


def test_a_capture_backend_that_raises_ends_the_loop_with_an_error():
    class Broken(FakeCamera):
        def read(self):
            raise RuntimeError("driver fault")

    with pytest.raises(EdgekitError, match="failed: RuntimeError: driver fault"):
        with FrameSource("0", CaptureOptions(open_capture=lambda s: Broken(1))) as src:
            list(src)
