"""YOLO-format detection datasets: a dataset yaml (path, train, val, names) and images/<split>/*.jpg with
labels/<split>/*.txt beside them (one `class cx cy w h` row per object, normalised to [0, 1]).

Read and checked before ultralytics sees them, so a mistake is one clear EdgekitError instead of a download
attempt or a silent skip: a missing folder, a class id outside `names`, a malformed row or coordinates
outside the image. What ultralytics treats as background is counted and reported, not an error: images
without a label file, empty label files. Unreadable images are skipped and counted."""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.data.imagefolder import IMAGE_EXTS, decode_image, read_image, skipped_summary
from edgekit.data.inputs import CalibrationSet, LabelledInputs, relative_path
from edgekit.errors import EdgekitError

log = logging.getLogger(__name__)
COORD_TOL = 1e-3  # normalised coordinates may overshoot [0, 1] by this much (rounding in label tools)


@dataclass
class DatasetSpec:
    """A parsed dataset yaml: absolute image folders (or list files) per split, and the class names."""

    yaml: Path
    root: Path
    splits: dict[str, list[Path]]
    names: list[str]


@dataclass
class DetectionSet:
    """One split: image paths and their labels, (k, 5) float32 rows of [class, cx, cy, w, h] normalised."""

    names: list[str]
    paths: list[Path]
    labels: list[np.ndarray]
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # unreadable images
    missing_labels: int = 0  # images without a label file (background, as in ultralytics)
    empty_labels: int = 0  # empty label files (background)
    duplicates: int = 0  # identical rows removed

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int) -> np.ndarray:
        img = read_image(self.paths[i])
        if img is None:
            raise EdgekitError(f"{self.paths[i]} became unreadable during the run; remove it and restart")
        return img

    def boxes_xyxy(self, i: int, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(classes int64 [k], boxes float32 [k, 4] xyxy in pixels of an image of size hw)."""
        lb = self.labels[i]
        h, w = hw
        b = np.empty((len(lb), 4), np.float32)
        b[:, 0] = (lb[:, 1] - lb[:, 3] / 2) * w
        b[:, 1] = (lb[:, 2] - lb[:, 4] / 2) * h
        b[:, 2] = (lb[:, 1] + lb[:, 3] / 2) * w
        b[:, 3] = (lb[:, 2] + lb[:, 4] / 2) * h
        return lb[:, 0].astype(np.int64), b

    def summary(self) -> dict:
        return {"images": len(self), "boxes": int(sum(len(lb) for lb in self.labels)),
                "missing_labels": self.missing_labels, "empty_labels": self.empty_labels,
                "skipped_images": len(self.skipped), "skipped_reasons": skipped_summary(self.skipped)["reasons"],
                "duplicate_rows_removed": self.duplicates}


def read_dataset_yaml(path: str | Path) -> DatasetSpec:
    """Parse and check a dataset yaml: `path` (root, relative to the yaml's folder), `train`/`val` (folders,
    list files or lists of them, relative to the root) and `names` (a list, or a dict 0..n-1)."""
    import yaml

    path = Path(path)
    if path.is_dir():
        path = path / "data.yaml"
    if not path.is_file():
        raise EdgekitError(f"dataset yaml {path} does not exist: pass the data.yaml of a YOLO dataset "
                           "(try `edgekit data digits-detect --out DIR`, then --data DIR/data.yaml)")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise EdgekitError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise EdgekitError(f"{path} must be a mapping with path, train, val and names")
    names = _names(doc.get("names"), path)
    root = Path(doc.get("path") or ".")
    root = root if root.is_absolute() else (path.parent / root)
    if not root.is_dir():
        raise EdgekitError(f"{path}: its 'path' {root} is not a folder: fix 'path' (absolute, or relative to "
                           "the yaml's folder)")
    splits: dict[str, list[Path]] = {}
    for key in ("train", "val", "test"):
        if doc.get(key) in (None, ""):
            if key != "test":
                raise EdgekitError(f"{path} has no '{key}' entry: add `{key}: images/{key}` (relative to 'path')")
            continue
        entries = doc[key] if isinstance(doc[key], list) else [doc[key]]
        splits[key] = []
        for e in entries:
            p = Path(str(e))
            p = p if p.is_absolute() else root / p
            if not p.exists():
                raise EdgekitError(f"{path}: the '{key}' folder {p} does not exist; fix '{key}' in the yaml "
                                   f"(relative to path: {root}) or build the dataset")
            splits[key].append(p)
    return DatasetSpec(path.resolve(), root.resolve(), splits, names)


def _names(names, where: Path) -> list[str]:
    if isinstance(names, dict):
        keys = sorted(names)
        if keys != list(range(len(keys))):
            raise EdgekitError(f"{where}: 'names' keys must be 0..{len(keys) - 1}, got {keys}")
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names or not all(isinstance(n, (str, int)) for n in names):
        raise EdgekitError(f"{where}: 'names' must list the class names (e.g. names: {{0: digit}})")
    return [str(n) for n in names]


def label_path(img: Path) -> Path:
    """ultralytics' convention: the last /images/ in the path becomes /labels/, the suffix .txt."""
    parts = list(img.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def list_images(entries: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in entries:
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTS and f.is_file())
        elif p.suffix == ".txt":  # a list file: one image path per line, relative to the list's folder
            for line in p.read_text().splitlines():
                if line.strip():
                    f = Path(line.strip())
                    files.append(f if f.is_absolute() else (p.parent / f).resolve())
        else:
            files.append(p)
    return files


def parse_labels(path: Path, nc: int) -> tuple[np.ndarray, int]:
    """(rows [k, 5] float32, duplicates removed) of one label file; EdgekitError naming file:line otherwise."""
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 5:
            raise EdgekitError(f"{path}:{n}: expected 5 values 'class cx cy w h', got {len(parts)} "
                               "(segmentation polygons are not supported for detection)")
        try:
            vals = [float(v) for v in parts]
        except ValueError:
            raise EdgekitError(f"{path}:{n}: not numbers: {line.strip()!r}") from None
        cls = vals[0]
        if cls != int(cls) or not 0 <= cls < nc:
            raise EdgekitError(f"{path}:{n}: class {parts[0]} is out of range: the dataset yaml names {nc} "
                               f"class(es), ids 0..{nc - 1}; fix the label or add the class to 'names'")
        cx, cy, w, h = vals[1:]
        if w <= 0 or h <= 0 or min(cx - w / 2, cy - h / 2) < -COORD_TOL or max(cx + w / 2, cy + h / 2) > 1 + COORD_TOL:
            raise EdgekitError(f"{path}:{n}: box {parts[1:]} is not inside the image: YOLO labels are cx cy w h "
                               "normalised to [0, 1] (divide pixels by the image width and height)")
        rows.append(vals)
    a = np.asarray(rows, np.float32).reshape(-1, 5)
    if len(a) < 2:
        return a, 0
    first = np.unique(a, axis=0, return_index=True)[1]
    return a[np.sort(first)], len(a) - len(first)


def load_split(spec: DatasetSpec, split: str, *, check_images: bool = True, limit: int = 0) -> DetectionSet:
    """Every image of one split with its labels, checked. With `limit`, only the first `limit` images."""
    if split not in spec.splits:
        raise EdgekitError(f"{spec.yaml} has no '{split}' split (has: {', '.join(spec.splits)})")
    files = list_images(spec.splits[split])
    if not files:
        raise EdgekitError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) in the '{split}' split "
                           f"{[str(p) for p in spec.splits[split]]}")
    if limit:
        files = files[:limit]
    ds = DetectionSet(spec.names, [], [])
    for f in files:
        why = decode_image(f)[1] if check_images else ""
        if why:
            ds.skipped.append((f, why))
            continue
        lp = label_path(f)
        if lp.exists():
            rows, dup = parse_labels(lp, len(spec.names))
            ds.duplicates += dup
            ds.empty_labels += not len(rows)
        else:
            rows = np.zeros((0, 5), np.float32)
            ds.missing_labels += 1
        ds.paths.append(f)
        ds.labels.append(rows)
    if not ds.paths:
        raise EdgekitError(f"all {len(ds.skipped)} images of the '{split}' split are unreadable")
    if ds.missing_labels == len(ds.paths):
        raise EdgekitError(f"none of the {len(ds.paths)} images of the '{split}' split has a label file (looked "
                           f"for e.g. {label_path(ds.paths[0])}): labels go in a labels/ folder beside images/")
    if ds.skipped:
        log.warning("%s: skipped %d unreadable image(s), e.g. %s (%s)", split, len(ds.skipped), *ds.skipped[0])
    if ds.missing_labels:
        log.warning("%s: %d image(s) have no label file and count as background, e.g. %s", split,
                    ds.missing_labels, next(p for p, lb in zip(ds.paths, ds.labels) if not label_path(p).exists()))
    if ds.duplicates:
        log.warning("%s: removed %d duplicate label row(s)", split, ds.duplicates)
    return ds


def check_dataset(yaml_path: str | Path, *, check_images: bool = True) -> tuple[DatasetSpec, dict[str, dict]]:
    """Parse the yaml and check every split; returns the spec and each split's counts."""
    spec = read_dataset_yaml(yaml_path)
    counts = {s: load_split(spec, s, check_images=check_images).summary() for s in spec.splits}
    if counts["train"]["boxes"] == 0:
        raise EdgekitError(f"the train split of {spec.yaml} has no labelled box: nothing to learn from")
    return spec, counts


def dataset_yaml_for(manifest, data: str | Path | None = None) -> Path:
    """The dataset yaml recorded in a detection manifest (or `data`), checked to exist."""
    ds = manifest.source.get("dataset") or {}
    path = data or ds.get("yaml")
    if not path or not Path(path).exists():
        raise EdgekitError(f"the dataset this model was trained on ({path or 'not recorded'}) is not here: "
                           "pass --data DATA.yaml (a YOLO dataset with the model's classes)")
    return Path(path)


def _model_split(manifest, data, split: str, limit: int, seed: int | None) -> tuple[DatasetSpec, Path, DetectionSet]:
    """A split of the model's dataset (its class names checked); `limit` images, the first or a seeded pick."""
    path = dataset_yaml_for(manifest, data)
    spec = read_dataset_yaml(path)
    if spec.names != list(manifest.labels):
        raise EdgekitError(f"{path} has classes {spec.names}, the model has {manifest.labels}: pass --data with the "
                           "model's own classes")
    ds = load_split(spec, split, limit=0 if seed is not None else limit)
    if seed is not None and limit and limit < len(ds):
        pick = np.sort(np.random.default_rng(seed).permutation(len(ds))[:limit])
        ds.paths, ds.labels = [ds.paths[i] for i in pick], [ds.labels[i] for i in pick]
    return spec, path, ds


def _letterboxed(manifest, ds: DetectionSet) -> tuple[np.ndarray, np.ndarray]:
    """(inputs [N, 3, H, W], object array of float32 [k, 5] targets: class, x1, y1, x2, y2 in input pixels)."""
    from edgekit.vision.detect import letterbox, to_input

    hw = tuple(manifest.input.shape[2:4])
    x = np.empty((len(ds), 3, *hw), np.float32)
    targets = np.empty(len(ds), dtype=object)
    buf = np.empty((*hw, 3), np.uint8)
    for i in range(len(ds)):
        img = ds.image(i)
        _, lb = letterbox(img, hw, out=buf)
        to_input(buf, out=x[i:i + 1])
        cls, boxes = ds.boxes_xyxy(i, img.shape[:2])
        boxes[:, [0, 2]] = boxes[:, [0, 2]] * lb.gain_xy[0] + lb.pad_xy[0]
        boxes[:, [1, 3]] = boxes[:, [1, 3]] * lb.gain_xy[1] + lb.pad_xy[1]
        targets[i] = np.hstack([cls[:, None].astype(np.float32), boxes])
    return x, targets


def detection_inputs(manifest, data: str | Path | None = None, *, split: str = "val", limit: int = 0,
                     seed: int | None = None):
    """A split of the model's dataset as edgekit.data.inputs.LabelledInputs: letterboxed model inputs
    [N, 3, H, W] and, per image, float32 [k, 5] targets (class, x1, y1, x2, y2) in network-input pixels, the
    frame edgekit.vision.map.detection_metric matches in (as ultralytics' val does). With `seed`, `limit`
    images are a seeded random pick instead of the first `limit`."""
    spec, path, ds = _model_split(manifest, data, split, limit, seed)
    x, targets = _letterboxed(manifest, ds)
    listing = "\n".join(relative_path(p, spec.root) for p in ds.paths)
    return LabelledInputs(x, targets, {"split": split, "root": str(spec.root), "yaml": str(path), **ds.summary(),
                                       "image_list_sha256": hashlib.sha256(listing.encode()).hexdigest()})


def detection_calibration(manifest, data: str | Path | None = None, *, n: int = 200, seed: int = 0):
    """INT8 calibration images for a detector: `n` training images (a seeded pick; never the val split),
    letterboxed as the model expects, as edgekit.data.inputs.CalibrationSet."""
    return detection_train_split(manifest, data, n=n, minimum=1, seed=seed, n_tune=0)[0]


def detection_train_split(manifest, data: str | Path | None = None, *, n: int = 200, minimum: int = 32, seed: int = 0,
                          n_tune: int = 300):
    """(calibration set of `n` training images, a function building LabelledInputs of up to `n_tune` other
    training images for the INT8 fallback's tuning). Both are a seeded permutation of the train split (the
    calibration images first), so they never overlap and never touch the val split. Raises below `minimum`."""
    spec, path, ds, order = _train_order(manifest, data, n=n, minimum=minimum, seed=seed)

    def pick(idx: np.ndarray) -> DetectionSet:
        idx = np.sort(idx)
        return DetectionSet(ds.names, [ds.paths[i] for i in idx], [ds.labels[i] for i in idx])

    calib_ds = pick(order[:n])
    x, _ = _letterboxed(manifest, calib_ds)
    calib = CalibrationSet(x, np.zeros(len(calib_ds), np.int64), [relative_path(p, spec.root) for p in calib_ds.paths],
                           str(spec.root), hashlib.sha256(x.tobytes()).hexdigest())

    def tune() -> LabelledInputs:
        rest = order[n:n + n_tune]
        if not len(rest):  # every training image calibrated: tune on the calibration images
            log.warning("every training image calibrated: the sensitivity search ranks layers on them")
            rest = order[:n_tune]
        sub = pick(rest)
        tx, targets = _letterboxed(manifest, sub)
        return LabelledInputs(tx, targets, {"split": "train (not calibration)", "root": str(spec.root),
                                            **sub.summary()})
    return calib, tune


def detection_calibration_paths(manifest, data: str | Path | None = None, *, n: int = 200, seed: int = 0
                                ) -> tuple[list[Path], str]:
    """(the image files of detection_train_split's calibration set, in its order; the dataset root): what the
    TensorRT INT8 calibrator reads, so both INT8 paths calibrate on the same training images."""
    spec, _, ds, order = _train_order(manifest, data, n=n, minimum=1, seed=seed)
    return [ds.paths[i] for i in np.sort(order[:n])], str(spec.root)


def _train_order(manifest, data, *, n: int, minimum: int, seed: int):
    """(spec, yaml path, the train split, a seeded permutation of it): calibration takes its first `n`."""
    if n < minimum:
        raise EdgekitError(f"--calib-images {n} is below the minimum of {minimum}: ranges measured on so few "
                           f"images do not hold on new ones; use --calib-images {minimum} or more")
    spec, path, ds = _model_split(manifest, data, "train", 0, None)
    if len(ds) < minimum:
        raise EdgekitError(f"the train split of {path} has only {len(ds)} readable images; INT8 calibration needs "
                           f"at least {minimum} (--min-calib-images): add training images or pass --data")
    order = np.random.default_rng(seed).permutation(len(ds))
    if len(ds) < n:
        log.warning("the train split of %s has %d images: calibrating on all of them (asked for %d)", path,
                    len(ds), n)
    return spec, path, ds, order
