"""Real photos installed with registry packages (tests need no download): scikit-image's `skimage/data` and
ultralytics' `assets`, found through the installed packages, and the reference classifier preprocessing
(torchvision transforms on PIL images) that imported models must reproduce."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "motorcycle_right.png", "horse.png")
ULTRALYTICS_PHOTOS = ("bus.jpg", "zidane.jpg")


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else None


def photo_paths() -> list[Path]:
    """The photos, or a skip naming the package to install."""
    sk, ul = _package_dir("skimage"), _package_dir("ultralytics")
    if sk is None or ul is None:
        pytest.skip("needs scikit-image==0.26.0 and ultralytics (scripts/setup.sh installs them)")
    paths = [sk / "data" / n for n in SKIMAGE_PHOTOS] + [ul / "assets" / n for n in ULTRALYTICS_PHOTOS]
    missing = [p for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"photos missing from the installed packages: {missing}")
    return paths


def load_rgb(path: Path):
    """(PIL RGB image, the same pixels as a BGR uint8 array: what edgekit's readers hand the preprocessing)."""
    from PIL import Image

    img = Image.open(path).convert("RGB")
    return img, np.ascontiguousarray(np.asarray(img)[:, :, ::-1])


def reference_transform(resize: int, crop: int, mean, std, scale: float, interpolation: str = "bilinear"):
    """torchvision's classification reference on a PIL image: Resize(resize) -> CenterCrop(crop) -> ToTensor
    -> (pixel * scale - mean) / std (ToTensor and Normalize when scale is 1/255)."""
    import torch
    from torchvision import transforms as T

    mode = getattr(T.InterpolationMode, interpolation.upper())
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return T.Compose([T.Resize(resize, interpolation=mode), T.CenterCrop(crop), T.PILToTensor(),
                      T.Lambda(lambda x: (x.float() * scale - mean_t) / std_t)])
