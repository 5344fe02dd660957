"""`edgekit export --precision fp16`: the model's FP32 ONNX converted to FP16 weights and activations, with
FP32 inputs and outputs kept (a Cast at each end), so every caller feeds the same arrays as before.

ONNX Runtime's converter (onnxruntime.transformers.float16) does the conversion; around it:
  - ops that must stay FP32 (edgekit's block list plus --block-ops) are left alone, with Casts around them;
  - the Resize problem: Resize's `roi`/`scales` must stay FP32 (YOLO necks upsample). The converter keeps
    such initializers FP32 but converts a Constant node feeding them to FP16 (and casts back: a rounding
    and two extra nodes), so those Constant nodes become initializers first;
  - stale value_info (exporters and onnxslim leave FP32 shapes behind) is cleared before converting, and
    cleared and re-inferred (strict) afterwards, so a type mismatch fails here rather than at load time.
Then the FP16 file is checked against the FP32 ONNX on held-out images and its accuracy recorded. On a CPU
without FP16 kernels this file is slower than FP32: it is for GPUs (TensorRT EP, CUDA EP)."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from edgekit.configs import check_config, option
from edgekit.errors import EdgekitError
from edgekit.export import unlabelled
from edgekit.export.accuracy import evaluate
from edgekit.fileio import atomic_path
from edgekit.manifest import Artifact, Manifest
from edgekit.runners.onnx_file import load_onnx
from edgekit.platform import machine_summary
from edgekit.tasks import task_for
from edgekit.vision.decoders import DECODER_HINT, DECODER_SPEC

log = logging.getLogger(__name__)

# Besides onnxruntime's own list (classic-ML ops, TopK, NonMaxSuppression, Range, CumSum, Upsample, ...):
# ops whose FP16 result is numerically unsafe (large reductions, exponent ranges) or that index/shape.
EXTRA_BLOCK_OPS = ("NonMaxSuppression", "RoiAlign", "TopK", "ArgMax", "ArgMin", "ReduceSumSquare", "ReduceL2",
                   "ReduceLogSumExp", "Einsum")
FLOAT_INPUTS_OF = {"Resize": (1, 2), "Upsample": (1,)}  # roi, scales: FP32 by the ONNX spec


@dataclass
class Fp16ExportConfig:
    block_ops: str = ""  # more op types kept in FP32 (comma-separated), on top of edgekit's list
    block_nodes: str = ""  # node names kept in FP32 (comma-separated)
    fp16_tolerance: float = option(5e-2, gt=0)  # max abs error vs the FP32 ONNX / max |output| (MobileNetV2@64: 1.3e-2)
    fp16_min_agreement: float = option(-1.0, ge=-1, le=1)  # min agreement with FP32, held-out (-1: classify 0.99 top-1, detect 0.97 mAP
    # of the FP16 detections against FP32's own)
    eval_images: int = option(0, ge=0)  # held-out images for parity and accuracy (0 = the whole val split)
    data: str | None = option(None, path="any")  # held-out images: an ImageFolder or a detector's YOLO data.yaml; default: the manifest's val split
    calib_data: str | None = option(None, path="dir")  # a folder of unlabelled pictures instead of --data: agreement with FP32 is measured instead of accuracy
    decoder: str = option("", empty=True, pattern=DECODER_SPEC, hint=DECODER_HINT)  # detector output decoder: yolov8 | yolov5 | end2end, or an installed plug-in module.path:function (never a file); default: the manifest's (a plug-in it names must be passed here)

    def validate(self) -> None:
        check_config(self)
        if not (self.fp16_min_agreement == -1 or 0 <= self.fp16_min_agreement <= 1):
            raise EdgekitError("--fp16-min-agreement takes a fraction in [0, 1], or -1 for the task's own minimum; "
                               f"got {self.fp16_min_agreement}")
        if self.calib_data and self.data:
            raise EdgekitError("--calib-data replaces --data (unlabelled pictures instead of a labelled dataset): "
                               "pass one of them")


def block_list(extra: str = "") -> list[str]:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    ops = [*DEFAULT_OP_BLOCK_LIST, *EXTRA_BLOCK_OPS, *(o.strip() for o in extra.split(",") if o.strip())]
    return sorted(set(ops))


def fp16_model(model, *, block_ops: list[str], block_nodes: list[str] = ()):
    """An FP16 copy of an FP32 ModelProto with FP32 graph inputs and outputs."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.ModelProto.FromString(model.SerializeToString())
    del model.graph.value_info[:]  # stale FP32 value_info makes the converter mis-type tensors
    _constants_to_initializers(model)
    try:
        out = convert_float_to_float16(model, keep_io_types=True, op_block_list=block_ops,
                                       node_block_list=list(block_nodes))
    except Exception as e:  # the converter raises plain Exceptions/AssertionErrors on graphs it cannot handle
        raise EdgekitError(f"FP16 conversion failed ({type(e).__name__}: {str(e)[:200]}); keep the offending "
                           "op in FP32 with --block-ops OP[,OP] and report the model") from None
    del out.graph.value_info[:]
    _topological_sort(out.graph)  # the converter appends its input/output Casts at the end
    try:
        out = onnx.shape_inference.infer_shapes(out, strict_mode=True)
    except Exception as e:  # onnx raises InferenceError / ValidationError subclasses
        raise EdgekitError(f"the FP16 graph does not type-check ({str(e).splitlines()[0][:300]}); keep that op in "
                           "FP32 with --block-ops OP (or --block-nodes NAME)") from None
    _check_io(model, out)
    return out


def fp16_from_onnx(model_dir: str | Path, cfg: Fp16ExportConfig | None = None) -> Artifact:
    """Convert `<model_dir>/model.onnx` (the FP32 onnxrt artifact) to model_fp16.onnx, check it against
    FP32 on held-out images and record both files' accuracy in the manifest (the task's metric and
    agreement: edgekit.tasks)."""
    import onnx

    cfg = cfg or Fp16ExportConfig()
    manifest = Manifest.load(model_dir)
    hooks = task_for(manifest, cfg.decoder)
    src = manifest.find_artifact("onnxrt", "fp32")
    src_path = manifest.artifact_path(src)
    blocked = block_list(cfg.block_ops)
    nodes = [n.strip() for n in cfg.block_nodes.split(",") if n.strip()]
    half = fp16_model(load_onnx(src_path), block_ops=blocked, block_nodes=nodes)  # a damaged file: one error
    if cfg.calib_data:  # no labels: every picture measures agreement with FP32
        held, metric = unlabelled.fp16_inputs(manifest, hooks, cfg.calib_data, src_path, limit=cfg.eval_images)
    else:
        held, metric = hooks.heldout(manifest, cfg.data, cfg.eval_images), hooks.metric
    name = manifest.input.name
    dest = manifest.model_dir / "model_fp16.onnx"
    with atomic_path(dest) as tmp:
        onnx.save(half, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
        acc32, ref = evaluate(src_path, held, metric, input_name=name)
        acc16, out16 = evaluate(tmp, held, metric, input_name=name)
        need = hooks.fp16_min_agreement if cfg.fp16_min_agreement == -1 else cfg.fp16_min_agreement
        parity = {**hooks.parity(ref, out16), "reference": f"onnxrt/fp32 ({src.path})",
                  "tolerance": cfg.fp16_tolerance, "min_agreement": need}
        parity["passed"] = parity["max_rel"] <= cfg.fp16_tolerance and parity["agreement"] >= need
        log.info("FP16 vs FP32 ONNX on %d held-out images: max abs %.2e (%.2e of scale), %s %.2f%%",
                 parity["n"], parity["max_abs"], parity["max_rel"], hooks.agreement_name, 100 * parity["agreement"])
        if not parity["passed"]:
            raise EdgekitError(
                f"FP16 disagrees with FP32 beyond tolerance: max error {parity['max_rel']:.2e} of the outputs' scale "
                f"(allowed {cfg.fp16_tolerance:.0e}), {hooks.agreement_name} {parity['agreement']:.2%} (needs "
                f"{need:.0%}); nothing written. Keep the sensitive ops in FP32 with --block-ops (e.g. "
                "Softmax,ReduceMean), or accept it with --fp16-tolerance / --fp16-min-agreement")
    acc16["drop_points"] = round(100 * (acc32["value"] - acc16["value"]), 3)
    manifest = Manifest.load(model_dir)  # re-read: keep what changed in it while this export ran
    manifest.find_artifact("onnxrt", "fp32").accuracy = acc32
    kept = [n.name for n in half.graph.node if n.op_type in blocked or n.name in nodes]
    art = manifest.add_artifact(
        "onnxrt", dest.name, "fp16", built_from=src.path, built_on=machine_summary(), parity=parity, accuracy=acc16,
        options={"converter": "onnxruntime.transformers.float16", "keep_io_types": True, "op_block_list": blocked,
                 "node_block_list": nodes, "fp32_nodes": kept, "config": asdict(cfg)})
    manifest.save()
    return art


def _constants_to_initializers(model) -> None:
    """Resize/Upsample roi and scales made by Constant nodes become initializers: the converter keeps those
    FP32 (the spec requires it), whereas a Constant node is converted to FP16 and cast back."""
    from onnx import numpy_helper

    producers = {o: n for n in model.graph.node for o in n.output}
    moved = set()
    for n in model.graph.node:
        for i in FLOAT_INPUTS_OF.get(n.op_type, ()):
            src = producers.get(n.input[i]) if i < len(n.input) and n.input[i] else None
            if src is None or src.op_type != "Constant" or id(src) in moved:
                continue
            attr = next((a for a in src.attribute if a.name == "value"), None)
            if attr is None:
                continue  # value_float(s) etc.: left to the converter
            t = numpy_helper.from_array(numpy_helper.to_array(attr.t), src.output[0])
            model.graph.initializer.append(t)
            moved.add(id(src))
    keep = [n for n in model.graph.node if id(n) not in moved]
    if moved:
        del model.graph.node[:]
        model.graph.node.extend(keep)


def _topological_sort(graph) -> None:
    """Reorder graph.node so every node comes after the producers of its inputs (stable otherwise)."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise EdgekitError(f"the FP16 graph has a cycle or a dangling input at node '{rest[0].name}'; "
                               "report the model")
        pending = rest
    copies = [type(n).FromString(n.SerializeToString()) for n in ordered]
    del graph.node[:]
    graph.node.extend(copies)


def _check_io(before, after) -> None:
    def io(m):
        return [(v.name, v.type.tensor_type.elem_type) for v in (*m.graph.input, *m.graph.output)]

    if io(before) != io(after):
        raise EdgekitError(f"FP16 conversion changed the model's inputs/outputs ({io(before)} -> {io(after)}); "
                           "report the model")
