"""The `edgekit` command: one subcommand per stage. A user error prints one line and exits 2; no
traceback. Heavy libraries are imported inside each command, never at start-up."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from edgekit import __version__
from edgekit.cli_models import cmd_export, cmd_import
from edgekit.configs import OneLineParser, add_dataclass_args, dataclass_from_args, value_type
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
        value = libs[name] or "not installed"
        if name == "tinygrad" and not libs[name] and sys.version_info < (3, 11):  # JetPack 6's Python 3.10
            value += " (needs Python >= 3.11: a 3.11 venv and bench --tinygrad-python, README 'On a Jetson')"
        rows.append((name, value))
    gst = {True: "yes", False: "no (pip wheels lack it: csi:// needs JetPack's OpenCV)", None: "?"}[
        facts["opencv_gstreamer"]]
    rows.append(("opencv", f"{libs['opencv'] or 'not installed'}, GStreamer: {gst}"))
    for name, why in facts.get("import_errors", {}).items():  # installed but broken: say so, do not crash
        numpy_hint = " (JetPack's cv2 is built on numpy 1.x: pip install 'numpy<2')" if "numpy" in why.lower() else ""
        rows.append((f"{name} import", f"FAILS: {why}{numpy_hint}"))
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


def cmd_data_digits_detect(args: argparse.Namespace) -> int:
    from edgekit.data.digits_detect import DigitsDetectConfig, write_digits_detect

    cfg = dataclass_from_args(DigitsDetectConfig, args)
    cfg.validate()  # before the work: a wrong option fails in the first second
    meta = write_digits_detect(cfg)
    c, names = meta["counts"], meta["classes"]
    video = (f"; test video {cfg.out}/video/digits.mp4 ({meta['video']['frames']} frames, ground truth in "
             "digits.jsonl)") if meta.get("video") else ""
    print(f"wrote digits-detect to {cfg.out}: {c['train']['images']} train / {c['val']['images']} val images "
          f"({c['train']['boxes']} / {c['val']['boxes']} boxes), classes "
          f"{', '.join(names) if len(names) < 3 else '0-9'}; dataset yaml {cfg.out}/data.yaml{video}")
    return 0


# ---- train ---------------------------------------------------------------------------------------------

def cmd_train_classify(args: argparse.Namespace) -> int:
    from edgekit.train.classify_config import ClassifyConfig

    cfg = dataclass_from_args(ClassifyConfig, args, args.config)
    cfg.validate()  # before importing torch: a wrong option fails in well under a second

    from edgekit.train.classify import train_classifier

    summary = train_classifier(cfg)
    if summary:  # rank 0
        m = summary["metrics"]
        top5 = next((f"{k} {v:.2%}" for k, v in m.items() if k.startswith("top") and k != "top1"), "")
        print(f"trained {cfg.arch}: val top-1 {m['top1']:.2%}, {top5}, best epoch {m['best_epoch']}, "
              f"{m['train_seconds']:.0f} s of training; model directory {summary['model_dir']}")
    return 0


def cmd_train_detect(args: argparse.Namespace) -> int:
    from edgekit.train.detect_config import DetectConfig

    cfg = dataclass_from_args(DetectConfig, args, args.config)
    cfg.validate()  # before importing torch and ultralytics: a wrong option fails in well under a second

    from edgekit.train.detect import train_detector

    s = train_detector(cfg)
    m = s["metrics"]
    msg = (f"trained {cfg.model} for {m['epochs_run']} epoch(s): val mAP50 {m.get('mAP50', 0):.4f}, mAP50-95 "
           f"{m.get('mAP50-95', 0):.4f} (ultralytics), {m['seconds']:.0f} s; model directory {s['model_dir']}")
    if "onnx" in s:
        a, p = s["onnx"]["accuracy"], s["onnx"]["parity"]
        if a:
            msg += f"; ONNX mAP50 {a['mAP50']:.4f}, mAP50-95 {a['value']:.4f} (edgekit)"
        if p:
            msg += f", detections agree with PyTorch on {p['detections_agreement']:.0%} of {p['n']} images"
    print(msg)
    return 0


# ---- bench ---------------------------------------------------------------------------------------------

def cmd_bench(args: argparse.Namespace) -> int:
    from edgekit.profile.matrix import BenchConfig, run_matrix
    from edgekit.profile.report import PLOTS, markdown, plots_available, write_report
    from edgekit.tasks import task_for

    cfg = dataclass_from_args(BenchConfig, args)
    cfg.validate()  # options, manifest, data and the report folder, before the first run
    report = run_matrix(cfg)
    dest = write_report(report, cfg.out or f"{cfg.model_dir}/bench")
    plots = plots_available()
    print(markdown(report, plots=plots).split("\n\n", 1)[1].rsplit("\n\n![", 1)[0])
    print(f"\nreport: {dest} (and bench.json, bench.csv{''.join(', ' + p for p in PLOTS) if plots else ''})")
    if task_for(report["task"]).framework == "ultralytics" and cfg.ultralytics:  # its own numbers, beside
        from edgekit.profile.ultralytics import NAME, markdown as ul_markdown, run_ultralytics_benchmark

        res = run_ultralytics_benchmark(cfg.model_dir, cfg.data or None, dest.parent, eval_images=cfg.eval_images,
                                        iters=cfg.iters)
        print(ul_markdown(res).split("\n\n", 1)[1])
        print(f"ultralytics beside edgekit: {dest.parent / NAME}.md")
    return 0 if any(r["status"] == "ok" for r in report["results"]) else 1


def cmd_compare(args: argparse.Namespace) -> int:
    from edgekit.profile.matrix import BenchConfig, run_matrix
    from edgekit.tasks import task_for

    cfg = dataclass_from_args(BenchConfig, args)
    cfg.warmup, cfg.iters = 1, 3  # parity, not timing
    cfg.validate(report=False)
    report = run_matrix(cfg)
    task = task_for(report["task"])
    metric, agreement = task.metric_label, task.agreement_label
    print(f"parity on {cfg.eval_images or 'all'} held-out inputs against {cfg.reference}/fp32 (onnxrt/fp32 when it "
          "is missing)")
    print(f"| backend | precision | max abs | max rel | min cosine | {agreement} | {metric} |\n"
          "|---|---|---|---|---|---|---|")
    for r in report["results"]:
        if r["status"] != "ok":
            print(f"| {r['backend']} | {r['precision']} | {r['status']}: {r['reason']} | | | | |")
            continue
        p, a = r.get("parity") or {}, (r.get("accuracy") or {}).get("value")
        agree = p.get(task.agreement_key, float("nan"))
        print(f"| {r['backend']} | {r['precision']} | {p.get('max_abs', float('nan')):.3e} | "
              f"{p.get('max_rel', float('nan')):.3e} | {p.get('min_cosine', float('nan')):.6f} | "
              f"{agree:.2%} | {'' if a is None else f'{a:.2%}'} |")
    if not any(r["status"] == "ok" for r in report["results"]):  # nothing was compared: not a success
        print(f"edgekit: no backend/precision of {cfg.model_dir} ran, so nothing was compared (the reasons are in "
              "the table above)", file=sys.stderr)
        return 1
    return 0


# ---- camera --------------------------------------------------------------------------------------------

def add_camera_args(p: argparse.ArgumentParser) -> None:
    from edgekit.camera.loop import CameraConfig

    add_dataclass_args(p, CameraConfig, positional=("input", "output"))


def cmd_camera(args: argparse.Namespace) -> int:
    from edgekit.camera.accuracy import accuracy_line, same_as_line
    from edgekit.camera.loop import CameraConfig, run_camera

    cfg = dataclass_from_args(CameraConfig, args)
    cfg.validate()  # before a model loads or a camera opens
    r = run_camera(cfg)
    # with `-` (records on stdout) the summary joins the logs on stderr, so stdout stays pure JSON lines
    out = sys.stderr if "-" in cfg.output else sys.stdout
    st = r["stages_ms"]
    stages = ", ".join(f"{k} {v['p50_ms']:.2f}" for k, v in st.items() if k not in ("frame",))
    print(f"{r['frames']} frames from {r['source']} in {r['seconds']:.1f} s ({r['fps']:.1f} FPS)"
          f"{' (interrupted)' if r['interrupted'] else ''}; p50 ms: {stages}; dropped {r['capture']['dropped']}, "
          f"reconnects {r['capture']['reconnects']}; RSS peak {r['rss']['peak_mb']:.0f} MB", file=out)
    if "accuracy" in r:
        print(accuracy_line(r["accuracy"]), file=out)
    if "same_as" in r:
        print(same_as_line(r["same_as"]), file=out)
    if "tracking" in r:
        from edgekit.camera.tracking import counts_line

        print(counts_line(r["tracking"]), file=out)
    return 0


# ---- demo ----------------------------------------------------------------------------------------------

def cmd_demo(args: argparse.Namespace) -> int:
    from edgekit.demo import run_demo

    return run_demo(args.out, quick=args.quick)


# ---- the parser ----------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from edgekit.export.onnx import OnnxExportConfig
    from edgekit.train.classify_config import ClassifyConfig

    p = OneLineParser(prog="edgekit", description="Train, export, run and measure vision models "
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
    d.add_argument("--out", required=True, type=value_type(path="out_dir"), help="output folder")
    d.add_argument("--force", action="store_true", help="rebuild even when the folder is complete (only a folder "
                   "edgekit made and holding nothing else is replaced)")
    d.set_defaults(func=cmd_data)
    from edgekit.data.digits_detect import DigitsDetectConfig

    d = dsub.add_parser("digits-detect", help="detection set: real MNIST digits pasted onto real video frames "
                        "(YOLO format + data.yaml), and a test video of moving digits with ground truth")
    add_dataclass_args(d, DigitsDetectConfig)
    d.set_defaults(func=cmd_data_digits_detect)

    s = sub.add_parser("train", help="train a model on your data")
    tsub = s.add_subparsers(dest="task", required=True, metavar="TASK")
    from edgekit.train.detect_config import DetectConfig

    for task, cls, func, help_ in (
            ("classify", ClassifyConfig, cmd_train_classify, "transfer-learn a classifier on an ImageFolder"),
            ("detect", DetectConfig, cmd_train_detect, "fine-tune an ultralytics YOLO detector on a YOLO dataset, "
             "offline; exports ONNX with parity and mAP checks")):
        t = tsub.add_parser(task, help=help_)
        t.add_argument("--config", metavar="RECIPE", type=value_type(path="file"), help="YAML/JSON file of these options (see models/); "
                       "flags given here override it")
        add_dataclass_args(t, cls)
        t.set_defaults(func=func)

    from edgekit.imports.config import ImportConfig

    s = sub.add_parser("import", help="make a model directory from a model you already have: an .onnx, an "
                       "ultralytics .pt (--trust-pickle) or torchvision:NAME",
                       description="edgekit import SOURCE --out DIR. SOURCE: an ONNX file (classifier or detector; "
                       "ultralytics' metadata is read), an ultralytics detection checkpoint .pt (a pickle: needs "
                       "--trust-pickle, and is loaded in a separate process, never in this one), torchvision:NAME or "
                       "efficientnet_lite0. Every later command takes DIR like a trained model's.")
    add_dataclass_args(s, ImportConfig, positional=("source",))
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("export", help="export a trained model (ONNX: FP32, FP16, INT8), checked against PyTorch "
                       "or FP32")
    s.add_argument("model_dir", type=value_type(path="dir"), help="model directory (holds manifest.json)")
    s.add_argument("--to", choices=["onnx", "trt"], default="onnx",
                   help="onnx, or trt: a TensorRT engine (on the Jetson; cached, refused when foreign) (default: onnx)")
    s.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32",
                   help="fp32: from PyTorch; fp16 / int8: from the FP32 ONNX (exported first if missing), with "
                        "accuracy on held-out data recorded in the manifest (default: fp32)")
    add_dataclass_args(s, OnnxExportConfig)
    from edgekit.export.fp16 import Fp16ExportConfig
    from edgekit.export.int8 import Int8ExportConfig

    add_dataclass_args(s.add_argument_group("--precision fp16"), Fp16ExportConfig,
                       skip=("data", "calib_data", "decoder"))
    add_dataclass_args(s.add_argument_group("--precision int8"), Int8ExportConfig,
                      skip=("data", "eval_images", "calib_data", "decoder"))  # calib_data, decoder: OnnxExportConfig's
    from edgekit.export.trt import TrtBuildConfig

    add_dataclass_args(s.add_argument_group("--to trt"), TrtBuildConfig,
                       skip=("precision", "data", "calib_images", "seed", "decoder"))
    s.set_defaults(func=cmd_export)

    from edgekit.profile.matrix import BenchConfig

    s = sub.add_parser("bench", help="latency, memory, accuracy and parity of every backend x precision x batch, "
                       "each in its own process; JSON/CSV/Markdown/PNG report")
    add_dataclass_args(s, BenchConfig, positional=("model_dir",))
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("compare", help="parity of every backend and precision against the reference on real "
                       "held-out inputs (works in PyTorch, wrong in TensorRT?)")
    add_dataclass_args(s, BenchConfig, positional=("model_dir",), skip=("warmup", "iters", "repeats", "out", "batch"))
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("camera", help="camera/video loop: detect, classify each detection, draw, write",
                       description="edgekit camera INPUT [OUTPUT ...] --detector DIR --classifier DIR. INPUT: "
                       "csi://0, /dev/video0, rtsp://..., a video file, an image folder or glob. OUTPUT: "
                       "display://0, a video file, a .jsonl file of results, a folder for frames (ending in /), "
                       "- (results as JSON lines on stdout), http://127.0.0.1:8080 (live view in a browser).")
    add_camera_args(s)
    s.set_defaults(func=cmd_camera)

    s = sub.add_parser("demo", help="the whole pipeline on the bundled data, offline")
    s.add_argument("--out", default="runs/demo", type=value_type(path="out_dir"), help="where everything is written (default: %(default)s)")
    s.add_argument("--quick", action="store_true", help="a shorter schedule (for smoke tests)")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s",
                        stream=sys.stderr)
    return run_command(args.func, args)


def run_command(func, args: argparse.Namespace) -> int:
    """Run one command: a user error prints one line (no traceback) and exits 2; Ctrl-C exits 130."""
    try:
        return int(func(args) or 0)
    except EdgekitError as e:
        print(f"edgekit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgekit: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # a full disk, a read-only folder, a path under a file: the system's words, one line
        where = f": {e.filename}" if e.filename else ""
        print(f"edgekit: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
