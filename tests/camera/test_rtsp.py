"""rtsp:// and rtp:// outputs. The loop serves a real video over RTSP through GStreamer's RTSP server and
FFmpeg (OpenCV's) reads it back: the frames decode at the source's size and colour; RTP sent to a UDP port
reads back the same way. The pipelines built for a Jetson (hardware encoder) and for x86 (x264enc) are
checked as strings, the x86 one also by GStreamer's own parser. Without GStreamer, opening the output is one
line saying why and naming the HTTP view, and the CLI exits 2 with it."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgekit.camera import rtsp
from edgekit.camera.loop import CameraConfig, run_camera
from edgekit.camera.rtsp import (StreamTarget, h264_encoder, open_stream, parse_stream, rtp_pipeline,
                                 rtsp_launch)
from edgekit.errors import EdgekitError

REPO = Path(__file__).resolve().parents[2]
COLOUR = (30, 160, 220)  # BGR of every frame of the test video
DEBIAN_GI = Path("/usr/lib/python3/dist-packages/gi")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gst(tmp_path, monkeypatch):
    """GStreamer's Python bindings (gi), RTSP server and x264enc. A venv does not see Debian's python3-gi; when
    its compiled module fits this interpreter (same Python ABI), it is put on sys.path alone (a folder holding
    only a link to it), the way a venv made with --system-site-packages (JetPack's) would see it."""
    mods = rtsp.gst_modules()
    so_suffix = sysconfig.get_config_var("EXT_SUFFIX")
    if mods is None and (DEBIAN_GI / f"_gi{so_suffix}").is_file():
        (tmp_path / "gi_only").mkdir()
        (tmp_path / "gi_only" / "gi").symlink_to(DEBIAN_GI)
        monkeypatch.syspath_prepend(str(tmp_path / "gi_only"))
        mods = rtsp.gst_modules()
    if mods is None:
        pytest.skip("needs gi with GstRtspServer (apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 "
                    "gstreamer1.0-rtsp) for this Python")
    missing = rtsp._missing_plugins(mods[0], jetson=False)
    if missing:
        pytest.skip(f"GStreamer lacks {missing} (apt-get install gstreamer1.0-plugins-ugly gstreamer1.0-plugins-good)")
    monkeypatch.setattr(rtsp, "jetson_facts", lambda: None)  # x264enc: the Jetson encoder is not here
    return mods


def colour_video(path: Path, frames: int = 30, size: tuple[int, int] = (160, 120)) -> Path:
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (w, h))
    frame = np.empty((h, w, 3), np.uint8)
    frame[:] = COLOUR
    for _ in range(frames):
        writer.write(frame)
    writer.release()
    return path


def read_frames(url: str, n: int, options: str, out: list[np.ndarray], tries: int = 50) -> None:
    """Open `url` with OpenCV's FFmpeg (retrying while the sender starts) and keep up to n decoded frames."""
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = options
    for _ in range(tries):
        cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
        if cap.isOpened():
            break
        cap.release()
        time.sleep(0.2)
    else:
        return
    while len(out) < n:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame)
    cap.release()


def assert_decoded(frames: list[np.ndarray], n: int) -> None:
    assert len(frames) >= n, f"decoded {len(frames)} frames"
    for f in frames:
        assert f.shape == (120, 160, 3)
        assert np.abs(f.reshape(-1, 3).mean(0) - COLOUR).max() < 8  # H.264 of a flat colour: within a few levels


@pytest.mark.slow
def test_the_loop_serves_rtsp_that_ffmpeg_reads_back(gst, model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", raising=False)
    video = colour_video(tmp_path / "v.avi")
    port = free_port()
    frames: list[np.ndarray] = []
    reader = threading.Thread(target=read_frames, args=(f"rtsp://127.0.0.1:{port}/live", 15, "rtsp_transport;tcp",
                                                        frames))
    reader.start()
    rep = run_camera(CameraConfig(input=str(video), output=[f"rtsp://@:{port}/live"], classifier=str(model_dir),
                                  threads=1, loop=True, max_frames=150, draw=False),
                     on_frame=lambda r: time.sleep(1 / 30))  # a camera's pace, while the reader connects
    reader.join(timeout=60)
    assert rep["status"] == "ok" and rep["frames"] == 150
    assert_decoded(frames, 10)
    stats = rep["outputs_stats"][f"rtsp://127.0.0.1:{port}/live"]  # bound to 127.0.0.1: '@' asked for no address
    assert stats["frames"] == 150 and 10 <= stats["pushed"] <= 150  # pushed only once someone watched


def test_rtp_reads_back_through_an_sdp_file(gst, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", raising=False)
    port = free_port(socket.SOCK_DGRAM)
    sdp = tmp_path / "stream.sdp"
    sdp.write_text(f"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=edgekit\nc=IN IP4 127.0.0.1\nt=0 0\n"
                   f"m=video {port} RTP/AVP 96\na=rtpmap:96 H264/90000\n")
    sink = open_stream(f"rtp://127.0.0.1:{port}", 30)
    frames: list[np.ndarray] = []
    reader = threading.Thread(target=read_frames, args=(str(sdp), 10, "protocol_whitelist;file,udp,rtp", frames))
    reader.start()
    frame = np.empty((120, 160, 3), np.uint8)
    frame[:] = COLOUR
    while reader.is_alive() and sink.frames < 900:  # UDP has no receiver to wait for: send until it has read
        sink.write(frame, {})
        time.sleep(1 / 30)
    reader.join()
    sink.close()
    assert_decoded(frames, 10)


def test_x86_pipelines_are_what_gstreamer_parses(gst):
    Gst = gst[0]
    pipe = Gst.parse_launch(rtp_pipeline("127.0.0.1", 5000, jetson=False, max_bytes=1000))
    assert pipe.get_by_name("src").get_property("max-bytes") == 1000
    Gst.parse_launch(rtsp_launch(jetson=False, max_bytes=1000).strip("() "))


def test_pipeline_strings_for_jetson_and_x86():
    jet, x86 = h264_encoder(True, 4000, 30), h264_encoder(False, 4000, 30)
    assert jet == ("videoconvert ! video/x-raw,format=BGRx ! nvvidconv ! video/x-raw(memory:NVMM),format=NV12 ! "
                   "nvv4l2h264enc bitrate=4000000 insert-sps-pps=true idrinterval=30 iframeinterval=30 ! h264parse")
    assert x86 == ("videoconvert ! video/x-raw,format=I420 ! x264enc tune=zerolatency speed-preset=ultrafast "
                   "bitrate=4000 key-int-max=30 ! video/x-h264,profile=baseline ! h264parse")
    assert rtsp_launch(True, 10) == ("( appsrc name=src is-live=true do-timestamp=true format=time block=false "
                                     f"max-bytes=10 leaky-type=downstream ! {jet} ! rtph264pay name=pay0 pt=96 "
                                     "config-interval=1 )")
    assert rtp_pipeline("10.0.0.5", 5000, True, opencv=True) == (
        f"appsrc ! queue leaky=downstream max-size-buffers=2 ! {jet} ! rtph264pay pt=96 config-interval=1 ! "
        "udpsink host=10.0.0.5 port=5000 sync=false async=false")
    assert "x264enc" in rtp_pipeline("h", 1, False) and "nvv4l2h264enc" not in rtp_pipeline("h", 1, False)


@pytest.mark.parametrize("uri, target", [
    ("rtsp://@:8554/live", StreamTarget("rtsp", "127.0.0.1", 8554, "/live")),
    ("rtsp://:9000/a/b", StreamTarget("rtsp", "127.0.0.1", 9000, "/a/b")),
    ("rtsp://0.0.0.0:8554/cam", StreamTarget("rtsp", "0.0.0.0", 8554, "/cam")),
    ("rtsp:///out", StreamTarget("rtsp", "127.0.0.1", 8554, "/out")),
    ("rtp://192.168.1.5:5000", StreamTarget("rtp", "192.168.1.5", 5000)),
])
def test_stream_uris_bind_localhost_unless_told(uri, target):
    assert parse_stream(uri) == target


def test_without_gstreamer_it_is_one_line_naming_the_http_view(monkeypatch):
    monkeypatch.setattr(rtsp, "gst_modules", lambda: None)
    monkeypatch.setattr(rtsp, "opencv_gstreamer", lambda: False)
    for uri, why in [("rtsp://@:8554/live", "GStreamer's RTSP server"), ("rtp://127.0.0.1:5000", "this OpenCV has no "
                                                                                               "GStreamer")]:
        with pytest.raises(EdgekitError) as e:
            open_stream(uri, 30)
        msg = str(e.value)
        assert why in msg and "http://127.0.0.1:8080" in msg and "python3-gi" in msg and "\n" not in msg


def test_a_jetson_without_its_encoder_says_so(gst, monkeypatch):
    monkeypatch.setattr(rtsp, "jetson_facts", lambda: {"model": "NVIDIA Jetson"})  # this machine has no nvvidconv
    with pytest.raises(EdgekitError, match="GStreamer lacks nvvidconv, nvv4l2h264enc: install JetPack's"):
        open_stream("rtsp://@:8554/live", 30)


@pytest.mark.skipif(rtsp.gst_modules() is not None, reason="gi is importable here: rtsp:// would serve")
def test_cli_exits_2_with_the_line(model_dir, tmp_path):
    from repo_files import write_noise_video

    video = write_noise_video(tmp_path / "v.avi", 3, (64, 48))
    r = subprocess.run([sys.executable, "-m", "edgekit", "camera", str(video), f"rtsp://@:{free_port()}/live",
                        "--classifier", str(model_dir), "--threads", "1"], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "needs GStreamer's RTSP server" in r.stderr and "http://127.0.0.1:8080" in r.stderr


def test_a_port_in_use_is_one_line(gst):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(EdgekitError, match=f"cannot listen there .*rtsp://@:{port + 1}/live"):
            open_stream(f"rtsp://@:{port}/live", 30)
