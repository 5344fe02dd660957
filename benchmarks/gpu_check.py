#!/usr/bin/env python3
"""The prepared GPU check: one run on an NVIDIA machine with PyTorch + CUDA (x86_64 or Jetson), no internet.

    python benchmarks/gpu_check.py OUT_DIR [--model-dir DIR] [--iters 200]

It builds a small classifier (resnet18 at 64 px, random weights, exported to ONNX) unless --model-dir is
given, then checks, each against a CPU reference on the same inputs:
  1. the torch runner on CUDA at fp32 and fp16,
  2. the tinygrad runner on CUDA (DEV=CUDA), with tinygrad's own copy and with zero-copy mapped/managed inputs,
  3. the CUDA memory module: mapped, managed and device buffers through a write -> GPU -> read round trip
     (16 MiB each; never more managed memory than the card has free),
and prints a latency table last. Results go to OUT_DIR/gpu_check.json. Missing pieces are reported as
skipped, never fatal; the script should finish in well under 8 minutes.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_model_dir(root: Path) -> Path:
    import torch

    from edgekit.export.onnx import OnnxExportConfig, onnx_from_torch
    from edgekit.manifest import InputSpec, Manifest, TensorSpec
    from edgekit.train.models import build_model

    torch.manual_seed(0)
    model, _ = build_model("resnet18", 10, "none")
    d = root / "resnet18_64"
    d.mkdir(parents=True)
    torch.save(model.state_dict(), d / "model.pt")
    m = Manifest(name="gpu_check", task="classify", labels=[str(i) for i in range(10)],
                 input=InputSpec("input", [1, 3, 64, 64]), outputs=[TensorSpec("logits", [1, 10])],
                 source={"arch": "resnet18"})
    m.save(d)
    m.add_artifact("torch", "model.pt", "fp32")
    m.save(d)
    onnx_from_torch(d, OnnxExportConfig(parity_images=0))
    return d


def parity(ref: np.ndarray, got: np.ndarray) -> dict:
    from edgekit.compare import compare_logits

    return compare_logits(ref, got)


def timed(runner, x, iters) -> dict:
    from edgekit.profile.bench import time_runner

    return time_runner(runner, {"input": x}, warmup=20, iters=iters).as_dict()


def check(name: str, results: dict, fn) -> None:
    t0 = time.perf_counter()
    try:
        results[name] = {"ok": True, **fn()}
    except Exception as e:  # one failing check never hides the others
        results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-1500:]}
    results[name]["seconds"] = round(time.perf_counter() - t0, 2)
    print(f"[{'ok' if results[name]['ok'] else 'FAILED'}] {name} ({results[name]['seconds']} s)"
          + ("" if results[name]["ok"] else f": {results[name]['error']}"), flush=True)


def memory_round_trip(mode: str) -> dict:
    from tinygrad import Tensor, dtypes

    from edgekit.runners.cuda_memory import CudaBuffer, Stream, load_cuda_api

    api = load_cuda_api()
    n = 4 * 2**20  # float32 elements: 16 MiB
    buf, out = CudaBuffer(api, mode, n * 4), CudaBuffer(api, "device", n * 4)
    stream = Stream(api)
    try:
        src = buf.view((n,), np.float32)
        src[:] = np.arange(n, dtype=np.float32)
        buf.upload(stream)
        stream.synchronize()
        # the GPU reads the buffer (through its device pointer) and writes 2x into a device buffer
        doubled = (Tensor.from_blob(buf.device, (n,), dtype=dtypes.float32, device="CUDA") * 2).realize()
        got = doubled.numpy()
        ok = bool(np.array_equal(got, 2 * np.arange(n, dtype=np.float32)))
        return {"mode": mode, "bytes": n * 4, "round_trip_equal": ok}
    finally:
        buf.close()
        out.close()
        stream.close()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="edgekit-gpu-check-") as tmp:  # the built model never outlives the run
        return run_checks(Path(tmp))


def run_checks(tmp: Path) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="folder for gpu_check.json")
    ap.add_argument("--model-dir", help="an edgekit model directory with model.pt and model.onnx")
    ap.add_argument("--iters", type=int, default=200)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    from edgekit.platform import machine_summary
    from edgekit.runners import load_runner

    results: dict = {"machine": machine_summary()}
    model_dir = Path(a.model_dir) if a.model_dir else build_model_dir(tmp)
    x = np.random.default_rng(0).standard_normal((16, 3, 64, 64)).astype(np.float32)
    with load_runner(model_dir, "torch", device="cpu") as cpu:
        ref = np.concatenate([cpu.infer({"input": x[i:i + 1]})["logits"] for i in range(len(x))])
    with load_runner(model_dir, "onnxrt") as ort:
        ort_ref = np.concatenate([ort.infer({"input": x[i:i + 1]})["logits"] for i in range(len(x))])
    lat: dict = {}

    def torch_cuda(precision: str):
        def run():
            from edgekit.runners.torch import TorchRunner
            from edgekit.manifest import Manifest

            m = Manifest.load(model_dir)
            with TorchRunner(model_dir / "model.pt", device="cuda", precision=precision, manifest=m) as r:
                got = np.concatenate([r.infer({"input": x[i:i + 1]})["logits"] for i in range(len(x))])
                lat[f"torch cuda {precision}"] = timed(r, x[:1], a.iters)
            return {"parity_vs_cpu": parity(ref, got)}
        return run

    def tinygrad_cuda(memory: str):
        def run():
            with load_runner(model_dir, "tinygrad", device="cuda", memory=memory) as r:
                got = np.concatenate([r.infer({"input": x[i:i + 1]})["logits"] for i in range(len(x))])
                lat[f"tinygrad cuda {r.info['memory']}"] = timed(r, x[:1], a.iters)
                return {"parity_vs_onnxrt_cpu": parity(ort_ref, got), "info": r.info}
        return run

    check("torch_cuda_fp32", results, torch_cuda("fp32"))
    check("torch_cuda_fp16", results, torch_cuda("fp16"))
    for memory in ("copy", "mapped", "managed"):
        check(f"tinygrad_cuda_{memory}", results, tinygrad_cuda(memory))
    for mode in ("mapped", "managed", "device"):
        check(f"cuda_memory_{mode}", results, lambda mode=mode: memory_round_trip(mode))
    with load_runner(model_dir, "onnxrt") as ort:
        lat["onnxrt cpu fp32"] = timed(ort, x[:1], a.iters)
    results["latency_ms"] = lat
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2, default=str))
    print("\n| runner | p50 ms | p90 ms | p99 ms | n |\n|---|---|---|---|---|")
    for k, v in lat.items():
        print(f"| {k} | {v['p50_ms']:.3f} | {v['p90_ms']:.3f} | {v['p99_ms']:.3f} | {v['n']} |")
    print(f"\nresults: {out / 'gpu_check.json'}")
    return 0 if all(r.get("ok") for k, r in results.items() if isinstance(r, dict) and "ok" in r) else 1


if __name__ == "__main__":
    sys.exit(main())
