"""The configs `edgekit export` uses, built from its flags and checked before any work starts."""
from __future__ import annotations

import argparse

from edgekit.configs import dataclass_from_args, path_problem
from edgekit.errors import EdgekitError
from edgekit.export.fp16 import Fp16ExportConfig
from edgekit.export.int8 import Int8ExportConfig
from edgekit.export.onnx import OnnxExportConfig, check_dynamic_batch
from edgekit.export.trt import TrtBuildConfig
from edgekit.manifest import Manifest
from edgekit.tasks import task_for


def export_configs(args: argparse.Namespace) -> dict:
    """Every config `edgekit export` will use, built and checked before any work, with the model directory
    (it must hold a manifest and be writable): a wrong option never fails after a long first step."""
    manifest = Manifest.load(args.model_dir)
    why = path_problem(args.model_dir, "out_dir")
    if why:
        raise EdgekitError(f"the model directory {why}: exports are written into it (copy it somewhere writable)")
    check_dynamic_batch(task_for(manifest, getattr(args, "decoder", "")), getattr(args, "dynamic_batch", False))
    if getattr(args, "calib_data", None) and getattr(args, "data", None):
        raise EdgekitError("--calib-data replaces --data (unlabelled pictures instead of a labelled dataset): pass "
                           "one of them")
    cfgs = {"onnx": dataclass_from_args(OnnxExportConfig, args)}
    if args.to == "trt":
        cfgs["trt"] = dataclass_from_args(TrtBuildConfig, args)
    elif args.precision in ("fp16", "int8"):
        cls = Fp16ExportConfig if args.precision == "fp16" else Int8ExportConfig
        cfgs[args.precision] = dataclass_from_args(cls, args)
        fp32 = [a for a in manifest.artifacts if a.backend == "onnxrt" and a.precision == "fp32"]
        had = bool(fp32 and fp32[0].options.get("dynamic_batch"))
        if fp32 and "dynamic_batch" in args and had != args.dynamic_batch:  # asked, and not what FP16/INT8 get
            flag = f"--{'' if args.dynamic_batch else 'no-'}dynamic-batch"
            raise EdgekitError(f"{flag}: {args.precision} is converted from the FP32 ONNX in {args.model_dir}, "
                               f"exported with a {'dynamic' if had else 'fixed'} batch; re-export it first: "
                               f"`edgekit export {args.model_dir} {flag}`")
    for cfg in cfgs.values():
        if hasattr(cfg, "validate"):
            cfg.validate()
    return cfgs
