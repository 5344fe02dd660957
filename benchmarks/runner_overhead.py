#!/usr/bin/env python3
"""Runner overhead: edgekit's onnxrt runner against a raw `session.run` on the same session and inputs, in
one process, interleaved in rounds so drift hits both alike. ResNet18 at 224 by default (random weights:
the graph's cost is what matters here).

    python benchmarks/runner_overhead.py [--rounds 20] [--iters 50] [--out benchmarks/results/runner_overhead.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def export_resnet18(dest: Path, size: int) -> Path:
    import torch
    import torchvision

    torch.manual_seed(0)
    m = torchvision.models.resnet18(weights=None).eval()
    torch.onnx.export(m, torch.zeros(1, 3, size, size), str(dest), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"])
    return dest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/runner_overhead.json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgekit-runner-overhead-") as tmp:
        return measure(a, export_resnet18(Path(tmp) / "resnet18.onnx", a.size))


def measure(a: argparse.Namespace, path: Path) -> int:
    from edgekit.platform import machine_summary
    from edgekit.profile.timer import LatencyStats
    from edgekit.runners.onnxrt import OnnxrtRunner

    x = np.random.default_rng(0).standard_normal((1, 3, a.size, a.size)).astype(np.float32)
    with OnnxrtRunner(path, threads=a.threads) as r:
        sess, names = r.session, [o.name for o in r.session.get_outputs()]
        raw_ns, runner_ns, runner_infer_ns = [], [], []
        for _ in range(10):  # warm-up both paths
            sess.run(names, {"input": x})
            r.infer({"input": x})
        for _ in range(a.rounds):
            for _ in range(a.iters):
                t0 = time.perf_counter_ns()
                sess.run(names, {"input": x})
                raw_ns.append(time.perf_counter_ns() - t0)
            for _ in range(a.iters):
                t0 = time.perf_counter_ns()
                r.infer({"input": x})
                runner_ns.append(time.perf_counter_ns() - t0)
                runner_infer_ns.append(r.last_infer_ns)
    raw, full, inner = (LatencyStats.from_ns(v) for v in (raw_ns, runner_ns, runner_infer_ns))
    result = {
        "benchmark": "runner_overhead", "model": f"resnet18 {a.size}x{a.size} (random weights)",
        "raw_session_run_ms": raw.as_dict(), "runner_infer_call_ms": full.as_dict(),
        "runner_timed_region_ms": inner.as_dict(),
        "p50_overhead_pct": round(100 * (full.p50_ms / raw.p50_ms - 1), 3),
        "command": " ".join(sys.argv), "loadavg": os.getloadavg(), "machine": machine_summary(),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"raw session.run p50 {raw.p50_ms:.3f} ms, runner.infer p50 {full.p50_ms:.3f} ms: "
          f"{result['p50_overhead_pct']:+.2f}% (n={raw.n} each, {a.rounds} interleaved rounds); {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
