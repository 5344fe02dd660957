"""Image -> model input, checked on crafted images whose right answer is known pixel by pixel."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.manifest import InputSpec
from edgekit.vision.preprocess import batch_classify, normalize, preprocess_classify, resize_crop, to_bgr

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _spec(**kw) -> InputSpec:
    return InputSpec("input", kw.pop("shape", [1, 3, 4, 4]), **kw)


def _coords(h: int, w: int) -> np.ndarray:
    """uint8 HxWx3 whose pixel (y, x) is (y, x, 7): a crop can be read back as coordinates."""
    yy, xx = np.mgrid[:h, :w]
    return np.stack([yy, xx, np.full_like(yy, 7)], -1).astype(np.uint8)


# ---- resize_crop -----------------------------------------------------------------------------------

def test_centre_crop_without_resize_takes_the_middle_pixels():
    img = _coords(6, 10)
    out = resize_crop(img, 6, [4, 4])  # shorter side already 6: crop only
    assert out.shape == (4, 4, 3)
    np.testing.assert_array_equal(out, img[1:5, 3:7])
    assert out[0, 0, 0] == 1 and out[0, 0, 1] == 3  # top-left of the crop is pixel (1, 3)


def test_centre_crop_of_a_tall_image():
    img = _coords(11, 5)
    np.testing.assert_array_equal(resize_crop(img, 5, [5, 5]), img[3:8])


@pytest.mark.parametrize("h, w, resize, crop, resized", [
    (28, 28, 37, [32, 32], (37, 37)),  # MNIST into the tiny model's spec: upscaled, then cropped
    (100, 50, 32, [32, 32], (64, 32)),  # tall: the shorter side (width) becomes 32
    (50, 100, 32, [32, 32], (32, 64)),
    (480, 640, 256, [224, 224], (256, 341)),
    (300, 300, 224, [224, 200], (224, 224)),  # non-square crop
])
def test_shapes(h, w, resize, crop, resized):
    out = resize_crop(np.zeros((h, w, 3), np.uint8), resize, crop)
    assert out.shape == (*crop, 3)


def test_resize_keeps_aspect_and_crops_the_centre():
    # a 40x80 image: left half black, right half white, with a 2-px grey stripe in the middle columns
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, 40:] = 255
    img[:, 39:41] = 128
    out = resize_crop(img, 20, [20, 20])  # -> 20x40, then the centre 20x20 (columns 10..29)
    assert out.shape == (20, 20, 3)
    assert (out[:, :8] == 0).all() and (out[:, 12:] == 255).all()  # still black | white around the middle
    assert 0 < out[:, 9:11].mean() < 255


def test_downscale_averages_pixels():
    img = np.zeros((8, 8), np.uint8)
    img[::2, ::2] = 200  # a quarter of the pixels lit: area averaging gives 50 everywhere
    out = resize_crop(img, 4, [4, 4])
    np.testing.assert_allclose(out, 50, atol=1)


def test_crop_larger_than_resize_upscales_to_the_crop():
    out = resize_crop(_coords(10, 10), 8, [12, 12])
    assert out.shape == (12, 12, 3)


# ---- normalize -------------------------------------------------------------------------------------

def test_normalize_exact_values_rgb_nchw():
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[...] = (10, 20, 30)  # B, G, R
    bgr[1, 2] = (255, 0, 128)
    x = normalize(bgr, _spec())
    assert x.shape == (3, 2, 3) and x.dtype == np.float32 and x.flags.c_contiguous
    rgb = np.array([30, 20, 10], np.float64)  # the model wants RGB: channel 0 is red
    np.testing.assert_allclose(x[:, 0, 0], (rgb / 255 - MEAN) / STD, rtol=1e-6)
    np.testing.assert_allclose(x[:, 1, 2], (np.array([128, 0, 255]) / 255 - MEAN) / STD, rtol=1e-6, atol=1e-6)
    assert x[0, 0, 0] == pytest.approx((30 / 255 - 0.485) / 0.229, rel=1e-6)


def test_normalize_bgr_keeps_the_order():
    bgr = np.full((1, 1, 3), (10, 20, 30), np.uint8)
    x = normalize(bgr, _spec(color="BGR", mean=[0, 0, 0], std=[1, 1, 1]))
    np.testing.assert_allclose(x[:, 0, 0], np.array([10, 20, 30]) / 255, rtol=1e-6)
    rgb = normalize(bgr, _spec(color="RGB", mean=[0, 0, 0], std=[1, 1, 1]))
    np.testing.assert_allclose(rgb[:, 0, 0], np.array([30, 20, 10]) / 255, rtol=1e-6)


def test_normalize_nhwc_and_custom_scale():
    bgr = np.full((2, 2, 3), (0, 100, 200), np.uint8)
    spec = _spec(shape=[1, 2, 2, 3], layout="NHWC", scale=1.0, mean=[1, 2, 3], std=[2, 4, 8])
    x = normalize(bgr, spec)
    assert x.shape == (2, 2, 3)
    np.testing.assert_allclose(x[1, 1], [(200 - 1) / 2, (100 - 2) / 4, (0 - 3) / 8], rtol=1e-6)


def test_normalize_extremes_cover_the_expected_range():
    spec = _spec()
    lo = normalize(np.zeros((1, 1, 3), np.uint8), spec)[:, 0, 0]
    hi = normalize(np.full((1, 1, 3), 255, np.uint8), spec)[:, 0, 0]
    np.testing.assert_allclose(lo, -np.array(MEAN) / STD, rtol=1e-6)
    np.testing.assert_allclose(hi, (1 - np.array(MEAN)) / STD, rtol=1e-6)


# ---- channels --------------------------------------------------------------------------------------

def test_gray_becomes_three_equal_channels():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for img in (gray, gray[:, :, None]):
        bgr = to_bgr(img)
        assert bgr.shape == (3, 4, 3)
        for c in range(3):
            np.testing.assert_array_equal(bgr[:, :, c], gray)


def test_bgra_drops_alpha_and_keeps_colour():
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[...] = (10, 20, 30, 0)  # fully transparent: the colour is kept, not composited
    np.testing.assert_array_equal(to_bgr(bgra), np.full((2, 2, 3), (10, 20, 30), np.uint8))


def test_bgr_passes_through_unchanged():
    img = _coords(3, 3)
    assert to_bgr(img) is img


@pytest.mark.parametrize("shape", [(4, 4, 2), (4, 4, 5), (4,), (2, 4, 4, 3)])
def test_unsupported_channel_counts(shape):
    with pytest.raises(EdgekitError, match="unsupported image shape"):
        to_bgr(np.zeros(shape, np.uint8))


# ---- the whole transform ---------------------------------------------------------------------------

def test_preprocess_gray_bgr_and_bgra_of_the_same_picture_agree(mnist5k):
    gray = mnist5k[0][0]
    spec = InputSpec("input", [1, 3, 32, 32], resize=37, crop=[32, 32])
    a = preprocess_classify(gray, spec)
    b = preprocess_classify(np.repeat(gray[:, :, None], 3, 2), spec)
    c = preprocess_classify(np.dstack([gray, gray, gray, np.full_like(gray, 255)]), spec)
    assert a.shape == (3, 32, 32) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_preprocess_equals_its_steps():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    spec = InputSpec("input", [1, 3, 16, 16], resize=20, crop=[16, 16])
    np.testing.assert_array_equal(preprocess_classify(img, spec), normalize(resize_crop(img, 20, [16, 16]), spec))


def test_red_pixel_lands_in_channel_0_for_rgb_models():
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 2] = 255  # BGR red
    x = preprocess_classify(red, InputSpec("input", [1, 3, 8, 8], mean=[0, 0, 0], std=[1, 1, 1]))
    np.testing.assert_allclose(x[0], 1.0)
    np.testing.assert_allclose(x[1:], 0.0)


def test_batch_classify_stacks_and_rejects_empty():
    spec = InputSpec("input", [1, 3, 8, 8])
    imgs = [np.full((10, 12, 3), v, np.uint8) for v in (0, 128, 255)]
    x = batch_classify(imgs, spec)
    assert x.shape == (3, 3, 8, 8)
    np.testing.assert_array_equal(x[1], preprocess_classify(imgs[1], spec))
    with pytest.raises(EdgekitError, match="no images to preprocess"):
        batch_classify([], spec)
