"""Overlays: boxes with detector class and classifier label, FPS and per-stage times.

Drawn on every frame the loop writes, so kept lean: one text draw per label or HUD line (white on a filled
or darkened background, not an outline plus a fill), text sizes cached, the HUD panel sized from its stage
names (cached) rather than measured per frame."""
from __future__ import annotations

import functools

import numpy as np

from edgekit.lazy import lazy_import

cv2 = lazy_import("cv2")  # imported on first draw: `edgekit --help` and `info` work without OpenCV

_PALETTE = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
            (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0)]
FONT, SCALE = 0, 0.45  # 0: cv2.FONT_HERSHEY_SIMPLEX (a literal, so importing this module needs no OpenCV)
WHITE = (255, 255, 255)
HUD_X, HUD_Y, HUD_DY = 8, 18, 16  # first HUD line's baseline origin, line pitch


def color(i: int) -> tuple[int, int, int]:
    return _PALETTE[int(i) % len(_PALETTE)]


@functools.lru_cache(maxsize=1)
def text_height() -> int:
    """The font's cap height: the same for every text (OpenCV 4.x and 5.x fonts differ, so it is measured)."""
    return cv2.getTextSize("0", FONT, SCALE, 1)[0][1]


def __getattr__(name: str) -> int:  # TEXT_H, measured on first use (PEP 562)
    if name == "TEXT_H":
        return text_height()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.lru_cache(maxsize=4096)
def text_width(text: str) -> int:
    return cv2.getTextSize(text, FONT, SCALE, 1)[0][0]


def draw_objects(frame: np.ndarray, objects: list[dict]) -> None:
    """Each object: box [x1,y1,x2,y2], det_class, det_score, and optionally label, label_score, track_id. The label
    sits on a filled tab of the box's colour above the box (below it when the box touches the top edge). A
    tracked object is coloured by its id and its label starts with #id, so an id switch shows as a new colour."""
    for o in objects:
        x1, y1, x2, y2 = (int(round(v)) for v in o["box"])
        tid = o.get("track_id")
        c = color(o.get("label_id", o.get("det_id", 0)) if tid is None else tid)
        cv2.rectangle(frame, (x1, y1), (x2, y2), c, 2)
        text = f"{o['det_class']} {o['det_score']:.2f}"
        if "label" in o:
            text = f"{o['label']} {o['label_score']:.2f} | " + text
        if tid is not None:
            text = f"#{tid} " + text
        th = text_height()
        ty = y1 - 4 if y1 - th - 6 >= 0 else y2 + th + 4
        cv2.rectangle(frame, (x1, ty - th - 3), (x1 + text_width(text) + 2, ty + 3), c, -1)
        cv2.putText(frame, text, (x1 + 1, ty), FONT, SCALE, WHITE, 1, cv2.LINE_AA)


def hud_lines(fps: float, stage_ms: dict[str, float]) -> list[str]:
    return [f"{fps:5.1f} FPS"] + [f"{k} {v:.1f} ms" for k, v in stage_ms.items()]


@functools.lru_cache(maxsize=64)
def hud_box(stages: tuple[str, ...]) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) of the HUD panel for these stage names, wide enough for times up to 9999.9 ms (all
    digits have the same width in this font), so it neither depends on this frame's numbers nor jitters."""
    w = max(text_width(line) for line in hud_lines(888.8, dict.fromkeys(stages, 8888.8)))
    return HUD_X - 4, HUD_Y - text_height() - 4, HUD_X + w + 4, HUD_Y + HUD_DY * len(stages) + 6


def draw_hud(frame: np.ndarray, fps: float, stage_ms: dict[str, float]) -> None:
    """FPS and the last frame's stage times, top left, white on a darkened panel: one text draw per line, and
    what lies under the panel stays visible at half brightness."""
    x1, y1, x2, y2 = hud_box(tuple(stage_ms))
    panel = frame[max(y1, 0):y2, max(x1, 0):x2]
    np.right_shift(panel, 1, out=panel)
    for i, line in enumerate(hud_lines(fps, stage_ms)):
        cv2.putText(frame, line, (HUD_X, HUD_Y + HUD_DY * i), FONT, SCALE, WHITE, 1, cv2.LINE_AA)


LINE_COLOUR, ZONE_COLOUR = (0, 255, 255), (255, 128, 0)  # BGR: yellow lines, blue zones


def _per_class(d: dict[str, int]) -> str:
    return " ".join(f"{k}:{v}" for k, v in sorted(d.items())) if d else "0"


def draw_counts(frame: np.ndarray, counts: dict | None) -> None:
    """--line / --zone (edgekit.camera.tracking): each line with its in/out counts at its middle, each zone's
    outline with its inside count at its first corner. Nothing when `counts` is None."""
    if not counts:
        return
    for ln in counts.get("lines", ()):
        x1, y1, x2, y2 = (int(round(v)) for v in ln["line"])
        cv2.line(frame, (x1, y1), (x2, y2), LINE_COLOUR, 2, cv2.LINE_AA)
        _tag(frame, f"in {_per_class(ln['in'])} out {_per_class(ln['out'])}", ((x1 + x2) // 2, (y1 + y2) // 2),
             LINE_COLOUR)
    for z in counts.get("zones", ()):
        pts = np.round(np.asarray(z["zone"], np.float64)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(frame, [pts], True, ZONE_COLOUR, 2, cv2.LINE_AA)
        _tag(frame, f"inside {_per_class(z['inside'])}", (int(pts[0, 0, 0]), int(pts[0, 0, 1])), ZONE_COLOUR)


def _tag(frame: np.ndarray, text: str, xy: tuple[int, int], c: tuple[int, int, int]) -> None:
    x, y = xy
    th = text_height()
    cv2.rectangle(frame, (x, y - th - 3), (x + text_width(text) + 2, y + 3), c, -1)
    cv2.putText(frame, text, (x + 1, y), FONT, SCALE, (0, 0, 0), 1, cv2.LINE_AA)
