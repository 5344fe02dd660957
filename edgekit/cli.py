"""The `edgekit` command: one subcommand per stage. A user error prints one line and exits 2; no
traceback. Heavy libraries are imported inside each command, never at start-up."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from edgekit import __version__
from edgekit.configs import add_dataclass_args, dataclass_from_args
from edgekit.errors import EdgekitError

log = logging.getLogger("edgekit")


# ---- info -----------------------------------------------------------------------------------------------

def cmd_info(args: argparse.Namespace) -> int:
    from edgekit.platform import info

    facts = info()
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    j, g, libs = facts["jetson"], facts["gpu"], facts["libraries"]
    rows = [("edgekit", __version__), ("host", f"{facts['host']} ({facts['os']})"),
            ("cpu", f"{facts['cpu']['name']} ({facts['cpu']['arch']}, {facts['cpu']['cores']} cores)"),
            ("jetson", f"{j['model']}, L4T {j.get('l4t', '?')}, JetPack {j.get('jetpack', '?')}, "
                       f"power mode {j.get('power_mode', '?')}" if j else "no"),
            ("gpu", ", ".join(f"{k} {v}" for k, v in g.items() if v) if g else "none"),
            ("cuda toolkit", facts["cuda"] or "not found")]
    ort = libs["onnxruntime"]
    for name in ("python", "numpy", "torch", "torchvision", "onnx"):
        rows.append((name, libs[name] or "not installed"))
    rows.append(("onnxruntime", f"{ort['version']} ({ort['package']}), providers: "
                 f"{', '.join(facts['onnxruntime_providers'])}" if ort else "not installed"))
    for name in ("tensorrt", "cuda-python", "pycuda", "tinygrad", "ultralytics"):
        rows.append((name, libs[name] or "not installed"))
    gst = {True: "yes", False: "no (pip wheels lack it: csi:// needs JetPack's OpenCV)", None: "?"}[
        facts["opencv_gstreamer"]]
    rows.append(("opencv", f"{libs['opencv'] or 'not installed'}, GStreamer: {gst}"))
    rows.append(("clang (tinygrad CPU)", facts["clang"] or "not found"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


# ---- data ----------------------------------------------------------------------------------------------

def cmd_data(args: argparse.Namespace) -> int:
    from edgekit.data.mnist import SPLIT, write_mnist5k

    counts = write_mnist5k(args.out, force=args.force)
    print(f"wrote MNIST-5k to {args.out}: {counts['train']} train, {counts['val']} val images in 10 class folders "
          f"(per class {SPLIT['train']}/{SPLIT['val']}; {SPLIT['heldout']} more per class held back)")
    return 0


# ---- train ---------------------------------------------------------------------------------------------

def cmd_train_classify(args: argparse.Namespace) -> int:
    from edgekit.train.classify import train_classifier
    from edgekit.train.classify_config import ClassifyConfig

    summary = train_classifier(dataclass_from_args(ClassifyConfig, args))
    if summary:  # rank 0
        m = summary["metrics"]
        top5 = next((f"{k} {v:.2%}" for k, v in m.items() if k.startswith("top") and k != "top1"), "")
        print(f"trained {args.arch}: val top-1 {m['top1']:.2%}, {top5}, best epoch {m['best_epoch']}, "
              f"{m['train_seconds']:.0f} s of training; model directory {summary['model_dir']}")
    return 0


# ---- export --------------------------------------------------------------------------------------------

def cmd_export(args: argparse.Namespace) -> int:
    from edgekit.export.onnx import OnnxExportConfig, onnx_from_torch

    art = onnx_from_torch(args.model_dir, dataclass_from_args(OnnxExportConfig, args))
    p = art.parity
    msg = f"wrote {args.model_dir}/{art.path} (opset {art.options['opset']}, sha256 {art.sha256[:12]})"
    if p:
        msg += (f"; vs PyTorch on {p['n']} held-out images: max abs {p['max_abs']:.2e} "
                f"({p['max_rel']:.1e} of scale), top-1 agreement {p['top1_agreement']:.2%}")
    print(msg)
    return 0


# ---- bench ---------------------------------------------------------------------------------------------

def cmd_bench(args: argparse.Namespace) -> int:
    from edgekit.profile.quick import bench_backends, format_table

    rows = bench_backends(args.model_dir, args.backends.split(","), warmup=args.warmup, iters=args.iters,
                          threads=args.threads)
    print(format_table(rows))
    return 0


# ---- demo ----------------------------------------------------------------------------------------------

def cmd_demo(args: argparse.Namespace) -> int:
    from edgekit.demo import run_demo

    return run_demo(args.out, quick=args.quick)


# ---- the parser ----------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from edgekit.export.onnx import OnnxExportConfig
    from edgekit.train.classify_config import ClassifyConfig

    p = argparse.ArgumentParser(prog="edgekit", description="Train, export, run and measure vision models "
                                "for NVIDIA Jetson.")
    p.add_argument("--version", action="version", version=f"edgekit {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("info", help="this machine: Jetson, GPU, CUDA, backends and their versions")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("data", help="build a bundled dataset from offline sources")
    dsub = s.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    d = dsub.add_parser("mnist5k", help="5,000 real MNIST digits as an ImageFolder (fixed train/val split)")
    d.add_argument("--out", required=True, help="output folder")
    d.add_argument("--force", action="store_true", help="rebuild even when the folder is complete")
    d.set_defaults(func=cmd_data)

    s = sub.add_parser("train", help="train a model on your data")
    tsub = s.add_subparsers(dest="task", required=True, metavar="TASK")
    t = tsub.add_parser("classify", help="transfer-learn a classifier on an ImageFolder")
    add_dataclass_args(t, ClassifyConfig)
    t.set_defaults(func=cmd_train_classify)

    s = sub.add_parser("export", help="export a trained model (ONNX), checked against PyTorch")
    s.add_argument("model_dir", help="model directory (holds manifest.json)")
    s.add_argument("--to", choices=["onnx"], default="onnx", help="target format (default: onnx)")
    add_dataclass_args(s, OnnxExportConfig)
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("bench", help="latency of each backend on the same input (in this process)")
    s.add_argument("model_dir", help="model directory (holds manifest.json)")
    s.add_argument("--backends", default="torch,onnxrt", help="comma-separated: torch,onnxrt (default: %(default)s)")
    s.add_argument("--warmup", type=int, default=10, help="untimed calls first (default: %(default)s)")
    s.add_argument("--iters", type=int, default=200, help="timed calls (default: %(default)s)")
    s.add_argument("--threads", type=int, default=0, help="CPU threads per backend, 0 = its default")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("demo", help="the whole pipeline on the bundled data, offline")
    s.add_argument("--out", default="runs/demo", help="where everything is written (default: %(default)s)")
    s.add_argument("--quick", action="store_true", help="a shorter schedule (for smoke tests)")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s",
                        stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except EdgekitError as e:
        print(f"edgekit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgekit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
