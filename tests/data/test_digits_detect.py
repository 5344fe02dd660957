"""digits-detect: real held-out MNIST digits on real video frames with known boxes, YOLO format; seeded,
reproducible, atomic and idempotent; a test video with per-frame ground truth."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgekit.data import digits_detect as dd
from edgekit.data.digits_detect import DigitsDetectConfig, load_video_truth, paste, write_digits_detect
from edgekit.data.mnist import load_mnist5k, split_indices
from edgekit.data.yolo import check_dataset, read_dataset_yaml
from edgekit.errors import EdgekitError

SMALL = dict(train=12, val=6, imgsz=96, video_frames=12, video_width=128, video_digits=2)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("dd") / "digits"
    return out, write_digits_detect(DigitsDetectConfig(out=str(out), **SMALL))


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in (".jpg", ".txt", ".jsonl"):  # data.yaml holds the absolute path
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_yolo_layout_and_yaml(built):
    out, meta = built
    spec, counts = check_dataset(out / "data.yaml")
    assert spec.names == ["digit"] and spec.root == out.resolve()
    assert counts["train"]["images"] == 12 and counts["val"]["images"] == 6
    assert counts["train"]["boxes"] == meta["counts"]["train"]["boxes"] > 0
    img = cv2.imread(str(next((out / "images" / "train").glob("*.jpg"))))
    assert img.shape == (72, 96, 3)  # imgsz wide, 4:3
    assert (out / dd.DONE).exists() and not list(out.parent.glob(".digits.*"))  # no temp dir left


def test_paste_box_is_the_ink_of_the_digit():
    rng = np.random.default_rng(0)
    img = np.zeros((50, 60, 3), np.uint8)
    alpha = np.zeros((20, 10), np.float32)
    alpha[3:17, 2:9] = 1.0
    box = paste(img, alpha, 30, 5, rng, colour=(255.0, 255.0, 255.0), opacity=1.0)
    assert box == [32, 8, 39, 22]  # x + 2 .. x + 9 (exclusive), y + 3 .. y + 17
    ys, xs = np.nonzero(img[:, :, 0])
    assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == box


def test_labels_match_the_pasted_digits(built):
    """Every labelled box holds ink that stands out from the frame around it (JPEG allowing)."""
    out, _ = built
    for lbl in sorted((out / "labels" / "val").glob("*.txt")):
        img = cv2.imread(str(out / "images" / "val" / f"{lbl.stem}.jpg"), cv2.IMREAD_GRAYSCALE).astype(np.float32)
        h, w = img.shape
        for row in lbl.read_text().splitlines():
            c, cx, cy, bw, bh = map(float, row.split())
            assert c == 0 and 0 < bw <= 1 and 0 < bh <= 1
            x1, y1, x2, y2 = round((cx - bw / 2) * w), round((cy - bh / 2) * h), round((cx + bw / 2) * w), round(
                (cy + bh / 2) * h)
            patch = img[y1:y2, x1:x2]
            assert patch.size and patch.std() > 10  # a digit, not a flat patch of background


def test_only_heldout_digits_and_disjoint_splits():
    _, labels = load_mnist5k()
    held = set(split_indices(labels)["heldout"].tolist())
    pools = dd.digit_pools(0)
    used = [set(p[2].tolist()) for p in pools.values()]
    assert all(u <= held for u in used)  # never the classifier's train/val digits
    assert not (used[0] & used[1]) and not (used[0] & used[2]) and not (used[1] & used[2])
    assert [len(u) for u in used] == [600, 200, 200]


def test_frames_of_each_split_come_from_separate_time_ranges():
    a, b = dd.SEGMENTS["train"], dd.SEGMENTS["val"]
    assert a[1] <= b[0] and dd.SEGMENTS["val"][1] <= dd.SEGMENTS["video"][0]


def test_seeded_reproducible_and_idempotent(built, tmp_path):
    out, meta = built
    again = tmp_path / "again"
    write_digits_detect(DigitsDetectConfig(out=str(again), **SMALL))
    assert _digest(again) == _digest(out)  # same seed, same bytes
    other = tmp_path / "other"
    write_digits_detect(DigitsDetectConfig(out=str(other), seed=1, **SMALL))
    assert _digest(other) != _digest(out)
    stamp = (again / "data.yaml").stat().st_mtime_ns
    assert write_digits_detect(DigitsDetectConfig(out=str(again), **SMALL))["counts"] == meta["counts"]
    assert (again / "data.yaml").stat().st_mtime_ns == stamp  # complete: left alone
    with pytest.raises(EdgekitError, match="other settings"):
        write_digits_detect(DigitsDetectConfig(out=str(again), **{**SMALL, "train": 5}))
    write_digits_detect(DigitsDetectConfig(out=str(again), force=True, **{**SMALL, "train": 5}))
    assert len(list((again / "images" / "train").glob("*.jpg"))) == 5


def test_atomic_a_failed_build_leaves_nothing(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(dd, "_write_yaml", boom)
    with pytest.raises(RuntimeError):
        write_digits_detect(DigitsDetectConfig(out=str(tmp_path / "x"), **SMALL))
    assert list(tmp_path.iterdir()) == []


def test_refuses_a_foreign_folder_and_bad_options(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(EdgekitError, match="not an edgekit digits-detect folder"):
        write_digits_detect(DigitsDetectConfig(out=str(tmp_path / "mine"), **SMALL))
    with pytest.raises(EdgekitError, match="unknown --classes"):
        DigitsDetectConfig(classes="letters").validate()
    with pytest.raises(EdgekitError, match="min-digits"):
        DigitsDetectConfig(min_digits=3, max_digits=2).validate()


def test_ten_class_mode_labels_the_digit(tmp_path):
    out = tmp_path / "ten"
    meta = write_digits_detect(DigitsDetectConfig(out=str(out), classes="digits", **{**SMALL, "video_frames": 0}))
    assert read_dataset_yaml(out / "data.yaml").names == [str(d) for d in range(10)]
    classes = {int(r.split()[0]) for p in (out / "labels").rglob("*.txt") for r in p.read_text().splitlines()}
    assert len(classes) > 3 and classes <= set(range(10))
    assert "video" not in meta and not (out / "video").exists()


def test_video_and_its_ground_truth(built):
    out, meta = built
    truth = load_video_truth(out)
    assert [r["frame"] for r in truth] == list(range(12))
    cap = cv2.VideoCapture(str(out / "video" / "digits.mp4"))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    assert len(frames) == 12 and frames[0].shape == (96, 128, 3)
    ids = {o["id"] for r in truth for o in r["objects"]}
    assert ids == {0, 1}
    for r in truth:
        for o in r["objects"]:
            x1, y1, x2, y2 = o["box"]
            assert 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 96 and 0 <= o["digit"] <= 9
    moved = [o["box"] for r in (truth[0], truth[-1]) for o in r["objects"] if o["id"] == 0]
    assert moved[0] != moved[1]  # the digits move
    assert meta["video"]["frames"] == 12 and json.loads((out / "edgekit.json").read_text())["video"]


@pytest.mark.slow
def test_default_size_builds_in_seconds(tmp_path):
    """The demo's set: 400 train + 100 val images at 320 and a 150-frame video (~3 s on an idle 2-core CPU)."""
    import time

    t0 = time.perf_counter()
    meta = write_digits_detect(DigitsDetectConfig(out=str(tmp_path / "full")))
    seconds = time.perf_counter() - t0
    print(f"digits-detect default build: {seconds:.1f} s")
    assert meta["counts"]["train"]["images"] == 400 and meta["video"]["frames"] == 150
    assert seconds < 30  # generous: the CPU is shared
