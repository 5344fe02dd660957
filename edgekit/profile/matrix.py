"""`edgekit bench` and `edgekit compare`: every backend x precision x batch the machine can run, each in its
own subprocess (edgekit.profile.worker), on the same real held-out inputs. Combinations that cannot run are
listed with the reason; one that crashes does not stop the others."""
from __future__ import annotations

import itertools
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

from edgekit.compare import compare_logits
from edgekit.errors import EdgekitError, unknown_choice
from edgekit.manifest import BACKENDS, PRECISIONS, Manifest
from edgekit.platform import machine_summary

log = logging.getLogger(__name__)
EXPORT_HINT = {"onnxrt": "edgekit export {d} --to onnx --precision {p}", "tinygrad": "edgekit export {d} --to onnx "
               "--precision {p}", "trt": "edgekit export {d} --to trt --precision {p}", "torch": "edgekit train ..."}


@dataclass
class BenchConfig:
    model_dir: str = ""  # model directory (manifest.json)
    backends: str = "torch,onnxrt,tinygrad,trt"  # comma-separated
    precisions: str = "fp32,fp16,int8"  # comma-separated
    batch: str = "1"  # comma-separated batch sizes (more than 1 needs a dynamic-batch export)
    warmup: int = 10  # untimed calls first
    iters: int = 100  # timed calls per run
    repeats: int = 1  # runs per combination, each in a fresh process: the spread is reported
    images: int = 64  # held-out images for accuracy and parity
    device: str = ""  # runner device; empty: each backend's default
    threads: int = 0  # CPU threads per runner; 0 = its default
    reference: str = "torch"  # parity reference backend (fp32); falls back to onnxrt
    timeout: int = 600  # seconds per subprocess
    out: str = ""  # report folder; empty: <model_dir>/bench


def _split(text: str, allowed: tuple[str, ...], kind: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    for t in items:
        if t not in allowed:
            raise unknown_choice(kind, t, allowed)
    if not items:
        raise EdgekitError(f"no {kind} given")
    return items


def prepare_inputs(manifest: Manifest, n: int, work: Path) -> dict[str, str]:
    """Held-out images through the manifest's preprocessing, saved for the workers (random if no data)."""
    from edgekit.data.imagefolder import heldout_for
    from edgekit.vision.preprocess import batch_classify

    paths = {"inputs": str(work / "inputs.npy")}
    try:
        if manifest.task != "classify":
            raise EdgekitError("held-out accuracy for detectors comes from the detection stage")
        val = heldout_for(manifest, limit=n)
        images = [val.image(i) for i in range(len(val))]
        np.save(paths["inputs"], batch_classify(images, manifest.input))
        np.save(work / "labels.npy", val.labels)
        paths["labels"] = str(work / "labels.npy")
        if len({im.shape for im in images[:16]}) == 1:  # end-to-end timing on real decoded images
            np.save(work / "images.npy", np.stack(images[:16]))
            paths["images"] = str(work / "images.npy")
    except EdgekitError as e:
        log.warning("no held-out images (%s): timing on random inputs, no accuracy", e)
        shape = [min(n, 8), *manifest.input.shape[1:]]
        np.save(paths["inputs"], np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    return paths


def run_matrix(cfg: BenchConfig) -> dict[str, Any]:
    manifest = Manifest.load(cfg.model_dir)
    backends = _split(cfg.backends, BACKENDS, "backend")
    precisions = _split(cfg.precisions, PRECISIONS, "precision")
    try:
        batches = [int(b) for b in cfg.batch.split(",") if b.strip()]
    except ValueError:
        raise EdgekitError(f"--batch takes comma-separated integers, got '{cfg.batch}'") from None
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        rows = _run_all(cfg, manifest, backends, precisions, batches, Path(tmp))
    for r in rows:
        r.pop("outputs_file", None)
    return {"model_dir": str(cfg.model_dir), "task": manifest.task, "config": asdict(cfg), "results": rows,
            "machine": machine_summary(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _run_all(cfg, manifest, backends, precisions, batches, work: Path) -> list[dict[str, Any]]:
    shared = prepare_inputs(manifest, cfg.images, work)
    rows: list[dict[str, Any]] = []
    for backend, precision, batch in itertools.product(backends, precisions, batches):
        row: dict[str, Any] = {"backend": backend, "precision": precision, "batch": batch}
        reason = _cannot_run(manifest, backend, precision, cfg.model_dir)
        if reason:
            rows.append({**row, "status": "skipped", "reason": reason})
            continue
        runs = [_spawn(cfg, backend, precision, batch, shared, work, r) for r in range(max(1, cfg.repeats))]
        rows.append({**row, **_aggregate(runs)})
        log.info("%-8s %-4s batch %d: %s", backend, precision, batch, _summary(rows[-1]))
    _parity(rows, cfg.reference)
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
            "threads": cfg.threads, "outputs": str(work / f"{tag}.npy"), "spawn_time": time.time()}
    (work / f"{tag}.spec.json").write_text(json.dumps(spec))
    out = work / f"{tag}.json"
    try:
        p = subprocess.run([sys.executable, "-m", "edgekit.profile.worker", str(work / f"{tag}.spec.json"), str(out)],
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


def _parity(rows: list[dict], reference: str) -> None:
    ok = [r for r in rows if r.get("status") == "ok"]
    ref = next((r for r in ok if r["backend"] == reference and r["precision"] == "fp32"), None) or \
        next((r for r in ok if r["backend"] == "onnxrt" and r["precision"] == "fp32"), None)
    if ref is None:
        return
    base = np.load(ref["outputs_file"])
    for r in ok:
        got = np.load(r["outputs_file"])
        r["parity"] = {"reference": f"{ref['backend']}/fp32", **compare_logits(base, got)} \
            if got.shape == base.shape else {"reference": f"{ref['backend']}/fp32", "error": "shape mismatch"}


def _summary(row: dict) -> str:
    if row["status"] != "ok":
        return f"{row['status']}: {row['reason']}"
    lat = row["latency_ms"]
    return f"p50 {lat['p50_ms']:.3f} ms, p99 {lat['p99_ms']:.3f} ms, cold start {row['cold_start_s']:.2f} s"
