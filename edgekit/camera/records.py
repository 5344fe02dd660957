"""The camera loop's result record: one JSON object per frame, the same for every output that carries results
(a .jsonl file, `-` on stdout; later MQTT). Its JSON Schema is record.schema.json beside this module (packaged
with edgekit); SCHEMA_VERSION is the `schema_version` every record carries and changes when a field changes
meaning or is removed (adding an optional field does not).

    {"schema_version": 1, "frame": 0,
     "time": {"monotonic_ns": 81234567890123, "utc": "2026-11-30T17:01:22.123456Z"},
     "source": "rtsp://user:***@cam/stream",
     "models": {"detector": {"name": "digit_detector", "backend": "onnxrt", "precision": "fp32"},
                "classifier": {"name": "digits", "backend": "onnxrt", "precision": "int8"}},
     "objects": [{"box": [12.0, 30.5, 60.0, 96.0], "det_id": 0, "det_class": "digit", "det_score": 0.91,
                  "track_id": 12, "label_id": 7, "label": "7", "label_score": 0.98}],
     "counts": {"lines": [{"line": [0, 240, 640, 240], "in": {"7": 3}, "out": {}}],
                "zones": [{"zone": [[0, 0], [320, 0], [320, 240]], "inside": {"7": 1}, "entered": {"7": 2}}]}}

`track_id` is null without --track, and on an object's first frame (ByteTrack confirms a track on its second).
`counts` is there only with --line or --zone: totals since the start of the run, per class.

No detector: `models.detector` is null and `objects` holds one object, the whole frame (box = the frame,
det_class "frame", det_score 1), carrying the classifier's label. Standard library only."""
from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgekit.camera.sources import redact

SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("record.schema.json")


def load_schema() -> dict[str, Any]:
    """The record's JSON Schema (draft 2020-12), as shipped with edgekit."""
    return json.loads(SCHEMA_FILE.read_text())


def model_info(runner: Any) -> dict[str, Any] | None:
    """What a record says about a model: its name (the manifest's, else the artifact's folder), the backend and
    the precision actually loaded."""
    if runner is None:
        return None
    manifest = getattr(runner, "manifest", None)
    name = getattr(manifest, "name", None) or Path(str(runner.artifact)).parent.name
    return {"name": str(name), "backend": str(runner.backend), "precision": str(runner.precision)}


def utc_iso(wall_ns: int) -> str:
    """Wall-clock nanoseconds since the epoch -> ISO 8601 UTC with microseconds and a Z (integer arithmetic:
    exact; the date part is formatted once per second)."""
    sec, us = divmod(wall_ns // 1000, 1_000_000)
    return f"{_utc_second(sec)}.{us:06d}Z"


@lru_cache(maxsize=4)
def _utc_second(sec: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))


class RecordMaker:
    """Builds each frame's record. The header (source, models) is made once and shared by every record, so a
    frame costs one small dict, two clock reads and a date format (about 3 us)."""

    def __init__(self, source: str, detector: Any = None, classifier: Any = None) -> None:
        self.source = redact(source)  # credentials never reach a record, whatever the caller passes
        self.models = {"detector": model_info(detector), "classifier": model_info(classifier)}

    @staticmethod
    def now() -> tuple[int, int]:
        """(monotonic ns, wall-clock ns), read together: the capture time of the frame just received."""
        return time.monotonic_ns(), time.time_ns()

    def __call__(self, frame: int, objects: list[dict[str, Any]], captured: tuple[int, int],
                 counts: dict[str, Any] | None = None) -> dict[str, Any]:
        for o in objects:
            o.setdefault("track_id", None)  # without --track the field still exists, so consumers need not change
        record = {"schema_version": SCHEMA_VERSION, "frame": frame,
                  "time": {"monotonic_ns": captured[0], "utc": utc_iso(captured[1])},
                  "source": self.source, "models": self.models, "objects": objects}
        if counts is not None:
            record["counts"] = counts
        return record
