"""`edgekit bench` (in-process): each backend's inference latency on the same real, preprocessed
held-out image, one backend after the other, with the machine facts."""
from __future__ import annotations

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.manifest import Manifest
from edgekit.platform import machine_summary
from edgekit.profile.bench import time_runner
from edgekit.runners import load_runner
from edgekit.tasks import task_for


def sample_feed(manifest: Manifest) -> np.ndarray:
    """One real held-out image through the manifest's preprocessing, the task's (random pixels if the data is
    gone)."""
    try:
        return task_for(manifest).heldout(manifest, None, 1).x[:1]
    except EdgekitError:
        rng = np.random.default_rng(0)
        return rng.standard_normal([1, *manifest.input.shape[1:]]).astype(np.float32)


def bench_backends(model_dir: str, backends: list[str], *, precision: str = "fp32", warmup: int = 10,
                   iters: int = 200, threads: int = 0) -> list[dict]:
    manifest = Manifest.load(model_dir)
    x = sample_feed(manifest)
    rows = []
    for backend in backends:
        runner = load_runner(manifest, backend.strip(), precision=precision, threads=threads)
        with runner:
            stats = time_runner(runner, {manifest.input.name: x}, warmup=warmup, iters=iters)
        rows.append({"backend": runner.backend, "precision": runner.precision, "device": runner.device,
                     "batch": int(x.shape[0]), **stats.as_dict(), "throughput_ips": round(1000 / stats.p50_ms, 1)})
    base = rows[0]["p50_ms"]
    for r in rows:
        r["p50_ratio"] = round(r["p50_ms"] / base, 3)
    return rows


def format_table(rows: list[dict]) -> str:
    cols = ["backend", "precision", "device", "n", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms",
            "throughput_ips", "p50_ratio"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + f"\n\nmachine: {machine_summary()['cpu']['name']}, " \
                              f"{machine_summary()['cpu']['cores']} cores"
