"""`edgekit bench` and `edgekit compare`: every backend x precision x batch the machine can run, each in its
own subprocess (edgekit.profile.worker), on the same real held-out inputs. Combinations that cannot run are
listed with the reason; one that crashes does not stop the others."""
from __future__ import annotations

import itertools
import math
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.configs import check_config, option, path_problem
from edgekit.data.imagefolder import IMAGE_EXTS
from edgekit.errors import EdgekitError, unknown_choice
from edgekit.manifest import BACKENDS, PRECISIONS, Manifest
from edgekit.platform import machine_summary
from edgekit.profile.bench import save_images
from edgekit.tasks import task_for
from edgekit.vision.decoders import DECODER_HINT, DECODER_SPEC

log = logging.getLogger(__name__)
E2E_IMAGES = 16  # decoded held-out images the end-to-end timing cycles through
EXPORT_HINT = {"onnxrt": "edgekit export {d} --to onnx --precision {p}", "tinygrad": "edgekit export {d} --to onnx "
               "--precision {p}", "trt": "edgekit export {d} --to trt --precision {p}", "torch": "edgekit train ..."}


@dataclass
class BenchConfig:
    model_dir: str = option("", path="dir")  # model directory (manifest.json)
    backends: str = "torch,onnxrt,tinygrad,trt"  # comma-separated
    precisions: str = "fp32,fp16,int8"  # comma-separated
    batch: str = "1"  # comma-separated batch sizes (more than 1 needs a dynamic-batch export)
    warmup: int = option(10, ge=0)  # untimed calls first
    iters: int = option(100, ge=1)  # timed calls per run
    repeats: int = option(1, ge=1, le=1000)  # runs per combination, each in a fresh process: the spread is reported
    eval_images: int = option(64, ge=0)  # held-out images for accuracy (classify: top-1, detect: mAP) and parity; 0 = all
    data: str = option("", path="any", empty=True)  # held-out data: ImageFolder root or YOLO data.yaml; empty: the manifest's
    device: str = option("", choices=("cpu", "cuda", "trt"), empty=True)  # runner device; empty: each backend's default
    threads: int = option(0, ge=0, le=1024)  # CPU threads per runner; 0 = its default
    reference: str = option("torch", choices=BACKENDS)  # parity reference backend (fp32); falls back to onnxrt
    timeout: int = option(600, ge=1)  # seconds per subprocess
    max_seconds: int = option(0, ge=0)  # the whole matrix: combinations that would start later are listed as not run; 0 = no limit
    out: str = option("", path="out_dir", empty=True)  # report folder; empty: <model_dir>/bench
    skip: str = ""  # backend/precision pairs left out, comma-separated (e.g. tinygrad/fp16): listed as skipped
    ultralytics: bool = True  # detectors: also run ultralytics' own benchmark/val on the same model and images
    decoder: str = option("", empty=True, pattern=DECODER_SPEC, hint=DECODER_HINT)  # detector output decoder: yolov8 | yolov5 | end2end, or an installed plug-in module.path:function (never a file); default: the manifest's (a plug-in it names must be passed here)
    tinygrad_python: str = option("", empty=True)  # Python for tinygrad runs: JetPack 6 has 3.10, tinygrad >= 3.11 (README); empty: this

    def validate(self, *, report: bool = True) -> Manifest:
        """Everything that can be checked before the first run, so a wrong option or a report folder that
        cannot be written fails in the first second rather than after the whole matrix. Returns the manifest."""
        check_config(self)
        manifest = Manifest.load(self.model_dir)
        _split(self.backends, BACKENDS, "backend")
        _split(self.precisions, PRECISIONS, "precision")
        _batches(self.batch)
        _skipped(self)
        if report:
            why = path_problem(self.out or f"{self.model_dir}/bench", "out_dir")
            if why:
                raise EdgekitError(f"the report folder {why}: pass --out DIR somewhere writable")
        if self.data and Path(self.data).is_file() and Path(self.data).suffix.lower() not in (".yaml", ".yml"):
            raise EdgekitError(f"--data {self.data} is a file but not a YOLO data.yaml: pass that, or the held-out "
                               "ImageFolder's folder")
        if self.data and Path(self.data).is_dir() and not _has_images(Path(self.data)):
            raise EdgekitError(f"--data {self.data} holds no images ({', '.join(sorted(IMAGE_EXTS))}): pass the "
                               "held-out ImageFolder (root/<class>/ or root/val/<class>/) or a YOLO data.yaml")
        return manifest


def _has_images(folder: Path, limit: int = 100_000) -> bool:
    """Whether any file under `folder` has an image extension (what the data loaders read); stops early."""
    for n, (_, _, files) in enumerate(os.walk(folder)):
        if n >= limit or any(Path(f).suffix.lower() in IMAGE_EXTS for f in files):
            return True  # found one (or too many folders to look through: the loader decides)
    return False


def _batches(text: str) -> list[int]:
    try:
        batches = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise EdgekitError(f"--batch takes comma-separated integers, got '{text}'") from None
    if not batches or not all(1 <= b <= 4096 for b in batches):
        raise EdgekitError(f"--batch takes comma-separated batch sizes from 1 to 4096, got '{text}'")
    return batches


def _split(text: str, allowed: tuple[str, ...], kind: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    for t in items:
        if t not in allowed:
            raise unknown_choice(kind, t, allowed)
    if not items:
        raise EdgekitError(f"no {kind} given")
    return items


def prepare_inputs(manifest: Manifest, cfg: BenchConfig, work: Path) -> tuple[dict[str, str], Any]:
    """Held-out images through the manifest's preprocessing, saved for the workers, and their targets (kept
    here: accuracy is scored in this process from each worker's outputs). Decoded images for the end-to-end
    timing. Random inputs, no accuracy, when the data is not here."""
    task = task_for(manifest, cfg.decoder)
    paths = {"inputs": str(work / "inputs.npy")}
    try:
        held = task.heldout(manifest, cfg.data or None, cfg.eval_images)
        np.save(paths["inputs"], held.x)
        targets = held.targets
        save_images(task.images(manifest, cfg.data, E2E_IMAGES), work / "images.npz")
        paths["images"] = str(work / "images.npz")
    except EdgekitError as e:
        if cfg.data:  # asked for: never replaced by random inputs
            raise EdgekitError(f"--data {cfg.data}: {e}") from None
        log.warning("WARNING: no held-out images (%s): latency is timed on RANDOM inputs, with no accuracy and no "
                    "parity on real data; pass --data (the held-out ImageFolder or YOLO data.yaml) to measure them", e)
        shape = [min(cfg.eval_images or 8, 8), *manifest.input.shape[1:]]
        np.save(paths["inputs"], np.random.default_rng(0).standard_normal(shape).astype(np.float32))
        targets = None
    return paths, targets


_now = time.monotonic  # the --max-seconds clock (a test drives it)


def run_matrix(cfg: BenchConfig) -> dict[str, Any]:
    manifest = cfg.validate(report=False)
    backends = _split(cfg.backends, BACKENDS, "backend")
    precisions = _split(cfg.precisions, PRECISIONS, "precision")
    batches = _batches(cfg.batch)
    _check_python(cfg.tinygrad_python)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        rows = _run_all(cfg, manifest, backends, precisions, batches, Path(tmp))
    for r in rows:
        r.pop("outputs_file", None)
    task = task_for(manifest.task)  # its labels only
    return {"model_dir": str(cfg.model_dir), "task": manifest.task, "metric": task.metric_label,
            "agreement": task.agreement_label, "end_to_end": task.e2e_what, "config": asdict(cfg), "results": rows,
            "machine": machine_summary(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "loadavg_1m": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2),
                           "cpu_count": os.cpu_count()}}


def _run_all(cfg, manifest, backends, precisions, batches, work: Path) -> list[dict[str, Any]]:
    shared, targets = prepare_inputs(manifest, cfg, work)
    rows: list[dict[str, Any]] = []
    t_end = _now() + cfg.max_seconds if cfg.max_seconds else math.inf
    for backend, precision, batch in itertools.product(backends, precisions, batches):
        row: dict[str, Any] = {"backend": backend, "precision": precision, "batch": batch}
        reason = ("left out (--skip)" if f"{backend}/{precision}" in _skipped(cfg)
                  else _cannot_run(manifest, backend, precision, cfg.model_dir))
        if not reason and _now() >= t_end:
            reason = f"not run: the bench's time limit (--max-seconds {cfg.max_seconds}) was spent"
        if reason:
            rows.append({**row, "status": "skipped", "reason": reason})
            continue
        runs = [_spawn(cfg, backend, precision, batch, shared, work, r) for r in range(max(1, cfg.repeats))]
        rows.append({**row, **_aggregate(runs)})
        log.info("%-8s %-4s batch %d: %s", backend, precision, batch, _summary(rows[-1]))
    _score(rows, manifest, targets, cfg.reference, cfg.decoder)
    return rows


def _cannot_run(manifest: Manifest, backend: str, precision: str, model_dir: str) -> str | None:
    from edgekit.runners import artifact_backend

    wanted = artifact_backend(backend)  # whether the backend imports is the worker's to find out
    if not any(a.backend == wanted and a.precision == precision for a in manifest.artifacts):
        if backend == "torch" and precision != "fp32":
            return "torch runs the fp32 checkpoint (fp16 on CUDA only: --device cuda); no int8 mode"
        return f"no {wanted}/{precision} artifact: build it with `{EXPORT_HINT[wanted].format(d=model_dir, p=precision)}`"
    return None


def _spawn(cfg: BenchConfig, backend: str, precision: str, batch: int, shared: dict, work: Path, rep: int) -> dict:
    tag = f"{backend}-{precision}-b{batch}-r{rep}"
    spec = {**shared, "model_dir": str(cfg.model_dir), "backend": backend, "precision": precision,
            "batch": batch, "warmup": cfg.warmup, "iters": cfg.iters, "device": cfg.device,
            "threads": cfg.threads, "decoder": cfg.decoder, "outputs": str(work / f"{tag}.npy"), "spawn_time": time.time()}
    (work / f"{tag}.spec.json").write_text(json.dumps(spec))
    out = work / f"{tag}.json"
    try:
        python = cfg.tinygrad_python if backend == "tinygrad" and cfg.tinygrad_python else sys.executable
        p = subprocess.run([python, "-m", "edgekit.profile.worker", str(work / f"{tag}.spec.json"), str(out)],
                           capture_output=True, text=True, timeout=cfg.timeout, env={**os.environ})
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {cfg.timeout} s"}
    if not out.exists():
        tail = " | ".join(p.stderr.strip().splitlines()[-3:])
        return {"ok": False, "error": f"crashed (exit code {p.returncode}): {tail}"}
    result = json.loads(out.read_text())
    result["outputs_file"] = spec["outputs"]
    return result


def _aggregate(runs: list[dict]) -> dict[str, Any]:
    ok = [r for r in runs if r.get("ok")]
    if not ok:
        first = runs[0]
        if "skipped" in first:
            return {"status": "skipped", "reason": first["skipped"]}
        return {"status": "failed", "reason": first.get("error", "unknown")}
    best = sorted(ok, key=lambda r: r["latency_ms"]["p50_ms"])[len(ok) // 2]  # the median run
    p50s = [r["latency_ms"]["p50_ms"] for r in ok]
    row = {k: v for k, v in best.items() if k not in ("ok",)}
    row.update(status="ok", runs=len(ok), p50_spread_ms=[round(min(p50s), 4), round(max(p50s), 4)])
    return row


def _score(rows: list[dict], manifest: Manifest, targets: Any, reference: str, decoder: str = "") -> None:
    """Accuracy of each run's outputs on the held-out targets, and parity against the reference backend's
    outputs on the same inputs: the task's metric and parity numbers (edgekit.tasks)."""
    hooks = task_for(manifest, decoder)
    ok = [r for r in rows if r.get("status") == "ok"]
    outputs = {id(r): np.load(r["outputs_file"]) for r in ok}
    if targets is not None:
        for r in ok:
            r["accuracy"] = hooks.metric(outputs[id(r)], targets)
    ref = next((r for r in ok if r["backend"] == reference and r["precision"] == "fp32"), None) or \
        next((r for r in ok if r["backend"] == "onnxrt" and r["precision"] == "fp32"), None)
    if ref is None:
        return
    base, name = outputs[id(ref)], f"{ref['backend']}/fp32"
    for r in ok:
        got = outputs[id(r)]
        r["parity"] = {"reference": name, **hooks.parity(base, got)} if got.shape == base.shape else \
            {"reference": name, "error": f"output shape {list(got.shape)}, reference {list(base.shape)}"}


def _check_python(python: str) -> None:
    if python and not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise EdgekitError(f"--tinygrad-python {python} is not an executable Python: give the python of a 3.11 "
                           "venv with edgekit and tinygrad installed (README, 'On a Jetson')")


def _skipped(cfg: BenchConfig) -> set[str]:
    pairs = {t.strip() for t in cfg.skip.split(",") if t.strip()}
    for pair in pairs:
        b, _, prec = pair.partition("/")
        if b not in BACKENDS or prec not in PRECISIONS:
            raise EdgekitError(f"--skip takes backend/precision pairs like tinygrad/fp16, got '{pair}'")
    return pairs


def _summary(row: dict) -> str:
    if row["status"] != "ok":
        return f"{row['status']}: {row['reason']}"
    lat = row["latency_ms"]
    return f"p50 {lat['p50_ms']:.3f} ms, p99 {lat['p99_ms']:.3f} ms, cold start {row['cold_start_s']:.2f} s"
