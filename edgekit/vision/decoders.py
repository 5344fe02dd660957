"""Detector output decoders: raw model output -> boxes, scores, classes in network-input pixels. numpy only.

Built-in layouts (`DECODERS`), batch 1:
    yolov8   YOLOv8 / YOLO11 / YOLOv5u      (1, 4+nc, N)  cx, cy, w, h, then one score per class; NMS here
    yolov5   YOLOv5 / YOLOv7                (1, N, 5+nc)  cx, cy, w, h, objectness, class scores; score = obj * cls
    end2end  NMS-free or NMS'd graphs       (1, K, 6)     x1, y1, x2, y2, score, class (YOLOv10, YOLO26,
             ultralytics `nms=True` exports): only the confidence filter and max_det here

`choose_decoder` picks one from the output shape, the number of labels and the model's metadata, and never
guesses: a shape that fits several layouts ((1, N, 6) with one class is a YOLOv5 head or an NMS'd graph), or
none, is an EdgekitError naming `--decoder`.

Anything else plugs in as `--decoder module.path:function` (an importable, installed module) or as the name of a
Python entry point in the group `edgekit.decoders`. The function is called as
`fn(pred, *, conf, iou, max_det)` on the raw output (batch 1) and returns `Detections` or
`(boxes (K, 4) xyxy, scores (K,), classes (K,))` in network-input pixels. A model directory is data, never code:
a manifest may record which plug-in its outputs need, but the plug-in is imported only when the user names it
on the command line, and never from a file inside the model directory.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError, did_you_mean
from edgekit.manifest import DECODERS

__all__ = ["DECODERS", "ENTRY_POINT_GROUP", "LAYOUTS", "Detections", "choose_decoder", "decode", "decode_end2end",
           "decode_yolo", "decode_yolov5", "is_plugin", "nms", "resolve_decoder"]

ENTRY_POINT_GROUP = "edgekit.decoders"
LAYOUTS = {"yolov8": "(1, 4+nc, N)", "yolov5": "(1, N, 5+nc)", "end2end": "(1, K, 6)"}
MAX_WH = 7680  # class offset for class-aware NMS, as ultralytics
MAX_NMS = 30000  # boxes into NMS at most
_MODULE_SPEC = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
_CHOICES = f"{', '.join(DECODERS)}, or an installed plug-in module.path:function"
# The --decoder flag of camera, export, bench and compare: a built-in's name, an entry point's, or module:function
DECODER_SPEC = r"[A-Za-z_][\w.\-]*(:[A-Za-z_][\w.]*)?"
DECODER_HINT = "yolov8, yolov5, end2end or an installed plug-in's module.path:function"


@dataclass
class Detections:
    boxes: np.ndarray  # (K, 4) float32 xyxy (network-input pixels out of a decoder, source pixels after scaling)
    scores: np.ndarray  # (K,)
    classes: np.ndarray  # (K,) int

    def __len__(self) -> int:
        return len(self.scores)


Decoder = Callable[..., Detections]  # (pred, *, conf, iou, max_det, agnostic=False, multi_label=False)


# ---- the built-in decoders ---------------------------------------------------------------------------

NMS_MATRIX_MAX = 512  # up to this many boxes, NMS computes all pairs' IoU at once (1 MB of float32 at most)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS; indices kept, highest score first. A frame's few dozen candidates take the pairwise path
    (one IoU matrix, then a pass over booleans: about half the time of a numpy round per kept box, the same
    boxes); evaluation at a low threshold (thousands) the per-kept-box path, whose memory stays linear."""
    order = np.argsort(-scores, kind="stable")
    if order.size <= NMS_MATRIX_MAX:
        return _nms_pairwise(boxes[order], iou, order)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        order = rest[inter / (areas[i] + areas[rest] - inter + 1e-9) <= iou]
    return np.asarray(keep, np.int64)


def _nms_pairwise(b: np.ndarray, iou: float, order: np.ndarray) -> np.ndarray:
    """nms() of boxes `b` already sorted by score (`order`: their indices): the same IoU arithmetic, per pair."""
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    w = np.clip(np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None]), 0, None)
    h = np.clip(np.minimum(y2[:, None], y2[None]) - np.maximum(y1[:, None], y1[None]), 0, None)
    inter = w * h
    over = inter / (areas[:, None] + areas[None] - inter + 1e-9) > iou
    removed = np.zeros(len(b), bool)
    keep = []
    for i in range(len(b)):
        if not removed[i]:
            keep.append(i)
            removed |= over[i]
    return order[np.asarray(keep, np.int64)]


def decode_yolo(pred: np.ndarray, *, conf: float = 0.25, iou: float = 0.7, max_det: int = 300,
                agnostic: bool = False, multi_label: bool = False) -> Detections:
    """yolov8: head output (1, 4+nc, N) (cx, cy, w, h, class scores) -> detections after class-aware NMS.
    `multi_label`: one detection per class scoring above `conf` (ultralytics' val does this), else the
    best class only (its predict)."""
    if pred.ndim != 3 or pred.shape[0] != 1 or pred.shape[1] < 5:
        raise EdgekitError(f"expected a YOLO head output of shape (1, 4+classes, anchors), got {pred.shape}")
    p = pred[0]
    nc = p.shape[0] - 4
    best_score = p[4:].max(0) if nc > 1 else p[4]
    cand = np.flatnonzero(best_score > conf)  # few survive: everything below touches only these
    if not cand.size:
        return _empty()
    if multi_label and nc > 1:
        scores = p[4:, cand]
        cls, k = np.nonzero(scores > conf)
        score, best, cand = scores[cls, k], cls, cand[k]
    else:
        score = best_score[cand]
        best = p[4:, cand].argmax(0) if nc > 1 else np.zeros(cand.size, np.int64)
    if score.size > MAX_NMS:
        top = np.argsort(-score, kind="stable")[:MAX_NMS]
        score, best, cand = score[top], best[top], cand[top]
    xywh = p[:4, cand]
    boxes = np.empty((cand.size, 4), np.float32)
    half = xywh[2:] / 2
    boxes[:, 0], boxes[:, 1] = xywh[0] - half[0], xywh[1] - half[1]
    boxes[:, 2], boxes[:, 3] = xywh[0] + half[0], xywh[1] + half[1]
    offset = 0 if agnostic or nc == 1 else best[:, None].astype(np.float32) * MAX_WH
    idx = nms(boxes + offset, score, iou)[:max_det]
    return Detections(boxes[idx], score[idx].astype(np.float32), best[idx].astype(np.int64))


def decode_yolov5(pred: np.ndarray, *, conf: float = 0.25, iou: float = 0.7, max_det: int = 300,
                  agnostic: bool = False, multi_label: bool = False) -> Detections:
    """yolov5: (1, N, 5+nc) rows of cx, cy, w, h, objectness, class scores; a class's score is obj * cls (as
    YOLOv5's non_max_suppression; YOLOv7's takes obj alone for one-class models). Rows whose objectness is at
    most `conf` cannot pass (cls <= 1), so only the others are rearranged into the yolov8 layout and decoded
    there: the same candidates in the same order, so the same NMS."""
    if pred.ndim != 3 or pred.shape[0] != 1 or pred.shape[2] < 6:
        raise EdgekitError(f"expected a YOLOv5 output of shape (1, anchors, 5+classes), got {pred.shape}")
    rows = pred[0][pred[0][:, 4] > conf]
    head = np.empty((1, rows.shape[1] - 1, len(rows)), np.float32)
    head[0, :4] = rows[:, :4].T
    np.multiply(rows[:, 5:].T, rows[:, 4], out=head[0, 4:])
    return decode_yolo(head, conf=conf, iou=iou, max_det=max_det, agnostic=agnostic, multi_label=multi_label)


def decode_end2end(pred: np.ndarray, *, conf: float = 0.25, max_det: int = 300, **_: Any) -> Detections:
    """end2end: graphs that already end in NMS (or need none): (1, K, 6) rows of x1, y1, x2, y2, score, class.
    `iou`, `agnostic` and `multi_label` do not apply (the graph did its own suppression)."""
    if pred.ndim != 3 or pred.shape[0] != 1 or pred.shape[2] != 6:
        raise EdgekitError(f"expected an end-to-end output of shape (1, K, 6), got {pred.shape}")
    rows = pred[0][pred[0][:, 4] > conf][:max_det]
    return Detections(rows[:, :4].astype(np.float32), rows[:, 4].astype(np.float32), rows[:, 5].astype(np.int64))


_BUILTIN: dict[str, Decoder] = {"yolov8": decode_yolo, "yolov5": decode_yolov5, "end2end": decode_end2end}


def decode(pred: np.ndarray, decoder: str | Decoder = "yolov8", *, conf: float = 0.25, iou: float = 0.7,
           max_det: int = 300, agnostic: bool = False, multi_label: bool = False) -> Detections:
    """Decode with a built-in decoder (by name) or a resolved one (`resolve_decoder`'s callable)."""
    if not callable(decoder):
        if decoder not in _BUILTIN:
            raise EdgekitError(f"decoder '{decoder}' is not built in ({', '.join(DECODERS)}); a plug-in is "
                               f"loaded with resolve_decoder (--decoder module.path:function)")
        decoder = _BUILTIN[decoder]
    return decoder(pred, conf=conf, iou=iou, max_det=max_det, agnostic=agnostic, multi_label=multi_label)


def _empty() -> Detections:
    return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


# ---- choosing one ------------------------------------------------------------------------------------

def choose_decoder(output_shape: Sequence[Any], num_classes: int | None, metadata: Mapping[str, Any] | None = None,
                   requested: str | None = None) -> str:
    """The decoder for a detector's (first) output. `output_shape`: ints, or names / None / -1 for dynamic axes;
    `num_classes`: the number of labels (None: unknown); `metadata`: the ONNX metadata (ultralytics writes
    `task`, `end2end` and `args` with `nms`; values may be the strings ONNX stores). `requested` (the user's
    --decoder) wins when it fits. Raises EdgekitError naming --decoder when the shape fits several layouts or
    none; never returns a guess."""
    shape, nc = tuple(output_shape), num_classes or None
    what = f"output shape {_fmt(shape)}" + (f" with {nc} classes" if nc else "")
    if requested:
        return _check_requested(requested, shape, nc, what)
    meta = dict(metadata or {})
    task = meta.get("task")
    if task not in (None, "", "detect"):
        raise EdgekitError(f"the model's metadata says task '{task}', not 'detect': no built-in decoder reads its "
                           f"outputs; pass --decoder module.path:function (an installed plug-in)")
    fits = [name for name in DECODERS if _fits(name, shape, nc)]
    e2e = _says_end2end(meta)
    if e2e is True:
        if "end2end" not in fits:
            raise EdgekitError(f"the model's metadata says its graph ends in NMS, but its {what} is not "
                               f"{LAYOUTS['end2end']}; pass --decoder ({_CHOICES})")
        return "end2end"
    if e2e is False and "end2end" in fits:
        fits.remove("end2end")
    if not fits:
        layouts = "; ".join(f"{k} {v}" for k, v in LAYOUTS.items())
        raise EdgekitError(f"no built-in decoder fits the {what} ({layouts}): check the labels' count, or pass "
                           f"--decoder module.path:function (an installed plug-in)")
    if "yolov8" in fits and _square(shape):
        fits.append("a transposed (1, N, 4+nc) head")  # the same numbers read the other way round
    if len(fits) > 1:
        raise EdgekitError(f"the {what} fits more than one layout ({', '.join(fits)}) and the model's metadata does "
                           f"not say which: pass --decoder ({_CHOICES})")
    return fits[0]


def _check_requested(requested: str, shape: tuple, nc: int | None, what: str) -> str:
    if requested in DECODERS:
        if not _fits(requested, shape, nc):
            raise EdgekitError(f"--decoder {requested} reads {LAYOUTS[requested]}, and the model's {what} is not "
                               f"that; pass --decoder ({_CHOICES})")
        return requested
    check_plugin_spec(requested)
    if ":" not in requested:  # an entry point's name: it must be installed (looked up, not loaded)
        _entry_point(requested)
    return requested


def _dim(d: Any) -> int | None:
    """A concrete size, or None for a dynamic axis (a name, None, or a non-positive number)."""
    return int(d) if isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 else None


def _fits(name: str, shape: tuple, nc: int | None) -> bool:
    """Whether `shape` can be layout `name`. A dynamic axis may be a count (anchors, K, batch), never the axis
    whose size says the layout (4+nc, 5+nc, 6): a dynamic one there fits nothing."""
    if len(shape) != 3:
        return False
    c, last = _dim(shape[1]), _dim(shape[2])
    if name == "yolov8":
        return c is not None and (c == 4 + nc if nc else c >= 5)
    if name == "yolov5":
        return last is not None and (last == 5 + nc if nc else last >= 6)
    return last == 6  # end2end


def _square(shape: tuple) -> bool:
    return _dim(shape[1]) is not None and _dim(shape[1]) == _dim(shape[2])


def _says_end2end(meta: Mapping[str, Any]) -> bool | None:
    """True / False when ultralytics' metadata says whether the graph ends in NMS (its `end2end` flag for
    NMS-free heads, `nms` in its export args); None when it does not say."""
    args = meta.get("args")
    if isinstance(args, str):
        try:
            args = ast.literal_eval(args)  # ultralytics stores str(dict); literal_eval runs no code
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            args = None
    nms_arg = args.get("nms") if isinstance(args, dict) else None
    flags = [_bool(meta.get("end2end")), _bool(nms_arg)]
    if True in flags:
        return True
    return False if "end2end" in meta and flags[0] is False else None


def _bool(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return v.strip().lower() == "true"
    return None


def _fmt(shape: tuple) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


# ---- plug-ins ----------------------------------------------------------------------------------------

def is_plugin(name: str) -> bool:
    return name not in DECODERS


def check_plugin_spec(spec: str) -> None:
    """A plug-in is `module.path:function` or an entry point's name, never a file path."""
    if "/" in spec or "\\" in spec or spec.endswith(".py") or ".py:" in spec:
        raise EdgekitError(f"--decoder '{spec}' looks like a file path: a decoder plug-in is an installed module "
                           f"named module.path:function (or an entry point in group {ENTRY_POINT_GROUP}), never a "
                           f"file, and never one inside a model directory")
    if ":" in spec and not _MODULE_SPEC.fullmatch(spec):
        raise EdgekitError(f"--decoder '{spec}' is not module.path:function; choose from: {_CHOICES}")
    if ":" not in spec and not re.fullmatch(r"[A-Za-z_][\w.\-]*", spec):
        raise EdgekitError(f"--decoder '{spec}' is neither a built-in decoder nor an entry point name; choose from: "
                           f"{_CHOICES}")


def resolve_decoder(recorded: str, requested: str = "", *, model_dir: str | Path | None = None) -> Decoder:
    """The decoder to run: `requested` (the user's --decoder) when given, else the manifest's `recorded` one.
    A plug-in recorded in a manifest is never imported on the manifest's word: the user names it."""
    name = requested or recorded
    if not is_plugin(name):
        return _BUILTIN[name]
    if not requested:
        where = f"{model_dir}: " if model_dir else ""
        raise EdgekitError(f"{where}this model's outputs need the decoder plug-in '{recorded}', and a model "
                           f"directory never loads code by itself: pass --decoder {recorded} to import it")
    check_plugin_spec(name)
    fn = _load_module_function(name, model_dir) if ":" in name else _load_entry_point(name, model_dir)
    return _Plugin(name, fn)


def _load_module_function(spec: str, model_dir: str | Path | None) -> Callable:
    module, _, attr = spec.partition(":")
    _refuse_model_dir_code(module, spec, model_dir)
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as e:
        raise EdgekitError(f"--decoder {spec}: cannot import '{module}' ({e}); install the package that "
                           f"provides it (or put it on PYTHONPATH)") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise EdgekitError(f"--decoder {spec}: '{module}' has no '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise EdgekitError(f"--decoder {spec}: '{attr}' is not a function")
    return obj


def _entry_point(name: str):
    from importlib.metadata import entry_points

    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if name not in found:
        installed = ", ".join(sorted(found)) or "none installed"
        raise EdgekitError(f"unknown decoder '{name}'{did_you_mean(name, [*DECODERS, *found])}: built in are "
                           f"{', '.join(DECODERS)}; entry points in group {ENTRY_POINT_GROUP}: {installed}; or "
                           f"pass --decoder module.path:function")
    return found[name]


def _load_entry_point(name: str, model_dir: str | Path | None) -> Callable:
    ep = _entry_point(name)
    _refuse_model_dir_code(ep.module, name, model_dir)
    fn = ep.load()
    if not callable(fn):
        raise EdgekitError(f"decoder entry point '{name}' ({ep.value}) is not a function")
    return fn


def _refuse_model_dir_code(module: str, spec: str, model_dir: str | Path | None) -> None:
    """Find the top-level package without running it; refuse it when it lives inside the model directory (say
    when edgekit runs from there and '' is on sys.path)."""
    if model_dir is None:
        return
    try:
        found = importlib.util.find_spec(module.split(".")[0])
    except (ImportError, ValueError):
        return  # import_module then says what is wrong
    if found is None:
        return
    places = [found.origin] if found.origin and found.has_location else []
    places += list(found.submodule_search_locations or [])
    home = Path(model_dir).resolve()
    if any(Path(p).resolve().is_relative_to(home) for p in places):
        raise EdgekitError(f"--decoder {spec}: '{module}' would be imported from inside the model directory "
                           f"{model_dir}; a model directory is data, never code: install the decoder as a package "
                           f"and run edgekit from another folder")


class _Plugin:
    """A user's decoder, called as fn(pred, *, conf, iou, max_det); what it returns is checked, so a wrong
    plug-in is one clear line instead of a failure deep in NMS, drawing or the metric."""

    def __init__(self, name: str, fn: Callable) -> None:
        self.name, self.fn = name, fn

    def __call__(self, pred: np.ndarray, *, conf: float = 0.25, iou: float = 0.7, max_det: int = 300,
                 agnostic: bool = False, multi_label: bool = False) -> Detections:
        out = self.fn(pred, conf=conf, iou=iou, max_det=max_det)
        if isinstance(out, tuple) and len(out) == 3:
            out = Detections(*(np.asarray(a) for a in out))
        if not isinstance(out, Detections):
            raise EdgekitError(f"decoder plug-in {self.name} returned {type(out).__name__}; it must return "
                               f"Detections or (boxes (K, 4), scores (K,), classes (K,))")
        boxes, scores, classes = np.asarray(out.boxes), np.asarray(out.scores), np.asarray(out.classes)
        k = len(scores)
        if boxes.shape != (k, 4) or scores.shape != (k,) or classes.shape != (k,) or (
                k and not np.issubdtype(classes.dtype, np.integer)):
            raise EdgekitError(f"decoder plug-in {self.name} returned boxes {boxes.shape}, scores {scores.shape}, "
                               f"classes {classes.shape} {classes.dtype}; expected (K, 4), (K,), (K,) integers")
        return Detections(boxes.astype(np.float32), scores.astype(np.float32), classes.astype(np.int64))
