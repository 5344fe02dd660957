"""How right the camera loop was, frame by frame, against a test video's ground truth (the digits.jsonl of
`edgekit data digits-detect`), and whether two runs (two backends) gave the same results. numpy only.

A ground-truth digit is found when a detection overlaps it (IoU >= 0.5; one detection per digit, matched
greedily: detections by confidence, each to the free digit it overlaps most) and correct when that detection's
label (the classifier's, else the detector's class) is the digit. Accuracy = correct / all digits."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.vision.detect import box_iou

IOU_MATCH = 0.5  # a detection finds a ground-truth digit at this IoU or more
IOU_SAME = 0.99  # two runs' boxes are the same box at this IoU or more


def _boxes(boxes) -> np.ndarray:
    return np.asarray(boxes, np.float64).reshape(-1, 4)


def read_jsonl(path: str | Path, what: str) -> list[dict[str, Any]]:
    p = Path(path)
    if p.is_dir():  # a digits-detect folder
        p = p / "video" / "digits.jsonl"
    if not p.is_file():
        raise EdgekitError(f"{what} {p} does not exist: pass a .jsonl file (ground truth: a digits-detect folder's "
                           "video/digits.jsonl; results: the camera loop's results.jsonl output)")
    try:
        rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise EdgekitError(f"{p} is not JSON lines ({e}): pass the file the camera loop or digits-detect wrote")
    if not all(isinstance(r, dict) and "frame" in r and "objects" in r for r in rows):
        raise EdgekitError(f"{p}: every line needs 'frame' and 'objects' (the camera loop's and digits-detect's "
                           "per-frame format)")
    return rows


def load_truth(path: str | Path) -> list[dict[str, Any]]:
    """Ground truth per frame: [{"frame", "objects": [{"digit", "box", ...}]}] from digits.jsonl (or its folder)."""
    rows = read_jsonl(path, "ground truth")
    if not all("digit" in o and "box" in o for r in rows for o in r["objects"]):
        raise EdgekitError(f"{path}: ground-truth objects need 'digit' and 'box' (digits-detect's video/digits.jsonl)")
    return rows


def label_of(obj: dict[str, Any]) -> str | None:
    """What the loop called an object: the classifier's label, else the detector's class."""
    label = obj.get("label", obj.get("det_class"))
    return None if label is None else str(label)


def match_truth(dets: list[dict[str, Any]], truth: list[dict[str, Any]], iou: float = IOU_MATCH
                ) -> list[tuple[int, int, float]]:
    """(detection index, truth index, IoU): detections by confidence (highest first), each matched to the free
    ground-truth box it overlaps most, at IoU >= iou. One to one."""
    if not dets or not truth:
        return []
    m = box_iou(_boxes([d["box"] for d in dets]), _boxes([t["box"] for t in truth]))
    order = sorted(range(len(dets)), key=lambda i: -float(dets[i].get("det_score", 1.0)))
    free = np.ones(len(truth), bool)
    pairs = []
    for i in order:
        row = np.where(free, m[i], -1.0)
        j = int(row.argmax())
        if row[j] >= iou:
            free[j] = False
            pairs.append((i, j, float(m[i, j])))
    return pairs


def digit_accuracy(results: list[dict[str, Any]], truth: list[dict[str, Any]], *, iou: float = IOU_MATCH,
                   per_frame: bool = False) -> dict[str, Any]:
    """End-to-end accuracy of per-frame results [{"frame", "objects": [{"box", "label"|"det_class",
    "det_score"}]}] against ground truth, over the frames both have. Also: detection recall, classification
    accuracy of the found digits, false positives (detections matching no digit), and per ground-truth object
    id what it was called (to tell detector misses from classifier errors)."""
    by_frame = {int(r["frame"]): r["objects"] for r in truth}
    seen = {int(r["frame"]) for r in results}
    digits = found = correct = fp = 0
    objects: dict[Any, dict[str, Any]] = {}
    frames = []
    for r in results:
        f = int(r["frame"])
        if f not in by_frame:
            continue
        gt, dets = by_frame[f], r["objects"]
        pairs = match_truth(dets, gt, iou)
        hit = {j: label_of(dets[i]) for i, j, _ in pairs}
        ok = sum(hit[j] == str(gt[j]["digit"]) for j in hit)
        digits, found, correct, fp = digits + len(gt), found + len(pairs), correct + ok, fp + len(dets) - len(pairs)
        for j, t in enumerate(gt):
            o = objects.setdefault(t.get("id", f"{f}:{j}"), {"digit": t["digit"], "frames": 0, "found": 0,
                                                              "correct": 0, "called": Counter()})
            o["frames"] += 1
            if j in hit:
                o["found"] += 1
                o["correct"] += hit[j] == str(t["digit"])
                o["called"][hit[j]] += 1
        if per_frame:
            frames.append({"frame": f, "digits": len(gt), "found": len(pairs), "correct": ok,
                           "false_positives": len(dets) - len(pairs)})
    out: dict[str, Any] = {
        "accuracy": _ratio(correct, digits), "correct": correct, "digits": digits,
        "recall": _ratio(found, digits), "found": found, "classification_accuracy": _ratio(correct, found),
        "false_positives": fp, "frames": sum(1 for f in seen if f in by_frame),
        "frames_without_truth": sum(1 for f in seen if f not in by_frame),
        "truth_frames_not_run": sum(1 for f in by_frame if f not in seen), "iou": iou,
        "objects": {str(k): {**v, "called": dict(v["called"].most_common())} for k, v in objects.items()}
        if len(objects) <= 50 else {},  # per moving digit; not for per-frame-only ids
    }
    if per_frame:
        out["per_frame"] = frames
    return out


def same_results(a: list[dict[str, Any]], b: list[dict[str, Any]], *, iou: float = IOU_SAME) -> dict[str, Any]:
    """Whether two runs' per-frame results are the same: the same frames, and in each the same number of
    objects, paired (greedily by IoU) with boxes at IoU >= iou and the same labels and detector classes.
    Returns {"same", "frames", "objects", "differing_frames", "min_iou", "first_difference"}."""
    fa, fb = {int(r["frame"]): r["objects"] for r in a}, {int(r["frame"]): r["objects"] for r in b}
    diffs, min_iou, n_obj = [], 1.0, 0
    for f in sorted(set(fa) | set(fb)):
        if f not in fa or f not in fb:
            diffs.append({"frame": f, "why": f"only in run {'a' if f in fa else 'b'}"})
            continue
        oa, ob = fa[f], fb[f]
        n_obj += len(oa)
        if len(oa) != len(ob):
            diffs.append({"frame": f, "why": f"{len(oa)} objects vs {len(ob)}"})
            continue
        why = None
        for i, j, v in _pair_by_iou(oa, ob):
            min_iou = min(min_iou, v)
            if v < iou:
                why = why or f"box IoU {v:.4f} < {iou}: {oa[i]['box']} vs {ob[j]['box']}"
            elif (label_of(oa[i]), oa[i].get("det_class")) != (label_of(ob[j]), ob[j].get("det_class")):
                why = why or f"label {label_of(oa[i])} vs {label_of(ob[j])} at {oa[i]['box']}"
        if why:
            diffs.append({"frame": f, "why": why})
    return {"same": not diffs, "frames": len(set(fa) | set(fb)), "objects": n_obj, "differing_frames": len(diffs),
            "min_iou": round(min_iou, 6), "first_difference": diffs[0] if diffs else None}


def _pair_by_iou(oa: list[dict[str, Any]], ob: list[dict[str, Any]]) -> list[tuple[int, int, float]]:
    """Every object of oa paired with one of ob (len(oa) == len(ob)): highest IoU pairs first."""
    if not oa:
        return []
    m = box_iou(_boxes([o["box"] for o in oa]), _boxes([o["box"] for o in ob]))
    pairs, used_a, used_b = [], set(), set()
    for flat in np.argsort(-m, axis=None, kind="stable"):
        i, j = divmod(int(flat), m.shape[1])
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j, float(m[i, j])))
    return pairs


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 6) if den else None


def accuracy_line(a: dict) -> str:
    """The one-line summary of a run's digit accuracy (`--truth`)."""
    def pct(v):
        return "n/a" if v is None else f"{v:.1%}"

    return (f"digit accuracy {pct(a['accuracy'])} ({a['correct']}/{a['digits']} digits found and correctly "
            f"classified in {a['frames']} frames): detection recall {pct(a['recall'])}, classification "
            f"{pct(a['classification_accuracy'])} of those found, {a['false_positives']} false positives")


def same_as_line(m: dict) -> str:
    """The one-line summary of a `--same-as` comparison."""
    first = m["first_difference"]
    return (f"results {'the same as' if m['same'] else 'DIFFERENT from'} {m['file']}: {m['frames']} frames, "
            f"{m['objects']} objects, {m['differing_frames']} differing, smallest box IoU {m['min_iou']}"
            + (f"; first difference: frame {first['frame']}, {first['why']}" if first else ""))
