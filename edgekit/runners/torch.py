"""PyTorch: the reference backend. CPU or CUDA, fp32 or fp16 (fp16 on CUDA)."""
from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from edgekit.errors import EdgekitError
from edgekit.manifest import TensorSpec
from edgekit.runners.base import Runner


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
        self.model = build_from_manifest(self.manifest, self.artifact)
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
    """The manifest's architecture with the weights in `weights_path` (a state_dict, weights_only)."""
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
