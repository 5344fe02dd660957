"""Model inputs made from a dataset split, with where they came from: what the tasks (edgekit.tasks) build and
the exports measure (LabelledInputs) or calibrate on (CalibrationSet). Plain numpy records, so the data readers
(edgekit.data.yolo) and the exports share them without either importing the other."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class LabelledInputs:
    """Preprocessed model inputs with their targets, and where they came from (for the manifest)."""

    x: np.ndarray
    targets: np.ndarray
    source: dict

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class CalibrationSet:
    x: np.ndarray  # preprocessed inputs [N, ...]
    labels: np.ndarray  # their classes (the fallback ranks layers on them when no other training image is left)
    paths: list[str]  # image files, relative to root
    root: str
    sha256: str  # of x: the images, their order and the preprocessing
    split: str = "train"  # where the images came from ("unlabelled (--calib-data)": edgekit.export.unlabelled)

    def __len__(self) -> int:
        return len(self.x)

    def describe(self) -> dict:
        listing = hashlib.sha256("\n".join(self.paths).encode()).hexdigest()
        return {"split": self.split, "root": self.root, "images": len(self), "image_list_sha256": listing,
                "inputs_sha256": self.sha256}


def relative_path(path: str | Path, root: str | Path) -> str:
    """`path` relative to `root` when it lies under it (the manifest records image lists that way), else as is."""
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)
