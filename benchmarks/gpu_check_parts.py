"""The checks of benchmarks/gpu_check.py (see its docstring). Each function returns what it found or raises;
heavy imports (torch, tinygrad, cuda-python) happen inside them, so a missing package skips only its checks."""
from __future__ import annotations

import argparse
import importlib.util
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit.compare import compare_logits
from edgekit.errors import EdgekitError

N_INPUTS = 16
MIB = 2**20


class SkipCheck(Exception):
    """Raised by a check that cannot run here for a reason that is not a failure."""


def has_module(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class Checks:
    """Runs named checks independently, against a time budget, and keeps what each found."""

    def __init__(self, budget_s: float, missing: dict[str, str]) -> None:
        self.missing = missing  # module -> why its checks are skipped without it
        self.results: dict[str, dict[str, Any]] = {}
        self.latency: dict[str, dict[str, Any]] = {}
        self.deadline = time.monotonic() + budget_s

    def run(self, name: str, fn: Callable[[], dict], needs: tuple[str, ...] = ()) -> None:
        absent = [m for m in needs if not has_module(m)]
        if absent:
            return self._done(name, {"ok": None, "skipped": "; ".join(self.missing.get(m, m) for m in absent)}, 0.0)
        if time.monotonic() > self.deadline:
            return self._done(name, {"ok": None, "skipped": "time budget spent (--budget-s)"}, 0.0)
        t0 = time.perf_counter()
        try:
            result = {"ok": True, **fn()}
        except SkipCheck as e:
            result = {"ok": None, "skipped": str(e)}
        except Exception as e:  # one failing check never hides the others; the JSON keeps how it failed
            result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            if not isinstance(e, EdgekitError):
                result["trace"] = traceback.format_exc()[-2000:]
        self._done(name, result, time.perf_counter() - t0)

    def _done(self, name: str, result: dict, seconds: float) -> None:
        result["seconds"] = round(seconds, 2)
        self.results[name] = result
        state = {True: "ok", False: "FAILED", None: "skipped"}[result["ok"]]
        detail = result.get("error") or result.get("skipped") or ""
        print(f"[{state}] {name} ({result['seconds']} s){': ' + detail if detail else ''}", flush=True)

    def table(self) -> str:
        rows = ["| check | status | s | max_rel vs cpu | top-1 | p50 ms | p90 ms |", "|---|---|---|---|---|---|---|"]
        for name, r in self.results.items():
            p = r.get("parity") or {}
            lat = self.latency.get(name) or {}
            state = {True: "ok", False: "FAILED", None: "skipped"}[r["ok"]]
            rows.append(f"| {name} | {state} | {r['seconds']} | " + (f"{p['max_rel']:.1e}" if p else "-") + " | "
                        + (f"{p['top1_agreement']:.0%}" if p else "-") + " | "
                        + (f"{lat['p50_ms']:.3f} | {lat['p90_ms']:.3f} |" if lat else "- | - |"))
        return "\n".join(rows)


class Model:
    """The ONNX file, its input/output names and shape, and torch at a device and precision."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.model_dir = Path(args.model_dir) if args.model_dir else None
        if self.model_dir is None:
            import gpu_check_model as g

            self.weights = g.weights(0)
            self.onnx = tmp / "gpu_check.onnx"
            self.onnx.write_bytes(g.onnx_bytes(self.weights))
            self.input, self.output, shape = g.INPUT, g.OUTPUT, g.SHAPE
        else:
            from edgekit.manifest import Manifest

            m = Manifest.load(self.model_dir)
            self.onnx = m.artifact_path(m.find_artifact("onnxrt", "fp32"))
            self.input, self.output, shape = m.input.name, m.outputs[0].name, tuple(m.input.shape)
            shape = tuple(1 if isinstance(d, str) else d for d in shape)
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((N_INPUTS, *shape[1:])).astype(np.float32)[:, None]  # N feeds of batch 1
        self.cache = tmp / "tinygrad_cache"

    def torch_logits(self, device: str, precision: str, iters: int) -> tuple[np.ndarray, dict]:
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise EdgekitError(f"torch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is False); "
                               "a CUDA build of torch and an NVIDIA driver are needed")
        if self.model_dir is not None:
            from edgekit.runners import load_runner

            with load_runner(self.model_dir, "torch", device=device, precision=precision) as r:
                return feed_all(r, self), time_runner(r, self, iters)
        import gpu_check_model as g

        net = g.torch_module(self.weights).to(device)
        dtype = torch.float16 if precision == "fp16" else torch.float32
        net = net.to(dtype)

        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                y = net(torch.from_numpy(x).to(device, dtype))
                return y.float().cpu().numpy()

        got = np.concatenate([run(x) for x in self.x])
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        return got, time_calls(lambda: run(self.x[0]), sync, iters)


def feed_all(runner: Any, model: Model) -> np.ndarray:
    return np.concatenate([runner.infer({model.input: x})[model.output].astype(np.float32) for x in model.x])


def time_runner(runner: Any, model: Model, iters: int) -> dict:
    from edgekit.profile.bench import time_runner as timed

    return timed(runner, {model.input: model.x[0]}, warmup=10, iters=iters).as_dict()


def time_calls(call: Callable[[], Any], sync: Callable[[], None], iters: int) -> dict:
    from edgekit.profile.timer import LatencyStats

    for _ in range(10):
        call()
    ns = []
    for _ in range(iters):
        t0 = time.perf_counter_ns()
        call()
        sync()
        ns.append(time.perf_counter_ns() - t0)
    return LatencyStats.from_ns(ns).as_dict()


def parity(ref: np.ndarray, got: np.ndarray, max_rel: float, min_top1: float = 1.0) -> dict:
    r = compare_logits(ref, got)
    if r["max_rel"] > max_rel or r["top1_agreement"] < min_top1:
        raise EdgekitError(f"disagrees with the CPU: max error {r['max_rel']:.2e} of the logits' scale (allowed "
                           f"{max_rel:.0e}), top-1 agreement {r['top1_agreement']:.0%}")
    return r


def run_all(checks: Any, args: argparse.Namespace, tmp: Path) -> dict:
    model = Model(args, tmp)
    ref: dict[str, np.ndarray] = {}

    def reference() -> dict:
        from edgekit.runners.onnxrt import OnnxrtRunner

        with OnnxrtRunner(model.onnx, threads=1) as r:
            ref["cpu"] = feed_all(r, model)
            checks.latency["reference_cpu"] = time_runner(r, model, args.iters)  # onnxrt cpu fp32
        if not has_module("torch"):
            return {"reference": "onnxrt cpu"}
        torch_cpu, _ = model.torch_logits("cpu", "fp32", 1)
        return {"reference": "onnxrt cpu", "parity": parity(ref["cpu"], torch_cpu, 1e-4), "checked": "torch cpu"}

    checks.run("reference_cpu", reference, needs=("onnxruntime",))
    if "cpu" not in ref:
        return {"model": str(model.onnx)}  # nothing to compare against

    for precision, tol, top1 in (("fp32", 1e-3, 1.0), ("fp16", 2e-2, 0.9)):
        def torch_cuda(precision=precision, tol=tol, top1=top1) -> dict:
            got, lat = model.torch_logits("cuda", precision, args.iters)
            checks.latency[f"torch_cuda_{precision}"] = lat
            return {"parity": parity(ref["cpu"], got, tol, top1)}
        checks.run(f"torch_cuda_{precision}", torch_cuda, needs=("torch",))

    for memory in ("copy", "mapped", "managed", "auto"):
        checks.run(f"tinygrad_cuda_{memory}", lambda memory=memory: tinygrad_cuda(model, ref["cpu"], memory, checks,
                                                                                  args.iters), needs=("tinygrad",))
    for mode in ("mapped", "managed", "device"):
        checks.run(f"cuda_memory_{mode}", lambda mode=mode: memory_round_trip(mode))
    checks.run("cuda_context", lambda: context_restored(model), needs=("tinygrad", "cuda.bindings"))
    checks.run("onnxrt_cuda", lambda: onnxrt_cuda(model, ref["cpu"], checks, args.iters), needs=("onnxruntime",))
    return {"model": str(model.onnx) if model.model_dir else "gpu_check_model (built-in small CNN)"}


def tinygrad_cuda(model: Model, ref: np.ndarray, memory: str, checks: Any, iters: int,
                  open_runner: Callable[[], Any] | None = None) -> dict:
    from edgekit.runners.tinygrad import TinygradRunner

    runner = open_runner() if open_runner else TinygradRunner(model.onnx, device="cuda", memory=memory,
                                                             cache_dir=model.cache)
    with runner as r:
        got = feed_all(r, model)
        result = {"parity": parity(ref, got, 1e-3), "info": r.info}
        if r.info["memory"] != "copy":  # the frame written straight into the buffer the GPU reads
            views = r.input_views()
            views[model.input][:] = model.x[3]
            again = r.infer(views)[model.output]
            result["input_views_equal"] = bool(np.array_equal(again, got[3:4]))
            if not result["input_views_equal"]:
                raise EdgekitError("writing the input through input_views() gave other logits than infer(x)")
        checks.latency[f"tinygrad_cuda_{memory}"] = time_runner(r, model, iters)
    return result


def memory_round_trip(mode: str, api: Any = None, kernel_device: str = "CUDA") -> dict:
    """Host writes -> the GPU copies the buffer out (reads it) -> the GPU copies it back in (writes it) ->
    the host reads; then a tinygrad kernel reads the buffer in place, when tinygrad is here."""
    from edgekit.runners.cuda_memory import CudaBuffer, Stream, load_cuda_api

    api = api or load_cuda_api()
    api.set_device(0)
    free, total = api.mem_info()
    nbytes = min(16 * MIB, free // 8) // 4 * 4  # managed memory may be paged in whole: stay far below free
    n = nbytes // 4
    stream = Stream(api)
    buf = CudaBuffer(api, mode, nbytes)
    scratch = CudaBuffer(api, "device", nbytes)
    try:
        want = np.arange(n, dtype=np.float32)
        buf.view((n,), np.float32)[:] = want
        buf.upload(stream)
        api.dtod_async(scratch.device, buf.device, nbytes, stream.raw)  # the GPU reads what the host wrote
        stream.synchronize()
        buf.view((n,), np.float32)[:] = 0
        buf.upload(stream)
        api.dtod_async(buf.device, scratch.device, nbytes, stream.raw)  # the GPU writes; the host reads it
        buf.download(stream)
        stream.synchronize()
        result = {"mode": mode, "bytes": nbytes, "free_bytes": free, "total_bytes": total, "api": api.name,
                  "round_trip_equal": bool(np.array_equal(buf.view((n,), np.float32), want))}
        if not result["round_trip_equal"]:
            raise EdgekitError(f"{mode} buffer: what the host read back differs from what it wrote")
        if mode != "device" and has_module("tinygrad"):
            result["tinygrad_kernel_reads_in_place"] = _tinygrad_reads(buf.device, want, kernel_device)
        return result
    finally:
        buf.close()
        scratch.close()
        stream.close()


def _tinygrad_reads(device_ptr: int, want: np.ndarray, device: str = "CUDA") -> bool:
    import contextlib

    from tinygrad import Device, Tensor, dtypes

    from edgekit.runners.cuda_context import KeepCurrentContext, TinygradCudaDriver

    with KeepCurrentContext(TinygradCudaDriver()) if device == "CUDA" else contextlib.nullcontext():
        Device[device]
        doubled = (Tensor.from_blob(device_ptr, want.shape, dtype=dtypes.float32, device=device) * 2).numpy()
    if not np.array_equal(doubled, 2 * want):
        raise EdgekitError("a tinygrad kernel reading the buffer through its device pointer got other values")
    return True


def _current(drv: Any) -> Any:
    err, ctx = drv.cuCtxGetCurrent()
    if err != drv.CUresult.CUDA_SUCCESS:
        raise EdgekitError(f"cuCtxGetCurrent failed: {err}")
    return ctx


def context_restored(model: Model) -> dict:
    """cuda-python's runtime makes the primary context current (as TensorRT does); a raw tinygrad op leaves
    tinygrad's own context current; edgekit's tinygrad runner puts the primary one back after load, infer
    and close; then cuda-python works on a stream made before, as a TensorRT runner would on the next frame."""
    from cuda.bindings import driver as drv

    from edgekit.runners.cuda_memory import CudaBuffer, Stream, load_cuda_api
    from edgekit.runners.tinygrad import TinygradRunner

    api = load_cuda_api("cuda-python")
    api.set_device(0)
    api.rt.cudaFree(0)  # the runtime makes the primary context current on this thread
    primary = _current(drv)
    stream, buf = Stream(api), CudaBuffer(api, "device", MIB)
    try:  # (from here on, the primary context is made current again however the check ends)
        from tinygrad import Tensor

        (Tensor.ones(1024, device="CUDA") * 2).realize().numpy()  # arange takes no device in 0.14
        after_raw = _current(drv)
        drv.cuCtxSetCurrent(primary)
        seen = {}
        r = TinygradRunner(model.onnx, device="cuda", memory="copy", cache_dir=model.cache)
        r.load()
        seen["after_load"] = int(_current(drv))
        r.infer({model.input: model.x[0]})
        seen["after_infer"] = int(_current(drv))
        r.close()
        seen["after_close"] = int(_current(drv))
        buf.host[:] = 7
        buf.upload(stream)
        stream.synchronize()  # the upload is asynchronous from pinned memory: let it read the 7s first
        buf.host[:] = 0
        buf.download(stream)
        stream.synchronize()
        result = {"primary_context": hex(int(primary)), "after_raw_tinygrad": hex(int(after_raw)),
                  "tinygrad_leaves_its_own_context_current": int(after_raw) != int(primary),
                  **{k: hex(v) for k, v in seen.items()},
                  "cuda_python_stream_after_tinygrad": bool((buf.host == 7).all())}
        wrong = [k for k, v in seen.items() if v != int(primary)]
        if wrong or not result["cuda_python_stream_after_tinygrad"]:
            raise EdgekitError(f"the primary context was not current {', '.join(wrong) or 'for cuda-python'}: {result}")
        return result
    finally:
        drv.cuCtxSetCurrent(primary)
        buf.close()
        stream.close()


def onnxrt_cuda(model: Model, ref: np.ndarray, checks: Any, iters: int) -> dict:
    import onnxruntime as ort

    from edgekit.runners.onnxrt import OnnxrtRunner

    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        raise SkipCheck(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider ({', '.join(providers)}): "
                        "install onnxruntime-gpu for this CUDA to check it")
    with OnnxrtRunner(model.onnx, device="cuda") as r:
        got = feed_all(r, model)
        checks.latency["onnxrt_cuda"] = time_runner(r, model, iters)
        return {"parity": parity(ref, got, 1e-3), "providers": r.providers}

