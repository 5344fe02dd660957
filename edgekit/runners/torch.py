"""PyTorch: the reference backend. CPU or CUDA, fp32 or fp16 (fp16 on CUDA).

Every file is read with torch.load(weights_only=True): a classifier's state_dict (torchvision architecture
named in the manifest), or a detector's weights-only YOLO state (`model_state.pt`, written by `edgekit train
detect`): ultralytics' DetectionModel state_dict with the model yaml, nc and names needed to rebuild it. An
ultralytics .pt checkpoint (a full pickle) is refused with the one-time conversion command."""
from __future__ import annotations

import copy
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekit.errors import EdgekitError
from edgekit.manifest import TensorSpec
from edgekit.runners.base import Runner
from edgekit.tasks import task_for


class TorchRunner(Runner):
    """Options: threads (intra-op threads on CPU, 0 = torch's default)."""

    backend = "torch"
    devices = ("cpu", "cuda")

    def _load(self) -> None:
        if self.manifest is None:
            raise EdgekitError("the torch runner needs the model's manifest (architecture, classes): "
                               "use load_runner(MODEL_DIR, 'torch')")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise EdgekitError("torch sees no CUDA device: run with --device cpu")
        if self.precision == "fp16" and self.device == "cpu":
            raise EdgekitError("torch fp16 runs on CUDA only here: use --device cuda or --precision fp32")
        if self.precision == "int8":
            raise EdgekitError("the torch runner has no int8 mode: int8 runs on onnxrt, trt and tinygrad")
        if self.options.get("threads"):
            torch.set_num_threads(int(self.options["threads"]))
        self.model = build_from_manifest(self.manifest, self.artifact)  # cpu, fp32, eval
        self.model.to(self.device).eval()
        if self.precision == "fp16":
            self.model.half()
        self._dtype = torch.float16 if self.precision == "fp16" else torch.float32

    def _io(self) -> tuple[dict[str, TensorSpec], dict[str, TensorSpec]]:
        m = self.manifest  # any batch size: the first axis is dynamic in eager PyTorch
        spec = TensorSpec(m.input.name, ["batch", *m.input.shape[1:]], m.input.dtype)
        return {spec.name: spec}, {o.name: TensorSpec(o.name, ["batch", *o.shape[1:]], o.dtype) for o in m.outputs}

    def _infer(self, feed: Mapping[str, np.ndarray]) -> Any:
        x = torch.from_numpy(feed[self.manifest.input.name]).to(self.device, self._dtype, non_blocking=True)
        with torch.inference_mode():
            y = self.model(x)
        return y if isinstance(y, (tuple, list)) else (y,)

    def _sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def _fetch(self, raw: Any) -> dict[str, np.ndarray]:
        return {o.name: t.float().cpu().numpy() for o, t in zip(self.manifest.outputs, raw)}

    def _close(self) -> None:
        self.model = None
        if self.device == "cuda":
            torch.cuda.empty_cache()


def build_from_manifest(manifest, weights_path) -> torch.nn.Module:
    """The manifest's model (by its task's framework) with the weights in `weights_path`, loaded weights_only;
    eval mode."""
    return BUILDERS[task_for(manifest).framework](manifest, weights_path).eval()


def build_classifier(manifest, weights_path) -> torch.nn.Module:
    """The manifest's torchvision architecture with the state_dict in `weights_path`."""
    from edgekit.train.models import build_model

    arch = manifest.source.get("arch")
    if not arch:
        raise EdgekitError("manifest source has no 'arch': cannot rebuild the torch model")
    model, _ = build_model(arch, len(manifest.labels), pretrained="none")
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise TypeError("not a state_dict")
        model.load_state_dict(state)
    except (RuntimeError, KeyError, EOFError, OSError, TypeError, pickle.UnpicklingError) as e:
        raise EdgekitError(f"{weights_path} does not hold {arch} weights for {len(manifest.labels)} classes "
                           f"({type(e).__name__}); re-train or restore the file") from None
    return model


YOLO_STATE_FORMAT = "edgekit-yolo-state/1"  # what edgekit.train.detect.save_yolo_state writes


def read_yolo_state(path) -> dict:
    """The weights-only YOLO state file: {"format", "yaml", "nc", "names", "state_dict", ...}. Never unpickles
    anything but tensors and plain containers; an ultralytics checkpoint is refused with the fix."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not zipfile.is_zipfile(path):  # not even torch.save's container: damaged or not weights
            raise EdgekitError(f"{path} is not a readable weights file ({type(e).__name__}); re-train or restore "
                               "the file") from None
        # a torch.save file pickling classes weights_only refuses: a full (ultralytics) checkpoint
        raise EdgekitError(
            f"{path} is a full pickle (an ultralytics .pt checkpoint), and edgekit loads weights-only files only. "
            f"If you made this model directory yourself, convert it once: `python -m edgekit.train.detect "
            f"{Path(path).parent} --trust-pickle` (unpickles model.pt, which runs any code it holds; writes "
            "model_state.pt), or re-train") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise EdgekitError(f"{path} is not a readable weights file ({type(e).__name__}); re-train or restore "
                           "the file") from None
    if not isinstance(state, dict) or state.get("format") != YOLO_STATE_FORMAT:
        raise EdgekitError(f"{path} is not an edgekit YOLO state file ({YOLO_STATE_FORMAT}); re-train, or convert "
                           f"a model directory you made with `python -m edgekit.train.detect {Path(path).parent} "
                           "--trust-pickle`")
    return state


def build_detector(manifest, weights_path) -> torch.nn.Module:
    return load_yolo_state(weights_path, nc=len(manifest.labels))


BUILDERS = {"torchvision": build_classifier, "ultralytics": build_detector}  # by the task's framework


def load_yolo_state(weights_path, *, nc: int | None = None) -> torch.nn.Module:
    """ultralytics' DetectionModel rebuilt from the state file's yaml, its weights loaded, Conv+BN fused (as the
    ONNX export is); called with (N, 3, H, W) it returns the (N, 4+nc, anchors) head output alone. `nc`: the
    class count the manifest expects."""
    return _HeadOutput(yolo_model_from_state(weights_path, nc=nc).fuse(verbose=False))


def yolo_model_from_state(weights_path, *, nc: int | None = None) -> torch.nn.Module:
    """ultralytics' DetectionModel (float32, eval, unfused) rebuilt from the weights-only state file."""
    from edgekit.zoo import ultralytics_env

    state = read_yolo_state(weights_path)
    if nc is not None and int(state["nc"]) != nc:
        raise EdgekitError(f"{weights_path} holds a {state['nc']}-class YOLO, the manifest names {nc} classes; "
                           "re-train or restore the file")
    ultralytics_env(offline=True)
    from ultralytics.nn import tasks

    _check_yaml(state["yaml"], weights_path)
    safe = getattr(getattr(tasks, "_SafeLoad", None), "_local", None)  # ultralytics' own no-eval model building
    if safe is not None:
        safe.active = True
    try:
        model = tasks.DetectionModel(copy.deepcopy(state["yaml"]), ch=3, nc=int(state["nc"]), verbose=False)
    finally:
        if safe is not None:
            safe.active = False
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as e:
        raise EdgekitError(f"{weights_path}: the weights do not fit the model its yaml describes "
                           f"({str(e).splitlines()[0][:200]}); re-train or restore the file") from None
    model.names = dict(enumerate(state["names"]))
    return model.float().eval()


_ACTIVATIONS = ("nn.SiLU()", "nn.ReLU()", "nn.ReLU6()", "nn.Hardswish()", "nn.LeakyReLU(0.1)", "nn.GELU()")


def _check_yaml(cfg: Any, path) -> None:
    """The model yaml names only layers (nn.Module classes of torch.nn or ultralytics.nn.modules) and a known
    activation: ultralytics' parse_model looks layer names up in its module's globals and eval()s `activation`,
    so a crafted file could otherwise call any function there. Checked before anything is built."""
    from ultralytics.nn import modules

    def is_layer(name: Any) -> bool:
        if not isinstance(name, str):
            return False
        obj = getattr(torch.nn, name[3:], None) if name.startswith("nn.") else getattr(modules, name, None)
        return isinstance(obj, type) and issubclass(obj, torch.nn.Module)

    rows = [*cfg.get("backbone", []), *cfg.get("head", [])] if isinstance(cfg, dict) else []
    bad = [r[2] if isinstance(r, list) and len(r) == 4 else r for r in rows
           if not (isinstance(r, list) and len(r) == 4 and is_layer(r[2]))]
    act = cfg.get("activation") if isinstance(cfg, dict) else None
    if not rows or bad or (act is not None and act not in _ACTIVATIONS):
        raise EdgekitError(f"{path}: the model yaml names what is not a known layer "
                           f"({(bad or [act] or ['no layers'])[0]!r}); refusing to build it. Re-train, or convert "
                           "a model directory you made again (python -m edgekit.train.detect MODEL_DIR --trust-pickle)")


class _HeadOutput(torch.nn.Module):
    """In eval mode ultralytics' Detect returns (decoded head, raw maps): keep the head, as the ONNX graph does."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return y[0] if isinstance(y, (tuple, list)) else y
