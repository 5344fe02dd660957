"""Overlays: labels drawn where their boxes are (the same pixels as drawing each with plain OpenCV calls), the
HUD drawn once per line inside its panel, and nothing drawn elsewhere."""
from __future__ import annotations

import cv2
import numpy as np

from edgekit.vision.draw import FONT, SCALE, TEXT_H, color, draw_hud, draw_objects, hud_box, hud_lines, text_width

OBJECTS = [
    {"box": [40.6, 63.7, 116.4, 140.8], "det_id": 0, "det_class": "digit", "det_score": 0.8914, "label_id": 3,
     "label": "3", "label_score": 0.5447},
    {"box": [200.2, 2.0, 260.7, 60.1], "det_id": 0, "det_class": "digit", "det_score": 0.5},  # touches the top
]
STAGES = {"preprocess": 0.31, "detect": 108.42, "postprocess": 0.39, "classify_pre": 0.6, "classify": 6.9,
          "draw": 0.35, "write": 0.25}


def _reference_objects(frame: np.ndarray) -> None:
    """What each object should look like: box, a tab of its colour, the label text, in plain OpenCV calls."""
    for o in OBJECTS:
        x1, y1, x2, y2 = (int(round(v)) for v in o["box"])
        c = color(o.get("label_id", o["det_id"]))
        text = (f"{o['label']} {o['label_score']:.2f} | " if "label" in o else "") + \
            f"{o['det_class']} {o['det_score']:.2f}"
        (tw, th), _ = cv2.getTextSize(text, FONT, SCALE, 1)
        ty = y1 - 4 if y1 - th - 6 >= 0 else y2 + th + 4
        cv2.rectangle(frame, (x1, y1), (x2, y2), c, 2)
        cv2.rectangle(frame, (x1, ty - th - 3), (x1 + tw + 2, ty + 3), c, -1)
        cv2.putText(frame, text, (x1 + 1, ty), FONT, SCALE, (255, 255, 255), 1, cv2.LINE_AA)


def test_objects_are_drawn_exactly_as_plain_opencv_calls_draw_them():
    got, want = np.zeros((240, 320, 3), np.uint8), np.zeros((240, 320, 3), np.uint8)
    draw_objects(got, OBJECTS)
    _reference_objects(want)
    assert np.array_equal(got, want)


def test_labels_sit_on_their_boxes():
    frame = np.zeros((240, 320, 3), np.uint8)
    draw_objects(frame, OBJECTS)
    # first box: its edges in its label's colour, the label tab just above it, text (white) in the tab
    c3 = color(3)
    assert tuple(frame[100, 40]) == c3 and tuple(frame[100, 116]) == c3 and tuple(frame[64, 80]) == c3
    tab = frame[64 - 4 - TEXT_H - 3:64 - 4 + 3, 41:41 + text_width("3 0.54 | digit 0.89")]
    assert (tab == c3).all(axis=2).mean() > 0.5 and (tab > 200).all(axis=2).any()
    # second box touches the top edge: its tab goes below it
    c0 = color(0)
    below = frame[60 + 4:60 + TEXT_H + 8, 201:201 + text_width("digit 0.50")]
    assert (below == c0).all(axis=2).mean() > 0.5 and (below > 200).all(axis=2).any()
    # and nothing anywhere else
    mask = np.zeros(frame.shape[:2], bool)
    mask[40:143, 38:200] = mask[0:90, 198:263] = True
    assert not frame[~mask].any()


def test_hud_draws_each_line_inside_its_panel_and_nothing_outside():
    frame = np.full((240, 320, 3), 200, np.uint8)
    draw_hud(frame, 8.5, STAGES)
    x1, y1, x2, y2 = hud_box(tuple(STAGES))
    outside = np.ones(frame.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    assert (frame[outside] == 200).all()
    panel = frame[y1:y2, x1:x2]
    assert (panel <= 100).all(axis=2).mean() > 0.6  # darkened: the white text reads on any picture
    for i, line in enumerate(hud_lines(8.5, STAGES)):  # one band per line, each with white text in it
        y = 18 + 16 * i
        band = frame[y - TEXT_H + 1:y + 1, 8:8 + text_width(line)]
        assert (band > 230).all(axis=2).sum() > 10, line


def test_hud_panel_fits_any_time_below_10_s_and_does_not_follow_the_numbers():
    box = hud_box(tuple(STAGES))
    slow = dict.fromkeys(STAGES, 9999.94)
    assert all(8 + text_width(line) <= box[2] for line in hud_lines(999.9, slow))
    assert hud_box(tuple(slow)) == box
    assert len(hud_lines(8.5, STAGES)) == len(STAGES) + 1 and hud_lines(8.5, STAGES)[0] == "  8.5 FPS"


def test_hud_on_a_frame_smaller_than_the_panel():
    frame = np.full((20, 30, 3), 255, np.uint8)
    draw_hud(frame, 8.5, STAGES)  # clipped, no error
    assert frame.shape == (20, 30, 3)


def test_text_width_is_opencvs():
    for text in ("3 0.54 | digit 0.89", "detect 108.4 ms", ""):
        assert text_width(text) == cv2.getTextSize(text, FONT, SCALE, 1)[0][0]


def test_font_constants_are_opencvs():
    """FONT is a literal (importing draw needs no OpenCV) and TEXT_H is measured with the OpenCV installed
    (4.x and 5.x fonts differ in height)."""
    from edgekit.vision import draw

    assert FONT == cv2.FONT_HERSHEY_SIMPLEX
    assert TEXT_H == draw.TEXT_H == cv2.getTextSize("0", cv2.FONT_HERSHEY_SIMPLEX, SCALE, 1)[0][1]
