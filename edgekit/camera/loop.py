"""`edgekit camera`: source -> pipeline -> overlay -> sinks, one loop, until the stream ends, Ctrl-C or
SIGTERM. Per-stage times (p50/p90/p99) and RSS are reported at the end, as JSON too. The report and the
video are finalised however the loop stops.

Reading and letterboxing, and the detector, run on threads of their own (edgekit.camera.overlap; --no-overlap:
in turn on this thread), overlapped with decoding, classifying, drawing and writing here, frames in order. A
frame's `frame` time is its own work on every thread, `queued` its waits between them, `latency` read to
written. ONNX Runtime's threads never spin and default to the idle cores; OpenCV runs one thread meanwhile.

The report's `status` says how the run ended: "ok" (end of stream, --max-frames or the window closed),
"interrupted" (Ctrl-C / SIGTERM) or "failed" (then `error` holds the message; a run that failed before its
first frame, say a model that would not load, says so and has no timings). Further Ctrl-C while the outputs
and the report are being finished are ignored, so a second Ctrl-C cannot lose them.

Everything kept per frame is bounded, so a run of days stays flat: stage timings (profile.timer.Samples),
the video writer's drawing times, RSS samples (thinned), and results kept for --truth/--same-as (only frames
those files have)."""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any, Callable

import numpy as np

from edgekit.camera.accuracy import digit_accuracy, load_truth, read_jsonl, same_results
from edgekit.camera.frames import FrameTimer, frame_results
from edgekit.camera.overlap import buffers_for
from edgekit.camera.pipeline import Pipeline
from edgekit.camera.outputs import check_outputs, open_output
from edgekit.camera.records import RecordMaker
from edgekit.camera.sinks import Sink, check_writable
from edgekit.camera.sources import CaptureOptions, FrameSource, RepeatLog, redact
from edgekit.camera.threads import loop_threads, runner_threads, threads_used
from edgekit.camera.tracking import check_tracking, tracker_for
from edgekit.configs import check_config, option
from edgekit.vision.decoders import DECODER_HINT, DECODER_SPEC
from edgekit.errors import EdgekitError
from edgekit.manifest import BACKENDS, PRECISIONS
from edgekit.fileio import atomic_write_json
from edgekit.profile.memory import peak_rss_mb, rss_mb
from edgekit.profile.timer import LatencyStats, Timer
from edgekit.vision.draw import draw_counts, draw_hud, draw_objects

log = logging.getLogger(__name__)


@dataclass
class CameraConfig:
    input: str = option("", hint="pass a camera URI, a video file or an image folder")  # csi://0, /dev/video0, rtsp://..., a video file, an image folder or glob
    output: list[str] = field(default_factory=list)  # display://0, out.mp4, frames/, results.jsonl, -, http://HOST:PORT (repeatable)
    detector: str = option("", path="dir", empty=True)  # YOLO model directory (manifest.json)
    classifier: str = option("", path="dir", empty=True)  # classifier model directory, run on each detection (or the whole frame)
    det_backend: str = option("onnxrt", choices=BACKENDS)  # torch | onnxrt | trt | tinygrad
    cls_backend: str = option("onnxrt", choices=BACKENDS)  # torch | onnxrt | trt | tinygrad
    det_precision: str = option("", choices=PRECISIONS, empty=True)  # fp32 | fp16 | int8; empty: the best the model directory has, fp32 first
    cls_precision: str = option("", choices=PRECISIONS, empty=True)  # fp32 | fp16 | int8; empty: the best there is
    device: str = option("", choices=("cpu", "cuda", "trt"), empty=True)  # runner device; empty: the backend's default
    conf: float | None = option(None, ge=0, le=1)  # detection confidence threshold; default: the detector's manifest's (what its export checks used: 0.25 for edgekit's, as ultralytics predict)
    iou: float | None = option(None, gt=0, le=1)  # NMS IoU threshold; default: the detector's manifest's (0.7 for edgekit's, as ultralytics predict)
    max_det: int | None = option(None, ge=1, le=100_000)  # detections kept per frame after NMS; default: the detector's manifest's (300 for edgekit's)
    decoder: str = option("", empty=True, pattern=DECODER_SPEC, hint=DECODER_HINT)  # detector output decoder: yolov8 | yolov5 | end2end, or an installed plug-in module.path:function (never a file); default: the manifest's
    headless: bool = False  # no display even if one is asked for
    max_frames: int = option(0, ge=0)  # stop after this many frames; 0 = until the end of the stream
    loop: bool = False  # restart video files at the end
    width: int = option(1280, ge=16, le=16384)  # capture size for CSI / V4L2
    height: int = option(720, ge=16, le=16384)  # capture height for CSI / V4L2
    fps: int = option(30, ge=1, le=1000)  # capture rate for CSI / V4L2, and the output video's rate when the source has none (images)
    flip: int = option(0, ge=0, le=7)  # CSI flip-method
    draw: bool = True  # overlays on the frames written
    report: str = option("", path="out_file", empty=True)  # JSON report path; empty: none
    threads: int = option(0, ge=0, le=1024)  # CPU threads per runner; 0 = ONNX Runtime: the idle cores (at least 1), others: their default
    overlap: bool = True  # read + letterbox and inference on threads of their own, overlapped with decode, draw and write (frames stay in order); off: one stage after another
    truth: str = option("", path="file", empty=True)  # ground truth per frame (digits-detect's video/digits.jsonl): digit accuracy in the report
    same_as: str = option("", path="file", empty=True)  # another run's results .jsonl (say, another backend's): whether this run's are the same
    http_viewers: int = option(4, ge=1, le=64)  # live view (http:// output): most streams at once; more get HTTP 503
    source_timeout: float = option(30.0, ge=0)  # end with an error after this many seconds without a frame (reconnects included); 0: never
    reconnects: int = option(10, ge=0)  # live sources: reconnect attempts in a row before giving up; 0: no limit
    track: bool = False  # stable object ids across frames (ByteTrack; needs --detector and the `track` extra)
    line: list[str] = field(default_factory=list)  # x1,y1,x2,y2 in pixels: count tracked objects crossing it, in and out, per class; turns --track on
    zone: list[str] = field(default_factory=list)  # x1,y1,x2,y2,x3,y3,... in pixels: count tracked objects inside this polygon, per class; turns --track on
    track_conf: float = option(0.5, gt=0, le=1)  # tracking: detections at or above start tracks and are matched first (ByteTrack's high threshold); lower ones only continue tracks

    def validate(self) -> None:
        check_config(self)  # the ranges declared beside each field
        check_tracking(self)  # --line / --zone values, and a detector to track


def open_runner(model_dir: str, backend: str, precision: str, device: str, threads: int):
    from edgekit.runners import load_runner

    kw: dict[str, Any] = {"precision": precision or None, "device": device or None, **runner_threads(backend, threads)}
    return load_runner(model_dir, backend, **kw).load()


def capture_options_for(cfg: CameraConfig) -> CaptureOptions:
    """The source's options from the config (the CLI and edgekit.Camera)."""
    return CaptureOptions(width=cfg.width, height=cfg.height, fps=cfg.fps, flip=cfg.flip, loop=cfg.loop,
                          no_frame_seconds=cfg.source_timeout, max_reconnects=cfg.reconnects)


RSS_EVERY, RSS_KEEP = 500, 240  # an RSS sample every 500 frames; past 240 samples, every other one is dropped
NOT_STAGES = ("frame", "capture", "overhead", "overhead_cpu", "queued", "latency")  # totals, waits, decode: not stages


def run_camera(cfg: CameraConfig, *, capture_options: CaptureOptions | None = None,
               on_frame: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the loop to the end of the stream. `on_frame` (benchmarks, tests) gets one record per frame after
    its clock has stopped: frame index, objects, end-to-end `frame_ns` (capture excluded), the models' own
    inference `det_infer_ns` / `cls_infer_ns` (runner timing) and this frame's `stages_ns`; and the CPU time
    the loop's threads spent on the frame, `frame_cpu_ns` (capture excluded), of which `infer_cpu_ns` inside the
    models' calls (their backends' own threads are not counted in either)."""
    if not cfg.input:
        raise EdgekitError("no input: pass a camera URI, a video file or an image folder")
    if cfg.source_timeout < 0 or cfg.reconnects < 0:
        raise EdgekitError("--source-timeout and --reconnects take 0 (no limit) or a positive number")
    outputs = [o for o in cfg.output if not (cfg.headless and o.startswith("display://"))]
    specs = check_outputs(outputs)  # every output understood and writable before anything is opened or written
    if cfg.report:
        check_writable(cfg.report, "--report")
    truth = load_truth(cfg.truth) if cfg.truth else None  # read first: a wrong path fails before the models load
    reference = read_jsonl(cfg.same_as, "--same-as results") if cfg.same_as else None
    scored = _Scored(truth, reference)
    opts = capture_options or capture_options_for(cfg)
    runners = []
    tracker = None
    source = FrameSource(cfg.input, opts)
    sinks: list[Sink] = []
    stop = threading.Event()
    timer = FrameTimer()
    frames, t_start = 0, time.perf_counter()
    rss: dict[str, Any] = {"start_mb": rss_mb()}
    error: BaseException | None = None
    threads: dict[str, Any] = {}
    signals = _install_signal_handlers(lambda: (stop.set(), source.stop()))
    try:
        det = open_runner(cfg.detector, cfg.det_backend, cfg.det_precision, cfg.device, cfg.threads) \
            if cfg.detector else None
        runners.append(det)
        cls = open_runner(cfg.classifier, cfg.cls_backend, cfg.cls_precision, cfg.device, cfg.threads) \
            if cfg.classifier else None
        runners.append(cls)
        threads.update(threads_used(det, cls, cfg.overlap))
        pipeline = Pipeline(det, cls, conf=cfg.conf, iou=cfg.iou, max_det=cfg.max_det, decoder=cfg.decoder,
                            buffers=buffers_for(1) if cfg.overlap else 1)
        if det is not None and cls is not None and cls.backend in ("onnxrt", "trt") \
                and not next(iter(cls.inputs().values())).is_dynamic:  # (tinygrad runs one fixed batch size)
            log.info("the classifier takes a fixed batch of 1: each detection is a call of its own (re-export it "
                     "with --dynamic-batch to classify a frame's detections in one call)")
        if pipeline.postprocess is not None:
            post = pipeline.postprocess
            log.info("detector: %s decoder, conf %g, IoU %g, max %d detections per frame (%s)", post.decoder,
                     post.conf, post.iou, post.max_det, _where_from(cfg))
            cfg = replace(cfg, **asdict(post))  # the report's config: what ran, not None for "the model's"
        make_record = RecordMaker(source.name, det, cls)
        source.open()
        tracker = tracker_for(cfg, source.fps)  # None unless --track, --line or --zone
        for spec in specs:  # one at a time: those opened before a failing one are still closed below
            sinks.append(open_output(spec, source.fps, max_viewers=cfg.http_viewers,
                                     frame_stages=lambda: timer.frame_ns, outputs=sinks))
        # overlays: drawn in the loop for sinks that show or save the loop's frame as it is (display, image
        # files); handed to the sinks that copy the frame and draw on their own thread (video), when only those
        # want frames: then drawing costs the loop nothing
        draw_here = cfg.draw and any(s.wants_frames and not s.draws_later for s in sinks)
        draw_later = cfg.draw and not draw_here and any(s.wants_frames and s.draws_later for s in sinks)
        rss["after_load_mb"] = rss_mb()
        fps_ema, last = 0.0, time.perf_counter()
        results = frame_results(source, pipeline, timer, stop, tracker, overlap=cfg.overlap, on_stop=source.stop)
        with loop_threads(), contextlib.closing(results):  # closing: the stage threads are joined on any exit
            for result in results:  # the same per-frame path as edgekit.Camera (stages overlapped unless --no-overlap)
                f, frame, objects, counts = result.staged, result.image, result.objects, result.counts
                overlay = None
                if draw_here:
                    with timer("draw"):
                        draw_objects(frame, objects)
                        draw_counts(frame, counts)
                        draw_hud(frame, fps_ema, _last_ms(timer))
                elif draw_later:
                    overlay = partial(_overlay, objects=objects, fps=fps_ema, stage_ms=_last_ms(timer), counts=counts)
                with timer("write"):
                    record = make_record(frames, objects, result.captured, counts)
                    for s in sinks:
                        s.write(frame, record, overlay if s.draws_later else None)
                scored.add(record)
                done, done_cpu = time.perf_counter_ns(), time.thread_time_ns()
                frame_ns = f.work_ns + done - f.t_got_ns  # the frame's own work on every thread, queue waits excluded
                timer.add("frame", frame_ns)
                det_ns, cls_ns = f.prepared.det_infer_ns, pipeline.cls_infer_ns
                timer.add("overhead", frame_ns - det_ns - cls_ns)  # everything but the models' inference
                # the same in CPU time: what the loop's threads spent on this frame outside the models' calls
                frame_cpu_ns = f.work_cpu_ns + done_cpu - f.t_got_cpu_ns
                infer_cpu_ns = f.prepared.det_infer_cpu_ns + pipeline.cls_infer_cpu_ns
                timer.add("overhead_cpu", frame_cpu_ns - infer_cpu_ns)
                timer.add("latency", done - f.t_read_ns)  # read to written, waits included
                if on_frame is not None:
                    on_frame({"frame": frames, "objects": len(objects), "frame_ns": frame_ns,
                              "det_infer_ns": det_ns, "cls_infer_ns": cls_ns, "stages_ns": timer.frame_ns,
                              "frame_cpu_ns": frame_cpu_ns, "infer_cpu_ns": infer_cpu_ns})
                frames += 1
                now = time.perf_counter()
                fps_ema = 1 / max(now - last, 1e-9) if frames == 1 else 0.9 * fps_ema + 0.1 / max(now - last, 1e-9)
                last = now
                _sample_rss(rss, frames)
                if (cfg.max_frames and frames >= cfg.max_frames) or any(s.stop_requested for s in sinks):
                    break
    except BaseException as e:
        error = e
        raise
    finally:
        signals.finishing = True  # from here on, Ctrl-C cannot cut the outputs or the report short
        try:
            result = _finish(cfg, source, sinks, runners, timer, frames, time.perf_counter() - t_start, rss,
                             stop.is_set(), outputs, scored, error, threads, tracker)
        finally:
            signals.restore()
    return result


def _finish(cfg, source, sinks, runners, timer, frames, seconds, rss, interrupted, outputs, scored,
            error, threads, tracker=None) -> dict[str, Any]:
    """Close everything (each close is tried even when another fails), then build and write the report. The
    first error wins: an error while closing is raised only when the run itself had none."""
    close_error: EdgekitError | None = None
    for close in [source.close, *(s.close for s in sinks), *(r.close for r in runners if r is not None)]:
        try:
            close()
        except (EdgekitError, OSError) as e:
            close_error = close_error or (e if isinstance(e, EdgekitError) else EdgekitError(str(e)))
    error = error or close_error
    rss.update(end_mb=rss_mb(), peak_mb=peak_rss_mb())
    result = _report(cfg, source, timer, frames, seconds, rss, interrupted, outputs, error)
    result["threads"] = threads
    drawn_later = [ns for s in sinks for ns in getattr(s, "draw_ns", ())]
    if drawn_later:  # off the loop: not part of a frame's time, reported apart
        result["draw_on_writer_thread_ms"] = LatencyStats.from_ns(drawn_later).as_dict()
    summaries = {s.name: st for s in sinks if (st := s.summary())}
    if summaries:  # outputs that count what they sent and dropped (mqtt://)
        result["outputs_stats"] = summaries
    result.update(scored.results(cfg.same_as))
    if tracker is not None:
        result["tracking"] = tracker.report()
    if cfg.report:
        try:
            atomic_write_json(cfg.report, result)
        except OSError as e:
            if error is None:
                raise EdgekitError(f"could not write the report {cfg.report}: {e.strerror or e}") from None
            log.warning("could not write the report %s: %s", cfg.report, e.strerror or e)
    if close_error is not None and close_error is error:
        raise close_error
    return result


def _where_from(cfg: CameraConfig) -> str:
    flags = [f"--{k.replace('_', '-')}" for k in ("conf", "iou", "max_det", "decoder")
             if getattr(cfg, k) not in (None, "")]
    return f"the model's manifest, {', '.join(flags)} given" if flags else "the model's manifest"


def _sample_rss(rss: dict[str, Any], frames: int) -> None:
    """An RSS sample every `sample_every` frames, at most RSS_KEEP of them: when full, every other one is
    dropped and the interval doubles (a day at 30 FPS keeps 240 samples, not 5,000)."""
    every = rss.setdefault("sample_every", RSS_EVERY)
    if frames % every:
        return
    samples = rss.setdefault("samples_mb", [])
    samples.append(round(rss_mb(), 1))
    if len(samples) >= RSS_KEEP:
        samples[:] = samples[1::2]  # the samples at multiples of the doubled interval
        rss["sample_every"] = every * 2


class _Scored:
    """The per-frame results kept to score them against --truth and compare with --same-as: only frames those
    files have (a looping or endless run would keep every frame otherwise); the others are counted."""

    def __init__(self, truth: list[dict[str, Any]] | None, reference: list[dict[str, Any]] | None) -> None:
        self.truth, self.reference = truth, reference
        self._truth_frames = {int(r["frame"]) for r in truth or []}
        self._reference_frames = {int(r["frame"]) for r in reference or []}
        self.kept: list[dict[str, Any]] = []
        self.without_truth = self.not_in_reference = 0

    def add(self, record: dict[str, Any]) -> None:
        f = record["frame"]
        if f in self._truth_frames or f in self._reference_frames:
            self.kept.append(record)
        self.without_truth += self.truth is not None and f not in self._truth_frames
        self.not_in_reference += self.reference is not None and f not in self._reference_frames

    def results(self, same_as_file: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        kept = self.kept
        if self.truth is not None:
            acc = digit_accuracy([r for r in kept if r["frame"] in self._truth_frames], self.truth)
            acc["frames_without_truth"] = self.without_truth
            out["accuracy"] = acc
        if self.reference is not None:  # over the frames this run processed (a run cut short compares its part)
            done = {r["frame"] for r in kept}
            mine = [r for r in kept if r["frame"] in self._reference_frames]
            same = same_results(mine, [r for r in self.reference if int(r["frame"]) in done])
            if self.not_in_reference:  # frames only this run has: each a difference
                same.update(same=False, frames=same["frames"] + self.not_in_reference,
                            differing_frames=same["differing_frames"] + self.not_in_reference,
                            first_difference=same["first_difference"] or {"why": "frames only in this run"})
            out["same_as"] = {"file": same_as_file, **same}
        return out


def _overlay(frame: np.ndarray, *, objects: list[dict[str, Any]], fps: float, stage_ms: dict[str, float],
             counts: dict[str, Any] | None = None) -> None:
    draw_objects(frame, objects)
    draw_counts(frame, counts)
    draw_hud(frame, fps, stage_ms)


def _last_ms(timer: Timer) -> dict[str, float]:
    return {k: v[-1] / 1e6 for k, v in timer.samples.items() if k not in NOT_STAGES and v}


def _report(cfg, source, timer, frames, seconds, rss, interrupted, outputs, error) -> dict[str, Any]:
    stats = {k: v.as_dict() for k, v in timer.stats().items()}
    status = "failed" if error is not None else "interrupted" if interrupted else "ok"
    out: dict[str, Any] = {"status": status}
    if error is not None:
        out["error"] = str(error) if isinstance(error, EdgekitError) else f"{type(error).__name__}: {error}"
        out["started"] = frames > 0
    config = {k: v for k, v in asdict(cfg).items() if k != "input"}
    config["output"] = [redact(o) for o in cfg.output]  # an mqtt:// output may carry a password
    return {
        **out, "source": source.name, "outputs": [redact(o) for o in outputs], "frames": frames,
        "seconds": round(seconds, 3),
        "fps": round(frames / seconds, 2) if seconds > 0 else 0.0, "interrupted": interrupted,
        "capture": dict(source.stats), "stages_ms": stats,
        "rss": {k: (round(v, 1) if isinstance(v, float) else v) for k, v in rss.items()},
        "config": config,
    }


class _Signals:
    """SIGINT/SIGTERM end the loop cleanly (video finalised, report written). Once `finishing` is set, more of
    them are ignored (with one line) until restore(): the finishing steps are short and bounded, and a second
    Ctrl-C there would otherwise lose the video and the report. Main thread only."""

    def __init__(self, on_stop: Callable[[], Any]) -> None:
        self.on_stop, self.finishing, self.previous = on_stop, False, {}
        self._again = RepeatLog(log, every=10)
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
            for sig in self.previous:
                signal.signal(sig, self._handler)

    def _handler(self, signum, _frame) -> None:
        name = signal.Signals(signum).name
        if self.finishing:
            self._again.warning("received %s again: still writing the outputs and the report, a moment", name)
            return
        log.warning("received %s: finishing the current frame and closing outputs", name)
        self.on_stop()

    def restore(self) -> None:
        for sig, h in self.previous.items():
            signal.signal(sig, h)


def _install_signal_handlers(on_stop) -> _Signals:
    return _Signals(on_stop)
