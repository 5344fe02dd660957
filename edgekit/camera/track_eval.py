"""How well the loop's track ids follow ground truth (digits-detect's video/digits.jsonl: per frame, each digit's
box and an id unique to that digit): per ground-truth object, whether it kept one track id for its whole
appearance; ID switches; and the CLEAR-MOT / identity figures (MOTA, MOTP, IDF1) as py-motmetrics computes
them (the dev extra; imported here only). Used by benchmarks/tracking_quality.py and the tracking tests.

Matching is motmetrics' own (per frame, Hungarian on 1 - IoU, pairs under `min_iou` never match, and a match
kept from the previous frame wins while it still qualifies). The distance matrix is computed here: motmetrics
1.4's iou_matrix calls np.asfarray, which NumPy 2 removed."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError

MIN_IOU = 0.5  # a track's box matches a ground-truth box at IoU >= 0.5 (the MOT benchmarks' threshold)
# "kept one id": matched to one track id only, an id no other object had, in at least half of its frames (an
# object matched less is "not tracked" rather than "kept"; frames the detector missed are the detector's)
MIN_COVERAGE = 0.5
MOT_METRICS = ("mota", "motp", "idf1", "idp", "idr", "num_switches", "num_fragmentations", "num_false_positives",
               "num_misses", "num_objects", "num_unique_objects", "mostly_tracked", "partially_tracked",
               "mostly_lost")


def iou_distances(truth: np.ndarray, tracked: np.ndarray, min_iou: float = MIN_IOU) -> np.ndarray:
    """1 - IoU of every (truth, tracked) pair of xyxy boxes; NaN (motmetrics: may not match) under `min_iou`."""
    t = np.asarray(truth, np.float64).reshape(-1, 4)[:, None, :]
    h = np.asarray(tracked, np.float64).reshape(-1, 4)[None, :, :]
    iw = np.clip(np.minimum(t[..., 2], h[..., 2]) - np.maximum(t[..., 0], h[..., 0]), 0, None)
    ih = np.clip(np.minimum(t[..., 3], h[..., 3]) - np.maximum(t[..., 1], h[..., 1]), 0, None)
    inter = iw * ih
    union = ((t[..., 2] - t[..., 0]) * (t[..., 3] - t[..., 1]) + (h[..., 2] - h[..., 0]) * (h[..., 3] - h[..., 1])
             - inter)
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    return np.where(iou >= min_iou, 1.0 - iou, np.nan)


def simulated_detections(truth: list[dict], seed: int = 0, jitter: float = 0.05, miss: float = 0.1,
                         false_per_frame: float = 0.5, size: tuple[int, int] = (640, 480)) -> list[dict]:
    """A detector made from the ground truth: each box's corners moved by N(0, jitter x its size), a box missed
    with probability `miss`, scores U(0.3, 1), and Poisson(false_per_frame) false boxes a frame (squares of 5-25%
    of the frame height, scores U(0.25, 0.7)) in a frame of `size` (w, h). Seeded: the same detections on every
    machine. What the tracking floor is measured on, so that it says how the tracker does, not a detector."""
    rng = np.random.default_rng(seed)
    out = []
    for r in truth:
        objs = []
        for o in r["objects"]:
            if rng.random() < miss:
                continue
            x1, y1, x2, y2 = o["box"]
            w, h = x2 - x1, y2 - y1
            b = [x1 + rng.normal(0, jitter * w), y1 + rng.normal(0, jitter * h),
                 x2 + rng.normal(0, jitter * w), y2 + rng.normal(0, jitter * h)]
            objs.append(_detection(b, float(rng.uniform(0.3, 1))))
        for _ in range(rng.poisson(false_per_frame)):
            s = rng.uniform(0.05, 0.25) * size[1]
            x, y = rng.uniform(0, size[0] - s), rng.uniform(0, size[1] - s)
            objs.append(_detection([x, y, x + s, y + s], float(rng.uniform(0.25, 0.7))))
        out.append({"frame": r["frame"], "objects": objs})
    return out


def _detection(box: list[float], score: float) -> dict[str, Any]:
    return {"box": [float(v) for v in box], "det_id": 0, "det_class": "digit", "det_score": score}


def _motmetrics():
    try:
        import motmetrics
    except ImportError:
        raise EdgekitError("tracking quality needs py-motmetrics: pip install 'edgekit[dev]' (or motmetrics)") from None
    return motmetrics


def track_quality(results: list[dict[str, Any]], truth: list[dict[str, Any]], *, min_iou: float = MIN_IOU,
                  min_coverage: float = MIN_COVERAGE) -> dict[str, Any]:
    """Score a run's records (`objects` with `box` and `track_id`) against ground truth (`objects` with `id` and
    `box`), over the frames both have. Objects without a track id (untracked, or not yet confirmed) are not
    tracker output and are left out."""
    mm = _motmetrics()
    acc = mm.MOTAccumulator(auto_id=False)
    by_frame = {int(r["frame"]): r for r in results}
    frames = 0
    for t in truth:
        f = int(t["frame"])
        if f not in by_frame:
            continue
        frames += 1
        gt = t["objects"]
        hyp = [o for o in by_frame[f]["objects"] if o.get("track_id") is not None]
        acc.update([int(o["id"]) for o in gt], [int(o["track_id"]) for o in hyp],
                   iou_distances([o["box"] for o in gt], [o["box"] for o in hyp], min_iou), frameid=f)
    if not frames:
        raise EdgekitError("no frame of the results has ground truth: score a run of the video whose "
                           "digits.jsonl this is")
    summary = mm.metrics.create().compute(acc, metrics=list(MOT_METRICS), name="run").iloc[0]
    per_object, per_id = _matches(acc.mot_events)
    shared = {h for h, objs in per_id.items() if len(objs) > 1}  # ids that went from one object to another
    kept = [k for k, v in per_object.items() if len(v["ids"]) == 1 and not v["ids"] & shared
            and v["matched"] >= min_coverage * v["frames"]]
    mot = {k: (round(float(summary[k]), 4) if k in ("mota", "motp", "idf1", "idp", "idr") else int(summary[k]))
           for k in MOT_METRICS}
    return {
        "frames": frames, "truth_objects": len(per_object), "min_iou": min_iou, "min_coverage": min_coverage,
        "kept_one_id": len(kept), "kept_one_id_fraction": round(len(kept) / len(per_object), 4) if per_object else 1.0,
        "id_switches": mot["num_switches"], "track_ids": len(per_id), "ids_on_several_objects": len(shared),
        "ids_per_object_mean": round(float(np.mean([len(v["ids"]) for v in per_object.values()])), 3)
        if per_object else 0.0,
        "matched_fraction": round(sum(v["matched"] for v in per_object.values())
                                  / max(1, sum(v["frames"] for v in per_object.values())), 4),
        "motmetrics": mot,
    }


def _matches(events) -> tuple[dict[int, dict[str, Any]], dict[int, set[int]]]:
    """Per ground-truth id: frames present, frames matched, and the distinct track ids it was matched to; per
    track id: the ground-truth ids it was matched to."""
    out: dict[int, dict[str, Any]] = defaultdict(lambda: {"frames": 0, "matched": 0, "ids": set()})
    per_id: dict[int, set[int]] = defaultdict(set)
    for typ, oid, hid in zip(events["Type"], events["OId"], events["HId"]):
        if typ not in ("MATCH", "SWITCH", "MISS"):  # each present object has exactly one of these per frame
            continue
        o = out[int(oid)]
        o["frames"] += 1
        if typ != "MISS":
            o["matched"] += 1
            o["ids"].add(int(hid))
            per_id[int(hid)].add(int(oid))
    return dict(out), dict(per_id)
