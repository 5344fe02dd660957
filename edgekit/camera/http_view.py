"""`http://HOST:PORT`: a live page served by the camera loop. `/` is a small page (fits a phone) showing the
annotated MJPEG stream (`/stream`, multipart/x-mixed-replace) and live numbers fetched from `/stats` (JSON)
every second; `/frame.jpg` is the newest frame alone. Standard library (ThreadingHTTPServer) and cv2 only.

Viewers never slow the loop. write() (on the loop's thread) keeps a reference to the record and stamps the
time; only while someone watches does it copy the frame into a reusable buffer. One encoder thread (niced, as
the video writer's) draws the overlays onto that copy and JPEG-encodes it once for all viewers; if it is still
busy when the next frame comes, the pending frame is replaced by the newer one. Each viewer's thread sends the
newest JPEG whenever it is ready for one, so a slow viewer skips frames and a stalled one (never reading)
blocks only its own thread, until its socket write times out and it is dropped. At most `max_viewers`
streams at once (others get 503); a viewer that disconnects mid-frame ends its thread and nothing else."""
from __future__ import annotations

import json
import logging
import socket
import statistics
import threading
import time
from collections import Counter, deque
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import numpy as np

from edgekit.camera.accuracy import label_of
from edgekit.camera.sinks import Overlay, Sink, lower_thread_priority
from edgekit.errors import EdgekitError
from edgekit.lazy import lazy_import
from edgekit.profile.memory import nvmap_mb, rss_mb

cv2 = lazy_import("cv2")  # imported on first use: `edgekit --help` and `info` work without OpenCV
log = logging.getLogger(__name__)
BOUNDARY = "edgekitframe"
WINDOW = 64  # frames the live FPS and stage medians are computed over


class HttpViewSink(Sink):
    wants_frames = True
    draws_later = True  # the encoder thread draws the overlays onto its copy, off the loop

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, *, max_viewers: int = 4, quality: int = 80,
                 frame_stages: Callable[[], dict[str, int]] | None = None, encoder_nice: int = 5,
                 write_timeout: float = 10.0, outputs: list[Sink] | None = None) -> None:
        if max_viewers < 1:
            raise EdgekitError(f"--http-viewers {max_viewers}: allow at least 1 viewer")
        self.host, self.port, self.max_viewers, self.quality = host, port, max_viewers, quality
        self.name = f"http://{host}:{port}"
        self.frame_stages, self.encoder_nice, self.write_timeout = frame_stages, encoder_nice, write_timeout
        self.outputs = outputs if outputs is not None else []  # the run's outputs, for their summaries in /stats
        self.frames = self.encoded = self.replaced = self.refused = self.dropped = 0
        self.viewers = 0  # streams being served now
        self._wanted = 0  # /frame.jpg requests waiting for a frame
        self._times: deque[float] = deque(maxlen=WINDOW)
        self._stages: deque[dict[str, int]] = deque(maxlen=WINDOW)
        self._encode_ns: deque[int] = deque(maxlen=WINDOW)
        self._record: dict[str, Any] | None = None
        self._work = threading.Condition()  # guards _pending, _spare, _closing
        self._pending: tuple[np.ndarray, Overlay | None] | None = None
        self._spare: list[np.ndarray] = []
        self._closing = False
        self._news = threading.Condition()  # guards _jpeg; notified on each new JPEG and on close
        self._jpeg: tuple[int, bytes] = (0, b"")
        self._conns: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # ---- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> "HttpViewSink":
        try:
            self._server = _Server((self.host, self.port), _Handler, self)
        except OSError as e:
            raise EdgekitError(f"{self.name}: cannot listen there ({e.strerror or e}): pick another port "
                               "(http://127.0.0.1:8081) or host") from None
        self.port = self._server.server_address[1]  # the real one when port 0 was asked for
        self.name = f"http://{self.host}:{self.port}"
        for target, name in ((self._server.serve_forever, "edgekit-http"), (self._encode, "edgekit-jpeg")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        where = ("this machine's address" if self.host in ("0.0.0.0", "::") else self.host)
        log.info("live view: http://%s:%d/ (up to %d viewers)", where, self.port, self.max_viewers)
        return self

    def close(self) -> None:
        if self._server is None:
            return
        with self._work:
            self._closing = True
            self._work.notify_all()
        with self._news:
            self._news.notify_all()
        self._server.shutdown()  # serve_forever returns
        for conn in list(self._conns):  # wake viewer threads blocked in a socket write
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()  # joins the request threads
        for t in self._threads:
            t.join()
        self._server = None

    # ---- the loop's side ------------------------------------------------------------------------------------
    def write(self, frame: np.ndarray, result: dict[str, Any], overlay: Overlay | None = None) -> None:
        self.frames += 1
        self._times.append(time.perf_counter())
        self._record = result
        if self.frame_stages is not None:  # the loop's dict for this frame; it is complete once the frame is
            self._stages.append(self.frame_stages())
        if not (self.viewers or self._wanted):
            return  # nobody watching: no copy, no encoding
        with self._work:
            if self._pending is not None:  # the encoder has not taken the previous frame: replace it
                buf, self._pending = self._pending[0], None
                self.replaced += 1
            else:
                buf = self._spare.pop() if self._spare else None
        if buf is None or buf.shape != frame.shape or buf.dtype != frame.dtype:
            buf = np.empty_like(frame)
        np.copyto(buf, frame)
        with self._work:
            self._pending = (buf, overlay)
            self._work.notify()

    def _encode(self) -> None:
        lower_thread_priority(self.encoder_nice)
        params = [cv2.IMWRITE_JPEG_QUALITY, int(self.quality)]
        while True:
            with self._work:
                self._work.wait_for(lambda: self._pending is not None or self._closing)
                if self._closing:
                    return
                buf, overlay = self._pending
                self._pending = None
            t0 = time.perf_counter_ns()
            try:
                if overlay is not None:
                    overlay(buf)
                ok, jpg = cv2.imencode(".jpg", buf, params)
            except cv2.error as e:  # a frame the codec rejects: skip it, keep serving
                log.warning("live view: could not encode a frame: %s", e)
                ok = False
            finally:
                with self._work:
                    if len(self._spare) < 2:
                        self._spare.append(buf)
            if ok:
                self._encode_ns.append(time.perf_counter_ns() - t0)
                with self._news:
                    self._jpeg = (self._jpeg[0] + 1, jpg.tobytes())
                    self.encoded += 1
                    self._news.notify_all()

    # ---- the viewers' side (request threads) ----------------------------------------------------------------
    def newest_jpeg(self, after: int, timeout: float) -> tuple[int, bytes] | None:
        """The newest JPEG once it is newer than sequence number `after`; None on timeout or close."""
        with self._news:
            self._news.wait_for(lambda: self._closing or self._jpeg[0] > after, timeout=timeout)
            return None if self._closing or self._jpeg[0] <= after else self._jpeg

    def admit(self) -> bool:
        with self._work:
            if self.viewers >= self.max_viewers or self._closing:
                self.refused += 1
                return False
            self.viewers += 1
            return True

    def leave(self) -> None:
        with self._work:
            self.viewers -= 1

    def want_one(self, delta: int) -> None:
        with self._work:
            self._wanted += delta

    def stats(self) -> dict[str, Any]:
        """Live numbers for /stats, computed on the request's thread from what write() kept."""
        times = list(self._times)
        span = times[-1] - times[0] if len(times) >= 2 else 0.0
        stages: dict[str, list[int]] = {}
        for d in list(self._stages)[:-1]:  # the newest frame's dict may still be growing
            for k, v in list(d.items()):
                stages.setdefault(k, []).append(v)
        rec = self._record or {}
        objects = rec.get("objects", [])
        return {
            "fps": round((len(times) - 1) / span, 2) if span > 0 else 0.0,
            "frames": self.frames, "frame": rec.get("frame"), "time": (rec.get("time") or {}).get("utc"),
            "source": rec.get("source"), "objects": len(objects),
            "classes": dict(Counter(label_of(o) for o in objects).most_common()),
            "track_ids": sorted(o["track_id"] for o in objects if o.get("track_id") is not None),  # --track
            "counts": rec.get("counts"),  # --line / --zone: per line in/out, per zone inside/entered, per class
            "stages_p50_ms": {k: round(statistics.median(v) / 1e6, 3) for k, v in stages.items()},
            "jpeg_p50_ms": round(statistics.median(self._encode_ns) / 1e6, 3) if self._encode_ns else None,
            "rss_mb": round(rss_mb(), 1), "nvmap_mb": _round(nvmap_mb()),  # NvMap: Jetson only, else null
            "viewers": self.viewers, "max_viewers": self.max_viewers, "encoded": self.encoded,
            "replaced_before_encoding": self.replaced, "refused_viewers": self.refused, "dropped_viewers": self.dropped,
            "outputs": {o.name: st for o in list(self.outputs) if (st := o.summary())},  # e.g. MQTT's drops
        }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the request threads
    block_on_close = True

    def __init__(self, address, handler, sink: HttpViewSink) -> None:
        self.sink = sink
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "edgekit"

    def setup(self) -> None:
        self.timeout = self.server.sink.write_timeout  # a viewer that stops reading is dropped after this
        super().setup()
        self.server.sink._conns.add(self.connection)

    def finish(self) -> None:
        self.server.sink._conns.discard(self.connection)
        try:
            super().finish()
        except OSError:  # the viewer is gone
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.debug("live view %s: " + format, self.client_address[0], *args)

    def do_GET(self) -> None:
        route = self.path.split("?", 1)[0]
        try:
            if route == "/":
                self._send(HTTPStatus.OK, "text/html; charset=utf-8", PAGE.encode())
            elif route == "/stats":
                self._send(HTTPStatus.OK, "application/json", json.dumps(self.server.sink.stats()).encode())
            elif route == "/frame.jpg":
                self._frame()
            elif route == "/stream":
                self._stream()
            else:
                self.send_error(HTTPStatus.NOT_FOUND, "the live view has /, /stream, /stats and /frame.jpg")
        except TimeoutError:  # the viewer stopped reading: its socket made no progress for write_timeout
            self.server.sink.dropped += 1
            self.close_connection = True
        except OSError:  # the viewer went away (mid-frame too) or the server is closing
            self.close_connection = True

    def _send(self, status: HTTPStatus, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _frame(self) -> None:
        sink = self.server.sink
        sink.want_one(1)
        try:  # a frame encoded after this request, not a stale one from before anyone watched
            got = sink.newest_jpeg(sink._jpeg[0], timeout=5.0)
        finally:
            sink.want_one(-1)
        if got is None:
            self.send_error(HTTPStatus.SERVICE_UNAVAILABLE, "no frame yet")
        else:
            self._send(HTTPStatus.OK, "image/jpeg", got[1])

    def _stream(self) -> None:
        sink = self.server.sink
        if not sink.admit():
            self.send_response(HTTPStatus.SERVICE_UNAVAILABLE)
            self.send_header("Retry-After", "5")
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(f"at most {sink.max_viewers} viewers (--http-viewers)\n".encode())
            return
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            seq = 0
            while not sink._closing:
                got = sink.newest_jpeg(seq, timeout=1.0)
                if got is None:
                    continue
                seq, jpg = got
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpg)}\r\n\r\n".encode()
                self.wfile.write(b"".join((head, jpg, b"\r\n")))  # one send per frame: one GIL release, not 3
        finally:
            sink.leave()
            self.close_connection = True


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgekit live</title>
<style>
body{margin:0;font:15px/1.4 system-ui,sans-serif;background:#111;color:#eee}
header{padding:8px 12px;background:#222;display:flex;gap:16px;flex-wrap:wrap;align-items:baseline}
header b{font-size:22px}
main{display:flex;flex-wrap:wrap;gap:12px;padding:12px}
#view{flex:3 1 480px;min-width:0}
#view img{width:100%;height:auto;background:#000;display:block}
aside{flex:1 1 220px}
table{border-collapse:collapse;width:100%;margin-bottom:12px}
td,th{padding:3px 6px;border-bottom:1px solid #333;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#999}
</style></head>
<body>
<header><span>edgekit</span><b id="fps">- FPS</b><span id="objs" class="muted"></span>
<span id="rss" class="muted"></span><span id="src" class="muted"></span></header>
<main><div id="view"><img id="stream" alt="live stream (loading)"></div>
<aside><table><thead><tr><th>class</th><th>count</th></tr></thead><tbody id="classes"></tbody></table>
<table><thead><tr><th>stage</th><th>p50 ms</th></tr></thead><tbody id="stages"></tbody></table>
<table id="counts-table" hidden><thead><tr><th>counted</th><th>per class</th></tr></thead><tbody id="counts">
</tbody></table>
<div id="note" class="muted"></div></aside></main>
<script>
function rows(id, obj, fmt) {
  const body = document.getElementById(id);
  body.replaceChildren(...Object.entries(obj).map(([k, v]) => {
    const tr = document.createElement("tr"), a = document.createElement("td"), b = document.createElement("td");
    a.textContent = k; b.textContent = fmt(v); b.className = "n"; tr.append(a, b); return tr;
  }));
}
async function tick() {
  try {
    const s = await (await fetch("/stats", {cache: "no-store"})).json();
    document.getElementById("fps").textContent = s.fps.toFixed(1) + " FPS";
    document.getElementById("objs").textContent = s.objects + " objects" +
      (s.track_ids.length ? " (ids " + s.track_ids.join(" ") + ")" : "") + ", frame " + s.frame;
    document.getElementById("rss").textContent = "RSS " + s.rss_mb.toFixed(0) + " MB" +
      (s.nvmap_mb === null ? "" : ", NvMap " + s.nvmap_mb.toFixed(0) + " MB");
    document.getElementById("src").textContent = s.source || "";
    rows("classes", s.classes, v => v);
    rows("stages", s.stages_p50_ms, v => v.toFixed(2));
    const per = d => Object.entries(d).map(([k, v]) => k + ": " + v).join(", ") || "0", c = {};
    (s.counts ? s.counts.lines : []).forEach((l, i) => { c["line " + (i + 1) + " in"] = per(l.in);
      c["line " + (i + 1) + " out"] = per(l.out); });
    (s.counts ? s.counts.zones : []).forEach((z, i) => { c["zone " + (i + 1) + " inside"] = per(z.inside);
      c["zone " + (i + 1) + " entered"] = per(z.entered); });
    document.getElementById("counts-table").hidden = !s.counts;
    rows("counts", c, v => v);
    document.getElementById("note").textContent =
      s.viewers + "/" + s.max_viewers + " viewers; JPEG " + (s.jpeg_p50_ms ?? "-") + " ms";
  } catch (e) {
    document.getElementById("fps").textContent = "stopped";
  }
  setTimeout(tick, 1000);
}
// the stream starts after the page has loaded, so the page's load event does not wait on an endless stream
window.addEventListener("load", () => { document.getElementById("stream").src = "/stream"; tick(); });
</script></body></html>
"""
