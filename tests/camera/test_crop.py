"""The crop a detection's classifier sees (edgekit.camera.pipeline.crop_box): a square around the box, whole
and undistorted, kept inside the frame. The digits-detect crop set is cut with the same function."""
from __future__ import annotations

import numpy as np

from edgekit.camera.pipeline import crop_box


def frame(h=100, w=120):
    return np.arange(h * w * 3, dtype=np.uint32).reshape(h, w, 3).astype(np.uint8)


def test_a_tall_box_becomes_a_padded_square_around_its_centre():
    f = frame()
    c = crop_box(f, [40, 20, 60, 60])  # 20 wide, 40 tall: side 40 * 1.2 = 48, centred on (50, 40)
    assert c.shape == (48, 48, 3) and np.shares_memory(c, f)
    np.testing.assert_array_equal(c, f[16:64, 26:74])
    assert crop_box(f, [40, 20, 60, 60], pad=0.0).shape == (40, 40, 3)


def test_near_an_edge_the_square_moves_inside_the_frame():
    f = frame()
    np.testing.assert_array_equal(crop_box(f, [0, 0, 10, 40]), f[0:48, 0:48])
    np.testing.assert_array_equal(crop_box(f, [110, 70, 120, 100]), f[64:100, 84:120])  # side 36: fits


def test_larger_than_the_frame_is_clipped_and_the_whole_frame_stays_the_whole_frame():
    f = frame()
    np.testing.assert_array_equal(crop_box(f, [0, 0, 120, 100]), f)
    assert crop_box(f, [10, 40, 110, 60]).shape == (100, 120, 3)  # side 120: as tall as the frame allows


def test_an_empty_box_gives_one_pixel():
    assert crop_box(frame(), [5, 5, 5, 5]).shape == (1, 1, 3)
