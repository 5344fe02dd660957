"""`edgekit export --precision int8`: ONNX Runtime static quantization of the model's FP32 ONNX to a QDQ
model, calibrated on real training images through the manifest's own preprocessing.

The flow: pick calibration images (train split) -> quant_pre_process -> calibrate (or reuse the cache) ->
quantize -> measure the metric and the agreement with FP32 on held-out images (val split). When INT8 loses
more than the budget, or agrees with FP32 less than the minimum (what catches a broken model when the labels
are placeholders), the most sensitive layers are kept in float (edgekit.export.sensitivity, in bounded time)
until it passes both. If that cannot be done the export fails and writes nothing, unless --allow-over-budget
is given; either way the manifest records what was built: which layers stayed float, the accuracy of both
precisions, the agreement, the CPU it was checked on and the weight range chosen for it, and the INT8/FP32
latency ratio measured in the same run.

The weight range follows the CPU (edgekit.export.qdq.reduce_range_for): 7-bit weights on x86 without VNNI,
where ONNX Runtime's u8s8 kernels saturate with 8-bit ones; 8-bit elsewhere. A file built with 8-bit
weights behaves differently on such a CPU, and the export says so."""
from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from edgekit.configs import check_config, option
from edgekit.errors import EdgekitError
from edgekit.export import calibration as cal
from edgekit.export import unlabelled
from edgekit.export.accuracy import evaluate, latency_ratio
from edgekit.export.qdq import (REDUCE_RANGE_CHOICES, QuantSettings, portability_warning, prepare, quantize_qdq,
                                quantized_nodes, reduce_range_for, strip_unused_opsets)
from edgekit.fileio import atomic_path
from edgekit.manifest import Artifact, Manifest
from edgekit.platform import cpu_int8, machine_summary
from edgekit.runners.onnx_file import load_onnx
from edgekit.tasks import task_for
from edgekit.vision.decoders import DECODER_HINT, DECODER_SPEC

log = logging.getLogger(__name__)


@dataclass
class Int8ExportConfig:
    calibration: str = option("percentile", choices=cal.METHODS)  # percentile | minmax | entropy (percentile measured best on ResNet18, MobileNetV2)
    calib_images: int = option(200, ge=1)  # training images that calibrate the ranges (never the held-out images)
    min_calib_images: int = option(32, ge=1)  # fewer calibration images than this is an error
    percentile: float = option(99.999, gt=0, le=100)  # percentile calibration: the kept share of |activation| values
    per_channel: bool = True  # one weight scale per output channel (per-tensor loses far more accuracy)
    activations: str = option("uint8", choices=("uint8", "int8"))  # uint8 (ONNX Runtime's fast x86 kernels) | int8
    symmetric_activations: bool = False  # int8 with zero point 0 (TensorRT's form); slower than FP32 on ORT x86
    reduce_range: str = option("auto", choices=REDUCE_RANGE_CHOICES)  # 7-bit weights: auto (on for x86 without VNNI, where u8s8 saturates) | on | off
    preprocess: bool = True  # onnxruntime quant_pre_process (shape inference, fusions) before quantizing
    int8_budget: float = option(1.0, ge=0, le=100)  # max loss in points of the metric (top-1 %, detectors mAP50-95 x 100) vs FP32, held-out
    int8_min_agreement: float = option(-1.0, ge=-1, le=1)  # min agreement with FP32, held-out (-1: classify 0.9 top-1, detect 0.7 mAP)
    # (classifiers: share of top-1 equal to FP32's; detectors: mAP50-95 against FP32's boxes; 0 = no gate)
    fallback: bool = True  # over budget: keep the most sensitive layers in float until within it
    max_float_nodes: int = option(0, ge=0)  # cap on layers the fallback keeps in float (0 = a quarter of the quantizable ones)
    fallback_seconds: float = option(300.0, gt=0)  # time budget of the fallback's search; then the best found so far is checked
    allow_over_budget: bool = False  # write the model even when the budget is not met (the manifest says so)
    exclude_nodes: str = ""  # node names always kept in float (comma-separated)
    tune_images: int = option(300, ge=1)  # training images, disjoint from calibration, that rank layers for the fallback
    eval_images: int = option(0, ge=0)  # held-out images for accuracy and parity (0 = the whole val split)
    latency_rounds: int = option(10, ge=0)  # interleaved FP32/INT8 timing rounds (20 calls each) for the latency ratio; 0 = skip
    data: str | None = option(None, path="any")  # ImageFolder (train calibrates, val evaluates) or a detector's YOLO data.yaml; default: the manifest's
    calib_data: str | None = option(None, path="dir")  # a folder of unlabelled pictures instead of --data: calibrates, and agreement with FP32 is measured instead of accuracy
    calib_seed: int = option(0, ge=0)  # which training images calibrate (a seeded, class-balanced pick)
    decoder: str = option("", empty=True, pattern=DECODER_SPEC, hint=DECODER_HINT)  # detector output decoder: yolov8 | yolov5 | end2end, or an installed plug-in module.path:function (never a file); default: the manifest's (a plug-in it names must be passed here)

    def validate(self) -> None:
        check_config(self)  # the ranges declared beside each field
        if self.symmetric_activations and self.activations != "int8":
            raise EdgekitError("--symmetric-activations needs --activations int8 (zero point 0 is int8's midpoint)")
        if self.calib_data and self.data:
            raise EdgekitError("--calib-data replaces --data (unlabelled pictures instead of a labelled dataset): "
                               "pass one of them")
        if not (self.int8_min_agreement == -1 or 0 <= self.int8_min_agreement <= 1):
            raise EdgekitError("--int8-min-agreement must be between 0 and 1 (or -1 for the task's default), "
                               f"got {self.int8_min_agreement}")


def int8_from_onnx(model_dir: str | Path, cfg: Int8ExportConfig | None = None) -> Artifact:
    """Quantize `<model_dir>/model.onnx` to model_int8.onnx (QDQ) and record it in the manifest. The task's
    hooks (edgekit.tasks) pick the images, the metric the budget is on (top-1, mAP50-95), the
    label-free agreement the fallback searches on, and the nodes never quantized (YOLO's decode head)."""
    import onnx

    from edgekit.export import sensitivity

    cfg = cfg or Int8ExportConfig()
    cfg.validate()
    manifest = Manifest.load(model_dir)
    hooks = task_for(manifest, cfg.decoder)
    metric = hooks.metric
    src = manifest.find_artifact("onnxrt", "fp32")
    src_path = manifest.artifact_path(src)
    load_onnx(src_path)  # a damaged source is one error naming the fix, before calibration starts
    name = manifest.input.name
    cpu = cpu_int8()
    reduce_range, why = reduce_range_for(cfg.reduce_range, cpu["kind"])
    log.info("INT8 weights: %s (%s)", "7-bit (reduce_range)" if reduce_range else "8-bit", why)
    portability = portability_warning(reduce_range, cpu["kind"])
    min_agree = hooks.int8_min_agreement if cfg.int8_min_agreement == -1 else cfg.int8_min_agreement
    q = QuantSettings(cfg.calibration, cfg.per_channel, cfg.activations, cfg.symmetric_activations, reduce_range)
    opts = cal.calibration_options(cfg.calibration, percentile=cfg.percentile, symmetric=cfg.symmetric_activations)

    if cfg.calib_data:  # no labels: agreement with FP32 on pictures that did not calibrate
        calib, tuning, held, metric = unlabelled.int8_split(
            manifest, hooks, cfg.calib_data, src_path, n=cfg.calib_images, minimum=cfg.min_calib_images,
            seed=cfg.calib_seed, n_tune=cfg.tune_images, n_eval=cfg.eval_images)
    else:
        calib, tuning = hooks.calibration(manifest, cfg.data, cfg.calib_images, cfg.min_calib_images,
                                          cfg.calib_seed, cfg.tune_images)
        held = hooks.heldout(manifest, cfg.data, cfg.eval_images)
    forced = [n.strip() for n in cfg.exclude_nodes.split(",") if n.strip()]

    with tempfile.TemporaryDirectory(prefix="edgekit-int8-") as work:
        work = Path(work)
        prepared = prepare(src_path, work / "prepared.onnx", preprocess=cfg.preprocess)
        _check_node_names(prepared, forced)
        task_float = [n for n in hooks.float_nodes(onnx.load(str(prepared))) if n not in forced]
        if task_float:
            log.info("%d %s node(s) always kept in float (the task's own: %s)", len(task_float), hooks.name,
                     ", ".join(task_float[:4]) + (", ..." if len(task_float) > 4 else ""))
        forced += task_float
        key = cal.cache_key(src.sha256, prepared != src_path, cfg.calibration, opts, calib.sha256)
        cache, cache_info = cal.calibrate(prepared, calib, key, manifest.model_dir / cal.CACHE_DIR, input_name=name)

        def build(exclude: list[str], dest: Path) -> Path:
            quantize_qdq(prepared, dest, cache, q, exclude=[*forced, *exclude])
            return dest

        acc32, ref = evaluate(src_path, held, metric, input_name=name)
        plain = build([], work / "int8_plain.onnx")
        acc8, out8 = evaluate(plain, held, metric, input_name=name)
        plain_acc, plain_drop, agree = acc8["value"], _drop(acc32, acc8), hooks.agreement(ref, out8)
        plain_agree = agree
        log.info("INT8 (%s, %s) on %d held-out images: %s %.2f%% vs FP32 %.2f%% (drop %.2f points, budget %.2f); "
                 "%s %.2f%% (min %.0f%%)", cfg.calibration, "per-channel" if cfg.per_channel else "per-tensor",
                 len(held), acc8["metric"], 100 * acc8["value"], 100 * acc32["value"], plain_drop, cfg.int8_budget,
                 hooks.agreement_name, 100 * agree, 100 * min_agree)
        final, kept, search = plain, [], None
        if (plain_drop > cfg.int8_budget or agree < min_agree) and cfg.fallback:
            target = sensitivity.Target(cfg.int8_budget, acc32, ref, min_agree, cfg.fallback_seconds)
            search = sensitivity.keep_float_until_within_budget(
                src_path, prepared, build, tune=tuning(), held=held, metric=metric, agreement=hooks.agreement,
                target=target, max_float=cfg.max_float_nodes, input_name=name, work=work, exclude=forced)
            if search.path is not None:
                final, kept, acc8, agree = search.path, search.kept_float, search.held_accuracy, search.held_agreement
        drop = _drop(acc32, acc8)
        if (drop > cfg.int8_budget or agree < min_agree) and not cfg.allow_over_budget:
            raise EdgekitError(_refusal(plain_drop, plain_agree, drop, agree, min_agree, acc8["metric"], len(held),
                                        hooks.agreement_name, cfg, search, kept))

        model = onnx.load(str(final))
        dropped = strip_unused_opsets(model)
        nodes = quantized_nodes(model)
        dest = manifest.model_dir / "model_int8.onnx"
        with atomic_path(dest) as tmp:
            onnx.save(model, str(tmp))
            onnx.checker.check_model(str(tmp), full_check=True)
            acc8, out8 = evaluate(tmp, held, metric, input_name=name)  # the file as written
            latency = (latency_ratio({"fp32": src_path, "int8": tmp}, held.x, input_name=name,
                                     rounds=cfg.latency_rounds) if cfg.latency_rounds else {})
    parity = {**hooks.parity(ref, out8), "reference": f"onnxrt/fp32 ({src.path})", "min_agreement": min_agree}
    parity["passed"] = parity["agreement"] >= min_agree
    drop = _drop(acc32, acc8)
    acc8.update(drop_points=drop, budget_points=cfg.int8_budget, within_budget=drop <= cfg.int8_budget,
                plain_int8_value=plain_acc, plain_int8_drop_points=plain_drop, plain_int8_agreement=plain_agree)
    manifest = Manifest.load(model_dir)  # re-read: keep what changed in it while this export ran
    manifest.find_artifact("onnxrt", "fp32").accuracy = acc32
    options = {
        "format": "QDQ", "quantizer": "onnxruntime.quantization.quantize_static", "calibration": {
            "method": cfg.calibration, "options": opts, **calib.describe(), **cache_info},
        "per_channel": cfg.per_channel, "activations": cfg.activations, "weights": "int8 (symmetric)",
        "symmetric_activations": cfg.symmetric_activations, "reduce_range": reduce_range,
        "reduce_range_choice": why, "cpu": cpu, "portability": portability, "min_agreement": min_agree,
        "quant_pre_process": prepared != src_path, "float_nodes": list(dict.fromkeys(forced + kept)),
        "task_float_nodes": task_float,
        "int8_nodes": len(nodes["int8"]), "float_compute_nodes": len(nodes["float"]),
        "fallback": search.report() if search else None, "opset_imports_removed": dropped,
        "latency": latency, "config": asdict(cfg)}
    art = manifest.add_artifact("onnxrt", dest.name, "int8", built_from=src.path, built_on=machine_summary(),
                                parity=parity, accuracy=acc8, options=options)
    manifest.save()
    if portability:
        log.warning("%s", portability)
    return art


def _refusal(plain_drop: float, plain_agree: float, drop: float, agree: float, min_agree: float, metric: str,
             n: int, agreement_name: str, cfg: Int8ExportConfig, search, kept: list[str]) -> str:
    """The error when INT8 misses the budget or the minimum agreement: what failed, what was tried, the fix."""
    if search is None:
        tried = " (the fallback is off: --no-fallback)"
    elif search.out_of_time:
        tried = (f"; the sensitivity search ran out of its {cfg.fallback_seconds:.0f} s (--fallback-seconds) and "
                 f"the best it found ({len(kept)} layers in float) still loses {drop:.2f} points, agreement "
                 f"{agree:.2%}")
    else:
        tried = (f"; keeping {len(kept)} of {search.candidates} layers in float (the --max-float-nodes cap) still "
                 f"loses {drop:.2f}, agreement {agree:.2%}")
    return (f"INT8 loses {plain_drop:.2f} points of {metric} on {n} held-out images (budget {cfg.int8_budget:.2f}) "
            f"and keeps {agreement_name} {plain_agree:.2%} with FP32 (minimum {min_agree:.0%}){tried}; nothing "
            "written. Try --per-channel, --reduce-range on, --calibration percentile or entropy, more "
            "--calib-images, a larger --max-float-nodes, --fallback-seconds or --int8-budget, a lower "
            "--int8-min-agreement, or --allow-over-budget to write it anyway (the manifest records the loss)")


def _check_node_names(model_path: Path, names: list[str]) -> None:
    import onnx

    from edgekit.errors import did_you_mean

    have = {n.name for n in onnx.load(str(model_path)).graph.node}
    for name in names:
        if name not in have:
            raise EdgekitError(f"--exclude-nodes: the model has no node '{name}'{did_you_mean(name, have)}; node names "
                               "are those of model.onnx (see them in Netron), or pass --no-preprocess if "
                               "quant_pre_process renamed it")


def _drop(ref: dict, test: dict) -> float:
    return round(100 * (ref["value"] - test["value"]), 3)
