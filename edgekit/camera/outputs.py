"""Every output `edgekit camera` accepts, in one table, and opening them. An output is one of:

| output                      | kind    | what it gets                                                            |
|-----------------------------|---------|-------------------------------------------------------------------------|
| `display://0`               | display | an OpenCV window (dropped by --headless)                                |
| `out.mp4` (.avi .mkv .mov)  | video   | the annotated video, encoded on its own thread                          |
| `frames/` or an existing dir| images  | one JPEG per frame; a new folder only when the name ends in '/'         |
| `results.jsonl` (.ndjson)   | jsonl   | one result record per frame (edgekit/camera/record.schema.json)         |
| `-`                         | stdout  | the same records on stdout, flushed per frame (logs stay on stderr)     |
| `http://127.0.0.1:8080`     | http    | a live page: the annotated MJPEG stream and live numbers                |
| `mqtt://HOST[:PORT]/TOPIC`  | mqtt    | the same records, one MQTT message per frame (mqtt.py; paho-mqtt)       |
| `rtsp://@:8554/NAME`        | rtsp    | the annotated video served over RTSP, H.264 (rtsp.py; GStreamer)        |
| `rtp://HOST:PORT`           | rtp     | the annotated video sent as RTP/H.264 over UDP (rtsp.py; GStreamer)     |

Anything else is an error naming these: an unknown scheme (`foo://`), a scheme not supported yet
(webrtc), a path with an unknown extension, and a name without an extension that is not an existing
folder. So a typo (`rtsp:/x`, `frames`) never becomes a folder on disk. Parsing touches nothing on disk."""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import numpy as np

from edgekit.camera.http_view import HttpViewSink
from edgekit.camera.mqtt import MqttSink, parse_mqtt
from edgekit.camera.rtsp import open_stream, parse_stream
from edgekit.camera.sinks import (VIDEO_EXTS, DisplaySink, ImageSequenceSink, JsonlSink, Overlay, Sink, VideoSink,
                                  check_writable)
from edgekit.camera.sources import redact
from edgekit.errors import EdgekitError

JSONL_EXTS = (".jsonl", ".ndjson")
HTTP_DEFAULT = ("127.0.0.1", 8080)
SUPPORTED = ("display://0, a video file (" + " ".join(VIDEO_EXTS) + "), a folder for frames (ending in '/'), "
             "a .jsonl file, - (JSON lines on stdout), http://127.0.0.1:8080 (live view in a browser), "
             "mqtt://HOST[:PORT]/TOPIC (records to an MQTT broker), rtsp://@:8554/NAME (serve the video), "
             "rtp://HOST:PORT (send the video)")
# schemes people will try, each with what to use instead (jetson-inference's outputs, mostly)
NOT_YET = {
    "webrtc": "WebRTC output is not supported yet: the live view http://0.0.0.0:8080 plays in any browser",
    "https": "the live view serves plain HTTP: use http://HOST:PORT (behind a TLS proxy if needed)",
}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_URI_LIKE = {"display", "http", "https", "mqtt", "rtsp", "rtp", "file", "udp", "tcp", "srt", "rtmp", *NOT_YET}


@dataclass(frozen=True)
class OutputSpec:
    kind: str  # display | video | images | jsonl | stdout | http | mqtt | rtsp | rtp
    target: str  # the path, "host:port" for http, the URI for mqtt (credentials included: never log it), rtsp, rtp
    host: str = ""  # http only
    port: int = 0


def parse_output(uri: str) -> OutputSpec:
    """What an output URI is; EdgekitError (naming the supported outputs) for anything else."""
    s = str(uri).strip()
    if s == "-":
        return OutputSpec("stdout", "-")
    m = _SCHEME.match(s)
    if m and (s[m.end():].startswith("//") or m.group(1).lower() in _URI_LIKE):
        return _parse_uri(s, m.group(1).lower())
    p = Path(s)
    ext = p.suffix.lower()
    if ext in VIDEO_EXTS:
        return OutputSpec("video", s)
    if ext in JSONL_EXTS:
        return OutputSpec("jsonl", s)
    if p.is_dir() or s.endswith(("/", "\\")):
        return OutputSpec("images", s)
    if ext:
        raise EdgekitError(f"output '{s}': unknown extension '{ext}'; outputs are {SUPPORTED}")
    raise EdgekitError(f"output '{s}' is not an existing folder: end it with '/' ({s}/) to write frames into a "
                       f"new folder; outputs are {SUPPORTED}")


def _parse_uri(s: str, scheme: str) -> OutputSpec:
    if scheme == "display":
        return OutputSpec("display", s)
    if scheme == "http":
        return _parse_http(s)
    if scheme == "mqtt":
        t = parse_mqtt(s)
        return OutputSpec("mqtt", s, t.host, t.port)
    if scheme in ("rtsp", "rtp"):
        st = parse_stream(s)
        return OutputSpec(st.kind, s, st.host, st.port)
    if scheme in NOT_YET:
        raise EdgekitError(f"output '{redact(s)}': {NOT_YET[scheme]}")
    raise EdgekitError(f"output '{redact(s)}': unknown scheme '{scheme}://'; outputs are {SUPPORTED}")


def _parse_http(s: str) -> OutputSpec:
    """http://HOST:PORT, HOST defaulting to 127.0.0.1 (`http://:8080`, jetson-inference's `http://@:8080`);
    0.0.0.0 only when written. Port 0 picks a free port (logged)."""
    parts = urlsplit(s)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise EdgekitError(f"output '{s}': the live view is served at the root: write http://HOST:PORT, e.g. "
                           "http://127.0.0.1:8080")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is None:
        port = HTTP_DEFAULT[1]
    if not 0 <= port <= 65535:
        raise EdgekitError(f"output '{s}': the port must be a number from 1 to 65535, e.g. http://127.0.0.1:8080")
    host = parts.hostname or HTTP_DEFAULT[0]
    return OutputSpec("http", f"{host}:{port}", host, port)


def check_outputs(uris: list[str]) -> list[OutputSpec]:
    """Parse every output, and check that every file output can be written (its folder exists as a folder, is
    not read-only), before anything opens: a bad one fails the run with nothing written."""
    specs = [parse_output(u) for u in uris]
    for s in specs:
        if s.kind in ("video", "jsonl", "images"):
            check_writable(s.target, "output", folder=s.kind == "images")
    if sum(s.kind == "stdout" for s in specs) > 1:
        raise EdgekitError("output '-' given twice: stdout takes one stream of records")
    ports = [s.port for s in specs if s.kind in ("http", "rtsp") and s.port]
    if len(ports) != len(set(ports)):
        raise EdgekitError("two http:// or rtsp:// outputs on the same port: give each its own port")
    return specs


def open_output(spec: OutputSpec | str, fps: float, *, max_viewers: int = 4,
                frame_stages: Callable[[], dict[str, int]] | None = None, outputs: list[Sink] | None = None) -> Sink:
    """Open one output. `max_viewers`, `frame_stages` (the current frame's stage times, for the live page's
    numbers) and `outputs` (the run's outputs: the page shows their summaries, e.g. MQTT's drops) are for
    http:// only."""
    spec = parse_output(spec) if isinstance(spec, str) else spec
    if spec.kind == "display":
        return DisplaySink()
    if spec.kind == "stdout":
        return StdoutSink()
    if spec.kind == "mqtt":
        return MqttSink(spec.target).start()
    if spec.kind in ("rtsp", "rtp"):
        return open_stream(spec.target, fps)
    if spec.kind == "http":
        return HttpViewSink(spec.host, spec.port, max_viewers=max_viewers, frame_stages=frame_stages,
                            outputs=outputs).start()
    try:
        if spec.kind == "video":
            return VideoSink(spec.target, fps)
        if spec.kind == "jsonl":
            return JsonlSink(spec.target)
        return ImageSequenceSink(spec.target)
    except OSError as e:
        raise EdgekitError(f"output {spec.target}: {e.strerror or e}: give a path in a writable folder") from None


class StdoutSink(Sink):
    """Result records as JSON lines on stdout, one per frame, flushed at once (a reader sees each frame as it
    is done). A reader that goes away (`| head`) ends the run cleanly instead of failing it."""

    name = "-"
    wants_frames = False

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stdout
        self._closed_by_reader = False

    def write(self, frame: np.ndarray, result: dict[str, Any], overlay: Overlay | None = None) -> None:
        if self._closed_by_reader:
            return
        try:
            self.stream.write(json.dumps(result, separators=(",", ":")) + "\n")
            self.stream.flush()
        except BrokenPipeError:
            self._closed_by_reader = True
            # the reader is gone: point stdout at /dev/null, or Python's exit-time flush raises again
            # (https://docs.python.org/3/library/signal.html#note-on-sigpipe)
            if self.stream is sys.stdout:
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, sys.stdout.fileno())
                os.close(null)

    @property
    def stop_requested(self) -> bool:
        return self._closed_by_reader
