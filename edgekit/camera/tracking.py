"""`edgekit camera --track / --line / --zone`: stable ids across frames, and counts of tracked objects that
cross a line or are inside a zone, per class.

Tracking is ByteTrack as Roboflow's `trackers` package implements it (the home of supervision's former
`sv.ByteTrack`; numpy, scipy and OpenCV: it never imports torch, tests/camera/test_tracking.py checks that
in a fresh interpreter). Line crossings and zone membership are supervision's LineZone and PolygonZone: a line
counts an object once all four corners of its box have passed to the other side: "in" towards the side the
direction x1,y1 -> x2,y2 points to when turned 90 degrees counter-clockwise as seen on screen (a line drawn left
to right: moving up; drawn top to bottom: moving right), "out" the other way. A zone holds an object whose
box's bottom centre lies inside the polygon. Both are imported only when a run asks for tracking (the `track`
extra), so the loop without it pays nothing.

The class an object is counted under is what the loop called it: the classifier's label, else the
detector's class (edgekit.camera.accuracy.label_of). Tracks are class-agnostic (ByteTrack matches boxes):
an object whose label flickers keeps its id and is counted under the label it had when it crossed.

Cost (benchmarks/results/camera_overhead_track.json: a quiet 2-core AVX2 EPYC, 640x480, 10.2 objects a frame):
the loop's `track` stage p50 1.36 ms (1.67 ms with a line and a zone); the frame's overhead 2.88 -> 4.20 ms
median; its part per frame, whatever the count of objects, 1.04 -> 2.39 ms. Nearly all of it is the library's:
per-track Kalman filters (each track predicted every frame, lost ones too) and two Hungarian matchings, in numpy."""
from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np

from edgekit.camera.accuracy import label_of
from edgekit.errors import EdgekitError

TRACK_HINT = "install the tracking extra: pip install 'edgekit[track]' (Roboflow's trackers and supervision)"
# A track continues onto a detection whose box overlaps its predicted box at IoU >= 0.3 (the library's default,
# 0.1, let a lost digit's track jump to the next digit appearing near it in the same lane of the digits-detect
# video: IDF1 0.87 -> 0.95, ids that moved to another object 3 -> 1 of 24, benchmarks/tracking_quality.py).
MATCH_IOU = 0.3
_NUMBER = re.compile(r"\s*(\d+(\.\d*)?|\.\d+)\s*")
MAX_XY = 16384  # the largest frame side the loop accepts (--width); a zone's mask is allocated up to its corners


def _numbers(text: str, flag: str, shape: str) -> list[float]:
    parts = str(text).split(",")
    if not all(_NUMBER.fullmatch(p) for p in parts):
        raise EdgekitError(f"{flag} {text!r}: give {shape} as comma-separated pixel numbers (0 or more), e.g. "
                           f"{flag} " + ("0,240,640,240" if flag == "--line" else "100,100,300,100,300,300,100,300"))
    v = [float(p) for p in parts]
    if max(v) > MAX_XY:
        raise EdgekitError(f"{flag} {text!r}: pixel coordinates go up to {MAX_XY}, got {max(v):g}")
    return v


def parse_line(text: str) -> tuple[float, float, float, float]:
    """'x1,y1,x2,y2' (pixels of the frame as captured) -> the line's two end points."""
    v = _numbers(text, "--line", "x1,y1,x2,y2")
    if len(v) != 4:
        raise EdgekitError(f"--line {text!r}: a line is 4 numbers x1,y1,x2,y2 (got {len(v)})")
    if v[:2] == v[2:]:
        raise EdgekitError(f"--line {text!r}: the two end points are the same point; give two different ones")
    return v[0], v[1], v[2], v[3]


def parse_zone(text: str) -> list[tuple[float, float]]:
    """'x1,y1,x2,y2,x3,y3,...' (pixels, at least 3 corners) -> the polygon's corners."""
    v = _numbers(text, "--zone", "a polygon x1,y1,x2,y2,x3,y3,...")
    if len(v) < 6 or len(v) % 2:
        raise EdgekitError(f"--zone {text!r}: a zone is a polygon of at least 3 corners, an even count of numbers "
                           f"x1,y1,x2,y2,x3,y3,... (got {len(v)})")
    pts = np.asarray(v).reshape(-1, 2)
    area = 0.5 * abs(np.dot(pts[:, 0], np.roll(pts[:, 1], 1)) - np.dot(pts[:, 1], np.roll(pts[:, 0], 1)))
    if area < 1:
        raise EdgekitError(f"--zone {text!r}: the polygon encloses no area (its corners lie on one line)")
    return [(float(x), float(y)) for x, y in pts]


def check_tracking(cfg: Any) -> None:
    """The camera config's tracking options, checked before anything opens (CameraConfig.validate)."""
    for text in cfg.line:
        parse_line(text)
    for text in cfg.zone:
        parse_zone(text)
    if (cfg.track or cfg.line or cfg.zone) and not cfg.detector:
        what = "--track" if cfg.track else "--line" if cfg.line else "--zone"
        raise EdgekitError(f"{what} follows a detector's objects: pass --detector DIR (a YOLO model directory)")


def tracker_for(cfg: Any, fps: float | None) -> "Tracker | None":
    """The run's tracker: one when --track, --line or --zone asks for it, else None."""
    if not (cfg.track or cfg.line or cfg.zone):
        return None
    check_tracking(cfg)
    return Tracker(cfg.line, cfg.zone, fps=fps or 30.0, track_conf=cfg.track_conf)


def _libraries():
    try:
        import supervision as sv
        import trackers
    except ImportError as e:
        raise EdgekitError(f"--track needs {e.name}: {TRACK_HINT}") from None
    return sv, trackers


class Tracker:
    """One per run: `update(objects)` sets each object's `track_id` (None while ByteTrack has not confirmed its
    track: the first frame an object is seen) and the line and zone counts; `counts()` is what a record
    carries. `track_conf`: detections at or above it start tracks and are matched first (ByteTrack's high
    threshold); lower ones (down to the loop's --conf) only continue tracks that exist."""

    def __init__(self, lines: list[str] = (), zones: list[str] = (), *, fps: float = 30.0,
                 track_conf: float = 0.5, lost_frames: int = 30) -> None:
        self.lines_xy = [parse_line(t) for t in lines]  # parsed first: a bad value fails without the libraries
        self.zones_xy = [parse_zone(t) for t in zones]
        sv, trackers = _libraries()
        self._sv = sv
        self.byte = trackers.ByteTrackTracker(lost_track_buffer=lost_frames, frame_rate=float(fps or 30.0),
                                              track_activation_threshold=track_conf,
                                              high_conf_det_threshold=track_conf, minimum_iou_threshold=MATCH_IOU)
        self.lines = [sv.LineZone(start=sv.Point(x1, y1), end=sv.Point(x2, y2)) for x1, y1, x2, y2 in self.lines_xy]
        self.zones = [sv.PolygonZone(polygon=np.round(np.asarray(z)).astype(np.int64)) for z in self.zones_xy]
        self.inside: list[Counter] = [Counter() for _ in self.zones]
        self.entered: list[Counter] = [Counter() for _ in self.zones]
        self._in_zone: list[set[int]] = [set() for _ in self.zones]  # track ids inside each zone last frame
        self.names: dict[str, int] = {}  # class name -> the class_id handed to supervision
        self.ids_seen = 0

    def update(self, objects: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Set each object's `track_id`; return the counts so far (None without lines and zones)."""
        n = len(objects)
        boxes = np.asarray([o["box"] for o in objects], np.float32).reshape(n, 4)
        names = [label_of(o) or "" for o in objects]
        dets = self._sv.Detections(
            xyxy=boxes, confidence=np.asarray([o.get("det_score", 1.0) for o in objects], np.float32),
            class_id=np.asarray([self.names.setdefault(c, len(self.names)) for c in names], np.int64),
            data={"i": np.arange(n)})
        out = self.byte.update(dets)  # the same detections, reordered, each with its tracker_id (-1: unconfirmed)
        for o in objects:
            o["track_id"] = None
        for i, tid in zip(out.data.get("i", ()), out.tracker_id):
            if tid >= 0:
                objects[int(i)]["track_id"] = int(tid)
                self.ids_seen = max(self.ids_seen, int(tid) + 1)
        if not (self.lines or self.zones):
            return None
        self._count(out, names_by_id={v: k for k, v in self.names.items()})
        return self.counts()

    def _count(self, out, names_by_id: dict[int, str]) -> None:
        for line in self.lines:
            line.trigger(out)  # it skips unconfirmed tracks (tracker_id -1) itself
        if not self.zones:
            return
        # a zone holds a confirmed track whose box's bottom centre falls on the zone's mask: PolygonZone.trigger's
        # test with its default anchor, done here on the arrays (the library call cost about as much as tracking)
        xy = out.xyxy.reshape(-1, 4)
        ax, ay = np.rint((xy[:, 0] + xy[:, 2]) / 2).astype(np.int64), np.rint(xy[:, 3]).astype(np.int64)
        for k, zone in enumerate(self.zones):
            h, w = zone.mask.shape
            ok = (out.tracker_id >= 0) & (ax >= 0) & (ay >= 0) & (ax < w) & (ay < h)
            inside = ok & zone.mask[np.clip(ay, 0, h - 1), np.clip(ax, 0, w - 1)]
            now = {int(t): names_by_id[int(c)] for t, c, m in zip(out.tracker_id, out.class_id, inside) if m}
            self.inside[k] = Counter(now.values())
            self.entered[k].update(c for t, c in now.items() if t not in self._in_zone[k])
            self._in_zone[k] = set(now)

    def counts(self) -> dict[str, Any]:
        """The counts so far: per line, objects that crossed in and out (since the start); per zone, objects
        inside now and tracks that entered (since the start), each per class."""
        by_id = {v: k for k, v in self.names.items()}
        return {
            "lines": [{"line": list(xy), "in": {by_id[c]: n for c, n in line.in_count_per_class.items()},
                       "out": {by_id[c]: n for c, n in line.out_count_per_class.items()}}
                      for xy, line in zip(self.lines_xy, self.lines)],
            "zones": [{"zone": [list(p) for p in xy], "inside": dict(self.inside[k]), "entered": dict(self.entered[k])}
                      for k, xy in enumerate(self.zones_xy)],
        }

    def report(self) -> dict[str, Any]:
        """The end report's `tracking`: how many ids were given, and the final counts."""
        return {"tracker": "bytetrack (trackers " + _version("trackers") + ")", "ids": self.ids_seen,
                **self.counts()}


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def counts_line(tracking: dict[str, Any]) -> str:
    """The CLI's end-of-run line: ids given, and each line's and zone's counts."""
    def per_class(d: dict[str, int]) -> str:
        return "{" + ", ".join(f"{k}: {v}" for k, v in sorted(d.items())) + "}" if d else "0"

    parts = [f"tracking: {tracking['ids']} ids"]
    for i, ln in enumerate(tracking.get("lines", [])):
        parts.append(f"line {i + 1} in {per_class(ln['in'])} out {per_class(ln['out'])}")
    for i, z in enumerate(tracking.get("zones", [])):
        parts.append(f"zone {i + 1} inside {per_class(z['inside'])} entered {per_class(z['entered'])}")
    return "; ".join(parts)
