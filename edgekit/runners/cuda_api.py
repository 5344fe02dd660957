"""The CUDA adapter behind edgekit.runners.cuda_memory: the handful of calls the GPU runners need, over
cuda-python (`cuda.bindings.runtime`, or the older `from cuda import cudart` layout of JetPack 6's
cuda-python) or pycuda. Pointers are plain ints with both. Made by cuda_memory.load_cuda_api."""
from __future__ import annotations

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
        if not self._check(rt.cudaGetDeviceCount(), "cudaGetDeviceCount"):
            raise cuda_error(f"{layout} sees no CUDA device")

    def _check(self, result: Any, call: str) -> Any:
        err, *values = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            _, text = self.rt.cudaGetErrorString(err)
            raise cuda_error(f"{call} failed: {getattr(err, 'name', err)} ({text.decode(errors='replace')})")
        return values[0] if len(values) == 1 else values or None

    def set_device(self, device: int) -> None:
        self._check(self.rt.cudaSetDevice(device), "cudaSetDevice")

    def device_info(self, device: int = 0) -> DeviceInfo:
        p = self._check(self.rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
        name = p.name.split(b"\0", 1)[0].decode() if isinstance(p.name, bytes) else str(p.name)
        return DeviceInfo(name, int(p.major), int(p.minor), bool(p.integrated), bool(p.canMapHostMemory),
                          bool(p.managedMemory))

    def versions(self) -> dict[str, str]:
        return {"cuda_runtime": _fmt(self._check(self.rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")),
                "cuda_driver": _fmt(self._check(self.rt.cudaDriverGetVersion(), "cudaDriverGetVersion"))}

    def host_alloc(self, nbytes: int, mapped: bool) -> int:
        # Portable: the pointer is valid in every CUDA context of the process (tinygrad makes its own).
        flags = (self.rt.cudaHostAllocMapped | self.rt.cudaHostAllocPortable) if mapped else self.rt.cudaHostAllocDefault
        return int(self._check(self.rt.cudaHostAlloc(nbytes, flags), "cudaHostAlloc"))

    def host_device_pointer(self, host_ptr: int) -> int:
        return int(self._check(self.rt.cudaHostGetDevicePointer(host_ptr, 0), "cudaHostGetDevicePointer"))

    def host_free(self, ptr: int) -> None:
        self._check(self.rt.cudaFreeHost(ptr), "cudaFreeHost")

    def managed_alloc(self, nbytes: int) -> int:
        return int(self._check(self.rt.cudaMallocManaged(nbytes, self.rt.cudaMemAttachGlobal), "cudaMallocManaged"))

    def device_alloc(self, nbytes: int) -> int:
        return int(self._check(self.rt.cudaMalloc(nbytes), "cudaMalloc"))

    def device_free(self, ptr: int) -> None:
        self._check(self.rt.cudaFree(ptr), "cudaFree")

    def htod_async(self, dptr: int, host: np.ndarray, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.rt.cudaMemcpyAsync(dptr, host.ctypes.data, host.nbytes, kind, stream), "cudaMemcpyAsync")

    def dtoh_async(self, host: np.ndarray, dptr: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.rt.cudaMemcpyAsync(host.ctypes.data, dptr, host.nbytes, kind, stream), "cudaMemcpyAsync")

    def stream_create(self) -> Any:
        return self._check(self.rt.cudaStreamCreateWithFlags(self.rt.cudaStreamNonBlocking), "cudaStreamCreate")

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def stream_sync(self, stream: Any) -> None:
        self._check(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def stream_destroy(self, stream: Any) -> None:
        self._check(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def graph_capture(self, stream: Any, enqueue: Callable[[], None]) -> Any:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._check(self.rt.cudaStreamBeginCapture(stream, mode), "cudaStreamBeginCapture")
        try:
            enqueue()
        finally:
            graph = self._check(self.rt.cudaStreamEndCapture(stream), "cudaStreamEndCapture")
        try:
            return graph, self._check(self.rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        except EdgekitError:
            self.rt.cudaGraphDestroy(graph)
            raise

    def graph_launch(self, graph: Any, stream: Any) -> None:
        self._check(self.rt.cudaGraphLaunch(graph[1], stream), "cudaGraphLaunch")

    def graph_destroy(self, graph: Any) -> None:
        self._check(self.rt.cudaGraphExecDestroy(graph[1]), "cudaGraphExecDestroy")
        self._check(self.rt.cudaGraphDestroy(graph[0]), "cudaGraphDestroy")


class PyCudaApi:
    """pycuda (driver API on the primary context, the one TensorRT uses). Allocations are pycuda objects,
    kept here by address so the rest of edgekit sees plain pointers."""

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
