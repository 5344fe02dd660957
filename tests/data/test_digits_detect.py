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
from edgekit.data.digits_detect import DigitsDetectConfig, paste, write_digits_detect
from edgekit.camera.accuracy import load_truth
from edgekit.data.mnist import load_mnist5k, split_indices
from edgekit.data.yolo import check_dataset, read_dataset_yaml
from edgekit.errors import EdgekitError

SMALL = dict(train=12, val=6, imgsz=96, video_frames=12, video_width=128, video_digits=2, crop_images=4)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("dd") / "digits"
    return out, write_digits_detect(DigitsDetectConfig(out=str(out), **SMALL))


def _digest(root: Path, suffixes=(".jpg", ".txt", ".jsonl", ".png")) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in suffixes:  # data.yaml holds the absolute path
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
    truth = load_truth(out)
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


def test_video_switches_digits_so_many_are_seen(tmp_path):
    """Every --video-switch frames each lane shows a new digit image: ids unique per digit, each seen only in
    its own window, classes spread (six digits: six different classes)."""
    out = tmp_path / "v"
    meta = write_digits_detect(DigitsDetectConfig(out=str(out), **{**SMALL, "video_switch": 5}))
    truth = load_truth(out)
    digits = meta["video"]["digits"]
    assert meta["video"]["switch_frames"] == 5 and [d["t0"] for d in digits] == [0, 0, 5, 5, 10, 10]
    assert len({d["digit"] for d in digits}) == 6 and len({d["mnist_index"] for d in digits}) == 6
    seen = {}
    for r in truth:
        for o in r["objects"]:
            seen.setdefault(o["id"], set()).add(r["frame"])
            assert o["digit"] == digits[o["id"]]["digit"]
    for d in digits:
        assert seen[d["id"]] <= set(range(d["t0"], d["t0"] + 5)), d


@pytest.mark.slow
def test_default_size_builds_in_seconds(tmp_path):
    """The default set: 400 train + 100 val images at 320, a 300-frame video and the classification crops with
    their 2000 extra renders (~10 s on an idle 2-core CPU; ~3 s of it without crops)."""
    import time

    t0 = time.perf_counter()
    meta = write_digits_detect(DigitsDetectConfig(out=str(tmp_path / "full")))
    seconds = time.perf_counter() - t0
    print(f"digits-detect default build: {seconds:.1f} s")
    assert meta["counts"]["train"]["images"] == 400 and meta["video"]["frames"] == 300
    assert meta["crops"]["train"] > 5000 and meta["crops"]["val"] == meta["counts"]["val"]["boxes"]
    assert seconds < 60  # generous: the CPU is shared


# ---- classification crops --------------------------------------------------------------------------------

def _yolo_boxes(lbl: Path, w: int, h: int) -> list[tuple[int, list[int]]]:
    out = []
    for row in lbl.read_text().splitlines():
        c, cx, cy, bw, bh = map(float, row.split())
        out.append((int(c), [round((cx - bw / 2) * w), round((cy - bh / 2) * h), round((cx + bw / 2) * w),
                             round((cy + bh / 2) * h)]))
    return out


def test_crops_are_the_camera_crop_of_each_digit_under_its_label(tmp_path):
    """Without jitter, each crop is exactly what the camera pipeline would cut around the labelled box (shape
    equal; pixels up to JPEG), in the folder of its digit (ten-class mode labels the digit in the YOLO file)."""
    from edgekit.camera.pipeline import crop_box
    from edgekit.data.imagefolder import load_split

    out = tmp_path / "c"
    meta = write_digits_detect(DigitsDetectConfig(out=str(out), classes="digits", crop_jitter=0.0,
                                                  **{**SMALL, "video_frames": 0}))
    for split in ("train", "val"):
        n = 0
        for lbl in sorted((out / "labels" / split).glob("*.txt")):
            img = cv2.imread(str(out / "images" / split / f"{lbl.stem}.jpg"))
            for j, (digit, box) in enumerate(_yolo_boxes(lbl, img.shape[1], img.shape[0])):
                crop = cv2.imread(str(out / "crops" / split / str(digit) / f"{lbl.stem}_{j}_0.png"))
                want = crop_box(img, box)
                assert crop is not None and crop.shape == want.shape
                assert np.abs(crop.astype(np.float32) - want).mean() < 6  # the image was saved as JPEG
                n += 1
        assert n == meta["counts"][split]["boxes"] == meta["counts"][split]["crops"] > 0
        ims = load_split(out / "crops" / split)  # an ImageFolder: <digit>/*.png
        assert set(ims.classes) <= {str(d) for d in range(10)}
        assert len(ims) == meta["crops"][split] and not ims.skipped
    extra = sorted((out / "crops" / "train").rglob("extra_*.png"))
    assert len(extra) == meta["crops"]["extra_train_crops"] > 0  # from --crop-images renders, train only
    assert not list((out / "crops" / "val").rglob("extra_*.png"))


def test_crops_leave_the_detection_set_byte_identical_and_are_seeded(built, tmp_path):
    out, meta = built
    detection = (".jpg", ".txt", ".jsonl")
    plain = tmp_path / "plain"
    plain_meta = write_digits_detect(DigitsDetectConfig(out=str(plain), crops=0, **SMALL))
    assert not (plain / "crops").exists() and "crops" not in plain_meta
    assert "crops" not in plain_meta["settings"] and meta["settings"]["crops"] == 1  # crops decide contents
    assert _digest(plain, detection) == _digest(out, detection)  # their own random stream
    more = tmp_path / "more"
    more_meta = write_digits_detect(DigitsDetectConfig(out=str(more), crops=2, crop_jitter=0.2, **SMALL))
    assert _digest(more, detection) == _digest(out, detection)
    assert more_meta["crops"]["val"] == 2 * meta["crops"]["val"]
    sizes = {p.name: cv2.imread(str(p)).shape for p in (more / "crops" / "val").rglob("*_0.png")}
    again = {p.name: cv2.imread(str(p)).shape for p in (more / "crops" / "val").rglob("*_1.png")}
    assert len(sizes) == len(again) > 0
    assert [sizes[k] for k in sorted(sizes)] != [again[k.replace("_0.png", "_1.png")] for k in sorted(sizes)]
    with pytest.raises(EdgekitError, match="other settings"):
        write_digits_detect(DigitsDetectConfig(out=str(more), crops=1, **SMALL))
    with pytest.raises(EdgekitError, match="crop-jitter"):
        DigitsDetectConfig(crop_jitter=0.5).validate()


def test_jitter_box_moves_each_edge_within_its_fraction():
    rng = np.random.default_rng(0)
    boxes = np.array([dd.jitter_box([100, 50, 120, 90], 0.1, rng) for _ in range(500)])
    d = boxes - [100, 50, 120, 90]
    assert (np.abs(d[:, [0, 2]]) <= 2.0).all() and (np.abs(d[:, [1, 3]]) <= 4.0).all()  # 10% of 20 and of 40
    assert np.abs(d).max(0).min() > 1.5  # and it does move them
    assert dd.jitter_box([1, 2, 3, 4], 0.0, rng) == [1, 2, 3, 4]


def test_random_ink_pastes_some_digits_that_do_not_contrast():
    """On a light frame, contrasting ink is always dark; with --random-ink 1 about half the digits are light."""
    light = [np.full((240, 320, 3), 230, np.uint8)]
    digits, labels = dd.crop_pool()

    def light_share(random_ink: float) -> float:
        cfg = DigitsDetectConfig(random_ink=random_ink, empty_fraction=0.0)
        rng = np.random.default_rng(0)
        inks = []
        for _ in range(40):
            img, objects = dd.render_image(light, digits, labels, cfg, rng)
            inks += [img[y1:y2, x1:x2].min() > 150 for _, (x1, y1, x2, y2) in objects]  # no dark pixel: light ink
        return float(np.mean(inks))

    assert light_share(0.0) == 0.0
    assert 0.3 < light_share(1.0) < 0.7
    assert "random_ink" not in DigitsDetectConfig().settings()  # off: old folders still match
    assert DigitsDetectConfig(random_ink=0.3).settings()["random_ink"] == 0.3
