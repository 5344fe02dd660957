"""ONNX Runtime: CPU, CUDA and TensorRT execution providers."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError, unknown_choice
from edgekit.manifest import TensorSpec
from edgekit.runners.base import Runner
from edgekit.runners.onnx_file import not_loadable

_ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
    "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(bool)": "bool",
}
# device -> execution providers, best first; CPU is always the last resort.
_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


class OnnxrtRunner(Runner):
    """Options: threads (intra-op, 0 = ORT's default), spin (False: idle intra-op threads sleep instead of
    spinning, which wastes the cores that other work shares; default ORT's: spin), inter_threads, graph_opt ('all'|'extended'|'basic'|
    'disable'); TensorRT EP: trt_fp16, trt_int8 (default from the artifact's precision), trt_cache_dir (engine
    cache, one sub-folder per precision flags), trt_profile_shapes (dynamic shapes: 'MIN;OPT;MAX', see
    profile_shape_options),
    dla_core; CUDA EP: cuda_mem_limit (bytes)."""

    backend = "onnxrt"
    devices = ("cpu", "cuda", "trt")

    def _load(self) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        wanted = _PROVIDERS[self.device]
        if wanted[0] not in available:
            raise EdgekitError(
                f"ONNX Runtime here has no {wanted[0]} (it has {', '.join(available)}); on Jetson install the "
                "onnxruntime-gpu wheel for your JetPack, or run with --device cpu")
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(self.options.get("threads", 0))
        so.inter_op_num_threads = int(self.options.get("inter_threads", 0))
        if self.options.get("spin") is False:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        levels = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }
        level = self.options.get("graph_opt", "all")
        if level not in levels:
            raise unknown_choice("graph_opt", str(level), levels)
        so.graph_optimization_level = levels[level]
        so.log_severity_level = 3
        providers = [(p, self._provider_options(p)) for p in wanted if p in available]
        try:
            self.session = ort.InferenceSession(str(self.artifact), sess_options=so, providers=providers)
        except Exception as e:  # ORT raises its own exception types for bad protobuf / graphs
            raise not_loadable(self.artifact, "ONNX Runtime", e) from None
        self.providers = self.session.get_providers()
        self._output_names = [o.name for o in self.session.get_outputs()]

    def _provider_options(self, provider: str) -> dict[str, Any]:
        o = self.options
        if provider == "TensorrtExecutionProvider":
            # A Q/DQ (int8) model needs the int8 flag or the provider refuses it; fp16 kernels are allowed
            # for reduced precisions so layers TensorRT keeps unquantized do not fall back to fp32.
            int8 = bool(o.get("trt_int8", self.precision == "int8"))
            opts: dict[str, Any] = {
                "trt_fp16_enable": bool(o.get("trt_fp16", self.precision in ("fp16", "int8"))),
                "trt_int8_enable": int8,
            }
            if o.get("trt_cache_dir"):
                # The provider's own cache key ignores the precision flags: one folder per flag set, so a
                # changed flag never serves an engine built with the old ones.
                flags = f"fp16{int(opts['trt_fp16_enable'])}-int8{int(int8)}"
                opts.update(trt_engine_cache_enable=True, trt_timing_cache_enable=True,
                            trt_engine_cache_path=str(Path(o["trt_cache_dir"]) / flags))
            if o.get("trt_profile_shapes"):
                opts.update(profile_shape_options(o["trt_profile_shapes"]))
            if o.get("dla_core") is not None:
                opts.update(trt_dla_enable=True, trt_dla_core=int(o["dla_core"]))
            return opts
        if provider == "CUDAExecutionProvider" and o.get("cuda_mem_limit"):
            return {"gpu_mem_limit": int(o["cuda_mem_limit"])}
        return {}

    def _io(self) -> tuple[dict[str, TensorSpec], dict[str, TensorSpec]]:
        def spec(arg: Any) -> TensorSpec:
            shape = [d if isinstance(d, int) else str(d or "dim") for d in arg.shape]
            return TensorSpec(arg.name, shape, _ORT_DTYPES.get(arg.type, "float32"))

        return ({a.name: spec(a) for a in self.session.get_inputs()},
                {a.name: spec(a) for a in self.session.get_outputs()})

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._output_names, self.session.run(self._output_names, dict(feed))))

    def _close(self) -> None:
        self.session = None


def profile_shape_options(value: Any) -> dict[str, str]:
    """trt_profile_shapes -> the TensorRT provider's trt_profile_{min,opt,max}_shapes. Each of the three is
    ONNX Runtime's own format, where ',' separates inputs: "input1:1x3x224x224,input2:1x10". So the three
    are separated by ';' ("MIN;OPT;MAX"), or given as a mapping {"min": ..., "opt": ..., "max": ...}. The
    single-input form "input:1x3x8x8,input:4x3x8x8,input:8x3x8x8" (min,opt,max) is still read."""
    if isinstance(value, Mapping):
        parts = [value.get(k) for k in ("min", "opt", "max")]
    else:
        text = str(value).replace(" ", "")
        parts = text.split(";")
        if len(parts) == 1:  # the single-input form: three entries for one input
            entries = text.split(",")
            if len(entries) == 3 and len({e.rpartition(":")[0] for e in entries}) == 1:
                parts = entries
    if len(parts) != 3 or not all(parts):
        raise EdgekitError(f"trt_profile_shapes {value!r}: give min;opt;max separated by ';', each in ONNX Runtime's "
                           "format with ',' between inputs: 'a:1x3x8x8,b:1x4;a:4x3x8x8,b:4x4;a:8x3x8x8,b:8x4'")
    names = [_profile_inputs(str(p), value) for p in parts]
    if names[0] != names[1] or names[0] != names[2]:
        raise EdgekitError(f"trt_profile_shapes {value!r}: min, opt and max must name the same inputs, got "
                           f"{', '.join('/'.join(n) for n in names)}")
    return dict(zip(("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes"), map(str, parts)))


def _profile_inputs(shapes: str, value: Any) -> list[str]:
    names = []
    for entry in shapes.split(","):
        name, _, dims = entry.rpartition(":")
        if not name or not all(d.isdigit() for d in dims.split("x")):
            raise EdgekitError(f"trt_profile_shapes {value!r}: '{entry}' is not NAME:DxDx... (e.g. input:1x3x224x224)")
        names.append(name)
    return sorted(names)
