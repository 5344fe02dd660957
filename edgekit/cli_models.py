"""`edgekit import` and `edgekit export`: the commands that bring a model in and write its artifacts, and the
one summary each prints. edgekit.cli wires them into the parser."""
from __future__ import annotations

import argparse
import logging

from edgekit.configs import dataclass_from_args

log = logging.getLogger("edgekit")


# ---- import --------------------------------------------------------------------------------------------

def cmd_import(args: argparse.Namespace) -> int:
    from edgekit.imports.config import ImportConfig

    cfg = dataclass_from_args(ImportConfig, args)
    cfg.validate()  # before onnx, torch or ultralytics load: a wrong option fails in well under a second

    from edgekit.imports import import_model

    m = import_model(cfg.source, cfg.out, cfg)
    imp = m.source.get("import", {})
    i = m.input
    pre = (f"{i.resize_mode} to {i.crop[0]}x{i.crop[1]}" + (f" (shorter side {i.resize})" if i.resize_mode ==
           "resize_crop" else "") + f", {i.color}, {i.layout}, x{i.scale:.6g}, mean {i.mean}, std {i.std}")
    print(f"imported {cfg.source} as a {m.task} model ({len(m.labels)} classes) into {cfg.out}: input '{i.name}' "
          f"{i.shape}, {pre}" + (f", decoder {m.postprocess.decoder}" if m.postprocess else ""))
    if imp.get("given"):
        print("  given: " + "; ".join(f"{k} = {v}" for k, v in imp["given"].items()))
    origins: dict[str, list[str]] = {}
    for k, v in imp.get("inferred", {}).items():
        origins.setdefault(v, []).append(k)
    for origin, keys in origins.items():
        print(f"  inferred from {origin}: {', '.join(keys)}")
    for a in m.artifacts:
        p = a.parity
        check = (f", vs PyTorch: max rel {p['max_rel']:.1e}, detections agree on {p['detections_agreement']:.0%}"
                 if p.get("detections_agreement") is not None and p.get("max_rel") is not None else "")
        print(f"  {a.backend}/{a.precision}: {a.path}{check}")
    return 0


# ---- export --------------------------------------------------------------------------------------------

def cmd_export(args: argparse.Namespace) -> int:
    from edgekit.export.onnx import onnx_from_torch
    from edgekit.export.options import export_configs

    cfgs = export_configs(args)
    if args.to == "trt":
        from edgekit.export.trt import engine_from_onnx

        art = engine_from_onnx(args.model_dir, cfgs["trt"])
        dev = (art.built_on.get("device") or {}).get("name", "?")
        agree = art.parity.get("agreement")  # the task's: top-1, or a detector's boxes
        print(f"wrote {args.model_dir}/{art.path}: TensorRT {art.built_on.get('tensorrt')} on {dev}, built "
              f"{art.precision} (asked {art.options.get('requested_precision')})"
              + (f"; agreement with ONNX Runtime ({art.parity.get('agreement_kind')}) {agree:.2%}"
                 if agree is not None else ""))
        return 0

    precision = getattr(args, "precision", "fp32")
    if precision != "fp32":  # fp16 / int8: from the model's FP32 ONNX, exported first when it is missing
        from edgekit.export.fp16 import fp16_from_onnx
        from edgekit.export.int8 import int8_from_onnx
        from edgekit.manifest import Manifest

        if not any(a.backend == "onnxrt" and a.precision == "fp32" for a in Manifest.load(args.model_dir).artifacts):
            log.info("no FP32 ONNX in %s yet: exporting it first", args.model_dir)
            onnx_from_torch(args.model_dir, cfgs["onnx"])
        if precision == "fp16":
            art = fp16_from_onnx(args.model_dir, cfgs["fp16"])
        else:
            art = int8_from_onnx(args.model_dir, cfgs["int8"])
        a, p, o = art.accuracy, art.parity, art.options
        held = ("unlabelled images (no labels: agreement with FP32, not accuracy)" if a.get("labels")
                else "held-out images")
        msg = (f"wrote {args.model_dir}/{art.path} ({precision}, sha256 {art.sha256[:12]}); on {a['n']} {held}: "
               f"{a['metric']} {a['value']:.2%} (FP32 {a['value'] + a['drop_points'] / 100:.2%}, drop "
               f"{a['drop_points']:.2f} points), agreement with FP32 ({p['agreement_kind']}) {p['agreement']:.2%}, "
               f"max abs {p['max_abs']:.2e} ({p['max_rel']:.1e} of scale)")
        if precision == "int8":
            c, lat, kept = o["calibration"], o["latency"], o["float_nodes"]
            hit = "cache hit" if c["hit"] else "cached"
            msg += (f"; {c['method']} calibration on {c['images']} {c['split']} images ({hit}: {c['cache']}); "
                    f"{len(kept)} layer(s) kept in float{': ' + ', '.join(kept[:6]) if kept else ''}")
            if lat:
                msg += (f"; latency p50 {lat['int8']['p50_ms']:.3f} ms vs FP32 {lat['fp32']['p50_ms']:.3f} ms "
                        f"({lat['int8']['p50_ratio']:.2f}x)")
            msg += f"; {'7' if o['reduce_range'] else '8'}-bit weights ({o['reduce_range_choice']})"
            if not a["within_budget"]:
                msg += f"; OVER the {a['budget_points']:.2f}-point budget (--allow-over-budget)"
            if not p["passed"]:
                msg += f"; agreement BELOW the minimum {p['min_agreement']:.0%} (--allow-over-budget)"
        print(msg)
        return 0
    art = onnx_from_torch(args.model_dir, cfgs["onnx"])
    p = art.parity
    msg = f"wrote {args.model_dir}/{art.path} (opset {art.options['opset']}, sha256 {art.sha256[:12]})"
    if p:
        msg += (f"; vs PyTorch on {p['n']} held-out images: max abs {p['max_abs']:.2e} "
                f"({p['max_rel']:.1e} of scale), top-1 agreement {p['top1_agreement']:.2%}")
    print(msg)
    return 0
