"""The shared CUDA memory module: the memory mode chosen per GPU type, the buffer bookkeeping of each mode
(driven by an in-process stand-in for the CUDA adapter that hands out real host memory, so what is
checked is edgekit's logic, not CUDA's), and the adapter's errors on a machine without a driver."""
from __future__ import annotations

import ctypes
import importlib.util
import sys

import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.runners import cuda_memory as cm
from edgekit.runners.cuda_memory import (CudaBuffer, DeviceInfo, Stream, default_memory_mode, host_array,
                                         load_cuda_api, resolve_memory_mode)

ORIN = DeviceInfo("Orin", 8, 7, integrated=True, can_map_host_memory=True, managed_memory=True)
H100 = DeviceInfo("NVIDIA H100 80GB HBM3", 9, 0, integrated=False, can_map_host_memory=True, managed_memory=True)
OLD_TEGRA = DeviceInfo("tegra", 5, 3, integrated=True, can_map_host_memory=False, managed_memory=True)
BARE = DeviceInfo("bare", 7, 5, integrated=False, can_map_host_memory=False, managed_memory=False)


# ---- memory mode -------------------------------------------------------------------------------

def test_default_memory_mode_follows_the_gpu_type():
    assert default_memory_mode(ORIN) == "mapped"  # Jetson: zero-copy
    assert default_memory_mode(H100) == "device"  # discrete: device buffers + async copies
    assert default_memory_mode(OLD_TEGRA) == "managed"
    assert default_memory_mode(BARE) == "device"
    assert ORIN.compute_capability == "8.7"


@pytest.mark.parametrize("asked, info, want", [
    (None, ORIN, "mapped"), ("auto", H100, "device"), ("", ORIN, "mapped"),
    ("managed", ORIN, "managed"), ("device", ORIN, "device"), ("mapped", H100, "mapped"),
])
def test_resolve_memory_mode(asked, info, want):
    assert resolve_memory_mode(asked, info) == want


@pytest.mark.parametrize("asked, info, expect", [
    ("zero-copy", ORIN, "unknown CUDA memory mode 'zero-copy'; choose from: auto, device, managed, mapped"),
    ("mapped", BARE, "cannot map host memory; use memory='device'"),
    ("managed", BARE, "has no managed memory"),
])
def test_unusable_memory_mode_is_an_edgekit_error(asked, info, expect):
    with pytest.raises(EdgekitError, match=expect):
        resolve_memory_mode(asked, info)


# ---- buffers -------------------------------------------------------------------------------------

class HostMemoryApi:
    """Stands in for the CUDA adapter: every allocation is real host memory (ctypes); a mapped buffer's
    'device pointer' is its host address, as on Jetson; copies are memmoves. Records every call."""

    def __init__(self) -> None:
        self.live: dict[int, ctypes.Array] = {}
        self.calls: list[tuple] = []

    def _alloc(self, kind: str, nbytes: int) -> int:
        mem = ctypes.create_string_buffer(nbytes)
        ptr = ctypes.addressof(mem)
        self.live[ptr] = mem
        self.calls.append((kind, nbytes))
        return ptr

    def host_alloc(self, nbytes, mapped):
        return self._alloc("host_alloc_mapped" if mapped else "host_alloc_pinned", nbytes)

    def host_device_pointer(self, ptr):
        return ptr

    def managed_alloc(self, nbytes):
        return self._alloc("managed_alloc", nbytes)

    def device_alloc(self, nbytes):
        return self._alloc("device_alloc", nbytes)

    def host_free(self, ptr):
        self.calls.append(("host_free",))
        del self.live[ptr]

    def device_free(self, ptr):
        self.calls.append(("device_free",))
        del self.live[ptr]

    def htod_async(self, dptr, host, stream):
        self.calls.append(("htod", host.nbytes, stream))
        ctypes.memmove(dptr, host.ctypes.data, host.nbytes)

    def dtoh_async(self, host, dptr, stream):
        self.calls.append(("dtoh", host.nbytes, stream))
        ctypes.memmove(host.ctypes.data, dptr, host.nbytes)

    def stream_create(self):
        return "stream-0"

    def stream_handle(self, s):
        return 1234

    def stream_sync(self, s):
        self.calls.append(("sync", s))

    def stream_destroy(self, s):
        self.calls.append(("stream_destroy", s))


def test_host_array_is_a_writable_view_without_copy():
    mem = ctypes.create_string_buffer(24)
    a = host_array(ctypes.addressof(mem), (2, 3), np.float32)
    a[:] = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert a.flags.writeable and a.ctypes.data == ctypes.addressof(mem)
    np.testing.assert_array_equal(np.frombuffer(mem.raw, np.float32), np.arange(6))


@pytest.mark.parametrize("mode, allocs", [
    ("mapped", ["host_alloc_mapped"]), ("managed", ["managed_alloc"]),
    ("device", ["host_alloc_pinned", "device_alloc"]),
])
def test_each_mode_allocates_and_frees_what_it_should(mode, allocs):
    api = HostMemoryApi()
    stream = Stream(api)
    buf = CudaBuffer(api, mode, 48)
    assert [c[0] for c in api.calls] == allocs and all(c[1] == 48 for c in api.calls)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.copyto(buf.view((3, 4), np.float32), x)
    buf.upload(stream, x.nbytes)
    device_side = host_array(buf.device, (3, 4), np.float32)
    np.testing.assert_array_equal(device_side, x)  # the GPU would see the input
    copies = [c for c in api.calls if c[0] in ("htod", "dtoh")]
    assert copies == ([("htod", 48, "stream-0")] if mode == "device" else [])  # zero-copy modes copy nothing
    device_side[:] = -x  # the GPU writes its output
    buf.download(stream)
    np.testing.assert_array_equal(buf.view((3, 4), np.float32), -x)
    buf.close()
    assert api.live == {} and buf.device == 0
    buf.close()  # twice is fine
    stream.close()
    assert ("stream_destroy", "stream-0") in api.calls and stream.handle == 1234


def test_partial_upload_and_oversized_view():
    api = HostMemoryApi()
    buf = CudaBuffer(api, "device", 64)
    buf.upload(Stream(api), 16)  # a batch smaller than the buffer's largest copies only its bytes
    assert ("htod", 16, "stream-0") in api.calls
    with pytest.raises(EdgekitError, match="needs 80 bytes; its buffer holds 64"):
        buf.view((20,), np.float32)
    with pytest.raises(EdgekitError, match="unknown CUDA memory mode 'pinned'"):
        CudaBuffer(api, "pinned", 8)
    buf.close()


# ---- the adapter -----------------------------------------------------------------------------------

HAVE_CUDA_PYTHON = importlib.util.find_spec("cuda") is not None


def _driver_present() -> bool:
    try:
        load_cuda_api()
        return True
    except EdgekitError:
        return False


@pytest.fixture(autouse=True)
def fresh_api_cache(monkeypatch):
    monkeypatch.setattr(cm, "_API", {})


@pytest.mark.skipif(not HAVE_CUDA_PYTHON, reason="cuda-python is not installed")
def test_no_driver_is_an_edgekit_error_that_says_what_is_missing():
    if _driver_present():
        pytest.skip("a CUDA driver is present on this machine")
    with pytest.raises(EdgekitError) as e:
        load_cuda_api()
    msg = str(e.value)
    assert msg.startswith("CUDA is not usable here: cudaGetDeviceCount failed: cudaError")
    assert "driver" in msg and "--device cpu" in msg


@pytest.mark.skipif(not HAVE_CUDA_PYTHON, reason="cuda-python is not installed")
def test_older_cuda_cudart_layout_is_used_when_cuda_bindings_is_absent(monkeypatch):
    """JetPack 6's cuda-python (< 12.6) has `from cuda import cudart`, not cuda.bindings."""
    if _driver_present():
        pytest.skip("a CUDA driver is present on this machine")
    from cuda.bindings import runtime

    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    monkeypatch.setitem(sys.modules, "cuda.cudart", runtime)  # the same API under the old name
    seen = []  # the layout load_cuda_api picks, without the driver call this machine cannot answer
    monkeypatch.setattr(cm.CudaPythonApi, "__init__", lambda self, rt, layout: seen.append((rt, layout)))
    api = load_cuda_api()
    assert seen == [(runtime, "cuda.cudart")] and isinstance(api, cm.CudaPythonApi)


def test_no_binding_at_all_names_both_installs(monkeypatch):
    for mod in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(EdgekitError) as e:
        load_cuda_api()
    msg = str(e.value)
    assert "tried cuda.bindings.runtime, cuda.cudart, pycuda" in msg
    assert "pip install 'cuda-python<13'" in msg and "pycuda" in msg
    with pytest.raises(EdgekitError, match="unknown CUDA binding 'cupy'"):
        load_cuda_api("cupy")


# ---- no driver: cuda-python raises instead of returning an error; pycuda takes over; pycuda's context ----
def _no_driver_call():
    """A real cuda-python call that must load libcuda: here (no driver) it raises, as cuda-python 12.x's
    runtime does with "Failed to dlopen libcuda.so.1" (13.x: DynamicLibNotFoundError)."""
    pytest.importorskip("cuda.bindings.driver", reason="cuda-python >= 12.6 is not installed")
    from cuda.bindings import driver

    try:
        driver.cuDeviceGetCount()
    except RuntimeError:
        return driver.cuDeviceGetCount
    pytest.skip("libcuda loads on this machine")


def _dlopen_fails():
    raise RuntimeError("Failed to dlopen libcuda.so.1")


@pytest.mark.skipif(not HAVE_CUDA_PYTHON, reason="cuda-python is not installed")
@pytest.mark.parametrize("call", ["real", "cuda-python 12.x"])
def test_cuda_python_without_libcuda_is_an_edgekit_error(monkeypatch, call):
    from cuda.bindings import runtime

    monkeypatch.setattr(runtime, "cudaGetDeviceCount", _no_driver_call() if call == "real" else _dlopen_fails)
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with pytest.raises(EdgekitError) as e:
        load_cuda_api()
    msg = str(e.value)
    assert msg.startswith("CUDA is not usable here: cuda.bindings.runtime.cudaGetDeviceCount could not load the "
                          "CUDA driver (")
    assert "--runtime nvidia" in msg and "--device cpu" in msg


class FakePycuda:
    """pycuda.driver as far as PyCudaApi's start and context bookkeeping go."""

    class Error(Exception):
        pass

    def __init__(self, starts: bool = True) -> None:
        self.starts, self.events = starts, []
        drv = self

        class Context:
            def push(self):
                drv.events.append("push")

            def pop(self):
                drv.events.append("pop")

        class Device:
            def __init__(self, n):
                self.n = n

            @staticmethod
            def count():
                return 1

            def retain_primary_context(self):
                drv.events.append(f"retain {self.n}")
                return Context()

        self.Device = Device

    def init(self):
        if not self.starts:
            raise self.Error("cuInit failed: no CUDA-capable device is detected")


@pytest.mark.skipif(not HAVE_CUDA_PYTHON, reason="cuda-python is not installed")
def test_auto_falls_back_to_pycuda_when_cuda_python_cannot_start(monkeypatch, caplog):
    from cuda.bindings import runtime

    monkeypatch.setattr(runtime, "cudaGetDeviceCount", _dlopen_fails)
    monkeypatch.setitem(sys.modules, "pycuda.driver", FakePycuda())
    with caplog.at_level("WARNING"):
        api = load_cuda_api()
    assert isinstance(api, cm.PyCudaApi) and "cuda-python could not start" in caplog.text
    monkeypatch.setattr(cm, "_API", {})
    monkeypatch.setitem(sys.modules, "pycuda.driver", FakePycuda(starts=False))  # neither: cuda-python's error
    with pytest.raises(EdgekitError, match="cudaGetDeviceCount could not load the CUDA driver"):
        load_cuda_api()
    with pytest.raises(EdgekitError, match="cudaGetDeviceCount could not load"):  # asked for: no fallback
        load_cuda_api("cuda-python")


def test_pycuda_primary_context_is_popped_at_close_and_at_exit(monkeypatch):
    registered = []
    import edgekit.runners.cuda_api as ca

    monkeypatch.setattr(ca.atexit, "register", registered.append)
    monkeypatch.setattr(ca.atexit, "unregister", registered.remove)
    drv = FakePycuda()
    api = cm.PyCudaApi(drv)
    api.set_device(0)
    api.set_device(0)  # once per process
    assert drv.events == ["retain 0", "push"] and registered == [api.close]  # popped at exit if never closed
    api.close()
    api.close()
    assert drv.events == ["retain 0", "push", "pop"] and registered == []
