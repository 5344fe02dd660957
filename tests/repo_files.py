"""What several tests need from the repository: its scripts and benchmarks imported by path (they are not a
package), and a small real video file written with OpenCV."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def load_script(folder: str, name: str) -> ModuleType:
    """`REPO/folder/name.py` as a module (scripts/, benchmarks/)."""
    spec = importlib.util.spec_from_file_location(name, REPO / folder / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_noise_video(path: Path, frames: int, size: tuple[int, int], seed: int = 0) -> Path:
    """An MJPG .avi of `frames` seeded random frames of `size` (w, h), 10 FPS."""
    import cv2

    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    rng = np.random.default_rng(seed)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (h, w, 3), np.uint8))
    writer.release()
    return path


def write_video(path: Path, images: list[np.ndarray], fps: int = 10) -> Path:
    """An MJPG .avi of `images` (uint8 BGR, all one size), in order."""
    import cv2

    h, w = images[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for img in images:
        writer.write(img)
    writer.release()
    return path
