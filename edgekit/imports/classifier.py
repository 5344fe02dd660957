"""`edgekit import torchvision:NAME` and `edgekit import efficientnet_lite0`: a pretrained ImageNet classifier
as a model directory laid out as `edgekit train classify` writes one (model.pt, labels.txt, manifest.json,
model.onnx checked against PyTorch), so export, bench, compare and camera take it like a trained model.

Weights come from a local file (`--weights PATH`, read with torch.load(weights_only=True): a state_dict, or
one under "model"/"state_dict"), else the packaged offline ones (edgekit.zoo.PACKAGED, when they include the
ImageNet head), else torchvision's download (online only). The preprocessing is the weights' own, recorded in
the manifest: torchvision's preset (resize, crop, PIL interpolation, ImageNet mean/std) from its weights enum,
read without downloading; EfficientNet-Lite0's (x - 127) / 128 from edgekit.zoo. Flags override it."""
from __future__ import annotations

import logging
import pickle
import urllib.error
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError, unknown_choice
from edgekit.fileio import atomic_dir, atomic_write_text
from edgekit.imports.labels import read_labels
from edgekit.manifest import INTERPOLATIONS, InputSpec, Manifest, TensorSpec
from edgekit.zoo import PACKAGED, preprocessing_for

log = logging.getLogger(__name__)
PACKAGED_ONLY = ("efficientnet_lite0",)  # not in torchvision: named alone, packaged weights
PARITY_TOLERANCE = 1e-3  # max |ONNX - PyTorch| / max |logit|, as `edgekit export`
_PIL_MODES = {"bilinear": "pil_bilinear", "bicubic": "pil_bicubic"}
_IGNORED = ("source", "out", "weights", "labels", "task", "opset", "data")  # handled here or by the caller


def import_torchvision(spec: str, out: str | Path, *, weights: str | Path | None = None,
                       labels: str | Path | list[str] | None = None, **opts: Any) -> Manifest:
    """Write the model directory `out` for `spec` ("torchvision:resnet18", "efficientnet_lite0") and return
    its manifest. opts: the import's preprocessing flags (mean, std, scale, resize, crop, interpolation),
    `opset`, and `data` (a folder of images to check ONNX parity on; default: seeded synthetic pictures)."""
    from edgekit.export.onnx import OnnxExportConfig, onnx_from_torch
    from edgekit.platform import machine_summary
    from edgekit.train import models

    arch = parse_spec(spec)
    _check_task(opts)
    state, weights_source = _state_dict(arch, weights)
    num_classes = _head_classes(state, arch, weights_source)
    names, labels_source = _labels(arch, labels, num_classes)
    input_spec, pre_source = _input_spec(arch, opts)
    model, _ = models.build_model(arch, num_classes, "none")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise EdgekitError(f"{weights_source} does not hold {arch} weights ({str(e).splitlines()[0][:200]}); "
                           f"pass --weights with a state_dict of torchvision's {arch}") from None
    model.eval()
    out = Path(out)
    with atomic_dir(out) as tmp:
        _save_state(tmp / "model.pt", model)
        atomic_write_text(tmp / "labels.txt", "\n".join(names) + "\n")
        manifest = Manifest(
            name=out.name, task="classify", labels=names, input=input_spec,
            outputs=[TensorSpec("logits", [1, num_classes], "float32")],
            source={"arch": arch, "weights": weights_source, "checkpoint": "model.pt",
                    "imported": {"source": spec, "labels": labels_source, "preprocessing": pre_source,
                                 "given": {k: v for k, v in opts.items() if _set(v) and k not in _IGNORED}}})
        manifest.save(tmp)
        manifest.add_artifact("torch", "model.pt", "fp32", built_on=machine_summary())
        manifest.save(tmp)
        onnx_from_torch(tmp, OnnxExportConfig(opset=int(opts.get("opset") or 17), parity_images=0))
        parity = onnx_parity(Manifest.load(tmp), model, opts.get("data") or None)
        manifest = Manifest.load(tmp)
        manifest.find_artifact("onnxrt", "fp32").parity = parity
        manifest.save()
    log.info("imported %s (%s, %d classes) into %s; ONNX vs PyTorch max error %.1e of scale, top-1 agreement "
             "%.0f%% on %d %s", spec, weights_source, num_classes, out, parity["max_rel"],
             100 * parity["top1_agreement"], parity["images"], parity["inputs"])
    return Manifest.load(out)


def parse_spec(spec: str) -> str:
    """'torchvision:NAME' or 'efficientnet_lite0' -> the architecture name (one edgekit.train.models knows)."""
    from edgekit.train.models import ARCHS

    torchvision_archs = [a for a in ARCHS if a not in PACKAGED_ONLY]
    if spec in PACKAGED_ONLY:
        return spec
    prefix, _, name = str(spec).partition(":")
    if prefix != "torchvision" or not name:
        raise EdgekitError(f"'{spec}' is not a classifier source: use torchvision:NAME (NAME one of "
                           f"{', '.join(torchvision_archs)}) or {' or '.join(PACKAGED_ONLY)}")
    if name in PACKAGED_ONLY:
        raise EdgekitError(f"torchvision has no {name}: import it as `{name}` (the packaged weights)")
    if name not in torchvision_archs:
        raise unknown_choice("torchvision classifier", name, torchvision_archs)
    return name


# ---- weights ------------------------------------------------------------------------------------------

def _state_dict(arch: str, weights: str | Path | None) -> tuple[dict, str]:
    """(state_dict with the classifier head, where it came from)."""
    import torch

    if weights:
        return _read_weights(Path(weights)), f"file:{Path(weights).resolve()}"
    packaged = PACKAGED.get(arch)
    if packaged is not None and packaged.what == "classifier":
        from edgekit.zoo import packaged_weights

        path = packaged_weights(arch)
        return torch.load(path, map_location="cpu", weights_only=True), f"packaged:{packaged.package}/{packaged.relpath}"
    if packaged is not None:
        log.info("the packaged %s weights are a backbone without the ImageNet head: trying torchvision's", arch)
    return _download(arch)


def _read_weights(path: Path) -> dict:
    import torch

    if not path.is_file():
        raise EdgekitError(f"--weights {path} is not a file: pass a state_dict saved with "
                           "torch.save(model.state_dict(), PATH)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise EdgekitError(f"--weights {path} is not a weights-only state_dict ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:160] if str(e) else ''}); edgekit never unpickles a full "
                           "model: save it with torch.save(model.state_dict(), PATH)") from None
    for key in ("model", "state_dict"):  # edgekit / torchvision-reference checkpoints
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EdgekitError(f"--weights {path} does not hold a state_dict (a mapping of names to tensors)")
    return state


def _download(arch: str) -> tuple[dict, str]:
    import torchvision

    w = torchvision.models.get_model_weights(arch).DEFAULT
    try:
        state = w.get_state_dict(progress=False)
    except (urllib.error.URLError, OSError) as e:
        packaged = f" (the packaged {arch} weights are a backbone without the ImageNet head)" if arch in PACKAGED else ""
        raise EdgekitError(f"cannot download torchvision's {w} weights ({type(e).__name__}){packaged}: offline, "
                           f"pass --weights PATH to a state_dict of torchvision's {arch} (e.g. {w.url.rsplit('/', 1)[-1]} "
                           "fetched on a machine with internet)") from None
    return state, f"torchvision:{w}"


def _head_classes(state: dict, arch: str, where: str) -> int:
    from edgekit.train.models import arch_info

    key = arch_info(arch).head + ".weight"
    w = state.get(key)
    if w is None or w.ndim != 2:
        raise EdgekitError(f"{where} has no classifier head ('{key}'): import needs {arch} weights with their "
                           "head (a backbone alone classifies nothing); pass --weights with the full state_dict")
    return int(w.shape[0])


def _save_state(path: Path, model) -> None:
    import torch

    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)


# ---- labels and preprocessing -------------------------------------------------------------------------

def _labels(arch: str, labels: str | Path | list[str] | None, n: int) -> tuple[list[str], str]:
    if labels:
        names = list(labels) if isinstance(labels, (list, tuple)) else read_labels(labels)
        where = "given" if isinstance(labels, (list, tuple)) else f"--labels {labels}"
    elif n == 1000:
        names, where = imagenet_labels(arch), "ImageNet-1k (torchvision's weights meta['categories'])"
    else:
        raise EdgekitError(f"the {arch} weights classify {n} classes, not ImageNet's 1000: pass --labels FILE "
                           f"with their {n} names (one a line)")
    if len(names) != n:
        raise EdgekitError(f"{where} names {len(names)} classes, the weights' head has {n}: pass a labels file "
                           f"with {n} names")
    return [str(x) for x in names], where


def imagenet_labels(arch: str) -> list[str]:
    """The 1000 ImageNet class names torchvision's weights enums carry (no download)."""
    import torchvision

    if arch in PACKAGED_ONLY:
        from torchvision.models._meta import _IMAGENET_CATEGORIES

        return list(_IMAGENET_CATEGORIES)
    return list(torchvision.models.get_model_weights(arch).DEFAULT.meta["categories"])


def weights_preprocessing(arch: str) -> tuple[dict, str]:
    """The preprocessing the architecture's pretrained weights expect, as InputSpec fields, and its source."""
    if arch in PACKAGED_ONLY:
        p = preprocessing_for(arch)
        return {"resize": p.resize, "crop": p.crop, "scale": p.scale, "mean": list(p.mean), "std": list(p.std),
                "interpolation": p.interpolation}, p.source
    import torchvision

    w = torchvision.models.get_model_weights(arch).DEFAULT
    t = w.transforms()  # torchvision's ImageClassification preset: built without any download
    mode = _PIL_MODES.get(t.interpolation.value)
    if mode is None:
        raise EdgekitError(f"torchvision's {w} resizes with {t.interpolation.value}, which edgekit does not "
                           f"implement: pass --interpolation ({', '.join(INTERPOLATIONS)})")
    return {"resize": int(t.resize_size[0]), "crop": int(t.crop_size[0]), "scale": 1.0 / 255.0,
            "mean": list(t.mean), "std": list(t.std), "interpolation": mode}, \
        f"torchvision's {w} transforms (Resize {t.resize_size[0]} on PIL, {t.interpolation.value}, " \
        f"antialiased; CenterCrop {t.crop_size[0]}; ImageNet mean/std)"


def _input_spec(arch: str, opts: dict) -> tuple[InputSpec, str]:
    pre, source = weights_preprocessing(arch)
    for key in ("mean", "std"):
        if _set(opts.get(key)):
            pre[key] = _three(opts[key], key)
    if _set(opts.get("scale")):
        pre["scale"] = float(opts["scale"])
    if _set(opts.get("resize")):
        pre["resize"] = int(opts["resize"])
    if _set(opts.get("interpolation")):
        pre["interpolation"] = str(opts["interpolation"])
    crop = _crop(opts.get("crop") or opts.get("imgsz"), pre.pop("crop"))
    bad = [k for k, v in opts.items() if _set(v) and k not in (*_IGNORED, "mean", "std", "scale", "resize",
                                                              "crop", "imgsz", "interpolation")]
    if bad:
        raise EdgekitError(f"--{bad[0].replace('_', '-')} does not apply to a torchvision classifier (it takes RGB, "
                           "NCHW, resize + centre crop); drop it")
    if any(_set(opts.get(k)) for k in ("mean", "std", "scale", "resize", "crop", "imgsz", "interpolation")):
        source += "; overridden by flags"
    spec = InputSpec(name="input", shape=[1, 3, *crop], dtype="float32", color="RGB", **pre)
    return spec, source


def _check_task(opts: dict) -> None:
    if opts.get("task") not in (None, "", "classify"):
        raise EdgekitError(f"--task {opts['task']}: a torchvision classifier is a classify model; drop --task")


def _crop(value: Any, default: int) -> list[int]:
    if not _set(value):
        return [default, default]
    vals = [int(v) for v in str(value).split(",")] if isinstance(value, str) else (
        [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)])
    return vals * 2 if len(vals) == 1 else vals


def _three(value: Any, name: str) -> list[float]:
    vals = [float(v) for v in value.split(",")] if isinstance(value, str) else (
        [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)])
    if len(vals) not in (1, 3):
        raise EdgekitError(f"--{name} takes one number or three, got {value!r}")
    return vals * 3 if len(vals) == 1 else vals


def _set(value: Any) -> bool:
    return value not in (None, "", 0, 0.0, False, [], ())


# ---- the ONNX check -----------------------------------------------------------------------------------

def onnx_parity(manifest: Manifest, model, data: str | Path | None = None, n: int = 8) -> dict:
    """The FP32 ONNX against PyTorch on `n` pictures (a folder's, or seeded synthetic ones), through the
    manifest's own preprocessing; raises beyond PARITY_TOLERANCE or on any other top-1."""
    import torch

    from edgekit.compare import compare_logits
    from edgekit.runners.onnxrt import OnnxrtRunner
    from edgekit.vision.preprocess import batch_classify

    if data:
        from edgekit.data.unlabelled import load_unlabelled

        images = load_unlabelled(data, minimum=1, what="the import's parity check")
        pictures, inputs = [images.image(i) for i in range(min(n, len(images)))], f"images of {data}"
    else:
        pictures, inputs = synthetic_pictures(n), "seeded synthetic pictures"
    x = batch_classify(pictures, manifest.input)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    art = manifest.find_artifact("onnxrt", "fp32")
    with OnnxrtRunner(manifest.artifact_path(art)) as r:
        got = np.concatenate([r.infer({manifest.input.name: x[i:i + 1]})[manifest.outputs[0].name]
                              for i in range(len(x))])
    result = compare_logits(ref, got)
    result.update(reference="torch", tolerance=PARITY_TOLERANCE, images=len(x), inputs=inputs)
    result["passed"] = result["max_rel"] <= PARITY_TOLERANCE and result["top1_agreement"] == 1.0
    if not result["passed"]:
        raise EdgekitError(f"the ONNX export disagrees with PyTorch: max error {result['max_rel']:.2e} of the logits' "
                           f"scale (allowed {PARITY_TOLERANCE:.0e}), top-1 agreement {result['top1_agreement']:.0%}; "
                           "nothing written. Try another --opset, and report the model")
    return result


def synthetic_pictures(n: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth seeded colour fields (random 6x8 grids upscaled), photo-sized: inputs whose logits vary."""
    import cv2

    rng = np.random.default_rng(seed)
    return [cv2.resize(rng.integers(0, 256, (6, 8, 3), np.uint8), (400 + 16 * i, 300), interpolation=cv2.INTER_CUBIC)
            for i in range(n)]
