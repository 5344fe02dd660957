"""`edgekit demo` (`make demo`): the whole pipeline on the bundled real data, offline, on any machine.

    1 data      digits-detect: real MNIST digits pasted onto real video frames (YOLO set + digit crops + a
                test video with per-frame ground truth)
    2 classify  MobileNetV2 (packaged ImageNet backbone) transfer-learned on the digit crops
    3 detect    YOLOv8s (packaged real weights) fine-tuned on digits-detect, short schedule
    4 export    both models to ONNX (checked against PyTorch), FP16 and calibrated INT8 (checked against FP32)
    5 bench     torch / onnxrt / tinygrad (trt on a Jetson) x fp32 / fp16 / int8, each in its own process
    6 camera    the camera loop (detect -> crop -> classify) over the test video, annotated video written,
                digit accuracy against the ground truth
    -> <out>/report/: README.md (everything in one page), summary.json, the bench tables and plots, the video

Each stage leaves its output in <out> and a re-run reuses what is complete (the data, finished training
runs, exports whose manifest entry exists), so an interrupted demo continues. `--quick` shrinks every stage
(a smoke run of the mechanics, a minute or two; its accuracy means nothing)."""
from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from edgekit.demo_budget import Budget, epochs_that_fit, load_fitted, save_fitted
from edgekit.demo_report import render
from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)
RECIPES = Path(__file__).resolve().parents[1] / "models"
CLASSIFIER_RECIPE = "digits_crops_mobilenet_v2.yaml"


@dataclass(frozen=True)
class DemoPlan:
    """Every size the demo picks; `full` is what `make demo` runs (within 15 minutes on a 2-core CPU)."""

    train_images: int = 400
    val_images: int = 100
    video_frames: int = 300
    crop_images: int = 1500
    crops: int = 2  # classifier crops per pasted digit, each around its own jittered box
    cls_epochs: int = 0  # 0 = the recipe's
    det_epochs: int = 2  # a short schedule: `edgekit train detect` defaults to 4 (mAP50 >= 0.9 in 10 minutes)
    det_imgsz: int = 320
    calib_images: int = 64
    det_calib_images: int = 32  # percentile calibration of YOLOv8s@320 took 44 s on 64 images (AVX2 EPYC)
    export_eval_images: int = 200  # held-out images the FP16/INT8 exports score the classifier on (0 = all 616)
    det_export_eval_images: int = 50  # the detector's (FP16 on a CPU without fp16 kernels is slow)
    int8_search_seconds: float = 60.0  # per model: the INT8 sensitivity search's time budget (a 2-core CPU
    # keeps the demo within 15 minutes; out of time, the best found is written, over budget, and says so)
    eval_images: int = 200  # held-out images the classifier's bench scores accuracy on
    det_eval_images: int = 25  # the detector's (tinygrad's CPU backend takes ~2 s per YOLOv8s@320 image)
    bench_iters: int = 30
    det_bench_iters: int = 10
    bench_warmup: int = 3
    budget_seconds: float = 780.0  # the whole demo, fitted to this machine (edgekit.demo_budget); 0 = the sizes as given
    # (below 900: the bench's last combination and the camera stage run past what the budget controls)
    backends: str = "torch,onnxrt,tinygrad,trt"
    precisions: str = "fp32,fp16,int8"
    # combinations left out of the demo's detector bench, with the reason (they run with `edgekit bench`)
    det_skip: tuple[tuple[str, str], ...] = (
        ("tinygrad/fp32", "left out of the demo: tinygrad's CPU backend ran YOLOv8s@320 at 1.7 s per image on a 2-core "
                          "AVX2 EPYC, 150 s of the 15 minutes for one row (edgekit bench runs it; the classifier's "
                          "bench has every tinygrad row)"),
        ("tinygrad/fp16", "left out of the demo: tinygrad's CPU backend compiled YOLOv8s@320 FP16 for over 10 "
                          "minutes here (edgekit bench runs it; on a Jetson tinygrad uses CUDA)"),
        ("tinygrad/int8", "left out of the demo: tinygrad's CPU backend took ~3 minutes to compile the Q/DQ "
                          "YOLOv8s@320 here (edgekit bench runs it)"))


FULL = DemoPlan()
QUICK = DemoPlan(train_images=48, val_images=16, video_frames=20, crop_images=100, crops=1, cls_epochs=2,
                 det_epochs=1, det_imgsz=160, calib_images=16, det_calib_images=16, export_eval_images=0,
                 det_export_eval_images=0, eval_images=8, det_eval_images=8, bench_iters=5,
                 det_bench_iters=5, bench_warmup=1, int8_search_seconds=20.0,
                 backends="torch,onnxrt", precisions="fp32,int8", budget_seconds=0.0)


class _Clock:
    def __init__(self) -> None:
        self.t_start = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def stage(self, name: str, n: int, what: str):
        log.info("[demo] %d/6 %s: %s", n, name, what)
        clock = self

        class _Stage:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                clock.seconds[name] = round(time.perf_counter() - self.t0, 1)
                if exc[0] is None:
                    log.info("[demo] %s done in %.1f s (%.0f s so far)", name, clock.seconds[name], clock.total())
        return _Stage()

    def total(self) -> float:
        return round(time.perf_counter() - self.t_start, 1)


def run_demo(out: str | Path, *, quick: bool = False) -> int:
    from edgekit.platform import machine_summary

    plan = QUICK if quick else FULL
    out = Path(out)
    clock = _Clock()
    budget = Budget(plan.budget_seconds, fitted=load_fitted(out)) if plan.budget_seconds else None
    summary: dict[str, Any] = {"plan": asdict(plan), "quick": quick}

    with clock.stage("data", 1, "digits-detect (real MNIST digits on real video frames) + digit crops + test video"):
        data = _data(out, plan)
    summary["data"] = {"root": str(data), "yaml": str(data / "data.yaml")}

    with clock.stage("classify", 2, "MobileNetV2 (packaged ImageNet backbone) on the digit crops"):
        cls_dir, cls_summary = _classifier(out, data, plan, budget)
    summary["classifier"] = cls_summary

    with clock.stage("detect", 3, f"YOLOv8s (packaged real weights), {plan.det_epochs} epoch(s) at {plan.det_imgsz}"):
        det_dir, det_summary = _detector(out, data, plan, budget)
    summary["detector"] = det_summary

    with clock.stage("export", 4, "ONNX (vs PyTorch), FP16 and calibrated INT8 (vs FP32), both models"):
        search = plan.int8_search_seconds if budget is None else min(plan.int8_search_seconds,
                                                                     budget.share("int8_search"))
        summary["exports"] = {
            "classifier": _exports(cls_dir, plan, search, plan.calib_images, plan.export_eval_images,
                                   dynamic_batch=True),
            "detector": _exports(det_dir, plan, search, plan.det_calib_images, plan.det_export_eval_images)}

    report = out / "report"
    report.mkdir(parents=True, exist_ok=True)
    with clock.stage("bench", 5, f"{plan.backends} x {plan.precisions}, one subprocess per combination"):
        summary["bench"] = {"classifier": _bench(cls_dir, report / "bench_classifier", plan, plan.eval_images,
                                                 plan.bench_iters, seconds=budget and budget.bench_seconds(2)),
                            "detector": _bench(det_dir, report / "bench_detector", plan, plan.det_eval_images,
                                               plan.det_bench_iters, dict(plan.det_skip),
                                               seconds=budget and budget.bench_seconds(1))}

    with clock.stage("camera", 6, "detect -> crop -> classify over the test video, annotated video written"):
        summary["camera"] = _camera(det_dir, cls_dir, data, report)

    summary.update(stage_seconds=clock.seconds, total_seconds=clock.total(), machine=machine_summary(),
                   budget={"seconds": plan.budget_seconds, **budget.fitted} if budget else None)
    shutil.copyfile(cls_dir / "confusion_matrix.png", report / "confusion_matrix.png")
    atomic_write_json(report / "summary.json", summary)
    md = render(summary)
    atomic_write_text(report / "README.md", md)
    print(md)
    print(f"report: {report}/README.md (summary.json, bench_*/ tables and plots, camera.mp4); "
          f"{summary['total_seconds']:.0f} s in all")
    print("next:\n"
          f"  edgekit camera {data}/video/digits.mp4 --detector {det_dir} --classifier {cls_dir} --output out.mp4\n"
          f"  edgekit bench {det_dir} --backends onnxrt,tinygrad,trt --precisions fp32,fp16,int8\n"
          f"  edgekit compare {cls_dir} --backends torch,onnxrt,tinygrad\n"
          "  edgekit train detect --data YOUR_DATA.yaml   |   edgekit train classify --data YOUR_IMAGEFOLDER\n"
          "  on a Jetson: edgekit export MODEL --to trt --precision fp16 (README: Jetson)")
    return 0


# ---- the stages ----------------------------------------------------------------------------------------

def _data(out: Path, plan: DemoPlan) -> Path:
    from edgekit.data.digits_detect import DigitsDetectConfig, built_meta, write_digits_detect

    data = out / "data" / "digits-detect"
    cfg = DigitsDetectConfig(out=str(data), train=plan.train_images, val=plan.val_images, imgsz=plan.det_imgsz,
                             video_frames=plan.video_frames, crop_images=plan.crop_images, crops=plan.crops)
    built = built_meta(data).get("settings")
    if built is not None and built != cfg.settings():  # an older demo's data: rebuilt, and its models retrained
        log.info("[demo] %s was built with other settings (an earlier edgekit): rebuilding it and retraining "
                 "the models in %s", data, out / "models")
        for name in ("digit_classifier", "digit_detector"):  # the demo's own model directories, nothing else
            if (out / "models" / name / "manifest.json").is_file():
                shutil.rmtree(out / "models" / name)
        cfg = replace(cfg, force=True)
    write_digits_detect(cfg)
    return data


def _classifier(out: Path, data: Path, plan: DemoPlan, budget: Budget | None) -> tuple[Path, dict]:
    from edgekit.configs import load_recipe
    from edgekit.manifest import Manifest
    from edgekit.train.classify import train_classifier
    from edgekit.train.classify_config import ClassifyConfig

    recipe = RECIPES / CLASSIFIER_RECIPE
    if not recipe.exists():
        raise EdgekitError(f"{recipe} is missing: run the demo from an edgekit source checkout (make demo)")
    model_dir = out / "models" / "digit_classifier"
    values = load_recipe(str(recipe), ClassifyConfig)
    values.update(data=str(data / "crops"), out=str(model_dir), **({"epochs": plan.cls_epochs} if plan.cls_epochs
                                                                  else {}))
    cfg = ClassifyConfig(**values)
    if budget is not None:
        cfg = replace(cfg, epochs=_fit_classifier_epochs(cfg, out, budget))
    if _trained(model_dir, "train_args", asdict(cfg)):
        log.info("[demo] %s is trained with these settings: kept", model_dir)
        m = Manifest.load(model_dir).source["metrics"]
    else:
        m = train_classifier(cfg)["metrics"]
    return model_dir, {"model_dir": str(model_dir), "recipe": str(recipe.relative_to(RECIPES.parent)),
                       "arch": cfg.arch, "imgsz": cfg.imgsz, "val_top1": m["top1"], "val_images": m["n"],
                       "train_seconds": m["train_seconds"], "epochs": cfg.epochs}


def _detector(out: Path, data: Path, plan: DemoPlan, budget: Budget | None) -> tuple[Path, dict]:
    from edgekit.manifest import Manifest
    from edgekit.train.detect import train_detector
    from edgekit.train.detect_config import DetectConfig

    model_dir = out / "models" / "digit_detector"
    cfg = DetectConfig(data=str(data / "data.yaml"), out=str(model_dir), imgsz=plan.det_imgsz,
                       epochs=plan.det_epochs, close_mosaic=0)
    if budget is not None:  # ultralytics' time mode; the minutes are fitted once per output folder
        minutes = budget.fitted.setdefault("detector_train_minutes", round(budget.share("detect") / 60, 2))
        save_fitted(out, budget.fitted)
        cfg = replace(cfg, max_minutes=minutes)
    if not _trained(model_dir, "train_args", asdict(cfg)):
        train_detector(cfg)
    m = Manifest.load(model_dir).source["metrics"]
    return model_dir, {"model_dir": str(model_dir), "weights": "packaged YOLOv8s", "imgsz": plan.det_imgsz,
                       "epochs": m.get("epochs_run", plan.det_epochs), "mAP50": m["mAP50"], "mAP50-95": m["mAP50-95"],
                       "train_seconds": m["seconds"], "evaluated_by": m.get("evaluated_by"),
                       "map_cross_check": m.get("map_cross_check"),
                       "note": "short demo schedule; `edgekit train detect` (4 epochs) reaches mAP50 >= 0.9"}


def _fit_classifier_epochs(cfg, out: Path, budget: Budget) -> int:
    """The classifier's epochs on this machine: what fits its share of the budget at the measured seconds per
    training step, at most the recipe's. Fitted once per output folder (plan.json), so a re-run continues."""
    if "classifier_epochs" in budget.fitted:
        return int(budget.fitted["classifier_epochs"])
    from edgekit.data.imagefolder import load_imagefolder
    from edgekit.train.classify import seconds_per_step

    n_train = len(load_imagefolder(cfg.data, val_split=cfg.val_split, seed=cfg.seed)[0])
    step = seconds_per_step(cfg)
    seconds = budget.share("classify")
    epochs = epochs_that_fit(seconds, step, math.ceil(n_train / cfg.batch), most=cfg.epochs,
                             least=min(cfg.epochs, cfg.head_epochs + 1))
    budget.fitted.update(classifier_epochs=epochs, recipe_epochs=cfg.epochs, classifier_step_seconds=round(step, 3),
                         classifier_seconds=round(seconds, 1))
    log.info("[demo] classifier: %.3f s per training step here, %d epoch(s) fit its %.0f s (the recipe has %d)",
             step, epochs, seconds, cfg.epochs)
    save_fitted(out, budget.fitted)
    return epochs


def _trained(model_dir: Path, key: str, args: dict) -> bool:
    """A finished run in model_dir with the same settings (its manifest's source[key] records them)."""
    from edgekit.manifest import Manifest

    def norm(d: dict) -> dict:
        return {k: str(Path(d[k]).resolve()) if k in ("data", "out") and d.get(k) else d.get(k) for k in args}

    try:
        return norm(Manifest.load(model_dir).source.get(key) or {}) == norm(args)
    except EdgekitError:  # no manifest (never trained, or interrupted before the end)
        return False


def _exports(model_dir: Path, plan: DemoPlan, search_seconds: float, calib_images: int = 0,
             eval_images: int = 0, dynamic_batch: bool = False) -> dict:
    """ONNX, FP16 and INT8 of one model. `dynamic_batch`: the classifier's, so the camera loop classifies a
    frame's detections in one call (one per detection with a fixed batch of 1: 10 a frame here)."""
    from edgekit.export.fp16 import Fp16ExportConfig, fp16_from_onnx
    from edgekit.export.int8 import Int8ExportConfig, int8_from_onnx
    from edgekit.export.onnx import OnnxExportConfig, onnx_from_torch
    from edgekit.manifest import Manifest

    have = {(a.backend, a.precision) for a in Manifest.load(model_dir).artifacts}
    if ("onnxrt", "fp32") not in have:
        onnx_from_torch(model_dir, OnnxExportConfig(dynamic_batch=dynamic_batch))
    refused = {}  # a reduced-precision export its own checks refuse is shown, not fatal: the demo goes on
    if ("onnxrt", "fp16") not in have:
        refused["fp16"] = _refusal(lambda: fp16_from_onnx(model_dir, Fp16ExportConfig(eval_images=eval_images)))
    if ("onnxrt", "int8") not in have:
        refused["int8"] = _refusal(lambda: int8_from_onnx(model_dir, Int8ExportConfig(
            calib_images=calib_images or plan.calib_images, min_calib_images=min(32, calib_images or plan.calib_images),
            latency_rounds=5, eval_images=eval_images, fallback_seconds=search_seconds, allow_over_budget=True)))
    m = Manifest.load(model_dir)
    rows = {p: {"refused": why} for p, why in refused.items() if why}
    for a in m.artifacts:
        if a.backend != "onnxrt":
            continue
        acc, p = a.accuracy or {}, a.parity or {}
        rows[a.precision] = {"file": a.path, "metric": acc.get("metric"), "value": acc.get("value"),
                             "drop_points": acc.get("drop_points", 0.0), "parity_reference": p.get("reference"),
                             "max_rel": p.get("max_rel"), "agreement": p.get("agreement", p.get("top1_agreement")),
                             "latency_ratio": ((a.options or {}).get("latency") or {}).get("int8", {}).get(
                                 "p50_ratio"), "float_nodes": len((a.options or {}).get("float_nodes") or [])}
        if a.precision == "int8":  # what the CPU made the exporter pick, and whether the checks passed
            o = a.options or {}
            rows["int8"].update(reduce_range=o.get("reduce_range"), cpu_int8=(o.get("cpu") or {}).get("kind"),
                                min_agreement=p.get("min_agreement"), agreement_passed=p.get("passed"),
                                within_budget=acc.get("within_budget"),
                                search_out_of_time=(o.get("fallback") or {}).get("out_of_time"))
    return rows


def _refusal(export) -> str | None:
    """None when `export` wrote its file; else the one line that says why its checks refused it."""
    try:
        export()
    except EdgekitError as e:
        log.warning("[demo] %s", e)
        return str(e)
    return None


def _bench(model_dir: Path, folder: Path, plan: DemoPlan, eval_images: int, iters: int,
           skip: dict[str, str] | None = None, *, seconds: float | None = None) -> dict:
    """edgekit bench of every backend x precision, except `skip` (listed in the report with its reason)."""
    from edgekit.profile.matrix import BenchConfig, run_matrix
    from edgekit.profile.report import write_report

    skip = skip or {}
    report = run_matrix(BenchConfig(model_dir=str(model_dir), backends=plan.backends, precisions=plan.precisions,
                                    warmup=plan.bench_warmup, iters=iters, eval_images=eval_images,
                                    skip=",".join(skip), out=str(folder), max_seconds=int(seconds or 0)))
    for r in report["results"]:
        r["reason"] = skip.get(f"{r['backend']}/{r['precision']}", r.get("reason"))
    md = write_report(report, folder)
    ok = [r for r in report["results"] if r.get("status") == "ok"]
    return {"folder": str(folder), "table": str(md), "ran": [f"{r['backend']}/{r['precision']}" for r in ok],
            "not_run": {f"{r['backend']}/{r['precision']}": r.get("reason") for r in report["results"]
                        if r.get("status") != "ok"}}


def _camera(det_dir: Path, cls_dir: Path, data: Path, report: Path) -> dict:
    """`edgekit camera` in its own process, as it runs on the device: its memory is the loop's alone (this
    process trained with torch), and the loop never imports torch."""
    import subprocess
    import sys

    video, rep = report / "camera.mp4", report / "camera.json"
    cmd = [sys.executable, "-m", "edgekit", "camera", str(data / "video" / "digits.mp4"), str(video),
           str(report / "camera.jsonl"), "--detector", str(det_dir), "--classifier", str(cls_dir), "--headless",
           "--report", str(rep), "--truth", str(data / "video" / "digits.jsonl")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise EdgekitError(f"the camera loop failed: {(r.stderr.strip().splitlines() or ['?'])[-1]} ({' '.join(cmd)})")
    out = json.loads(rep.read_text())
    return {"video": str(video), "report": str(rep), "command": " ".join(cmd[3:]), "frames": out["frames"],
            "fps": out["fps"], "stages_p50_ms": {k: v.get("p50_ms") for k, v in out["stages_ms"].items()},
            "accuracy": out.get("accuracy"), "rss_peak_mb": out["rss"]["peak_mb"]}
