"""The prepared GPU check runs anywhere: here (no CUDA) every GPU check is reported as failed with the fix in
its message, the CPU reference works, and the JSON is written; what the lead's GPU machine lacks
(torchvision, onnx, onnxslim, ultralytics, matplotlib, pycuda) is never needed. Its checks' own logic
(parity, zero-copy input views, the memory round trip, skips, independence) runs here with the CPU
standing in for the GPU: host memory for CUDA allocations, tinygrad's CPU device for its CUDA one."""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check_model  # noqa: E402
import gpu_check_parts as parts  # noqa: E402

ABSENT_ON_THE_GPU_MACHINE = ("torchvision", "onnx", "onnxslim", "ultralytics", "matplotlib", "pycuda")
needs_clang = pytest.mark.skipif(shutil.which(os.environ.get("CC") or "clang") is None,
                                 reason="tinygrad's CPU backend needs clang: apt-get install clang")


@pytest.mark.slow
def test_gpu_check_reports_every_check(tmp_path):
    """Run as the lead runs it (repo root, PYTHONPATH=., edgekit not installed), with the packages the GPU
    machine lacks hidden."""
    code = textwrap.dedent(f"""
        import runpy, sys
        for m in {ABSENT_ON_THE_GPU_MACHINE!r}:
            sys.modules[m] = None
        sys.argv = ["benchmarks/gpu_check.py", {str(tmp_path)!r}, "--iters", "5"]
        runpy.run_path("benchmarks/gpu_check.py", run_name="__main__")
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": "."})
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    names = {"reference_cpu", "torch_cuda_fp32", "torch_cuda_fp16", "tinygrad_cuda_copy", "tinygrad_cuda_mapped",
             "tinygrad_cuda_managed", "tinygrad_cuda_auto", "cuda_memory_mapped", "cuda_memory_managed",
             "cuda_memory_device", "cuda_context", "onnxrt_cuda"}
    assert names <= set(res), r.stderr[-2000:]
    assert res["reference_cpu"]["ok"] and res["reference_cpu"]["parity"]["max_rel"] <= 1e-4  # ORT == torch (CPU)
    assert res["latency_ms"]["reference_cpu"]["n"] >= 5
    assert "| check | status |" in r.stdout  # the table, last
    if not res["torch_cuda_fp32"]["ok"]:  # this machine: no GPU
        assert r.returncode == 1 and "EdgekitError" in res["torch_cuda_fp32"]["error"]
        assert all("Traceback" not in (res[n].get("error") or "") for n in names)
    else:  # a GPU machine: parity against the CPU
        assert res["torch_cuda_fp32"]["parity"]["top1_agreement"] == 1.0


def test_requirements_say_what_to_install_offline():
    r = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--requirements"], cwd=REPO, capture_output=True,
                       text=True, timeout=120, env={**os.environ, "PYTHONPATH": "."})
    assert r.returncode == 0, r.stderr
    for text in ("tinygrad==0.14.0", "cuda-python", "onnxruntime", "torch", "--no-index --find-links wheels",
                 "pip download", "NVRTC"):
        assert text in r.stdout


def test_the_hand_written_onnx_is_the_torch_network():
    import onnxruntime as ort
    import torch

    w = gpu_check_model.weights(0)
    x = np.random.default_rng(1).standard_normal(gpu_check_model.SHAPE).astype(np.float32)
    got = ort.InferenceSession(gpu_check_model.onnx_bytes(w), providers=["CPUExecutionProvider"]).run(None, {
        "input": x})[0]
    with torch.no_grad():
        want = gpu_check_model.torch_module(w)(torch.from_numpy(x)).numpy()
    assert got.shape == (1, 10) and np.abs(want).max() > 0.1
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


# ---- the checks' logic, with the CPU standing in for the GPU -------------------------------------------
class HostCuda:
    """The CUDA adapter on host memory: device pointers are host addresses, copies are memmoves."""

    name = "host stand-in"

    def __init__(self) -> None:
        self.live: dict[int, ctypes.Array] = {}

    def set_device(self, n):
        pass

    def mem_info(self):
        return 64 * 2**20, 128 * 2**20

    def _alloc(self, nbytes):
        mem = ctypes.create_string_buffer(nbytes)
        self.live[ctypes.addressof(mem)] = mem
        return ctypes.addressof(mem)

    def host_alloc(self, nbytes, mapped):
        return self._alloc(nbytes)

    managed_alloc = device_alloc = _alloc

    def host_device_pointer(self, ptr):
        return ptr

    def host_free(self, ptr):
        del self.live[ptr]

    device_free = host_free

    def htod_async(self, dptr, host, stream):
        ctypes.memmove(dptr, host.ctypes.data, host.nbytes)

    def dtoh_async(self, host, dptr, stream):
        ctypes.memmove(host.ctypes.data, dptr, host.nbytes)

    def dtod_async(self, dst, src, nbytes, stream):
        ctypes.memmove(dst, src, nbytes)

    def stream_create(self):
        return "stream"

    def stream_handle(self, s):
        return 1

    def stream_sync(self, s):
        pass

    def stream_destroy(self, s):
        pass


@needs_clang
@pytest.mark.parametrize("mode", ["mapped", "managed", "device"])
def test_memory_round_trip_logic(mode):
    api = HostCuda()
    r = parts.memory_round_trip(mode, api=api, kernel_device="CPU")
    assert r["round_trip_equal"] and r["bytes"] == 8 * 2**20  # an eighth of the free memory, at most 16 MiB
    assert r.get("tinygrad_kernel_reads_in_place") == (True if mode != "device" else None)
    assert api.live == {}  # every buffer freed


@needs_clang
def test_tinygrad_check_logic_with_zero_copy_inputs(tmp_path):
    from edgekit.runners.onnxrt import OnnxrtRunner
    from edgekit.runners.tinygrad import TinygradRunner

    model = parts.Model(argparse.Namespace(model_dir=None), tmp_path)
    with OnnxrtRunner(model.onnx) as r:
        ref = parts.feed_all(r, model)

    def mapped_on_the_cpu():
        r = TinygradRunner(model.onnx, cache_dir=model.cache)
        r._api, r._mode = HostCuda(), "mapped"
        return r

    checks = parts.Checks(600, {})
    checks.run("tinygrad_cuda_mapped", lambda: parts.tinygrad_cuda(model, ref, "mapped", checks, 5, mapped_on_the_cpu))
    res = checks.results["tinygrad_cuda_mapped"]
    assert res["ok"], res
    assert res["input_views_equal"] and res["parity"]["max_rel"] <= 1e-5 and res["info"]["memory"] == "mapped"
    assert checks.latency["tinygrad_cuda_mapped"]["n"] == 5
    with pytest.raises(parts.EdgekitError, match="disagrees with the CPU"):
        parts.parity(ref, ref + 0.1 * np.abs(ref).max(), 1e-3)


def test_checks_are_independent_skipped_with_reasons_and_budgeted(capsys):
    checks = parts.Checks(600, {"not_a_module_here": "wheel X is not installed (needed for Y)"})
    checks.run("fails", lambda: 1 / 0)
    checks.run("edgekit_error", lambda: (_ for _ in ()).throw(parts.EdgekitError("CUDA is not usable here")))
    checks.run("missing", lambda: {}, needs=("not_a_module_here",))
    checks.run("skips", lambda: (_ for _ in ()).throw(parts.SkipCheck("no CUDA EP")))
    checks.run("works", lambda: {"parity": {"max_rel": 1e-7, "top1_agreement": 1.0}})
    res = checks.results
    assert res["fails"]["ok"] is False and "ZeroDivisionError" in res["fails"]["error"] and "trace" in res["fails"]
    assert res["edgekit_error"]["ok"] is False and "trace" not in res["edgekit_error"]  # a user error: no traceback
    assert res["missing"] == {"ok": None, "skipped": "wheel X is not installed (needed for Y)", "seconds": 0.0}
    assert res["skips"]["ok"] is None and res["works"]["ok"] is True
    late = parts.Checks(-1, {})
    late.run("late", lambda: {})
    assert late.results["late"]["skipped"] == "time budget spent (--budget-s)"
    table = checks.table()
    assert "| works | ok |" in table and "| fails | FAILED |" in table and "| missing | skipped |" in table
