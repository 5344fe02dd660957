"""The prepared GPU check runs anywhere: here (no CUDA) every GPU check is reported as failed with the
fix in its message, the CPU reference part works, and the JSON is written."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_reports_every_check(tmp_path):
    r = subprocess.run([sys.executable, "benchmarks/gpu_check.py", str(tmp_path), "--iters", "5"], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    names = {"torch_cuda_fp32", "torch_cuda_fp16", "tinygrad_cuda_copy", "tinygrad_cuda_mapped",
             "tinygrad_cuda_managed", "cuda_memory_mapped", "cuda_memory_managed", "cuda_memory_device"}
    assert names <= set(res)
    assert res["latency_ms"]["onnxrt cpu fp32"]["n"] >= 5
    if not res["torch_cuda_fp32"]["ok"]:  # this machine: no GPU
        assert r.returncode == 1 and "EdgekitError" in res["torch_cuda_fp32"]["error"]
        assert all("Traceback" not in res[n]["error"] for n in names)
    else:  # a GPU machine: parity against the CPU
        assert res["torch_cuda_fp32"]["parity_vs_cpu"]["top1_agreement"] == 1.0
