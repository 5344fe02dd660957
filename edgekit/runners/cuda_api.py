"""The CUDA adapter behind edgekit.runners.cuda_memory: the handful of calls the GPU runners need, over
cuda-python (`cuda.bindings.runtime`, or the older `from cuda import cudart` layout of JetPack 6's
cuda-python) or pycuda. Pointers are plain ints with both. Made by cuda_memory.load_cuda_api."""
from __future__ import annotations

import atexit
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edgekit.errors import EdgekitError


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    major: int
    minor: int
    integrated: bool  # shares DRAM with the CPU (Jetson)
    can_map_host_memory: bool
    managed_memory: bool

    @property
    def compute_capability(self) -> str:
        return f"{self.major}.{self.minor}"


class CudaPythonApi:
    """NVIDIA's cuda-python runtime bindings: `cuda.bindings.runtime` (12.6+) or the older `cuda.cudart`."""

    name = "cuda-python"

    def __init__(self, rt: Any, layout: str) -> None:
        self.rt, self.layout = rt, layout
        if not self._call("cudaGetDeviceCount"):
            raise cuda_error(f"{layout} sees no CUDA device")

    def _call(self, call: str, *args: Any) -> Any:
        try:
            result = getattr(self.rt, call)(*args)
        except (RuntimeError, OSError) as e:
            # the bindings load libcuda on their first call: without it (no driver, or a container started
            # without the NVIDIA runtime) cuda-python 12.x raises RuntimeError("Failed to dlopen libcuda.so.1")
            # and 13.x DynamicLibNotFoundError (a RuntimeError), instead of returning an error code
            raise cuda_error(f"{self.layout}.{call} could not load the CUDA driver ({type(e).__name__}: "
                             f"{str(e).strip()[:200]})") from None
        return self._check(result, call)

    def _check(self, result: Any, call: str) -> Any:
        err, *values = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            _, text = self.rt.cudaGetErrorString(err)
            raise cuda_error(f"{call} failed: {getattr(err, 'name', err)} ({text.decode(errors='replace')})")
        return values[0] if len(values) == 1 else values or None

    def set_device(self, device: int) -> None:
        self._call("cudaSetDevice", device)

    def device_info(self, device: int = 0) -> DeviceInfo:
        p = self._call("cudaGetDeviceProperties", device)
        name = p.name.split(b"\0", 1)[0].decode() if isinstance(p.name, bytes) else str(p.name)
        return DeviceInfo(name, int(p.major), int(p.minor), bool(p.integrated), bool(p.canMapHostMemory),
                          bool(p.managedMemory))

    def versions(self) -> dict[str, str]:
        return {"cuda_runtime": _fmt(self._call("cudaRuntimeGetVersion")),
                "cuda_driver": _fmt(self._call("cudaDriverGetVersion"))}

    def host_alloc(self, nbytes: int, mapped: bool) -> int:
        # Portable: the pointer is valid in every CUDA context of the process (tinygrad makes its own).
        flags = (self.rt.cudaHostAllocMapped | self.rt.cudaHostAllocPortable) if mapped else self.rt.cudaHostAllocDefault
        return int(self._call("cudaHostAlloc", nbytes, flags))

    def host_device_pointer(self, host_ptr: int) -> int:
        return int(self._call("cudaHostGetDevicePointer", host_ptr, 0))

    def host_free(self, ptr: int) -> None:
        self._call("cudaFreeHost", ptr)

    def managed_alloc(self, nbytes: int) -> int:
        return int(self._call("cudaMallocManaged", nbytes, self.rt.cudaMemAttachGlobal))

    def device_alloc(self, nbytes: int) -> int:
        return int(self._call("cudaMalloc", nbytes))

    def device_free(self, ptr: int) -> None:
        self._call("cudaFree", ptr)

    def htod_async(self, dptr: int, host: np.ndarray, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call("cudaMemcpyAsync", dptr, host.ctypes.data, host.nbytes, kind, stream)

    def dtoh_async(self, host: np.ndarray, dptr: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call("cudaMemcpyAsync", host.ctypes.data, dptr, host.nbytes, kind, stream)

    def dtod_async(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        self._call("cudaMemcpyAsync", dst, src, nbytes, kind, stream)

    def mem_info(self) -> tuple[int, int]:
        """(free, total) bytes of the current device."""
        free, total = self._call("cudaMemGetInfo")
        return int(free), int(total)

    def stream_create(self) -> Any:
        return self._call("cudaStreamCreateWithFlags", self.rt.cudaStreamNonBlocking)

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def stream_sync(self, stream: Any) -> None:
        self._call("cudaStreamSynchronize", stream)

    def stream_destroy(self, stream: Any) -> None:
        self._call("cudaStreamDestroy", stream)

    def graph_capture(self, stream: Any, enqueue: Callable[[], None]) -> Any:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._call("cudaStreamBeginCapture", stream, mode)
        try:
            enqueue()
        finally:
            graph = self._call("cudaStreamEndCapture", stream)
        try:
            return graph, self._call("cudaGraphInstantiate", graph, 0)
        except EdgekitError:
            self.rt.cudaGraphDestroy(graph)
            raise

    def graph_launch(self, graph: Any, stream: Any) -> None:
        self._call("cudaGraphLaunch", graph[1], stream)

    def graph_destroy(self, graph: Any) -> None:
        self._call("cudaGraphExecDestroy", graph[1])
        self._call("cudaGraphDestroy", graph[0])


class PyCudaApi:
    """pycuda (driver API on the primary context, the one TensorRT uses). Allocations are pycuda objects,
    kept here by address so the rest of edgekit sees plain pointers. The primary context is pushed once by
    set_device and popped by close(), which also runs at exit: pycuda aborts the process at exit when its
    context stack is not empty (as pycuda.autoprimaryctx does, pop it in an atexit hook)."""

    name = "pycuda"
    layout = "pycuda.driver"

    def __init__(self, drv: Any) -> None:
        self.drv = drv
        try:
            drv.init()
            if drv.Device.count() == 0:
                raise cuda_error("pycuda sees no CUDA device")
        except drv.Error as e:
            raise cuda_error(f"pycuda could not start CUDA: {e}") from None
        self._ctx = None
        self._allocs: dict[int, Any] = {}

    def set_device(self, device: int) -> None:
        if self._ctx is None:
            self._ctx = self.drv.Device(device).retain_primary_context()
            self._ctx.push()
            atexit.register(self.close)

    def close(self) -> None:
        """Pop the primary context pushed by set_device (again: a no-op)."""
        if self._ctx is None:
            return
        ctx, self._ctx = self._ctx, None
        atexit.unregister(self.close)
        ctx.pop()

    def device_info(self, device: int = 0) -> DeviceInfo:
        d, a = self.drv.Device(device), self.drv.device_attribute
        major, minor = d.compute_capability()
        return DeviceInfo(d.name(), major, minor, bool(d.get_attribute(a.INTEGRATED)),
                          bool(d.get_attribute(a.CAN_MAP_HOST_MEMORY)), bool(d.get_attribute(a.MANAGED_MEMORY)))

    def versions(self) -> dict[str, str]:
        return {"cuda_runtime": ".".join(map(str, self.drv.get_version())),
                "cuda_driver": _fmt(self.drv.get_driver_version())}

    def _keep(self, ptr: int, obj: Any) -> int:
        self._allocs[ptr] = obj
        return ptr

    def host_alloc(self, nbytes: int, mapped: bool) -> int:
        f = self.drv.host_alloc_flags
        flags = (f.DEVICEMAP | f.PORTABLE) if mapped else 0
        arr = self.drv.pagelocked_empty(nbytes, np.uint8, mem_flags=flags)
        return self._keep(arr.ctypes.data, arr)

    def host_device_pointer(self, host_ptr: int) -> int:
        return int(self._allocs[host_ptr].base.get_device_pointer())

    def host_free(self, ptr: int) -> None:
        self._allocs.pop(ptr).base.free()

    def managed_alloc(self, nbytes: int) -> int:
        arr = self.drv.managed_empty(nbytes, np.uint8, mem_flags=self.drv.mem_attach_flags.GLOBAL)
        return self._keep(arr.ctypes.data, arr)

    def device_alloc(self, nbytes: int) -> int:
        mem = self.drv.mem_alloc(nbytes)
        return self._keep(int(mem), mem)

    def device_free(self, ptr: int) -> None:
        obj = self._allocs.pop(ptr)
        (obj.base if isinstance(obj, np.ndarray) else obj).free()

    def htod_async(self, dptr: int, host: np.ndarray, stream: Any) -> None:
        self.drv.memcpy_htod_async(dptr, host, stream)

    def dtoh_async(self, host: np.ndarray, dptr: int, stream: Any) -> None:
        self.drv.memcpy_dtoh_async(host, dptr, stream)

    def dtod_async(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        self.drv.memcpy_dtod_async(dst, src, nbytes, stream)

    def mem_info(self) -> tuple[int, int]:
        free, total = self.drv.mem_get_info()
        return int(free), int(total)

    def stream_create(self) -> Any:
        return self.drv.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def stream_sync(self, stream: Any) -> None:
        stream.synchronize()

    def stream_destroy(self, stream: Any) -> None:
        pass  # pycuda frees its streams when collected

    def graph_capture(self, stream: Any, enqueue: Callable[[], None]) -> Any:
        raise EdgekitError("CUDA graphs need cuda-python here (pycuda's graph API is not wired); "
                           "pip install cuda-python, or run without cuda_graph")

    graph_launch = graph_destroy = graph_capture


def _fmt(version: int) -> str:
    return f"{version // 1000}.{version % 1000 // 10}"  # 12060 -> 12.6


def cuda_error(what: str) -> EdgekitError:
    return EdgekitError(f"CUDA is not usable here: {what}. A GPU runner needs an NVIDIA GPU with its driver "
                        "(on Jetson: JetPack, and a container started with --runtime nvidia); otherwise run on "
                        "the CPU (e.g. the onnxrt backend with --device cpu)")
