"""`edgekit import`: a model directory (manifest, artifacts) from a model edgekit did not train, so every later
command (export fp16/int8/trt, bench, compare, camera) takes it exactly like a trained one.

    model.onnx                    edgekit.imports.onnx_source (classifier or detector; ultralytics metadata read)
    best.pt  (--trust-pickle)     edgekit.imports.ultralytics_source (a YOLOv5u/v8/11 detect checkpoint, loaded in
                                  a separate process, exported to ONNX with train detect's parity checks)
    torchvision:NAME, efficientnet_lite0
                                  edgekit.imports.classifier (ImageNet classifiers with their own preprocessing)
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.imports.config import ImportConfig
from edgekit.manifest import Manifest

PACKAGED_CLASSIFIERS = ("efficientnet_lite0",)
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since 1.6: what an ultralytics .pt is


def source_kind(source: str) -> str:
    """'torchvision', 'ultralytics' or 'onnx' for SOURCE, from its name and, for a file, its first bytes."""
    if source.startswith("torchvision:") or source in PACKAGED_CLASSIFIERS:
        return "torchvision"
    p = Path(source)
    if p.is_dir():
        raise EdgekitError(f"{source} is a folder: pass a model file (.onnx, ultralytics .pt), torchvision:NAME or "
                           f"{' / '.join(PACKAGED_CLASSIFIERS)}" + (" (it is already a model directory: use it as "
                           "it is)" if (p / "manifest.json").exists() else ""))
    if not p.exists():
        raise EdgekitError(f"{source} does not exist: pass an .onnx file, an ultralytics .pt, torchvision:NAME "
                           f"(say torchvision:resnet18) or {' / '.join(PACKAGED_CLASSIFIERS)}")
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".pt", ".pth"):
        return "ultralytics"
    with open(p, "rb") as f:
        head = f.read(4)
    if head == ZIP_MAGIC:
        return "ultralytics"
    return "onnx"  # anything else is read as ONNX: a file that is not one is a clear error there


def import_model(source: str | Path, out: str | Path, options: ImportConfig | None = None) -> Manifest:
    """Import `source` into the model directory `out` (written atomically; an existing `out` is replaced only
    when edgekit made it); returns the new directory's manifest."""
    cfg = dataclasses.replace(options or ImportConfig(), source=str(source), out=str(out))
    cfg.validate()
    kind = source_kind(cfg.source)
    if kind == "onnx":
        from edgekit.imports.onnx_source import import_onnx

        return import_onnx(cfg.source, cfg.out, cfg)
    if kind == "ultralytics":
        from edgekit.imports.ultralytics_source import import_ultralytics

        return import_ultralytics(cfg.source, cfg.out, cfg)
    from edgekit.imports.classifier import import_torchvision

    keys = ("task", "mean", "std", "scale", "resize", "crop", "imgsz", "opset", "data", "letterbox", "bgr", "nhwc",
            "decoder")  # what was set; import_torchvision uses or refuses each (one line naming the flag)
    opts = {k: getattr(cfg, k) for k in keys if getattr(cfg, k)}
    return import_torchvision(cfg.source, cfg.out, weights=cfg.weights or None, labels=cfg.labels or None, **opts)


__all__ = ["ImportConfig", "import_model", "source_kind"]
