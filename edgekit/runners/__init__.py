"""Backends behind one interface. Each lives in its own module, imported only when asked for, so
loading an ONNX Runtime runner never imports torch."""
from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError, unknown_choice
from edgekit.manifest import BACKENDS, Manifest
from edgekit.runners.base import Runner

log = logging.getLogger(__name__)

# backend -> (module, class, what to install when the import fails)
_REGISTRY = {
    "torch": ("edgekit.runners.torch", "TorchRunner", "pip install 'edgekit[train]' (torch, torchvision)"),
    "onnxrt": ("edgekit.runners.onnxrt", "OnnxrtRunner", "pip install 'edgekit[runtime]' (onnxruntime); on a "
               "Jetson onnxruntime-gpu: pip install --index-url https://pypi.jetson-ai-lab.io/jp6/cu126 "
               "'edgekit[jetson]'"),
    "trt": ("edgekit.runners.trt", "TrtRunner", "TensorRT comes with JetPack (python3-libnvinfer; a venv needs "
            "--system-site-packages to see it) and cuda-python: pip install 'edgekit[jetson]'"),
    "tinygrad": ("edgekit.runners.tinygrad", "TinygradRunner", "pip install 'edgekit[tinygrad]' (tinygrad 0.14, "
                 "Python >= 3.11: on JetPack 6's 3.10 give it a 3.11 venv and bench --tinygrad-python, README 'On a "
                 "Jetson'; its CPU backend also needs clang: apt-get install clang)"),
}


# A runner may consume another backend's file: tinygrad runs the ONNX recorded for onnxrt.
_ARTIFACT_OF = {"tinygrad": "onnxrt"}


def artifact_backend(backend: str) -> str:
    """Which manifest artifacts `backend` runs (without importing it)."""
    return _ARTIFACT_OF.get(backend, backend)


def available_backends() -> tuple[str, ...]:
    return tuple(b for b in BACKENDS if b in _REGISTRY)


def runner_class(backend: str) -> type[Runner]:
    if backend not in _REGISTRY:
        raise unknown_choice("backend", backend, available_backends())
    module, cls, install = _REGISTRY[backend]
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise EdgekitError(f"the {backend} backend is not installed ({e.name or e}): {install}") from None
    return getattr(mod, cls)


def load_runner(model: str | Path | Manifest, backend: str, *, precision: str | None = None,
                device: str | None = None, verify: bool = True, **options: Any) -> Runner:
    """A runner for the model directory's `backend` artifact (fp32 first when precision is None).
    The artifact's sha256 is checked against the manifest unless verify=False. Call load() or use
    `with`."""
    manifest = model if isinstance(model, Manifest) else Manifest.load(model)
    cls = runner_class(backend)
    art = manifest.find_artifact(artifact_backend(backend), precision)
    path = manifest.artifact_path(art, verify=verify)
    if backend == "onnxrt" and art.precision == "int8":
        warn_if_int8_saturates(art.options, path)
    return cls(path, device=device or cls.devices[0], precision=art.precision, manifest=manifest, **options)


def warn_if_int8_saturates(options: dict[str, Any], path: Path) -> str | None:
    """An INT8 file with 8-bit weights run by ONNX Runtime on an x86 CPU without VNNI: its u8s8 kernels saturate
    there, so it can lose far more accuracy than the manifest measured on the CPU it was built on. Say so."""
    from edgekit.platform import SATURATING_INT8_CPUS, cpu_int8

    here = cpu_int8()["kind"]
    if options.get("reduce_range") is not False or here not in SATURATING_INT8_CPUS:
        return None
    built = (options.get("cpu") or {}).get("kind", "another CPU")
    msg = (f"{path.name} has 8-bit INT8 weights (built on {built}); this {here} CPU's ONNX Runtime kernels saturate "
           "with them, so it can lose much more accuracy than the manifest says: re-export here with "
           "`edgekit export DIR --precision int8` (--reduce-range auto picks 7-bit weights on this CPU)")
    log.warning("%s", msg)
    return msg


__all__ = ["Runner", "artifact_backend", "available_backends", "load_runner", "runner_class"]
