#!/usr/bin/env python3
"""Train a classifier on an ImageFolder, then export ONNX at each precision, each checked (FP32 against
PyTorch, FP16/INT8 against FP32 and on held-out accuracy):

    python scripts/train_and_export.py --config models/mnist_mobilenet_v2.yaml --data data/mnist5k \\
        --out models/trained/digits --precisions fp32,fp16,int8

Importable: get_args_parser() and main(args) -> exit code. Training options are `edgekit train classify`'s.
"""
from __future__ import annotations

import argparse
import sys


def get_args_parser() -> argparse.ArgumentParser:
    from edgekit.configs import add_dataclass_args
    from edgekit.train.classify_config import ClassifyConfig

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="RECIPE", help="YAML/JSON training recipe (see models/)")
    p.add_argument("--precisions", default="fp32,fp16,int8", help="ONNX precisions to export (default: %(default)s)")
    add_dataclass_args(p, ClassifyConfig)
    return p


def main(args: argparse.Namespace) -> int:
    import logging

    from edgekit.cli import run_command

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_command(_train_and_export, args)


def _train_and_export(args: argparse.Namespace) -> int:
    from edgekit.configs import dataclass_from_args
    from edgekit.errors import EdgekitError
    from edgekit.export.fp16 import fp16_from_onnx
    from edgekit.export.int8 import int8_from_onnx
    from edgekit.export.onnx import onnx_from_torch
    from edgekit.train.classify import train_classifier
    from edgekit.train.classify_config import ClassifyConfig

    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    unknown = sorted(set(precisions) - {"fp32", "fp16", "int8"})
    if unknown:
        raise EdgekitError(f"unknown precision(s) {unknown}: choose from fp32, fp16, int8")
    cfg = dataclass_from_args(ClassifyConfig, args, args.config)
    cfg.validate()
    summary = train_classifier(cfg)
    print(f"trained {cfg.arch}: val top-1 {summary['val_top1']:.2%} -> {cfg.out}")
    art = onnx_from_torch(cfg.out)  # every other precision starts from the FP32 ONNX
    print(f"fp32 ONNX: top-1 agreement with PyTorch {art.parity['top1_agreement']:.2%}")
    for precision, export in (("fp16", fp16_from_onnx), ("int8", int8_from_onnx)):
        if precision in precisions:
            a = export(cfg.out).accuracy
            print(f"{precision} ONNX: {a['metric']} {a['value']:.2%} ({a['drop_points']:+.2f} points vs FP32)")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
