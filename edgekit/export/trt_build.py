"""The TensorRT library calls of an engine build, kept thin: import with a useful error, parse the ONNX
(errors per node), configure (workspace, profile, precision flags or strong typing, calibrator, timing
cache, DLA with GPU fallback) and build. Every decision is made beforehand in trt_plan."""
from __future__ import annotations

import logging
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.export.trt_cache import EngineEnv
from edgekit.export.trt_plan import BuildPlan, fit_to_platform, is_dynamic, network_flags
from edgekit.fileio import atomic_write_bytes

log = logging.getLogger(__name__)


def tensorrt_missing_message(jetson: dict | None, detail: str = "") -> str:
    why = f" ({detail})" if detail else ""
    if jetson:
        tag = f"r{jetson['l4t']}" if jetson.get("l4t") else "r36.x (your L4T release)"
        return (f"TensorRT is not importable in this Python ({sys.executable}){why}. On Jetson it comes with "
                "JetPack: `sudo apt install python3-libnvinfer` and create the venv with "
                "`python3 -m venv --system-site-packages .venv` so it sees it; or run in NVIDIA's Jetson "
                f"container nvcr.io/nvidia/l4t-jetpack:{tag} (or an l4t-tensorrt image) with --runtime nvidia")
    return (f"TensorRT is not importable in this Python ({sys.executable}){why}. On an x86 NVIDIA GPU machine: "
            "`pip install tensorrt` (NVIDIA's wheels); on Jetson it comes with JetPack (python3-libnvinfer) or "
            "the l4t-jetpack / l4t-tensorrt containers. Without TensorRT, use --to onnx and the onnxrt backend")


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt  # noqa: PLC0415 - optional, heavy: imported at the edge
    except (ImportError, OSError) as e:  # OSError: the module is there, libnvinfer.so is not
        from edgekit.platform import jetson

        detail = "" if isinstance(e, ImportError) and getattr(e, "name", None) == "tensorrt" else str(e)
        raise EdgekitError(tensorrt_missing_message(jetson(), detail)) from None
    return trt


_LOGGER: list[Any] = []


def make_logger(trt: Any) -> Any:
    """A trt.ILogger that forwards to logging and keeps the errors for exception messages. One per process:
    TensorRT treats the logger as a singleton across builders and runtimes."""
    if _LOGGER:
        return _LOGGER[0]
    levels = {trt.ILogger.INTERNAL_ERROR: logging.CRITICAL, trt.ILogger.ERROR: logging.ERROR,
              trt.ILogger.WARNING: logging.WARNING, trt.ILogger.INFO: logging.DEBUG, trt.ILogger.VERBOSE: logging.DEBUG}

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            level = levels.get(severity, logging.INFO)
            if level >= logging.ERROR:
                self.errors.append(msg)
            log.log(level, "TensorRT: %s", msg)

        def last_errors(self, n: int = 3) -> str:
            return " | ".join(self.errors[-n:]) or "no error message from TensorRT"

    _LOGGER.append(Logger())
    return _LOGGER[0]


def last_tensorrt_errors() -> str:
    """The last errors TensorRT logged, once make_logger made the logger."""
    return _LOGGER[0].last_errors() if _LOGGER else "no error message from TensorRT"


def engine_env(trt: Any, api: Any, device: int = 0) -> EngineEnv:
    api.set_device(device)
    info, v = api.device_info(device), api.versions()
    return EngineEnv(tensorrt=trt.__version__, gpu=info.name, compute_capability=info.compute_capability,
                     integrated=info.integrated, cuda_runtime=v["cuda_runtime"], cuda_driver=v["cuda_driver"])


@dataclass(frozen=True)
class ParserErrorInfo:
    node: int
    name: str
    op: str
    desc: str


def format_parser_errors(onnx_path: Path, errors: list[ParserErrorInfo], trt_version: str) -> str:
    lines = [f"node {e.node} '{e.name}' ({e.op}): {e.desc}" if e.node >= 0 else e.desc for e in errors[:10]]
    more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
    return (f"TensorRT {trt_version} could not parse {onnx_path.name} ({len(errors)} error(s)):\n  "
            + "\n  ".join(lines) + more + "\nRe-export with opset 17 (`edgekit export MODEL_DIR --to onnx "
            "--opset 17`); an operator TensorRT lacks needs another model or a newer TensorRT")


def _parser_errors(parser: Any) -> list[ParserErrorInfo]:
    out = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        name = getattr(e, "node_name", lambda: "")() or "?"
        op = getattr(e, "node_operator", lambda: "")() or "?"
        out.append(ParserErrorInfo(int(e.node()), name, op, str(e.desc())))
    return out


def read_onnx_inputs(onnx_path: Path) -> dict[str, list[int | str]]:
    """Graph inputs (not initializers) and their dims: an int, or the axis name when dynamic."""
    from edgekit.runners.onnx_file import load_onnx

    graph = load_onnx(onnx_path, external_data=False).graph
    weights = {i.name for i in graph.initializer}
    return {i.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                     for d in i.type.tensor_type.shape.dim]
            for i in graph.input if i.name not in weights}


@dataclass
class BuildResult:
    plan: bytes = field(repr=False)
    build: BuildPlan  # after fitting to the GPU: precision is what was built
    requested: str
    seconds: float
    dla: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None


def build_engine(trt: Any, onnx_path: Path, plan: BuildPlan, shapes: dict[str, dict[str, list[int]]], *,
                 workspace_mb: int, dla_core: int = -1, timing_cache: Path | None = None,
                 calibrator: Any = None, calib_batch: int = 0) -> BuildResult:
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(sum(1 << int(getattr(trt.NetworkDefinitionCreationFlag, f))
                                         for f in network_flags(trt.__version__, plan.typing)))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise EdgekitError(format_parser_errors(onnx_path, _parser_errors(parser), trt.__version__))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    built = plan
    if plan.typing == "weak":
        with warnings.catch_warnings():  # platform_has_fast_* is deprecated from 10.5, still right for 10.x
            warnings.simplefilter("ignore", DeprecationWarning)
            built = fit_to_platform(plan, builder.platform_has_fast_fp16, builder.platform_has_fast_int8)
        for note in built.notes:
            log.warning("%s", note)
        for flag in built.flags:
            config.set_flag(getattr(trt.BuilderFlag, flag))
    if built.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default: fp32 means fp32, not 10-bit mantissas
    if is_dynamic(shapes):
        profile = builder.create_optimization_profile()
        for name, s in shapes.items():
            profile.set_shape(name, s["min"], s["opt"], s["max"])
        config.add_optimization_profile(profile)
    if built.calibrate:
        config.int8_calibrator = calibrator
        if is_dynamic(shapes):  # the calibrator feeds one fixed shape
            cal = builder.create_optimization_profile()
            for name, s in shapes.items():
                fixed = [calib_batch, *s["opt"][1:]]
                cal.set_shape(name, fixed, fixed, fixed)
            config.set_calibration_profile(cal)
    dla = _use_dla(trt, builder, config, network, dla_core) if dla_core >= 0 else None
    cache = _load_timing_cache(config, timing_cache)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if built.calibrate and calibrator is not None:
        calibrator.raise_if_failed()  # an error inside get_batch, which TensorRT swallowed
    if serialized is None:
        raise EdgekitError(f"TensorRT could not build {onnx_path.name} as {built.precision}: {logger.last_errors()}. "
                           "Try a larger --workspace-mb, another precision, or --dla-core -1")
    if timing_cache is not None and cache is not None:
        atomic_write_bytes(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    calib = None
    if built.calibrate and calibrator is not None:
        calib = {"images": calibrator.seen, "batch": calib_batch}
    return BuildResult(bytes(memoryview(serialized)), built, plan.precision, round(seconds, 2), dla, calib)


def _use_dla(trt: Any, builder: Any, config: Any, network: Any, core: int) -> dict[str, Any]:
    cores = builder.num_DLA_cores
    if core >= cores:
        raise EdgekitError(f"--dla-core {core}: this device has {cores} DLA core(s)"
                           + (" (the Orin Nano and discrete GPUs have none): use --dla-core -1" if not cores else ""))
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    on_dla = sum(bool(config.can_run_on_DLA(network.get_layer(i))) for i in range(network.num_layers))
    log.info("DLA core %d: %d of %d layers can run on it; the rest fall back to the GPU", core, on_dla,
             network.num_layers)
    return {"core": core, "layers_on_dla": on_dla, "layers": network.num_layers, "gpu_fallback": True}


def _load_timing_cache(config: Any, path: Path | None) -> Any:
    if path is None:
        return None
    data = path.read_bytes() if path.exists() else b""
    cache = config.create_timing_cache(data)
    if cache is None and data:  # a corrupt or truncated file: TensorRT logs an error and returns None
        log.warning("timing cache %s is unreadable (corrupt or truncated); building a new one in its place", path)
        cache = config.create_timing_cache(b"")
    if cache is None:
        raise EdgekitError(f"TensorRT could not create a timing cache ({last_tensorrt_errors()}); build without "
                           "one: --timing-cache none")
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        log.warning("timing cache %s is from another TensorRT or GPU; starting a new one", path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    return cache
