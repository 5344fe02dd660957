"""`edgekit export --to trt`: ONNX -> TensorRT engine, cached by what it depends on, checked against ONNX
Runtime on real held-out images before it is written, and recorded in the manifest as what was really
built (precision, TensorRT/CUDA/JetPack versions, GPU).

    engine_from_onnx(model_dir, TrtBuildConfig(precision="fp16"))

The version -> strategy choice is trt_plan.plan_build; the cache and its refusals are trt_cache; the
TensorRT calls are trt_build; INT8 calibration (TensorRT < 10.12) is calibrator_trt."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.configs import check_config, option
from edgekit.errors import EdgekitError
from edgekit.export.trt_cache import (EngineEnv, EngineKey, cached_engine, rebuild_command, timing_cache_path,
                                      write_sidecar)
from edgekit.export.trt_plan import (TYPINGS, BuildPlan, calibration_batch, check_dla, engine_filename,
                                     plan_build, profile_shapes)
from edgekit.fileio import atomic_path
from edgekit.manifest import PRECISIONS, Artifact, Manifest
from edgekit.tasks import task_for
from edgekit.vision.decoders import DECODER_HINT, DECODER_SPEC

log = logging.getLogger(__name__)

# fp32's max error against ONNX Runtime (the agreement each precision must reach is the task's: edgekit.tasks)
FP32_TOLERANCE = 1e-3


@dataclass
class TrtBuildConfig:
    precision: str = option("fp16", choices=PRECISIONS)  # fp32 | fp16 | int8 (the manifest records what was really built)
    typing: str = option("auto", choices=TYPINGS)  # auto (by TensorRT version) | weak (builder flags, INT8 calibrator) | strong (typed ONNX)
    workspace_mb: int = option(1024, ge=16, le=1 << 20)  # builder scratch memory limit in MiB (Jetson shares it with the CPU)
    opt_batch: int = option(0, ge=0, le=4096)  # batch TensorRT tunes for, dynamic-batch ONNX only (0 = 1)
    max_batch: int = option(0, ge=0, le=4096)  # largest batch a dynamic-batch engine accepts (0 = max(8, opt batch))
    dla_core: int = option(-1, ge=-1, le=7)  # Jetson DLA core (fp16/int8; unsupported layers fall back to the GPU); -1 = GPU only
    timing_cache: str = option("auto")  # auto (~/.cache/edgekit/trt, per TensorRT version and GPU) | none | PATH
    calib_images: int = option(200, ge=1)  # INT8 with weak typing: training images the entropy calibrator sees
    seed: int = option(0, ge=0)  # which training images calibrate: the same choice as the ONNX INT8 export's --seed
    calib_batch: int = option(8, ge=1)  # INT8 calibration batch (a fixed-batch ONNX uses its own batch)
    data: str | None = option(None, path="any")  # ImageFolder (train calibrates, val checks) or a detector's YOLO data.yaml; default: the manifest's
    check_images: int = option(200, ge=0)  # held-out images compared against ONNX Runtime before writing (0 = skip)
    force: bool = False  # rebuild even when a cached engine matches
    decoder: str = option("", empty=True, pattern=DECODER_SPEC, hint=DECODER_HINT)  # detector output decoder: yolov8 | yolov5 | end2end, or an installed plug-in module.path:function (never a file); default: the manifest's (a plug-in it names must be passed here)

    def validate(self) -> None:
        check_config(self)  # the ranges declared beside each field
        check_dla(self.precision, self.dla_core)


def engine_from_onnx(model_dir: str | Path, cfg: TrtBuildConfig | None = None) -> Artifact:
    from edgekit.export.calibrator_trt import (calibration_batches_for, calibration_cache_path,
                                               make_entropy_calibrator)
    from edgekit.export.trt_build import build_engine, engine_env, import_tensorrt, read_onnx_inputs
    from edgekit.runners.cuda_memory import load_cuda_api

    cfg = cfg or TrtBuildConfig()
    cfg.validate()
    manifest = Manifest.load(model_dir)
    trt = import_tensorrt()
    api = load_cuda_api()
    env = engine_env(trt, api)
    plan = plan_build(env.tensorrt, cfg.precision, cfg.typing)
    onnx_art = onnx_source(manifest, plan)
    onnx_path = manifest.artifact_path(onnx_art)
    shapes = profile_shapes(read_onnx_inputs(onnx_path), cfg.opt_batch, cfg.max_batch)
    batches = None
    if plan.calibrate:
        batches = calibration_batches_for(manifest, batch_size=calibration_batch(shapes, cfg.calib_batch),
                                          images=cfg.calib_images, seed=cfg.seed, dataset=cfg.data)
    key = EngineKey(onnx_art.sha256, env.tensorrt, env.gpu, env.compute_capability, cfg.precision, plan.typing,
                    shapes, cfg.dla_core, batches.fingerprint() if batches else None)
    engine = manifest.model_dir / engine_filename(cfg.precision, cfg.dla_core)
    cached = None if cfg.force else cached_engine(engine, key)
    if cached is not None:
        log.info("%s is up to date (same ONNX, TensorRT %s, %s, shapes): not rebuilt", engine.name, env.tensorrt,
                 env.gpu)
        art = next((a for a in manifest.artifacts if a.backend == "trt" and a.path == engine.name), None)
        if art is not None and art.sha256 == cached["engine_sha256"]:
            return art
        art = record_engine(manifest, engine, cached)
        manifest.save()
        return art

    calibrator = cache_file = None
    if batches is not None:
        cache_file = calibration_cache_path(manifest.model_dir, batches, onnx_art.sha256)
        calibrator = make_entropy_calibrator(trt, api, batches, cache_file)
    try:
        result = build_engine(trt, onnx_path, plan, shapes, workspace_mb=cfg.workspace_mb, dla_core=cfg.dla_core,
                              timing_cache=timing_cache_path(cfg.timing_cache, env), calibrator=calibrator,
                              calib_batch=batches.batch_size if batches else 0)
    finally:
        if calibrator is not None:
            calibrator.close()
    with atomic_path(engine) as tmp:  # nothing lands at `engine` unless the check passes
        tmp.write_bytes(result.plan)
        parity = _check_against_onnxrt(manifest, tmp, result.build.precision, cfg) if cfg.check_images else {}
    calibration = None
    if result.calibration is not None and batches is not None:
        calibration = {**result.calibration, "fingerprint": batches.fingerprint(), "cache": cache_file.name,
                       "dataset": batches.root}
    info = sidecar_info(result.build, result.requested, onnx_art.path, env, cfg, seconds=result.seconds,
                        dla=result.dla, calibration=calibration)
    sidecar = write_sidecar(engine, key, {**info, "parity": parity})
    art = record_engine(manifest, engine, sidecar)
    manifest.save()
    return art


def onnx_source(manifest: Manifest, plan: BuildPlan) -> Artifact:
    """The ONNX that TensorRT parses for this plan; strong typing needs the fp16 / Q/DQ int8 export."""
    found = [a for a in manifest.artifacts if a.backend == "onnxrt" and a.precision == plan.onnx_precision]
    if found:
        if plan.onnx_precision == "int8":
            check_qdq_for_tensorrt(found[0])
        return found[0]
    if plan.onnx_precision == "fp32":
        raise EdgekitError(f"{manifest.model_dir}: no ONNX to build from; export it first: "
                           f"`edgekit export {manifest.model_dir} --to onnx`")
    what = {"fp16": "the FP16 ONNX (model_fp16.onnx)", "int8": "the Q/DQ INT8 ONNX (model_int8.onnx)"}
    raise EdgekitError(f"{manifest.model_dir}: a strongly typed {plan.precision} engine is built from "
                       f"{what[plan.onnx_precision]}, which this model has not got: export the onnxrt "
                       f"{plan.onnx_precision} artifact first (see `edgekit export --help`)")


def check_qdq_for_tensorrt(art: Artifact) -> None:
    """TensorRT takes Q/DQ with int8 activations and zero point 0 only; ONNX Runtime's CPU default
    (uint8, asymmetric) fails to parse. Checked from what the INT8 export recorded."""
    o = art.options
    if "activations" in o and (o["activations"] != "int8" or not o.get("symmetric_activations")):
        raise EdgekitError(f"{art.path} quantizes activations as {o['activations']}"
                           f"{'' if o.get('symmetric_activations') else ', asymmetric'} (ONNX Runtime CPU's format); "
                           "TensorRT takes symmetric int8 Q/DQ only: re-export it with `--activations int8 "
                           "--symmetric-activations`, or use --typing weak on TensorRT 10")


def sidecar_info(build: BuildPlan, requested: str, onnx_path: str, env: EngineEnv, cfg: TrtBuildConfig, *,
                 seconds: float, dla: dict | None = None, calibration: dict | None = None) -> dict[str, Any]:
    """Everything the manifest will record about a build, kept beside the engine too."""
    return {
        "precision": build.precision, "requested_precision": requested, "typing": build.typing,
        "requested_typing": cfg.typing,
        "flags": list(build.flags), "notes": list(build.notes), "built_from": onnx_path,
        "built_on": built_on(env), "build_seconds": seconds, "workspace_mb": cfg.workspace_mb, "dla": dla,
        "calibration": calibration,
        "timing_cache": str(timing_cache_path(cfg.timing_cache, env) or "") or None,
    }


def built_on(env: EngineEnv) -> dict[str, Any]:
    from edgekit.platform import machine_summary

    m = machine_summary()
    jetson = m.get("jetson") or {}
    return {**m, "tensorrt": env.tensorrt, "cuda_runtime": env.cuda_runtime, "cuda_driver": env.cuda_driver,
            "jetpack": jetson.get("jetpack"), "l4t": jetson.get("l4t"),
            "device": {"name": env.gpu, "compute_capability": env.compute_capability, "integrated": env.integrated}}


def record_engine(manifest: Manifest, engine: Path, sidecar: dict[str, Any],
                  parity: dict[str, Any] | None = None) -> Artifact:
    """Add the engine to the manifest as what the sidecar says was built (not what was asked), with the
    check against ONNX Runtime made when it was built (kept in the sidecar too)."""
    key = sidecar["key"]
    options = {k: sidecar.get(k) for k in ("requested_precision", "typing", "flags", "notes", "workspace_mb",
                                           "dla", "calibration", "timing_cache", "build_seconds")}
    options.update(shapes=key["shapes"], dla_core=key["dla_core"], sidecar=f"{engine.name}.json",
                   key_digest=sidecar["key_digest"],
                   rebuild=rebuild_command(manifest.model_dir, key["precision"], key["dla_core"],
                                           sidecar.get("requested_typing", "auto")))
    return manifest.add_artifact("trt", engine.name, sidecar["precision"], built_from=sidecar["built_from"],
                                 built_on=sidecar["built_on"], options=options,
                                 parity=parity if parity is not None else sidecar.get("parity") or {})


def _check_against_onnxrt(manifest: Manifest, engine: Path, precision: str, cfg: TrtBuildConfig) -> dict:
    """The new engine vs ONNX Runtime on the fp32 ONNX, on the task's held-out inputs (a classifier's val split
    resized and cropped, a detector's letterboxed) and by the task's parity (top-1 agreement; box-level for
    detectors); raises when it disagrees."""
    from edgekit.runners.base import infer_in_batches
    from edgekit.runners.onnxrt import OnnxrtRunner
    from edgekit.runners.trt import TrtRunner

    task = task_for(manifest, cfg.decoder)
    x = task.heldout(manifest, cfg.data, cfg.check_images).x
    name, out = manifest.input.name, manifest.outputs[0].name
    ref_path = manifest.artifact_path(manifest.find_artifact("onnxrt", "fp32"))
    with OnnxrtRunner(ref_path) as ref, TrtRunner(engine, device="cuda", check_engine=False,
                                                 dla_core=cfg.dla_core) as trt_runner:
        want = infer_in_batches(ref, name, out, x)
        got = infer_in_batches(trt_runner, name, out, x)  # batches within the engine's profile; fp16 inputs cast
    r = task.parity(want, got)
    need = task.trt_min_agreement[precision]
    r.update(reference="onnxrt fp32", images=len(x), min_agreement=need)
    r["passed"] = r["agreement"] >= need and (precision != "fp32" or r["max_rel"] <= FP32_TOLERANCE)
    log.info("TensorRT %s vs ONNX Runtime on %d held-out images: max abs %.2e (%.2e of scale), %s %.2f%%",
             precision, len(x), r["max_abs"], r["max_rel"], task.agreement_name, 100 * r["agreement"])
    if not r["passed"]:
        raise EdgekitError(
            f"the {precision} engine disagrees with ONNX Runtime: {task.agreement_name} {r['agreement']:.2%} (needs "
            f"{need:.0%}), max error {r['max_rel']:.2e} of the outputs' scale; nothing written. Try another "
            "precision (fp16 before int8), more --calib-images, or --typing strong with a Q/DQ ONNX")
    return r


__all__ = ["TrtBuildConfig", "engine_from_onnx", "onnx_source", "record_engine"]
