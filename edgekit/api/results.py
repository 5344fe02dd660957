"""What the Python API returns: plain dataclasses whose `to_dict()` gives the same fields, names and values as the
camera loop's JSONL records (edgekit/camera/record.schema.json), so a script and the CLI agree to the digit.
They are built from the record's objects, which the CLI writes, not recomputed. numpy only."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np


class Top(NamedTuple):
    """One of a classifier's top-k answers."""

    label_id: int
    label: str
    score: float  # softmax probability, rounded to 4 places as in the records


@dataclass(frozen=True)
class Classification:
    """A classifier's answer for one image (or one detection's crop): the best label, and the top-k."""

    label_id: int
    label: str
    score: float  # softmax probability of `label`
    top_k: tuple[Top, ...] = ()  # best first; top_k[0] is (label_id, label, score)

    def to_dict(self) -> dict[str, Any]:
        """The record's classifier fields (label_id, label, label_score), plus the top-k."""
        return {"label_id": self.label_id, "label": self.label, "label_score": self.score,
                "top_k": [t._asdict() for t in self.top_k]}


@dataclass(frozen=True)
class Detection:
    """One object, named as in the records: `det_*` are the detector's, `label*` the classifier's (None without
    one), `track_id` is None unless tracking is on."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the source image
    det_id: int  # the detector's class id
    det_class: str  # the detector's class name (its manifest label)
    det_score: float
    track_id: int | None = None
    label_id: int | None = None
    label: str | None = None
    label_score: float | None = None

    @classmethod
    def from_record(cls, obj: dict[str, Any]) -> "Detection":
        return cls(box=tuple(obj["box"]), det_id=obj["det_id"], det_class=obj["det_class"], det_score=obj["det_score"],
                   track_id=obj.get("track_id"), label_id=obj.get("label_id"), label=obj.get("label"),
                   label_score=obj.get("label_score"))

    def to_dict(self) -> dict[str, Any]:
        """The record's object: the classifier fields only when there is a classifier's answer."""
        d = {"box": list(self.box), "det_id": self.det_id, "det_class": self.det_class, "det_score": self.det_score,
             "track_id": self.track_id}
        if self.label is not None:
            d.update(label_id=self.label_id, label=self.label, label_score=self.label_score)
        return d


@dataclass(frozen=True)
class Detections:
    """A detector's objects in one image, highest score first: iterate for `Detection`s, or read the arrays."""

    objects: tuple[Detection, ...]
    image_hw: tuple[int, int]  # the source image's height and width

    def __len__(self) -> int:
        return len(self.objects)

    def __iter__(self) -> Iterator[Detection]:
        return iter(self.objects)

    def __getitem__(self, i: int) -> Detection:
        return self.objects[i]

    @property
    def boxes(self) -> np.ndarray:
        """(K, 4) float32 x1, y1, x2, y2 in source-image pixels."""
        return np.array([d.box for d in self.objects], np.float32).reshape(-1, 4)

    @property
    def scores(self) -> np.ndarray:
        return np.array([d.det_score for d in self.objects], np.float32)

    @property
    def class_ids(self) -> np.ndarray:
        return np.array([d.det_id for d in self.objects], np.int64)

    @property
    def labels(self) -> list[str]:
        """The detector's class name of each object."""
        return [d.det_class for d in self.objects]

    def to_dict(self) -> list[dict[str, Any]]:
        """The record's `objects` list."""
        return [d.to_dict() for d in self.objects]


@dataclass(frozen=True)
class Frame:
    """One camera frame and what the models found in it. `to_dict()` is the record the CLI writes for it."""

    index: int  # from 0, one per frame processed
    monotonic_ns: int  # capture time, time.monotonic_ns(): for intervals between frames
    utc: str  # capture time, wall clock, ISO 8601 UTC
    image: np.ndarray = field(repr=False)  # the frame, uint8 BGR (overlays are not drawn on it)
    detections: Detections = field(repr=False)  # with a classifier: each object carries its label
    classification: Classification | None = None  # without a detector: the classifier's answer for the frame
    counts: dict[str, Any] | None = None  # with lines/zones: {"lines": [{"line", "in", "out"}], "zones": [...]}
    record: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The frame's record: schema_version, frame, time, source, models, objects (record.schema.json)."""
        return {**self.record, "objects": self.detections.to_dict()}


def detections_from_objects(objects: list[dict[str, Any]], image_hw: tuple[int, int]) -> Detections:
    return Detections(tuple(Detection.from_record(o) for o in objects), (int(image_hw[0]), int(image_hw[1])))


def classification_from_probs(probs: np.ndarray, labels: list[str], k: int) -> Classification:
    """Top-k of one softmax row; the best one rounded as the pipeline rounds a record's label_score."""
    order = np.argsort(-probs, kind="stable")[:max(1, k)].tolist()
    top = tuple(Top(i, labels[i] if i < len(labels) else str(i), round(float(probs[i]), 4)) for i in order)
    return Classification(top[0].label_id, top[0].label, top[0].score, top)
