"""`edgekit.Camera(source, model=...)`: iterate a camera, a stream or a video and get each frame with what the
models found in it.

    for frame in edgekit.Camera("/dev/video0", model="models/trained/person_detector"):
        print(frame.index, frame.utc, [(d.det_class, d.box) for d in frame.detections])

The same sources as `edgekit camera` (a video file, an image folder, /dev/videoN, csi://N, rtsp://...), the same
per-frame path (camera.frames.frame_results: capture, normalise, models) and the same records (frame.to_dict()
is the line the CLI writes to a .jsonl). The CLI adds drawing, outputs and the report around that path."""
from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.api.model import Model, load, read_manifest
from edgekit.api.results import Frame, classification_from_probs, detections_from_objects
from edgekit.camera.frames import FrameTimer, frame_results
from edgekit.camera.overlap import buffers_for
from edgekit.camera.loop import CameraConfig, capture_options_for
from edgekit.camera.pipeline import Pipeline
from edgekit.camera.records import RecordMaker, utc_iso
from edgekit.camera.sources import FrameSource, parse_source
from edgekit.errors import EdgekitError

# CameraConfig fields a Camera takes as keywords (their defaults and checks are the CLI's)
CAPTURE_OPTIONS = ("max_frames", "loop", "width", "height", "fps", "flip", "source_timeout", "reconnects",
                   "track_conf", "overlap")
LOAD_OPTIONS = ("backend", "precision", "device", "conf", "iou", "max_det", "decoder", "top_k", "threads")


class Camera:
    """Frames from `source` through `model` (a detector or a classifier: a model directory or a loaded
    edgekit.load() Model) and optionally a `classifier` run on each detection. Iterate it for `Frame`s; the
    source opens on iteration and closes when the iteration ends, breaks or fails. `stop()` (from any thread)
    ends the iteration after the current frame. Models given as directories are loaded with `load_options`
    (backend, precision, device, conf, iou, max_det, decoder, top_k, threads) and closed with the camera; loaded Models
    are the caller's to close. `track`, `lines` and `zones` are `edgekit camera --track`, `--line x1,y1,x2,y2`
    and `--zone x1,y1,x2,y2,x3,y3,...`: lines [(x1, y1, x2, y2), ...] and zones [[(x, y), ...], ...] in pixels
    (either turns tracking on); each Frame's `counts` then holds the totals so far, per class."""

    def __init__(self, source: str | int | Path, model: str | Path | Model | None = None,
                 classifier: str | Path | Model | None = None, *, track: bool = False, lines: Any = (),
                 zones: Any = (), **options: Any) -> None:
        known = {f.name for f in dataclasses.fields(CameraConfig)}
        unknown = sorted(set(options) - (set(CAPTURE_OPTIONS) & known) - set(LOAD_OPTIONS))
        if unknown:
            raise EdgekitError(f"Camera() got unknown option(s) {unknown}; it takes "
                               f"{', '.join(sorted((set(CAPTURE_OPTIONS) & known) | set(LOAD_OPTIONS)))}, track, "
                               "lines and zones")
        if model is None and classifier is None:
            raise EdgekitError("Camera() needs a model: pass model=DETECTOR_DIR and/or classifier=CLASSIFIER_DIR")
        self.load_options = {k: v for k, v in options.items() if k in LOAD_OPTIONS}
        for m in (model, classifier):
            if isinstance(m, Model) and self.load_options:
                raise EdgekitError(f"{sorted(self.load_options)} apply to models Camera loads; {m!r} is loaded "
                                   "already: pass them to edgekit.load() instead, or pass its directory")
        parse_source(source)  # a wrong URI or a missing file fails here, not on iteration
        self.config = CameraConfig(input=str(source), **{k: v for k, v in options.items() if k in CAPTURE_OPTIONS})
        self.config.detector, self.config.classifier = _model_dirs(model, classifier)  # as the CLI has them
        _set_tracking(self.config, track, lines, zones)
        self.config.validate()
        self.model, self.classifier = model, classifier
        self.timer = FrameTimer()  # per-stage times: capture, preprocess, detect, postprocess, classify...
        self.stats: dict[str, int] = {}  # the source's counts (frames, dropped, reconnects), once it has run
        self._stop = threading.Event()
        self._source: FrameSource | None = None
        self._frames: Iterator[Frame] | None = None

    def __iter__(self) -> Iterator[Frame]:
        self._frames = self._run()
        return self._frames

    def stop(self) -> None:
        """End the iteration after the current frame (safe from another thread)."""
        self._stop.set()
        if self._source is not None:
            self._source.stop()

    def close(self) -> None:
        """Stop, and close the source and the models Camera loaded."""
        self.stop()
        if self._frames is not None:
            self._frames.close()  # runs _run's finally

    def __enter__(self) -> "Camera":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> Iterator[Frame]:
        owned: list[Model] = []
        results = None
        try:
            det, cls = self._models(owned)
            pipeline = Pipeline(det and det.runner, cls and cls.runner, **(det.post_options if det else {}),
                                buffers=buffers_for(1) if self.config.overlap else 1)
            self._source = source = FrameSource(self.config.input, capture_options_for(self.config))
            self.stats = source.stats
            make_record = RecordMaker(source.name, det and det.runner, cls and cls.runner)
            source.open()
            tracker = _tracker(self.config, source.fps)
            results = frame_results(source, pipeline, self.timer, self._stop, tracker, overlap=self.config.overlap,
                                    on_stop=source.stop)
            for r in results:
                record = make_record(r.index, r.objects, r.captured)
                if r.counts is not None:
                    record["counts"] = r.counts
                top = None if det is not None else \
                    classification_from_probs(pipeline.last_probs[0], cls.labels, cls.top_k)
                yield Frame(r.index, r.captured[0], utc_iso(r.captured[1]), r.image,
                            detections_from_objects(record["objects"], r.image.shape[:2]), top, r.counts, record)
                if self.config.max_frames and r.index + 1 >= self.config.max_frames:
                    break
        finally:
            try:
                if results is not None:
                    results.close()  # joins the stage threads
                if self._source is not None:
                    self._source.close()
            finally:
                for m in owned:
                    m.close()

    def _models(self, owned: list[Model]) -> tuple[Model | None, Model | None]:
        """(detector, classifier) as loaded Models; those loaded here are appended to `owned` (closed at the end)."""
        def get(m: str | Path | Model | None) -> Model | None:
            if m is None or isinstance(m, Model):
                return m
            loaded = load(m, **self.load_options)
            owned.append(loaded)
            return loaded

        model, classifier = get(self.model), get(self.classifier)
        if model is not None and model.task == "classify":
            if classifier is not None:
                raise EdgekitError(f"model= is a classifier ({model.name}): pass a detector as model= to classify "
                                   "each detection, or the classifier alone")
            return None, model
        if classifier is not None and classifier.task != "classify":
            raise EdgekitError(f"classifier= is a {classifier.task} model ({classifier.name}): pass a classifier")
        return model, classifier


def _model_dirs(model: str | Path | Model | None, classifier: str | Path | Model | None) -> tuple[str, str]:
    """(detector dir, classifier dir) as CameraConfig holds them; each manifest read (a wrong path fails here)."""
    def manifest(m):
        return None if m is None else m.manifest if isinstance(m, Model) else read_manifest(m)

    det, cls = manifest(model), manifest(classifier)
    if det is not None and det.task == "classify" and cls is None:
        det, cls = None, det  # a classifier alone classifies the whole frame
    return (str(det.model_dir) if det else ""), (str(cls.model_dir) if cls else "")


def _set_tracking(cfg: CameraConfig, track: bool, lines: Any, zones: Any) -> None:
    """--track, --line and --zone on the config; refused where this edgekit's camera loop has no tracking."""
    if not track and not lines and not zones:
        return
    names = {f.name for f in dataclasses.fields(cfg)}
    if not {"track", "line", "zone"} <= names:
        raise EdgekitError("this edgekit's camera loop has no tracking (edgekit camera --track / --line / --zone): "
                           "upgrade edgekit, or use Camera without track=, lines= and zones=")
    cfg.track = bool(track)
    cfg.line = [_numbers(line, 4, "a line is (x1, y1, x2, y2)") for line in lines]
    cfg.zone = [_numbers([v for point in _seq(zone) for v in _seq(point)], None,
                         "a zone is a polygon [(x1, y1), (x2, y2), (x3, y3), ...]") for zone in zones]


def _seq(x: Any) -> list:
    return list(x) if isinstance(x, (tuple, list, np.ndarray)) else [x]


def _numbers(values: Any, n: int | None, what: str) -> str:
    """Pixel numbers as the CLI's comma-separated text (which camera.tracking parses and checks)."""
    vals = _seq(values)
    if (n is not None and len(vals) != n) or not all(isinstance(v, (int, float, np.number)) for v in vals):
        raise EdgekitError(f"{what} in pixels, got {values!r}")
    return ",".join(f"{float(v):g}" for v in vals)


def _tracker(cfg: CameraConfig, fps: float | None) -> Any:
    """camera --track's tracker for this config, or None (the same one the CLI makes)."""
    if not (getattr(cfg, "track", False) or getattr(cfg, "line", ()) or getattr(cfg, "zone", ())):
        return None
    from edgekit.camera.tracking import tracker_for  # the track extra: imported only when tracking is asked for

    return tracker_for(cfg, fps)
