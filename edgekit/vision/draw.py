"""Overlays: boxes with detector class and classifier label, FPS and per-stage times."""
from __future__ import annotations

import cv2
import numpy as np

_PALETTE = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
            (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0)]


def color(i: int) -> tuple[int, int, int]:
    return _PALETTE[int(i) % len(_PALETTE)]


def draw_objects(frame: np.ndarray, objects: list[dict]) -> None:
    """Each object: box [x1,y1,x2,y2], det_class, det_score, and optionally label, label_score."""
    for o in objects:
        x1, y1, x2, y2 = (int(round(v)) for v in o["box"])
        c = color(o.get("label_id", o.get("det_id", 0)))
        cv2.rectangle(frame, (x1, y1), (x2, y2), c, 2)
        text = f"{o['det_class']} {o['det_score']:.2f}"
        if "label" in o:
            text = f"{o['label']} {o['label_score']:.2f} | " + text
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        ty = y1 - 4 if y1 - th - 6 >= 0 else y2 + th + 4
        cv2.rectangle(frame, (x1, ty - th - 3), (x1 + tw + 2, ty + 3), c, -1)
        cv2.putText(frame, text, (x1 + 1, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)


def draw_hud(frame: np.ndarray, fps: float, stage_ms: dict[str, float]) -> None:
    lines = [f"{fps:5.1f} FPS"] + [f"{k} {v:.1f} ms" for k, v in stage_ms.items()]
    for i, line in enumerate(lines):
        y = 18 + 16 * i
        cv2.putText(frame, line, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(frame, line, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
