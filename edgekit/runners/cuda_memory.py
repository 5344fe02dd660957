"""CUDA memory shared by the GPU runners (TensorRT now, tinygrad later): host/device buffers, a stream and
an optional CUDA graph, behind a tiny adapter over cuda-python or pycuda (edgekit.runners.cuda_api).

Memory modes, per buffer:
  mapped   pinned host memory the GPU reads and writes directly (cudaHostAlloc + cudaHostAllocMapped,
           cudaHostGetDevicePointer): zero copies; the default on integrated GPUs (Jetson), where host
           and device memory are the same DRAM.
  managed  unified memory (cudaMallocManaged): one pointer for both; the driver moves pages.
  device   pinned host memory plus a device buffer, with async copies on the stream: the default on
           discrete GPUs, where reading host memory over PCIe from every kernel would be slow.
Nothing here imports a CUDA library at import time.
"""
from __future__ import annotations

import ctypes
import importlib
import logging
from typing import Any, Callable

import numpy as np

from edgekit.errors import EdgekitError, unknown_choice
from edgekit.runners.cuda_api import CudaPythonApi, DeviceInfo, PyCudaApi

log = logging.getLogger(__name__)

MEMORY_MODES = ("mapped", "managed", "device")
CUDA_APIS = ("auto", "cuda-python", "pycuda")
_INSTALL = ("install cuda-python matching your CUDA (`pip install 'cuda-python<13'` for CUDA 12, e.g. JetPack 6) "
            "or pycuda (`pip install pycuda`, needs the CUDA headers)")


def default_memory_mode(info: DeviceInfo) -> str:
    """Integrated GPUs read host memory at full speed: map it. Discrete GPUs get device buffers."""
    if info.integrated and info.can_map_host_memory:
        return "mapped"
    if info.integrated and info.managed_memory:
        return "managed"
    return "device"


def resolve_memory_mode(requested: str | None, info: DeviceInfo) -> str:
    if requested in (None, "", "auto"):
        return default_memory_mode(info)
    if requested not in MEMORY_MODES:
        raise unknown_choice("CUDA memory mode", str(requested), ("auto",) + MEMORY_MODES)
    if requested == "mapped" and not info.can_map_host_memory:
        raise EdgekitError(f"{info.name} cannot map host memory; use memory='device' (or 'auto')")
    if requested == "managed" and not info.managed_memory:
        raise EdgekitError(f"{info.name} has no managed memory; use memory='device' (or 'auto')")
    return requested


def host_array(ptr: int, shape: tuple[int, ...] | list[int], dtype: Any) -> np.ndarray:
    """A writable numpy view of `shape` x `dtype` at host address `ptr` (no copy)."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    raw = (ctypes.c_char * (count * dtype.itemsize)).from_address(ptr)
    return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)


_API: dict[str, Any] = {}


def load_cuda_api(prefer: str | None = "auto") -> CudaPythonApi | PyCudaApi:
    """The first CUDA binding that imports and starts: cuda.bindings.runtime, the older `from cuda import
    cudart`, then pycuda (or only the one asked for). With 'auto', cuda-python that imports but cannot reach
    the driver falls back to pycuda; when neither starts, cuda-python's error (which names the fix) is
    raised. Cached per process."""
    prefer = prefer or "auto"
    if prefer not in CUDA_APIS:
        raise unknown_choice("CUDA binding", prefer, CUDA_APIS)
    if prefer in _API:
        return _API[prefer]
    tried: list[str] = []
    failed: EdgekitError | None = None
    if prefer in ("auto", "cuda-python"):
        for layout in ("cuda.bindings.runtime", "cuda.cudart"):  # the second is `from cuda import cudart`
            try:
                rt = importlib.import_module(layout)
            except ImportError:
                tried.append(layout)
                continue
            try:
                _API[prefer] = api = CudaPythonApi(rt, layout)
                return api
            except EdgekitError as e:
                if prefer != "auto":
                    raise
                failed = e
                break
    if prefer in ("auto", "pycuda"):
        try:
            drv = importlib.import_module("pycuda.driver")
        except ImportError:
            tried.append("pycuda")
        else:
            try:
                _API[prefer] = api = PyCudaApi(drv)
            except EdgekitError:
                if failed is None:
                    raise
            else:
                if failed is not None:
                    log.warning("cuda-python could not start (%s); using pycuda", failed)
                return api
    if failed is not None:
        raise failed
    raise EdgekitError(f"no CUDA Python binding found (tried {', '.join(tried)}): {_INSTALL}")


# ---- buffers, stream, graph -----------------------------------------------------------------------

class CudaBuffer:
    """`nbytes` of memory for one tensor: `host` (uint8 numpy view the CPU uses) and `device` (the pointer
    the GPU uses). upload/download copy only in 'device' mode; the other modes share one memory."""

    def __init__(self, api: Any, mode: str, nbytes: int) -> None:
        if mode not in MEMORY_MODES:
            raise unknown_choice("CUDA memory mode", mode, MEMORY_MODES)
        self.api, self.mode, self.nbytes = api, mode, int(nbytes)
        size = max(self.nbytes, 1)  # TensorRT wants a real address even for an empty tensor
        self._host_ptr = self._dev_ptr = 0
        if mode == "mapped":
            self._host_ptr = api.host_alloc(size, mapped=True)
            self.device = api.host_device_pointer(self._host_ptr)
        elif mode == "managed":
            self._dev_ptr = self.device = api.managed_alloc(size)
            self._host_ptr = self.device
        else:
            self._host_ptr = api.host_alloc(size, mapped=False)
            try:
                self._dev_ptr = self.device = api.device_alloc(size)
            except Exception:
                api.host_free(self._host_ptr)
                raise
        self.host = host_array(self._host_ptr, (self.nbytes,), np.uint8)

    def view(self, shape: tuple[int, ...] | list[int], dtype: Any) -> np.ndarray:
        """The first prod(shape) elements of the host side as `dtype`."""
        dtype = np.dtype(dtype)
        n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if n > self.nbytes:
            raise EdgekitError(f"a {list(shape)} {dtype} tensor needs {n} bytes; its buffer holds {self.nbytes}")
        return self.host[:n].view(dtype).reshape(shape)

    def upload(self, stream: "Stream", nbytes: int | None = None) -> None:
        if self.mode == "device":
            self.api.htod_async(self.device, self.host[: self.nbytes if nbytes is None else nbytes], stream.raw)

    def download(self, stream: "Stream", nbytes: int | None = None) -> None:
        if self.mode == "device":
            self.api.dtoh_async(self.host[: self.nbytes if nbytes is None else nbytes], self.device, stream.raw)

    def close(self) -> None:
        if not self._host_ptr and not self._dev_ptr:
            return
        self.host = np.empty(0, np.uint8)  # drop the view before the memory goes
        if self.mode == "managed":
            self.api.device_free(self._dev_ptr)
        else:
            self.api.host_free(self._host_ptr)
            if self._dev_ptr:
                self.api.device_free(self._dev_ptr)
        self._host_ptr = self._dev_ptr = self.device = 0


class Stream:
    def __init__(self, api: Any) -> None:
        self.api, self.raw = api, api.stream_create()
        self.handle = api.stream_handle(self.raw)

    def synchronize(self) -> None:
        self.api.stream_sync(self.raw)

    def close(self) -> None:
        if self.raw is not None:
            self.api.stream_destroy(self.raw)
            self.raw = None


class CudaGraph:
    """What `enqueue` puts on the stream, captured once and replayed with one launch."""

    def __init__(self, api: Any, stream: Stream, enqueue: Callable[[], None]) -> None:
        self.api, self._graph = api, api.graph_capture(stream.raw, enqueue)

    def launch(self, stream: Stream) -> None:
        self.api.graph_launch(self._graph, stream.raw)

    def close(self) -> None:
        if self._graph is not None:
            self.api.graph_destroy(self._graph)
            self._graph = None
