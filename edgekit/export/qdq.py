"""ONNX Runtime static quantization to a QDQ model, and the graph facts the INT8 export checks and records.

Kept apart from int8.py (the export flow) so the sensitivity search and the tests quantize the same way."""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError, unknown_choice
from edgekit.platform import SATURATING_INT8_CPUS

log = logging.getLogger(__name__)
ACTIVATION_TYPES = ("uint8", "int8")
FUSED_ACTIVATIONS = ("Relu", "Clip")  # what ONNX Runtime folds into the layer before them


@dataclass(frozen=True)
class QuantSettings:
    """How weights and activations are quantized (the calibration ranges come from the cache)."""

    method: str  # minmax | entropy | percentile (must match the cache)
    per_channel: bool = True
    activations: str = "uint8"
    symmetric_activations: bool = False
    reduce_range: bool = False

    def __post_init__(self) -> None:
        if self.activations not in ACTIVATION_TYPES:
            raise unknown_choice("INT8 activation type", self.activations, ACTIVATION_TYPES)


REDUCE_RANGE_CHOICES = ("auto", "on", "off")


def reduce_range_for(choice: str, cpu_kind: str) -> tuple[bool, str]:
    """(7-bit weights or not, why) for --reduce-range auto|on|off on a CPU of `cpu_kind` (edgekit.platform's
    cpu_int8_kind). ONNX Runtime's quantization guide: on x86 without VNNI the u8s8 kernels sum two 8-bit
    products in 16 bits and saturate; 7-bit weights (reduce_range) keep that sum in range, at the cost of
    one bit of weight precision. With VNNI (or on ARM: SDOT/SMMLA/widening multiplies) products accumulate
    in 32 bits, so full 8-bit weights are both exact and more precise."""
    if choice not in REDUCE_RANGE_CHOICES:
        raise unknown_choice("--reduce-range value", choice, REDUCE_RANGE_CHOICES)
    if choice != "auto":
        return choice == "on", f"asked (--reduce-range {choice})"
    if cpu_kind in SATURATING_INT8_CPUS or cpu_kind == "unknown":
        return True, (f"auto: this CPU ({cpu_kind}) has no VNNI; ONNX Runtime's u8s8 kernels saturate on it "
                      "with 8-bit weights")
    return False, f"auto: this CPU ({cpu_kind}) accumulates int8 products in 32 bits (no saturation)"


def portability_warning(reduce_range: bool, cpu_kind: str) -> str | None:
    """What will differ when the file runs on another kind of CPU than the one it was built and checked on
    (None when nothing will)."""
    if reduce_range:  # 7-bit weights never saturate: the same results on any CPU
        return None
    if cpu_kind in SATURATING_INT8_CPUS:
        return (f"INT8 built with 8-bit weights (--reduce-range off) on this {cpu_kind} CPU, whose u8s8 kernels "
                "saturate: the accuracy measured here is what it loses; export with --reduce-range auto or on")
    return (f"INT8 built with 8-bit weights on a {cpu_kind} CPU and checked here: on an x86 CPU without VNNI "
            "(AVX2, or AVX-512 without VNNI) ONNX Runtime's u8s8 kernels saturate and the same file can lose "
            "much more accuracy; for such CPUs export there, or with --reduce-range on (7-bit weights behave "
            "the same everywhere)")


def prepare(src: Path, dest: Path, *, preprocess: bool) -> Path:
    """ONNX Runtime's quant_pre_process (shape inference, basic graph fusions) into `dest`, or `src`."""
    if not preprocess:
        return src
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with _quiet_root_logger():  # it warns per unknown shape through the root logger
            quant_pre_process(str(src), str(dest), skip_symbolic_shape=False)
    except Exception as e:  # symbolic shape inference raises plain exceptions on unusual graphs
        log.warning("quant_pre_process failed (%s); quantizing the model as exported", str(e)[:200])
        return src
    return dest


@contextlib.contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_qdq(prepared: Path, dest: Path, cache: Path, q: QuantSettings, *, exclude: list[str] = ()) -> None:
    """QDQ INT8 model of `prepared` with ranges from the calibration cache; `exclude` nodes stay float."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from edgekit.export.calibration import ort_method

    act = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[q.activations]
    if exclude:
        import onnx

        exclude = with_activations(onnx.load(str(prepared)), list(exclude))
    try:
        with _quiet_root_logger():  # quantize_static warns about pre-processing through the root logger
            quantize_static(str(prepared), str(dest), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
                            per_channel=q.per_channel, reduce_range=q.reduce_range, activation_type=act,
                            weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude),
                            calibrate_method=ort_method(q.method), calibration_cache_path=str(cache),
                            extra_options={"ActivationSymmetric": q.symmetric_activations, "WeightSymmetric": True})
    except (ValueError, RuntimeError, KeyError) as e:
        raise EdgekitError(f"ONNX Runtime could not quantize {prepared.name} ({type(e).__name__}: "
                           f"{str(e)[:200]}); delete the calibration cache and retry, or report the model") from None
    if exclude:
        import onnx

        model = onnx.load(str(dest))
        keep_inputs_float(model, set(exclude))
        onnx.save(model, str(dest))


def with_activations(model, names: list[str]) -> list[str]:
    """`names` plus the Relu/Clip each one feeds alone: a layer kept in float takes its activation along, or
    the activation would be quantized on its own, with a QuantizeLinear on the pre-activation tensor (whose
    range, negative side included, was never meant to be quantized)."""
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    by_name = {n.name: n for n in model.graph.node}
    out = list(names)
    for name in names:
        node = by_name.get(name)
        while node is not None and len(node.output) == 1 and len(consumers.get(node.output[0], [])) == 1:
            node = consumers[node.output[0]][0]
            if node.op_type not in FUSED_ACTIVATIONS:
                break
            out.append(node.name)
    return list(dict.fromkeys(out))


def keep_inputs_float(model, nodes: set[str]) -> int:
    """Feed each named node its inputs in float: a QuantizeLinear -> DequantizeLinear pair in front of it is
    replaced by a Clip to the range that pair represents, and pairs left unused are dropped. Returns how
    many inputs were rewired.

    Why: quantize_static leaves an excluded node's weights float but still quantizes its inputs when the
    producer's output is quantized. ONNX Runtime's WeightBiasQuantization optimizer (every optimization level
    above 'disable') then sees DQ -> Conv/Gemm(float weights) -> [Relu|Clip] -> Q and quantizes those weights
    itself, per-tensor, at load time: the "float" layer runs INT8 with the coarsest weight scales (on
    MobileNetV2's depthwise convs that costs far more than not excluding them at all). A node whose inputs
    are float is neither re-quantized nor fused into a QLinear kernel: it really runs in float.
    Why the Clip: the quantizer drops a Relu/Clip in front of a QuantizeLinear whose range already clamps
    (zero point at the bottom); taking the pre-Q tensor alone would lose that activation."""
    from onnx import helper, numpy_helper

    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    clipped: dict[str, str] = {}  # Q node name -> its Clip's output
    rewired = 0
    for n in list(model.graph.node):
        if n.name not in nodes:
            continue
        for idx, name in enumerate(n.input):
            dq = producers.get(name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is None or q.op_type != "QuantizeLinear" or q.input[1] not in inits or len(q.input) < 3:
                continue
            if q.name not in clipped:
                scale = float(numpy_helper.to_array(inits[q.input[1]]).reshape(-1)[0])
                zp_arr = numpy_helper.to_array(inits[q.input[2]])
                info = np.iinfo(zp_arr.dtype)
                zp = int(zp_arr.reshape(-1)[0])
                lo, hi = (info.min - zp) * scale, (info.max - zp) * scale
                out = f"{q.input[0]}_float_range"
                bounds = [numpy_helper.from_array(np.array(v, np.float32), f"{out}_{k}") for k, v in (("lo", lo),
                                                                                                       ("hi", hi))]
                model.graph.initializer.extend(bounds)
                clip = helper.make_node("Clip", [q.input[0], bounds[0].name, bounds[1].name], [out],
                                        name=f"{q.name}_float_range")
                model.graph.node.insert(list(model.graph.node).index(q), clip)
                clipped[q.name] = out
            n.input[idx] = clipped[q.name]
            rewired += 1
    _drop_dead_qdq(model)
    return rewired


def _drop_dead_qdq(model) -> None:
    graph_outputs = {o.name for o in model.graph.output}
    while True:
        used = {i for n in model.graph.node for i in n.input} | graph_outputs
        dead = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            model.graph.node.remove(n)
    used = {i for n in model.graph.node for i in n.input}
    unused = [i for i in model.graph.initializer if i.name not in used]
    for i in unused:
        model.graph.initializer.remove(i)


def strip_unused_opsets(model) -> list[str]:
    """Drop opset imports no node uses (ONNX Runtime adds 'ai.onnx.preview', which tinygrad rejects).
    Returns the domains removed."""
    used = {""}
    stack = [model.graph]
    while stack:
        g = stack.pop()
        for n in g.node:
            used.add(n.domain if n.domain != "ai.onnx" else "")
            stack += [a.g for a in n.attribute if a.HasField("g")] + [sg for a in n.attribute for sg in a.graphs]
    keep = [o for o in model.opset_import if (o.domain if o.domain != "ai.onnx" else "") in used]
    dropped = [o.domain for o in model.opset_import if o not in keep]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    return dropped


def quantized_nodes(model) -> dict[str, list[str]]:
    """Compute nodes by name: "int8" when every float data input comes from a DequantizeLinear and every
    output goes only to QuantizeLinear nodes (ONNX Runtime then runs a QLinear kernel), else "float".
    Q/DQ nodes themselves, and nodes without float data inputs, are not listed."""
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    consumers: dict[str, list[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    init = {i.name for i in model.graph.initializer}
    out: dict[str, list[str]] = {"int8": [], "float": []}
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        inputs = [i for i in n.input if i]
        if not any(i not in init for i in inputs):
            continue
        dq_in = all(producers.get(i) == "DequantizeLinear" for i in inputs[:2])
        q_out = all(consumers.get(o) and set(consumers[o]) == {"QuantizeLinear"} for o in n.output)
        out["int8" if dq_in and q_out else "float"].append(n.name)
    return out


def candidate_nodes(model) -> list[str]:
    """Layers ONNX Runtime would quantize (op type in its QDQ registry), in graph order; a Relu/Clip that
    only follows one of them is part of that layer (see with_activations), not a candidate of its own."""
    from edgekit.export.calibration import quantizable_op_types

    ops = set(quantizable_op_types())
    names = [n.name for n in model.graph.node if n.op_type in ops and n.name]
    fused = {a for n in names for a in with_activations(model, [n])[1:]}
    return [n for n in names if n not in fused]
