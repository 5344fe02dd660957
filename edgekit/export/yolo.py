"""ONNX export of an ultralytics YOLO detector: ultralytics' own exporter (the legacy TorchScript path,
`dynamo=False`, opset 17, fixed size, batch 1, onnxslim), run on a checkpoint that edgekit writes in a temp dir
from the model directory's weights-only model_state.pt (the directory's model.pt is never unpickled), and
moved into place only after two checks against ultralytics' PyTorch model on held-out images:

  - the raw head outputs (1, 4+nc, N): max abs error relative to their scale, within `tolerance`;
  - the decoded detections (edgekit.vision.detect on both outputs, predict thresholds): same count and
    classes, every matched box at IoU >= `min_box_iou`.

Then edgekit's mAP of the ONNX file on the held-out split goes into the artifact's `accuracy`, and the names
of the head's decode nodes that INT8 must keep in float (the task's float_nodes: edgekit.tasks.detect) into
its options (`int8_float_nodes`). Also the
helpers that drive ultralytics offline (every network attempt fails fast)."""
from __future__ import annotations

import logging
import pickle
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from edgekit.configs import ONNX_OPSETS, option
from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_path
from edgekit.manifest import Artifact, Manifest, TensorSpec
from edgekit.platform import machine_summary
from edgekit.tasks import Task, require_framework, tasks_of
from edgekit.zoo import ultralytics_env  # here for the callers that import it from this module

log = logging.getLogger(__name__)


def load_yolo(path: str | Path, offline: bool = True):
    """ultralytics.YOLO(path) with the environment above; a bad file is an EdgekitError."""
    ultralytics_env(offline)
    from ultralytics import YOLO

    try:
        return YOLO(str(path))
    except (FileNotFoundError, RuntimeError, KeyError, AttributeError, ModuleNotFoundError, TypeError, EOFError,
            OSError, pickle.UnpicklingError) as e:  # what torch.load and ultralytics raise for a bad file
        raise EdgekitError(f"ultralytics cannot load {path} ({type(e).__name__}: {str(e)[:200]}); pass a YOLO .pt "
                           "checkpoint or a model yaml") from None


@dataclass
class YoloExportConfig:
    opset: int = option(17, ge=ONNX_OPSETS[0], le=ONNX_OPSETS[1])  # TensorRT 10.3 (JetPack 6) parses up to opset 17 fully
    slim: bool = True  # onnxslim after export (ultralytics' simplify)
    nms: bool = False  # end the graph in NMS: output (1, 300, 6) rows x1 y1 x2 y2 score class
    parity_images: int = option(16, ge=0)  # held-out images compared against ultralytics' PyTorch model (0 = skip)
    tolerance: float = option(1e-3, gt=0)  # max abs error of the head output / its max |value|
    min_box_iou: float = option(0.99, ge=0, le=1)  # every decoded box must match its PyTorch twin at least this well
    eval_images: int = option(0, ge=0)  # held-out images for edgekit's mAP of the ONNX file (0 = the whole val split)
    data: str | None = None  # dataset yaml; default: the one recorded in the manifest


STATE_FILE = "model_state.pt"  # a detector's weights-only torch artifact (edgekit.train.detect.save_yolo_state)


def yolo_state_file(manifest: Manifest) -> Path:
    """The detect model directory's weights-only torch artifact (model_state.pt), sha256-checked. A model
    directory is data, never code: its ultralytics checkpoint (model.pt, a pickle) is never read from here."""
    art = manifest.find_artifact("torch", "fp32")
    if art.path != STATE_FILE:
        raise EdgekitError(
            f"{manifest.model_dir}'s torch artifact is {art.path}, an ultralytics pickle, and edgekit never unpickles "
            "a model directory. If you made this directory yourself, convert it once: `python -m "
            f"edgekit.train.detect {manifest.model_dir} --trust-pickle` (writes {STATE_FILE}), or re-train")
    return manifest.artifact_path(art)


def checkpoint_from_state(state_file: str | Path, dest: str | Path) -> Path:
    """An ultralytics checkpoint at `dest`, pickled here by edgekit from the weights-only state file (ultralytics'
    exporter, val and benchmark read only .pt checkpoints): what ultralytics then unpickles is edgekit's own
    DetectionModel, never a file from a model directory."""
    import torch

    from edgekit.runners.torch import yolo_model_from_state

    model = yolo_model_from_state(state_file)
    with atomic_path(dest) as tmp:
        torch.save({"model": model, "train_args": {"task": "detect"}}, tmp)
    return Path(dest)


def onnx_from_yolo(model_dir: str | Path, cfg: YoloExportConfig | None = None) -> Artifact:
    """Export the model directory's weights-only YOLO (model_state.pt) to `model.onnx` and record it."""
    import onnx

    cfg = cfg or YoloExportConfig()
    manifest = Manifest.load(model_dir)
    task = require_framework(manifest, "ultralytics", "the ultralytics ONNX export")
    state = yolo_state_file(manifest)
    imgsz = int(manifest.input.shape[2])
    dest = manifest.model_dir / "model.onnx"
    with tempfile.TemporaryDirectory(prefix="edgekit-yolo-export-") as work:
        pt = checkpoint_from_state(state, Path(work) / "checkpoint" / "model.pt")
        onnx_file = export_onnx(pt, Path(work), imgsz=imgsz, opset=cfg.opset, slim=cfg.slim, nms=cfg.nms)
        manifest.postprocess.decoder = "end2end" if cfg.nms else "yolov8"  # what the graph's output is
        images = _parity_images(manifest, cfg)
        parity = parity_check(pt, onnx_file, images, manifest.input.shape[2:4], cfg) if cfg.parity_images else {}
        with atomic_path(dest) as tmp:
            shutil.copyfile(onnx_file, tmp)
            accuracy = _accuracy(manifest, task, tmp, cfg)
    graph = onnx.load(str(dest))
    outs = _output_shapes(graph)
    head = task.float_nodes(graph)
    manifest.outputs = [TensorSpec(name, shape) for name, shape in outs.items()]  # (1, 300, 6) when it ends in NMS
    art = manifest.add_artifact("onnxrt", dest.name, "fp32", built_from=state.name, built_on=machine_summary(),
                                options={"opset": cfg.opset, "dynamic_batch": False, "slim": cfg.slim, "nms": cfg.nms,
                                         "imgsz": imgsz, "exporter": "ultralytics (torch.onnx.export dynamo=False)",
                                         "outputs": outs, "int8_float_nodes": head},
                                parity=parity, accuracy=accuracy)
    manifest.save()
    return art


def export_onnx(pt: str | Path, work: Path, *, imgsz: int, opset: int = 17, slim: bool = True, nms: bool = False
                ) -> Path:
    """ultralytics' ONNX export of a copy of `pt` inside `work` (it writes beside its input)."""
    import onnx

    copy = work / "model.pt"
    shutil.copyfile(pt, copy)
    try:
        model = load_yolo(copy)
    except EdgekitError as e:  # name the user's file, not the temporary copy
        raise EdgekitError(str(e).replace(str(copy), str(pt))) from None
    check_ultralytics_task(model, str(pt))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript tracer and deprecation warnings of the legacy exporter
            f = model.export(format="onnx", imgsz=imgsz, opset=opset, simplify=slim, dynamic=False, batch=1,
                             half=False, nms=nms, device="cpu", verbose=False)
    except Exception as e:  # the exporter raises anything from AssertionError to torch.onnx errors
        raise EdgekitError(f"ultralytics' ONNX export of {pt} failed ({type(e).__name__}: {str(e)[:300]})") from None
    onnx.checker.check_model(str(f), full_check=True)
    m = onnx.load(str(f), load_external_data=False)
    got = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
    if got != opset:
        raise EdgekitError(f"the exported graph has opset {got}, asked for {opset}")
    return Path(f)


def check_ultralytics_task(model, what: str) -> None:
    """A loaded ultralytics model (its own `task`) is one of the tasks edgekit takes from ultralytics."""
    known = tasks_of("ultralytics")
    if model.task not in known:
        raise EdgekitError(f"{what} is an ultralytics '{model.task}' model; edgekit takes ultralytics "
                           f"{', '.join(known)} models: pass a detection checkpoint or yaml")


def _output_shapes(model) -> dict[str, list[int]]:
    return {o.name: [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in model.graph.output}


def _parity_images(manifest: Manifest, cfg: YoloExportConfig) -> list[np.ndarray]:
    """Held-out images of the model's dataset; without one, ultralytics' own sample photos."""
    from edgekit.data.yolo import dataset_yaml_for, load_split, read_dataset_yaml

    try:
        spec = read_dataset_yaml(dataset_yaml_for(manifest, cfg.data))
        ds = load_split(spec, "val", limit=max(cfg.parity_images, 1))
        return [ds.image(i) for i in range(len(ds))]
    except EdgekitError as e:
        log.warning("no held-out images for the parity check (%s): using ultralytics' bus.jpg and zidane.jpg", e)
        return sample_images()


def sample_images() -> list[np.ndarray]:
    import cv2

    from edgekit.zoo import package_dir

    root = package_dir("ultralytics") / "assets"
    return [cv2.imread(str(root / n)) for n in ("bus.jpg", "zidane.jpg")]


def torch_outputs(pt: str | Path, x: np.ndarray) -> np.ndarray:
    """ultralytics' PyTorch model (eval, unfused) on preprocessed inputs [N, 3, H, W], one at a time."""
    import torch

    model = load_yolo(pt).model.float().eval()
    outs = []
    with torch.no_grad():
        for i in range(len(x)):
            y = model(torch.from_numpy(x[i:i + 1]))
            outs.append((y[0] if isinstance(y, (list, tuple)) else y).numpy())
    return np.concatenate(outs)


def parity_check(pt: str | Path, onnx_file: str | Path, images: list[np.ndarray], hw, cfg: YoloExportConfig) -> dict:
    """ultralytics PyTorch vs ONNX Runtime on the same letterboxed inputs; raises beyond tolerance."""
    from edgekit.compare import compare_logits
    from edgekit.export.accuracy import run_onnx
    from edgekit.vision.detect import letterbox, to_input
    from edgekit.vision.map import compare_detections

    hw = tuple(int(d) for d in hw)
    x = np.concatenate([to_input(letterbox(im, hw)[0]) for im in images])
    onnx_out = run_onnx(onnx_file, x, input_name="images")
    ref = torch_outputs(pt, x)
    raw = ({"max_abs": None, "max_rel": None, "note": "the graph ends in NMS: compared as detections only"}
           if cfg.nms else compare_logits(ref, onnx_out))
    det = compare_detections(ref, onnx_out, conf=0.25, iou=0.7, min_box_iou=cfg.min_box_iou,
                             decoder="end2end" if cfg.nms else "yolov8", ref_decoder="yolov8")
    agree, worst_iou = round(det["detections_agreement"] * len(x)), det["min_box_iou"]
    result = {**{k: v for k, v in raw.items() if k != "top1_agreement"}, **det, "reference": "ultralytics torch",
              "tolerance": cfg.tolerance}
    result["top1_agreement"] = result["detections_agreement"]  # the CLI's summary line reads this key
    result["passed"] = (raw["max_rel"] is None or raw["max_rel"] <= cfg.tolerance) and agree == len(x)
    log.info("ONNX vs ultralytics PyTorch on %d images: max rel %s, detections agree on %d/%d (worst IoU %.4f)",
             len(x), f"{raw['max_rel']:.2e}" if raw["max_rel"] is not None else "n/a", agree, len(x), worst_iou)
    if not result["passed"]:
        raise EdgekitError(
            f"the ONNX export disagrees with ultralytics' PyTorch model: max error {raw['max_rel']} of the outputs' "
            f"scale (allowed {cfg.tolerance:.0e}), detections agree on {agree}/{len(x)} images (worst IoU "
            f"{worst_iou:.4f}); nothing written. Try --no-slim, and report the model")
    return result


def _accuracy(manifest: Manifest, task: Task, onnx_file: Path, cfg: YoloExportConfig) -> dict:
    """edgekit's mAP of the ONNX file on the held-out split (empty when the dataset is not here)."""
    from edgekit.export.accuracy import evaluate

    try:
        held = task.heldout(manifest, cfg.data, cfg.eval_images)
    except EdgekitError as e:
        log.warning("no mAP for the ONNX file: %s", e)
        return {}
    metric = partial(task.metric, decoder=manifest.postprocess.decoder)  # the graph's own output layout
    acc, _ = evaluate(onnx_file, held, metric, input_name=manifest.input.name)
    log.info("ONNX on %d held-out images: mAP50 %.4f, mAP50-95 %.4f (edgekit, numpy)", acc["n"], acc["mAP50"],
             acc["value"])
    return acc
