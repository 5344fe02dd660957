"""`rtsp://@:8554/NAME` (serve the annotated video over RTSP, as jetson-inference does) and `rtp://HOST:PORT`
(send it as RTP/H.264 over UDP): H.264 through GStreamer, with the Jetson's hardware encoder (nvv4l2h264enc)
on a Jetson and x264enc elsewhere.

Which GStreamer: serving RTSP needs GStreamer's RTSP server, reached from Python through gi (PyGObject) and
GstRtspServer (Debian/JetPack: python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp); OpenCV cannot serve.
rtp:// uses gi too when it imports, else an OpenCV built with GStreamer (JetPack's; pip's opencv-python is
not). Without either, opening the output is one line saying why and what to use instead (the HTTP view).

The loop never waits for the network: write() copies the frame into GStreamer's appsrc, which keeps at most
two frames and drops the oldest when the encoder is behind (`leaky-type=downstream`, never blocking); the
encoder and the network run on GStreamer's threads. An RTSP server with nobody watching costs one check per
frame. The server binds 127.0.0.1 unless the URI names another address (`rtsp://0.0.0.0:8554/NAME`)."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from edgekit.camera.sinks import Overlay, Sink
from edgekit.camera.sources import redact
from edgekit.errors import EdgekitError
from edgekit.lazy import lazy_import
from edgekit.platform import jetson as jetson_facts
from edgekit.platform import opencv_gstreamer

cv2 = lazy_import("cv2")
log = logging.getLogger(__name__)
RTSP_PORT = 8554
INSTEAD = "use the live view http://127.0.0.1:8080 (http://0.0.0.0:8080 from another machine) instead"
GI_PACKAGES = ("python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-ugly (x264enc), in "
               "a venv made with --system-site-packages")


@dataclass(frozen=True)
class StreamTarget:
    kind: str  # rtsp | rtp
    host: str
    port: int
    path: str = ""  # rtsp: the mount point, "/NAME"


def parse_stream(uri: str) -> StreamTarget:
    """rtsp://[HOST]:PORT/NAME (HOST '@' or empty: 127.0.0.1) or rtp://HOST:PORT; EdgekitError otherwise."""
    parts = urlsplit(uri)
    scheme, shown = parts.scheme.lower(), redact(uri)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise EdgekitError(f"output '{shown}': the port must be a number from 1 to 65535")
    host = (parts.hostname or "").strip("[]")
    if not uri[len(parts.scheme) + 1:].startswith("//"):  # rtsp:/x is a typo, not a stream named x
        raise EdgekitError(f"output '{shown}': write rtsp://@:8554/NAME (serve) or rtp://HOST:PORT (send)")
    if scheme == "rtp":
        if not host or port is None or parts.path not in ("", "/"):
            raise EdgekitError(f"output '{shown}': write rtp://HOST:PORT (the receiver's address), e.g. "
                               "rtp://192.168.1.5:5000")
        return StreamTarget("rtp", host, port)
    name = parts.path.strip("/")
    if not name or parts.query or parts.username or parts.password:
        raise EdgekitError(f"output '{shown}': write rtsp://@:8554/NAME to serve the stream at NAME (on 127.0.0.1; "
                           "rtsp://0.0.0.0:8554/NAME for other machines)")
    return StreamTarget("rtsp", host or "127.0.0.1", port or RTSP_PORT, "/" + name)


def h264_encoder(jetson: bool, bitrate_kbps: int = 4000, gop: int = 30) -> str:
    """BGR frames -> H.264 byte-stream, as a gst-launch fragment. Jetson: nvvidconv into NVMM and the hardware
    encoder (bitrate in bit/s); elsewhere x264enc tuned for latency (bitrate in kbit/s), baseline profile so
    every player decodes it."""
    if jetson:
        return ("videoconvert ! video/x-raw,format=BGRx ! nvvidconv ! video/x-raw(memory:NVMM),format=NV12 ! "
                f"nvv4l2h264enc bitrate={bitrate_kbps * 1000} insert-sps-pps=true idrinterval={gop} "
                f"iframeinterval={gop} ! h264parse")
    return ("videoconvert ! video/x-raw,format=I420 ! x264enc tune=zerolatency speed-preset=ultrafast "
            f"bitrate={bitrate_kbps} key-int-max={gop} ! video/x-h264,profile=baseline ! h264parse")


APPSRC = "appsrc name=src is-live=true do-timestamp=true format=time block=false max-bytes={max_bytes}"


def rtsp_launch(jetson: bool, max_bytes: int) -> str:
    """The RTSP server's media: appsrc (fed by write()) -> encoder -> RTP payloader `pay0`."""
    return (f"( {APPSRC.format(max_bytes=max_bytes)} leaky-type=downstream ! {h264_encoder(jetson)} ! "
            "rtph264pay name=pay0 pt=96 config-interval=1 )")


def rtp_pipeline(host: str, port: int, jetson: bool, max_bytes: int = 0, *, opencv: bool = False) -> str:
    """appsrc -> encoder -> RTP/UDP to host:port. `opencv`: the form cv2.VideoWriter(..., CAP_GSTREAMER) takes
    (it names and configures the appsrc itself)."""
    src = "appsrc ! queue leaky=downstream max-size-buffers=2" if opencv else \
        f"{APPSRC.format(max_bytes=max_bytes)} leaky-type=downstream"
    return (f"{src} ! {h264_encoder(jetson)} ! rtph264pay pt=96 config-interval=1 ! "
            f"udpsink host={host} port={port} sync=false async=false")


def gst_modules() -> tuple[Any, Any, Any] | None:
    """(Gst, GstRtspServer, GLib) from gi, initialised; None when they do not import."""
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtspServer
    except (ImportError, ValueError):  # ValueError: gi is there but not that typelib
        return None
    Gst.init(None)
    return Gst, GstRtspServer, GLib


def _missing_plugins(Gst: Any, jetson: bool) -> list[str]:
    need = ["appsrc", "videoconvert", "h264parse", "rtph264pay", "udpsink"]
    need += ["nvvidconv", "nvv4l2h264enc"] if jetson else ["x264enc"]
    return [n for n in need if Gst.ElementFactory.find(n) is None]


def open_stream(uri: str, fps: float) -> Sink:
    """The sink for an rtsp:// or rtp:// output, or EdgekitError in one line: why not, and what to use."""
    target, jetson = parse_stream(uri), jetson_facts() is not None
    gst = gst_modules()
    if gst is not None:
        missing = _missing_plugins(gst[0], jetson)
        if missing:
            pkg = "JetPack's GStreamer (nvidia-l4t-gstreamer)" if jetson else "gstreamer1.0-plugins-ugly/-good/-base"
            raise EdgekitError(f"output '{redact(uri)}': GStreamer lacks {', '.join(missing)}: install {pkg}, or "
                               f"{INSTEAD}")
        cls = RtspServerSink if target.kind == "rtsp" else RtpSink
        return cls(target, fps, jetson, gst).start()
    if target.kind == "rtp" and opencv_gstreamer():
        return OpenCvRtpSink(target, fps, jetson)
    why = ("serving RTSP needs GStreamer's RTSP server from Python (gi with GstRtspServer), which is not "
           "installed here" if target.kind == "rtsp" else
           "RTP needs GStreamer: this OpenCV has no GStreamer (pip's opencv-python never has) and gi does not import")
    raise EdgekitError(f"output '{redact(uri)}': {why}: install {GI_PACKAGES}, or {INSTEAD}")


class _AppsrcSink(Sink):
    """Pushes each frame into an appsrc; subclasses say where that appsrc lives."""

    wants_frames = True
    draws_later = False  # the loop draws before write(): GStreamer gets the annotated frame

    def __init__(self, target: StreamTarget, fps: float, jetson: bool, gst: tuple[Any, Any, Any]) -> None:
        self.target, self.fps, self.jetson = target, fps if fps and fps > 0 else 30.0, jetson
        self.Gst, self.GstRtspServer, self.GLib = gst
        self.frames = self.pushed = 0
        self._caps: str | None = None

    def _caps_for(self, frame: np.ndarray) -> str:
        h, w = frame.shape[:2]
        return f"video/x-raw,format=BGR,width={w},height={h},framerate={round(self.fps * 1000)}/1000"

    def _push(self, src: Any, frame: np.ndarray) -> None:
        caps = self._caps_for(frame)
        if caps != self._caps:  # first frame, or the source changed size
            src.set_property("caps", self.Gst.Caps.from_string(caps))
            src.set_property("max-bytes", 2 * frame.nbytes)
            self._caps = caps
        src.emit("push-buffer", self.Gst.Buffer.new_wrapped(np.ascontiguousarray(frame).tobytes()))
        self.pushed += 1

    def summary(self) -> dict[str, Any]:
        return {"frames": self.frames, "pushed": self.pushed}


class RtspServerSink(_AppsrcSink):
    """An RTSP server (GstRtspServer) on its own GLib main loop thread; one shared media for all clients, made
    when the first client asks for it (write() pushes only while it exists)."""

    def start(self) -> "RtspServerSink":
        t, Srv = self.target, self.GstRtspServer
        self.name = f"rtsp://{t.host}:{t.port}{t.path}"
        self._src: Any = None  # the live media's appsrc; set and cleared on GLib's thread
        self._ctx = self.GLib.MainContext.new()
        self._loop = self.GLib.MainLoop.new(self._ctx, False)
        self._server = Srv.RTSPServer.new()
        self._server.set_address(t.host)
        self._server.set_service(str(t.port))
        factory = Srv.RTSPMediaFactory.new()
        factory.set_launch(rtsp_launch(self.jetson, max_bytes=1 << 24))
        factory.set_shared(True)
        factory.connect("media-configure", self._on_media)
        self._server.get_mount_points().add_factory(t.path, factory)
        if self._server.attach(self._ctx) == 0:
            raise EdgekitError(f"{self.name}: cannot listen there (port in use?): pick another port "
                               f"(rtsp://@:{t.port + 1}{t.path}) or {INSTEAD}")
        self._thread = threading.Thread(target=self._loop.run, name="edgekit-rtsp", daemon=True)
        self._thread.start()
        where = "this machine's address" if t.host in ("0.0.0.0", "::") else t.host
        log.info("RTSP: serving the annotated video at rtsp://%s:%d%s", where, t.port, t.path)
        return self

    def _on_media(self, factory: Any, media: Any) -> None:
        self._caps = None  # a new appsrc: give it caps with its first buffer
        self._src = media.get_element().get_child_by_name("src")
        media.connect("unprepared", self._on_gone)

    def _on_gone(self, media: Any) -> None:
        self._src = None

    def write(self, frame: np.ndarray, result: dict[str, Any], overlay: Overlay | None = None) -> None:
        self.frames += 1
        src = self._src
        if src is not None:  # someone is watching
            self._push(src, frame)

    def close(self) -> None:
        if getattr(self, "_server", None) is None:
            return
        src, self._src = self._src, None
        if src is not None:
            src.emit("end-of-stream")
        self._server.client_filter(lambda server, client: self.GstRtspServer.RTSPFilterResult.REMOVE)
        self._loop.quit()
        self._thread.join(timeout=5)
        self._server = None


class RtpSink(_AppsrcSink):
    """A GStreamer pipeline appsrc -> H.264 -> RTP -> UDP, started at once (UDP needs no receiver)."""

    def start(self) -> "RtpSink":
        t = self.target
        self.name = f"rtp://{t.host}:{t.port}"
        self._pipeline = self.Gst.parse_launch(rtp_pipeline(t.host, t.port, self.jetson, max_bytes=1 << 24))
        self._src = self._pipeline.get_by_name("src")
        if self._pipeline.set_state(self.Gst.State.PLAYING) == self.Gst.StateChangeReturn.FAILURE:
            self._pipeline.set_state(self.Gst.State.NULL)
            raise EdgekitError(f"{self.name}: GStreamer could not start the RTP pipeline: {INSTEAD}")
        log.info("RTP: sending H.264 to %s", self.name)
        return self

    def write(self, frame: np.ndarray, result: dict[str, Any], overlay: Overlay | None = None) -> None:
        self.frames += 1
        self._push(self._src, frame)

    def close(self) -> None:
        if getattr(self, "_pipeline", None) is None:
            return
        self._src.emit("end-of-stream")
        self._pipeline.get_bus().timed_pop_filtered(2 * self.Gst.SECOND, self.Gst.MessageType.EOS)
        self._pipeline.set_state(self.Gst.State.NULL)
        self._pipeline = None


class OpenCvRtpSink(Sink):
    """rtp:// through an OpenCV built with GStreamer (JetPack's), for when gi does not import. The writer is
    opened on the first frame (its size is needed); a leaky queue right after appsrc keeps write() short."""

    def __init__(self, target: StreamTarget, fps: float, jetson: bool) -> None:
        self.target, self.fps, self.jetson = target, fps if fps and fps > 0 else 30.0, jetson
        self.name = f"rtp://{target.host}:{target.port}"
        self.writer = None

    def write(self, frame: np.ndarray, result: dict[str, Any], overlay: Overlay | None = None) -> None:
        if self.writer is None:
            h, w = frame.shape[:2]
            pipe = rtp_pipeline(self.target.host, self.target.port, self.jetson, opencv=True)
            self.writer = cv2.VideoWriter(pipe, cv2.CAP_GSTREAMER, 0, self.fps, (w, h), True)
            if not self.writer.isOpened():
                raise EdgekitError(f"{self.name}: OpenCV could not open the GStreamer pipeline: {INSTEAD}")
        self.writer.write(frame)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
