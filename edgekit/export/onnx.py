"""`edgekit export --to onnx`: torch -> ONNX (opset 17, the legacy exporter that JetPack's TensorRT
parses), onnxslim, onnx.checker, then a parity check against PyTorch on real held-out images. An
export that misses the tolerance is not written."""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.compare import compare_logits
from edgekit.configs import ONNX_OPSETS, option
from edgekit.errors import EdgekitError
from edgekit.export.yolo import YoloExportConfig, onnx_from_yolo
from edgekit.fileio import atomic_path
from edgekit.manifest import Artifact, Manifest
from edgekit.platform import machine_summary
from edgekit.tasks import Task, task_for
from edgekit.vision.decoders import DECODER_HINT, DECODER_SPEC

log = logging.getLogger(__name__)


@dataclass
class OnnxExportConfig:
    opset: int = option(17, ge=ONNX_OPSETS[0], le=ONNX_OPSETS[1])  # TensorRT 10.3 (JetPack 6) parses up to opset 17 fully
    dynamic_batch: bool = False  # a 'batch' axis instead of a fixed batch of 1
    slim: bool = True  # onnxslim: constant folding and fusion before TensorRT sees it
    parity_images: int = option(500, ge=0)  # held-out images compared against PyTorch (0 = skip the check)
    tolerance: float = option(1e-3, gt=0)  # max abs error / max |logit| allowed
    min_top1_agreement: float = option(1.0, ge=0, le=1)  # fraction of images whose top-1 must agree
    data: str | None = option(None, path="any")  # held-out images: an ImageFolder or a detector's YOLO data.yaml; default: the manifest's val split
    calib_data: str | None = option(None, path="dir")  # unlabelled pictures (any folder) for the parity check instead of --data; FP16/INT8 calibrate and measure agreement with FP32 on them
    decoder: str = option("", empty=True, pattern=DECODER_SPEC, hint=DECODER_HINT)  # detector output decoder: yolov8 | yolov5 | end2end, or an installed plug-in module.path:function (never a file); default: the manifest's (a plug-in it names must be passed here)


def onnx_from_torch(model_dir: str | Path, cfg: OnnxExportConfig | None = None) -> Artifact:
    """The model directory's torch artifact to model.onnx, by its framework's exporter (the task's)."""
    cfg = cfg or OnnxExportConfig()
    manifest = Manifest.load(model_dir)  # before the heavy imports: a wrong path fails fast
    task = task_for(manifest, cfg.decoder)
    check_dynamic_batch(task, cfg.dynamic_batch)
    return EXPORTERS[task.framework](manifest, cfg)


def check_dynamic_batch(task: Task, dynamic_batch: bool) -> None:
    if dynamic_batch and not task.dynamic_batch:
        raise EdgekitError(f"'{task.name}' models export with a fixed batch of 1: drop --dynamic-batch")


def _from_ultralytics(manifest: Manifest, cfg: OnnxExportConfig) -> Artifact:
    """ultralytics YOLO: its own exporter, parity checked on decoded boxes (edgekit.export.yolo)."""
    n = cfg.parity_images if cfg.parity_images != OnnxExportConfig.parity_images else 16  # 500: classifiers'
    return onnx_from_yolo(manifest.model_dir, YoloExportConfig(opset=cfg.opset, slim=cfg.slim, data=cfg.data,
                                                               parity_images=n, tolerance=cfg.tolerance))


def _from_torchvision(manifest: Manifest, cfg: OnnxExportConfig) -> Artifact:
    """torch.onnx.export of the rebuilt torchvision model, parity checked against it on held-out images."""
    src = manifest.find_artifact("torch", "fp32")

    import onnx
    import torch

    from edgekit.runners.torch import build_from_manifest

    model = build_from_manifest(manifest, manifest.artifact_path(src)).eval()
    inp, outs = manifest.input, [o.name for o in manifest.outputs]
    dynamic = {inp.name: {0: "batch"}, **{o: {0: "batch"} for o in outs}} if cfg.dynamic_batch else None
    dest = manifest.model_dir / "model.onnx"
    with atomic_path(dest) as tmp:
        with torch.no_grad(), warnings.catch_warnings():
            # The legacy (TorchScript) exporter is deprecated upstream, but it is the one that writes the
            # single-file opset-17 graphs JetPack's TensorRT parses; the dynamo path moves to opset 18.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, torch.zeros(inp.shape), str(tmp), dynamo=False, opset_version=cfg.opset,
                              input_names=[inp.name], output_names=outs, dynamic_axes=dynamic,
                              do_constant_folding=True)
        if cfg.slim:
            _slim(tmp)
        onnx.checker.check_model(str(tmp), full_check=True)
        parity = _parity(manifest, model, tmp, cfg) if cfg.parity_images else {}
    art = manifest.add_artifact("onnxrt", dest.name, "fp32", built_from=src.path, built_on=machine_summary(),
                                options={"opset": cfg.opset, "dynamic_batch": cfg.dynamic_batch, "slim": cfg.slim},
                                parity=parity)
    manifest.save()
    return art


EXPORTERS = {"torchvision": _from_torchvision, "ultralytics": _from_ultralytics}  # by the task's framework


def _slim(path: Path) -> None:
    import onnx
    import onnxslim

    slimmed = onnxslim.slim(onnx.load(str(path)))
    onnx.save(slimmed, str(path))


def _parity(manifest: Manifest, model, onnx_path: Path, cfg: OnnxExportConfig) -> dict:
    """PyTorch vs ONNX Runtime on real held-out images; raises when beyond tolerance."""
    import torch

    from edgekit.runners.onnxrt import OnnxrtRunner

    task = task_for(manifest, cfg.decoder)
    if cfg.calib_data:  # parity needs pictures, not labels
        from edgekit.data.unlabelled import load_unlabelled

        val = load_unlabelled(cfg.calib_data, minimum=1, what="--calib-data")
        val = val.subset(range(min(len(val), cfg.parity_images)))
        x = task.inputs(manifest, [val.image(i) for i in range(len(val))])
    else:
        x = task.heldout(manifest, cfg.data, cfg.parity_images).x  # the task's held-out inputs
    with torch.no_grad():
        ref = np.concatenate([model(torch.from_numpy(x[i:i + 64])).numpy() for i in range(0, len(x), 64)])
    got = []
    with OnnxrtRunner(onnx_path) as r:
        name = manifest.input.name
        step = len(x) if cfg.dynamic_batch else 1
        for i in range(0, len(x), step):
            got.append(r.infer({name: x[i:i + step]})[manifest.outputs[0].name])
    result = compare_logits(ref, np.concatenate(got))
    result.update(reference="torch", tolerance=cfg.tolerance, images=len(x))
    result["passed"] = result["max_rel"] <= cfg.tolerance and result["top1_agreement"] >= cfg.min_top1_agreement
    log.info("ONNX vs PyTorch on %d held-out images: max abs %.2e (%.2e of scale), top-1 agreement %.2f%%",
             len(x), result["max_abs"], result["max_rel"], 100 * result["top1_agreement"])
    if not result["passed"]:
        raise EdgekitError(
            f"ONNX export disagrees with PyTorch beyond tolerance: max error {result['max_rel']:.2e} of the logits' "
            f"scale (allowed {cfg.tolerance:.0e}), top-1 agreement {result['top1_agreement']:.2%}; nothing written. "
            "Try without onnxslim (--no-slim) or another opset, and report the model")
    return result
