#!/usr/bin/env python3
"""The prepared GPU check: one call on any machine with an NVIDIA GPU (a datacenter card or a Jetson), no
internet, from the repository root, without installing edgekit:

    PYTHONPATH=. python3 benchmarks/gpu_check.py OUT_DIR [--iters 100] [--budget-s 420] [--model-dir DIR]
    python3 benchmarks/gpu_check.py --requirements      # what it needs beyond the base install, and how

Every check is independent (one failing never stops the others), compares against the CPU on the same
inputs, and is either ok, FAILED (with the error) or skipped (with the reason, e.g. a package missing):
  reference_cpu          the model file: ONNX Runtime CPU == torch CPU (the reference for the rest)
  torch_cuda_fp32/fp16   torch on CUDA
  tinygrad_cuda_<mode>   edgekit's tinygrad runner on CUDA: copy (tinygrad's own copies), mapped and
                         managed (zero-copy inputs from edgekit.runners.cuda_memory), auto (what it picks)
  cuda_memory_<mode>     edgekit.runners.cuda_memory buffers (mapped, managed, device): host write -> GPU
                         copy out -> GPU copy back in -> host read, and a tinygrad kernel reading the buffer
                         in place; managed memory is never larger than an eighth of the free memory
  cuda_context           tinygrad vs cuda-python's primary context (the one TensorRT uses): tinygrad
                         leaves its own context current; edgekit's runner restores the caller's
  onnxrt_cuda            ONNX Runtime's CUDA execution provider, when this onnxruntime has it
The model is a small CNN written as ONNX by benchmarks/gpu_check_model.py (no onnx / torchvision needed),
or the model directory given with --model-dir. Results: OUT_DIR/gpu_check.json (with the machine facts);
a table is printed last. Checks still waiting when --budget-s has passed are skipped, so the whole run
stays under 8 minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]  # run from anywhere, edgekit not installed

from gpu_check_parts import Checks, has_module as _has, run_all  # noqa: E402  (after the path)

# Python packages beyond numpy + pyyaml (edgekit's base): module -> (pip name, what needs it)
REQUIREMENTS = {
    "onnxruntime": ("onnxruntime", "the CPU reference and onnxrt_cuda (onnxruntime-gpu for the CUDA EP)"),
    "torch": ("torch", "torch_cuda_* and reference_cpu (a CUDA build of torch)"),
    "tinygrad": ("tinygrad==0.14.0", "tinygrad_cuda_*, the tinygrad kernel of cuda_memory_*, cuda_context"),
    "cuda.bindings": ("cuda-python (or cuda-bindings)", "cuda_memory_*, cuda_context, tinygrad mapped/managed"),
}
OFFLINE = """Offline install from wheel files (same Python version and CPU architecture on both machines):
  on a machine with internet (pip resolves the dependencies: tinygrad has none):
    python3 -m pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \\
        -d wheels tinygrad==0.14.0 cuda-bindings
  copy `wheels/` over, then on the GPU machine:
    python3 -m pip install --no-index --find-links wheels tinygrad==0.14.0 cuda-bindings
  tinygrad and cuda-bindings 13 need Python >= 3.11. Jetson (JetPack 6: Python 3.10, CUDA 12): use
  --platform manylinux2014_aarch64 --python-version 3.10 and 'cuda-python<13'; the tinygrad checks are
  skipped there unless a Python >= 3.11 runs this script.
tinygrad compiles CUDA kernels with NVRTC: a CUDA toolkit's libnvrtc, or the nvidia-cuda-nvrtc wheel that a
CUDA build of torch already installed (this script points tinygrad at it: NVRTC_PATH)."""


def requirements_text() -> str:
    lines = ["Python packages the GPU check uses beyond numpy + pyyaml (a missing one skips its checks):"]
    for mod, (pip, why) in REQUIREMENTS.items():
        state = "present" if _has(mod) else "MISSING"
        lines.append(f"  {pip:32s} {state:8s} {why}")
    return "\n".join(lines + ["", OFFLINE])


def point_tinygrad_at_nvrtc() -> str | None:
    """tinygrad looks for libnvrtc in the system paths only; a pip-installed CUDA (torch's nvidia-* wheels)
    keeps it under site-packages/nvidia/. Use that one unless NVRTC_PATH is set."""
    if os.environ.get("NVRTC_PATH"):
        return os.environ["NVRTC_PATH"]
    for entry in sys.path:
        base = Path(entry or ".") / "nvidia"
        if base.is_dir():
            found = sorted(p for p in base.glob("**/lib/libnvrtc.so*") if "builtins" not in p.name)
            if found:
                os.environ["NVRTC_PATH"] = str(found[-1])
                return str(found[-1])
    return None


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", nargs="?", help="folder for gpu_check.json")
    p.add_argument("--requirements", action="store_true", help="list the packages it needs and how to install "
                   "them offline, then exit")
    p.add_argument("--iters", type=int, default=100, help="timed calls per check (default: %(default)s)")
    p.add_argument("--budget-s", type=float, default=420, help="skip checks not started by then (default: %(default)s)")
    p.add_argument("--model-dir", help="an edgekit model directory (model.onnx; model.pt for the torch checks)")
    return p


def main(args: argparse.Namespace) -> int:
    if args.requirements:
        print(requirements_text())
        return 0
    if not args.out:
        print("gpu_check: give OUT_DIR (or --requirements)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgekit-gpu-check-") as tmp:  # built files never outlive the run
        checks = Checks(args.budget_s, {m: f"{pip} is not installed (needed for {why})"
                                        for m, (pip, why) in REQUIREMENTS.items()})
        nvrtc = point_tinygrad_at_nvrtc()
        try:
            facts = run_all(checks, args, Path(tmp))
        except Exception as e:  # the model could not be made or read: still write what is known
            facts = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
            print(f"FAILED before the checks: {facts['error']}", flush=True)
    from edgekit.platform import machine_summary

    result = {"script": "benchmarks/gpu_check.py", "argv": sys.argv[1:], "machine": machine_summary(),
              "packages": {pip: _has(mod) for mod, (pip, _) in REQUIREMENTS.items()}, "nvrtc": nvrtc, **facts,
              **checks.results, "latency_ms": checks.latency}
    from edgekit.fileio import atomic_write_json

    atomic_write_json(out / "gpu_check.json", json.loads(json.dumps(result, default=str)))
    print("\n" + checks.table())
    print(f"\nresults: {out / 'gpu_check.json'}")
    return 1 if "error" in facts or any(r["ok"] is False for r in checks.results.values()) else 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
