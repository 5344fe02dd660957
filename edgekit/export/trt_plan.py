"""What a TensorRT build will do, decided without TensorRT: the precision strategy for a TensorRT version,
the fallback when the GPU lacks fast FP16/INT8, and the optimisation-profile shapes. Pure functions.

TensorRT 10.0-10.11 (JetPack 6 ships 10.3) builds "weakly typed": the FP32 ONNX plus builder flags
(FP16, INT8 with an entropy calibrator). 10.12 deprecated weak typing and 11 removed it, so there the
precision lives in the ONNX itself: a strongly typed network from model_fp16.onnx or the Q/DQ
model_int8.onnx. Strong typing also works on 10.x when asked for."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from edgekit.errors import EdgekitError, unknown_choice
from edgekit.manifest import PRECISIONS

TYPINGS = ("auto", "weak", "strong")
WEAK_TYPING_DEPRECATED = (10, 12)  # weak typing deprecated here, removed in 11
ALWAYS_STRONG = (11,)  # every network is strongly typed: the STRONGLY_TYPED flag is deprecated (ignored)
DEFAULT_DYNAMIC_MAX_BATCH = 8


@dataclass(frozen=True)
class BuildPlan:
    precision: str  # what the engine is built to compute in
    typing: str  # weak | strong
    onnx_precision: str  # which onnxrt artifact TensorRT parses: fp32 | fp16 | int8
    flags: tuple[str, ...] = ()  # trt.BuilderFlag names to set
    calibrate: bool = False  # INT8 entropy calibration over training images
    notes: tuple[str, ...] = ()  # what changed from the request, and why


def parse_version(version: str) -> tuple[int, ...]:
    m = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?", str(version))
    if not m:
        raise EdgekitError(f"cannot read the TensorRT version '{version}'")
    return tuple(int(g) for g in m.groups() if g is not None)


def plan_build(trt_version: str, precision: str, typing: str = "auto") -> BuildPlan:
    """The strategy for building `precision` with this TensorRT version."""
    if precision not in PRECISIONS:
        raise unknown_choice("precision", precision, PRECISIONS)
    if typing not in TYPINGS:
        raise unknown_choice("typing", typing, TYPINGS)
    v = parse_version(trt_version)
    if v[0] < 10:
        raise EdgekitError(f"TensorRT {trt_version} is too old: edgekit builds engines with TensorRT 10 or newer "
                           "(JetPack 6 ships 10.3; JetPack 5 users: upgrade to JetPack 6)")
    if typing == "weak" and v[0] >= 11:
        raise EdgekitError(f"TensorRT {trt_version} removed builder precision flags and INT8 calibrators: use "
                           "--typing strong (or auto), which builds from model_fp16.onnx / model_int8.onnx")
    if typing == "auto":
        typing = "weak" if v[:2] < WEAK_TYPING_DEPRECATED else "strong"
    if typing == "strong":
        return BuildPlan(precision, "strong", onnx_precision=precision)
    flags = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8", "FP16")}[precision]  # INT8: FP16 for the rest
    return BuildPlan(precision, "weak", onnx_precision="fp32", flags=flags, calibrate=precision == "int8")


def network_flags(trt_version: str, typing: str) -> tuple[str, ...]:
    """trt.NetworkDefinitionCreationFlag names for create_network. Not STRONGLY_TYPED on 11+: it is
    deprecated there, so it is the next name to be removed, and looking it up would then fail every build."""
    if typing != "strong" or parse_version(trt_version)[:1] >= ALWAYS_STRONG:
        return ()
    return ("STRONGLY_TYPED",)


def fit_to_platform(plan: BuildPlan, fast_fp16: bool, fast_int8: bool) -> BuildPlan:
    """Weak typing on a GPU without fast FP16/INT8 builds something lower: say so, and record it."""
    if plan.typing != "weak":
        return plan
    if plan.precision == "int8" and not fast_int8:
        fallback = "fp16" if fast_fp16 else "fp32"
        return replace(plan, precision=fallback, flags=("FP16",) if fast_fp16 else (), calibrate=False,
                       notes=plan.notes + (f"this GPU has no fast INT8: built {fallback} instead",))
    if plan.precision == "fp16" and not fast_fp16:
        return replace(plan, precision="fp32", flags=(),
                       notes=plan.notes + ("this GPU has no fast FP16: built fp32 instead",))
    return plan


def check_dla(precision: str, dla_core: int) -> None:
    if dla_core < -1:
        raise EdgekitError(f"--dla-core must be -1 (GPU) or a DLA core number, got {dla_core}")
    if dla_core >= 0 and precision == "fp32":
        raise EdgekitError("the DLA runs fp16 and int8 only: pass --precision fp16 (or int8) with --dla-core")


def profile_shapes(inputs: dict[str, list[int | str]], opt_batch: int = 0,
                   max_batch: int = 0) -> dict[str, dict[str, list[int]]]:
    """min/opt/max shape per input. Only the batch axis (axis 0) may be dynamic; a fixed-batch ONNX
    keeps its batch (and asking for another one is an error that says how to re-export)."""
    if opt_batch < 0 or max_batch < 0:
        raise EdgekitError("--opt-batch and --max-batch must be positive (0 = default)")
    shapes = {}
    for name, dims in inputs.items():
        rest = dims[1:]
        if any(not isinstance(d, int) or d <= 0 for d in rest):
            raise EdgekitError(f"ONNX input '{name}' has dynamic axes {dims} beyond the batch: re-export it with "
                               "a fixed image size (edgekit export MODEL_DIR --to onnx)")
        if isinstance(dims[0], int) and dims[0] > 0:
            fixed = dims[0]
            for flag, asked in (("--opt-batch", opt_batch), ("--max-batch", max_batch)):
                if asked and asked != fixed:
                    raise EdgekitError(
                        f"the ONNX input '{name}' has a fixed batch of {fixed}, so {flag} {asked} cannot be built: "
                        "re-export with a dynamic batch (edgekit export MODEL_DIR --to onnx --dynamic-batch)")
            shape = [fixed, *rest]
            shapes[name] = {"min": shape, "opt": shape, "max": list(shape)}
            continue
        opt = opt_batch or 1
        top = max_batch or max(DEFAULT_DYNAMIC_MAX_BATCH, opt)
        if opt > top:
            raise EdgekitError(f"--opt-batch {opt} is larger than --max-batch {top}")
        shapes[name] = {"min": [1, *rest], "opt": [opt, *rest], "max": [top, *rest]}
    return shapes


def is_dynamic(shapes: dict[str, dict[str, list[int]]]) -> bool:
    return any(s["min"] != s["max"] for s in shapes.values())


def calibration_batch(shapes: dict[str, dict[str, list[int]]], requested: int) -> int:
    """Calibration batch: any size within a dynamic profile, else the engine's fixed batch."""
    if not is_dynamic(shapes):
        return next(iter(shapes.values()))["opt"][0]
    top = min(s["max"][0] for s in shapes.values())
    return max(1, min(requested, top))


def engine_filename(precision: str, dla_core: int = -1) -> str:
    return f"model_{precision}" + (f"_dla{dla_core}" if dla_core >= 0 else "") + ".engine"
