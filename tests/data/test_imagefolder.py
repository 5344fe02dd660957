"""ImageFolder reading: real MNIST digits in tiny folders; corrupt and truncated files are skipped and
counted; folders that cannot train a classifier are EdgekitErrors that say what to fix."""
from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from edgekit.data.imagefolder import (heldout_for, list_classes, load_imagefolder, load_split, read_image,
                                      stratified_split)
from edgekit.errors import EdgekitError
from edgekit.manifest import Manifest


def _jpeg(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


@pytest.fixture
def digit(mnist5k) -> np.ndarray:
    """A real digit, 56x56 BGR (big enough that a JPEG of it has a long entropy-coded body)."""
    return cv2.cvtColor(cv2.resize(mnist5k[0][0], (56, 56)), cv2.COLOR_GRAY2BGR)


# ---- read_image ------------------------------------------------------------------------------------

def test_read_png_gives_the_written_pixels_as_bgr(tmp_path, mnist5k):
    img = mnist5k[0][7]
    cv2.imwrite(str(tmp_path / "a.png"), img)
    got = read_image(tmp_path / "a.png")
    assert got.shape == (28, 28, 3) and got.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(got[:, :, c], img)


def test_read_complete_jpeg(tmp_path, digit):
    (tmp_path / "a.JPG").write_bytes(_jpeg(digit))  # the extension's case does not matter
    got = read_image(tmp_path / "a.JPG")
    assert got.shape == digit.shape
    assert np.abs(got.astype(int) - digit).mean() < 5  # lossy, but the same picture


def test_truncated_jpeg_is_none(tmp_path, digit):
    data = _jpeg(digit)
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    assert read_image(tmp_path / "half.jpg") is None


def test_jpeg_with_zero_padding_after_eoi_is_read(tmp_path, digit):
    (tmp_path / "pad.jpg").write_bytes(_jpeg(digit) + b"\x00" * 16)  # some writers pad to a block size
    assert read_image(tmp_path / "pad.jpg") is not None


def test_jpeg_with_trailer_after_eoi_is_read(tmp_path, digit):
    (tmp_path / "trailer.jpg").write_bytes(_jpeg(digit) + b"MotionPhoto_Data" + bytes(range(1, 200)))
    img = read_image(tmp_path / "trailer.jpg")
    assert img is not None and img.shape == digit.shape


@pytest.mark.parametrize("name, content", [
    ("random.png", np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8).tobytes()),
    ("empty.png", b""),
    ("text.jpg", b"not an image at all"),
])
def test_corrupt_files_are_none(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    assert read_image(tmp_path / name) is None


def test_truncated_png_is_none(tmp_path, digit):
    ok, buf = cv2.imencode(".png", digit)
    (tmp_path / "half.png").write_bytes(buf.tobytes()[: len(buf) // 2])
    assert read_image(tmp_path / "half.png") is None


def test_missing_file_is_none(tmp_path):
    assert read_image(tmp_path / "nope.png") is None


# ---- load_split ------------------------------------------------------------------------------------

def test_load_split_reads_classes_labels_and_pixels(tmp_path, write_digits, mnist5k):
    write_digits(tmp_path, {"3": 4, "1": 2, "2": 3})
    (tmp_path / ".hidden").mkdir()  # ignored, like .ipynb_checkpoints
    (tmp_path / "1" / "notes.txt").write_text("not an image: not counted")
    s = load_split(tmp_path)
    assert s.classes == ["1", "2", "3"]  # sorted folder names
    assert len(s) == 9 and s.labels.tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 2]
    assert s.skipped == [] and s.images is not None  # small: decoded once, kept in memory
    i = int(s.paths[0].stem)  # files are named by their MNIST index
    np.testing.assert_array_equal(s.image(0)[:, :, 0], mnist5k[0][i])


def test_load_split_without_cache_reads_from_disk(tmp_path, write_digits):
    write_digits(tmp_path, {"0": 2, "1": 2})
    s = load_split(tmp_path, cache=False)
    assert s.images is None
    assert s.image(3).shape == (28, 28, 3)
    s.paths[3].write_bytes(b"broken since the scan")
    with pytest.raises(EdgekitError, match="became unreadable during the run; remove it"):
        s.image(3)


def test_nested_folders_inside_a_class_are_read(tmp_path, write_digits):
    write_digits(tmp_path, {"0": 2, "1": 2})
    (tmp_path / "0" / "batch1").mkdir()
    src = sorted((tmp_path / "1").iterdir())[0]
    (tmp_path / "0" / "batch1" / "deep.png").write_bytes(src.read_bytes())
    s = load_split(tmp_path)
    assert s.labels.tolist() == [0, 0, 0, 1, 1]
    assert tmp_path / "0" / "batch1" / "deep.png" in s.paths[:3]


def test_missing_folder(tmp_path):
    with pytest.raises(EdgekitError, match="does not exist"):
        load_split(tmp_path / "nope")


def test_empty_folder_suggests_mnist5k(tmp_path):
    with pytest.raises(EdgekitError, match="is empty: expected one sub-folder per class.*edgekit data mnist5k"):
        load_split(tmp_path)


def test_single_class_needs_two(tmp_path, write_digits):
    write_digits(tmp_path, {"7": 3})
    with pytest.raises(EdgekitError, match="single class \\('7'\\).*at least two"):
        list_classes(tmp_path)


def test_class_folders_without_any_image_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "readme.txt").write_text("x")
    with pytest.raises(EdgekitError, match="no images .*\\.jpg.*\\.png.* under"):
        load_split(tmp_path)


def test_a_class_with_no_readable_image_is_named(tmp_path, write_digits):
    write_digits(tmp_path, {"0": 3, "1": 3})
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / "bad.png").write_bytes(b"garbage")
    with pytest.raises(EdgekitError, match="class folder\\(s\\) \\['2'\\] .* hold no readable image"):
        load_split(tmp_path)


def test_corrupt_and_truncated_images_are_skipped_and_counted(tmp_path, write_digits, digit, caplog):
    write_digits(tmp_path, {"0": 3, "1": 3})
    (tmp_path / "0" / "random.png").write_bytes(np.random.default_rng(1).integers(0, 256, 999, np.uint8).tobytes())
    data = _jpeg(digit)
    (tmp_path / "1" / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "1" / "whole.jpg").write_bytes(data)
    with caplog.at_level(logging.WARNING, logger="edgekit.data.imagefolder"):
        s = load_split(tmp_path)
    assert len(s) == 7 and s.labels.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert sorted(p.name for p, _ in s.skipped) == ["cut.jpg", "random.png"]
    assert sorted(why for _, why in s.skipped) == [
        "not an image (content is not JPEG, PNG, BMP, WebP or TIFF)", "truncated JPEG"]
    assert not any(p.name in ("cut.jpg", "random.png") for p in s.paths)
    assert "skipped 2 unreadable image(s)" in caplog.text


def test_images_are_judged_by_content_not_name(tmp_path, write_digits, digit):
    """A PNG named .jpg (and a JPEG named .png) is used; a truncated JPEG, a truncated PNG and a text file named
    .png are skipped, each with its reason, and the summary a manifest records counts them."""
    from edgekit.data.imagefolder import skipped_summary

    write_digits(tmp_path, {"0": 2, "1": 2})
    png, jpg = cv2.imencode(".png", digit)[1].tobytes(), _jpeg(digit)
    (tmp_path / "0" / "really_png.jpg").write_bytes(png)
    (tmp_path / "1" / "really_jpeg.png").write_bytes(jpg)
    (tmp_path / "0" / "cut.jpg").write_bytes(jpg[: len(jpg) // 2])
    (tmp_path / "1" / "cut.png").write_bytes(png[: len(png) - 20])
    (tmp_path / "1" / "notes.png").write_text("not a picture\n")
    s = load_split(tmp_path)
    names = [p.name for p in s.paths]
    assert "really_png.jpg" in names and "really_jpeg.png" in names and len(s) == 6
    np.testing.assert_array_equal(s.image(names.index("really_png.jpg")), digit)  # PNG: lossless
    why = {p.name: w for p, w in s.skipped}
    assert why == {"cut.jpg": "truncated JPEG", "cut.png": "truncated PNG",
                   "notes.png": "not an image (content is not JPEG, PNG, BMP, WebP or TIFF)"}
    summary = skipped_summary(s.skipped)
    assert summary["count"] == 3 and sum(summary["reasons"].values()) == 3 and summary["reasons"]["truncated PNG"] == 1


def test_all_corrupt_is_an_error(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        (tmp_path / c / "x.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(EdgekitError, match="all 2 images under .* are unreadable \\(not an image"):
        load_split(tmp_path)


# ---- train/val and splits --------------------------------------------------------------------------

def test_train_and_val_folders_are_used_as_they_are(digits_imagefolder):
    train, val = load_imagefolder(digits_imagefolder)
    assert train.classes == val.classes == ["0", "1", "2"]
    assert (len(train), len(val)) == (60, 24)
    assert {p.parent.parent.name for p in train.paths} == {"train"}
    assert {p.parent.parent.name for p in val.paths} == {"val"}


def test_train_val_with_mismatched_classes_is_an_error(tmp_path, write_digits):
    write_digits(tmp_path / "train", {"0": 2, "1": 2, "2": 2})
    write_digits(tmp_path / "val", {"0": 2, "1": 2}, offset=2)
    with pytest.raises(EdgekitError, match="has classes \\['0', '1'\\] but the training split has "
                                           "\\['0', '1', '2'\\]: the class folders of every split must match"):
        load_imagefolder(tmp_path)


def test_train_without_val_is_split(tmp_path, write_digits):
    write_digits(tmp_path / "train", {"0": 10, "1": 10})
    train, val = load_imagefolder(tmp_path, val_split=0.2, seed=0)
    assert (len(train), len(val)) == (16, 4)
    assert {p.parent.parent.name for p in val.paths} == {"train"}


def test_flat_folder_split_is_stratified_disjoint_and_seeded(tmp_path, write_digits):
    write_digits(tmp_path, {"0": 10, "1": 20, "2": 3, "3": 2})
    train, val = load_imagefolder(tmp_path, val_split=0.1, seed=3)
    assert set(val.labels.tolist()) == {0, 1, 2, 3}  # every class in val, even tiny ones
    assert np.bincount(val.labels).tolist() == [1, 2, 1, 1]
    assert not set(train.paths) & set(val.paths) and len(train) + len(val) == 35
    for i in range(len(val)):  # labels still match their images' folders
        assert val.classes[val.labels[i]] == val.paths[i].parent.name
    again_train, again_val = load_imagefolder(tmp_path, val_split=0.1, seed=3)
    assert again_val.paths == val.paths and again_train.paths == train.paths
    other = [load_imagefolder(tmp_path, val_split=0.1, seed=s)[1].paths for s in range(4, 9)]
    assert any(o != val.paths for o in other)


def test_split_keeps_skipped_on_train(tmp_path, write_digits):
    write_digits(tmp_path, {"0": 4, "1": 4})
    (tmp_path / "0" / "bad.png").write_bytes(b"bad")
    train, _ = load_imagefolder(tmp_path, val_split=0.25)
    assert [p.name for p, _ in train.skipped] == ["bad.png"]


def test_stratified_split_indices():
    labels = np.array([0] * 10 + [1] * 5 + [2])
    tr, va = stratified_split(labels, 0.2, seed=0)
    assert np.bincount(labels[va], minlength=3).tolist() == [2, 1, 0]  # a lone image stays in train
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(16))
    assert (tr == np.sort(tr)).all() and (va == np.sort(va)).all()
    tr2, va2 = stratified_split(labels, 0.2, seed=0)
    assert (va2 == va).all() and (tr2 == tr).all()


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5])
def test_stratified_split_fraction_must_be_in_0_1(fraction):
    with pytest.raises(EdgekitError, match="val split must be between 0 and 1"):
        stratified_split(np.array([0, 1]), fraction, seed=0)


# ---- heldout_for -----------------------------------------------------------------------------------

def test_heldout_for_uses_the_recorded_val_split(torch_model_dir, digits_imagefolder):
    val = heldout_for(Manifest.load(torch_model_dir))
    assert len(val) == 24 and val.classes == ["0", "1", "2"]
    assert all(p.parent.parent == digits_imagefolder / "val" for p in val.paths)
    assert len(heldout_for(Manifest.load(torch_model_dir), limit=5)) == 5


def test_heldout_for_missing_dataset_says_pass_data(torch_model_dir, tmp_path):
    m = Manifest.load(torch_model_dir)
    m.source = {**m.source, "dataset": {"root": str(tmp_path / "moved")}}
    with pytest.raises(EdgekitError, match="is not here: pass --data DIR"):
        heldout_for(m)


def test_heldout_for_other_classes_is_an_error(torch_model_dir, tmp_path, write_digits):
    write_digits(tmp_path, {"0": 3, "1": 3, "7": 3})
    with pytest.raises(EdgekitError, match="the model has \\['0', '1', '2'\\]"):
        heldout_for(Manifest.load(torch_model_dir), tmp_path)
