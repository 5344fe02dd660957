"""YOLO-format datasets: what ultralytics calls background is counted; what would silently mislead it (a
missing folder, a class outside `names`, a malformed or out-of-image row) is one EdgekitError naming the fix."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgekit.data.yolo import check_dataset, label_path, load_split, read_dataset_yaml
from edgekit.errors import EdgekitError


def _dataset(root: Path, labels: dict[str, str | None], names=("digit",), split="val") -> Path:
    """root/images/<split>/<name>.jpg (real-ish pixels) with labels/<split>/<name>.txt unless None."""
    for s in ("train", "val"):
        (root / "images" / s).mkdir(parents=True, exist_ok=True)
        (root / "labels" / s).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, text in labels.items():
        cv2.imwrite(str(root / "images" / split / f"{name}.jpg"), rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
        if text is not None:
            (root / "labels" / split / f"{name}.txt").write_text(text)
    names_yaml = "\n".join(f"  {i}: {n}" for i, n in enumerate(names))
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names_yaml}\n")
    return root / "data.yaml"


def test_reads_a_good_dataset_and_converts_boxes(tmp_path):
    y = _dataset(tmp_path, {"a": "0 0.5 0.5 0.5 0.25\n", "b": "0 0.25 0.25 0.5 0.5\n0 0.75 0.75 0.5 0.5\n"})
    spec = read_dataset_yaml(y)
    assert spec.names == ["digit"] and spec.splits["val"] == [tmp_path / "images" / "val"]
    ds = load_split(spec, "val")
    assert len(ds) == 2 and ds.summary()["boxes"] == 3
    cls, boxes = ds.boxes_xyxy(0, (24, 32))
    np.testing.assert_allclose(boxes, [[8, 9, 24, 15]])
    assert read_dataset_yaml(tmp_path).yaml == y  # a folder holding data.yaml works too


def test_relative_path_is_relative_to_the_yaml(tmp_path):
    _dataset(tmp_path / "d", {"a": "0 0.5 0.5 0.1 0.1\n"})
    (tmp_path / "d" / "rel.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: [digit]\n")
    assert read_dataset_yaml(tmp_path / "d" / "rel.yaml").root == (tmp_path / "d").resolve()


def test_label_path_convention():
    assert label_path(Path("/d/images/train/x.jpg")) == Path("/d/labels/train/x.txt")
    assert label_path(Path("/images/d/images/val/sub/y.png")) == Path("/images/d/labels/val/sub/y.txt")


def test_missing_yaml_and_missing_folders_are_errors(tmp_path):
    with pytest.raises(EdgekitError, match="does not exist.*digits-detect"):
        read_dataset_yaml(tmp_path / "nope.yaml")
    y = _dataset(tmp_path, {"a": "0 0.5 0.5 0.1 0.1\n"})
    y.write_text(y.read_text().replace("val: images/val", "val: images/validation"))
    with pytest.raises(EdgekitError, match="'val' folder .*images/validation does not exist"):
        read_dataset_yaml(y)
    y.write_text(f"path: {tmp_path}/gone\ntrain: images/train\nval: images/val\nnames: [digit]\n")
    with pytest.raises(EdgekitError, match="'path' .*gone is not a folder"):
        read_dataset_yaml(y)
    y.write_text(f"path: {tmp_path}\ntrain: images/train\nnames: [digit]\n")
    with pytest.raises(EdgekitError, match="no 'val' entry"):
        read_dataset_yaml(y)
    y.write_text(f"path: {tmp_path}\ntrain: images/train\nval: images/val\n")
    with pytest.raises(EdgekitError, match="'names' must list"):
        read_dataset_yaml(y)


@pytest.mark.parametrize("row, match", [
    ("1 0.5 0.5 0.1 0.1", r"a.txt:2: class 1 is out of range.*1 class"),
    ("-1 0.5 0.5 0.1 0.1", "out of range"),
    ("0.5 0.5 0.5 0.1 0.1", "out of range"),
    ("0 0.5 0.5 0.1", "expected 5 values"),
    ("0 0.5 0.5 0.1 0.1 0.2 0.3", "expected 5 values"),
    ("0 x 0.5 0.1 0.1", "not numbers"),
    ("0 0.95 0.5 0.2 0.1", "not inside the image"),
    ("0 0.5 0.5 0 0.1", "not inside the image"),
    ("0 12 40 30 20", "not inside the image.*divide pixels"),
])
def test_bad_label_rows_name_the_file_and_line(tmp_path, row, match):
    y = _dataset(tmp_path, {"a": f"0 0.5 0.5 0.2 0.2\n{row}\n"})
    with pytest.raises(EdgekitError, match=match):
        load_split(read_dataset_yaml(y), "val")


def test_background_images_are_counted_not_errors(tmp_path, caplog):
    y = _dataset(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n", "empty": "", "nolabel": None,
                            "dup": "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n"})
    ds = load_split(read_dataset_yaml(y), "val")
    s = ds.summary()
    assert s["images"] == 4 and s["empty_labels"] == 1 and s["missing_labels"] == 1
    assert s["duplicate_rows_removed"] == 1 and s["boxes"] == 2
    assert "no label file" in caplog.text and "duplicate" in caplog.text


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    y = _dataset(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n"})
    (tmp_path / "images" / "val" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    img = np.random.default_rng(1).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    (tmp_path / "images" / "val" / "png.jpg").write_bytes(cv2.imencode(".png", img)[1].tobytes())  # judged by content
    (tmp_path / "labels" / "val" / "png.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "images" / "val" / "text.png").write_text("not a picture\n")
    ds = load_split(read_dataset_yaml(y), "val")
    assert len(ds) == 2 and sorted(p.name for p in ds.paths) == ["a.jpg", "png.jpg"]
    assert sorted((p.name, why) for p, why in ds.skipped) == [
        ("broken.jpg", "truncated JPEG"), ("text.png", "not an image (content is not JPEG, PNG, BMP, WebP or TIFF)")]
    assert ds.summary()["skipped_images"] == 2 and ds.summary()["skipped_reasons"] == {
        "truncated JPEG": 1, "not an image (content is not JPEG, PNG, BMP, WebP or TIFF)": 1}


def test_no_labels_at_all_and_no_images_are_errors(tmp_path):
    y = _dataset(tmp_path / "a", {"x": None, "y": None})
    with pytest.raises(EdgekitError, match="none of the 2 images .* has a label file"):
        load_split(read_dataset_yaml(y), "val")
    y = _dataset(tmp_path / "b", {})
    with pytest.raises(EdgekitError, match="no images"):
        load_split(read_dataset_yaml(y), "val")


def test_check_dataset_needs_boxes_to_train_on(tmp_path):
    y = _dataset(tmp_path, {"t": ""}, split="train")
    _dataset(tmp_path, {"v": "0 0.5 0.5 0.2 0.2\n"}, split="val")
    with pytest.raises(EdgekitError, match="train split .* has no labelled box"):
        check_dataset(y)
