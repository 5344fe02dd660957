"""The calling thread's current CUDA context, kept across calls into tinygrad.

tinygrad's CUDA backend creates a context of its own (cuCtxCreate, not the device's primary context) and
makes it current (cuCtxSetCurrent) before every kernel launch, copy and synchronize, without putting back
the context that was current before. TensorRT and the CUDA runtime API (cuda-python's `cudart`, pycuda's
primary context) work in whatever context is current on the thread. So in a camera loop with a TensorRT
detector and a tinygrad classifier on one thread, every TensorRT call after the first tinygrad frame would
run in tinygrad's context, where its stream, engine and buffers do not belong.

edgekit's choice: tinygrad keeps its own context, and the tinygrad runner saves the thread's current context
before each of its calls into tinygrad, makes tinygrad's context current for the call, and makes the saved
one current again afterwards (`KeepCurrentContext`). Entering tinygrad's context matters as much as leaving
it: a captured JIT on CUDA replays as a CUDA graph, and tinygrad launches the graph (cuGraphLaunch) without
making its context current first, unlike its kernels and copies. With zero-copy inputs nothing else runs
first, so the graph ran in the caller's context while tinygrad synchronised its own: on an H200 with torch's
context current, infer() returned the previous frame's logits for most frames (seen 2026-11-30).
Sharing the primary context instead would mean replacing tinygrad's device internals. Memory crosses the
two contexts safely: edgekit's mapped buffers are allocated portable, and unified addressing gives one
device pointer in every context of the process.
"""
from __future__ import annotations

import ctypes
from typing import Any, Protocol

from edgekit.errors import EdgekitError
from edgekit.runners.cuda_api import DeviceInfo


class ContextDriver(Protocol):
    def get_current(self) -> Any: ...

    def set_current(self, ctx: Any) -> None: ...


class KeepCurrentContext:
    """`with keep:` around a call into tinygrad: on entry `inside` (tinygrad's context, once it exists) is
    made current; on exit the context current at entry is current again (also when the call raised).
    Nests: each entry saves its own."""

    def __init__(self, driver: ContextDriver, inside: Any = None) -> None:
        self.driver = driver
        self.inside = inside
        self._saved: list[Any] = []

    def __enter__(self) -> "KeepCurrentContext":
        self._saved.append(self.driver.get_current())
        if self.inside is not None:
            self.driver.set_current(self.inside)
        return self

    def __exit__(self, *exc: object) -> None:
        self.driver.set_current(self._saved.pop())


# CUdevice_attribute values (cuda.h; stable since CUDA 6)
_INTEGRATED, _CAN_MAP_HOST_MEMORY, _MANAGED_MEMORY = 18, 19, 83


class TinygradCudaDriver:
    """The few driver calls edgekit needs, through tinygrad's own ctypes binding of libcuda: present
    wherever tinygrad runs on CUDA, so neither cuda-python nor pycuda is needed for them."""

    def __init__(self) -> None:
        from tinygrad.runtime.autogen import cuda  # noqa: PLC0415 - libcuda: only once tinygrad opened CUDA

        self.cuda = cuda
        # cuCtxGetCurrent answers CUDA_ERROR_NOT_INITIALIZED (3) before cuInit, as it does when tinygrad is
        # the first CUDA user of the process; cuInit is idempotent
        self._check(cuda.cuInit(0), "cuInit")

    def _check(self, status: int, call: str) -> None:
        if status != 0:
            raise EdgekitError(f"CUDA driver call {call} failed with status {status}")

    def get_current(self) -> Any:
        ctx = self.cuda.CUcontext()
        self._check(self.cuda.cuCtxGetCurrent(ctypes.byref(ctx)), "cuCtxGetCurrent")
        return ctx

    def set_current(self, ctx: Any) -> None:
        self._check(self.cuda.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")

    @staticmethod
    def address(ctx: Any) -> int:
        """The context handle as an int (0 = none current), comparable with cuda-python's."""
        return ctypes.cast(ctx, ctypes.c_void_p).value or 0

    def device_info(self, ordinal: int = 0) -> DeviceInfo:
        dev = self.cuda.CUdevice()
        self._check(self.cuda.cuDeviceGet(ctypes.byref(dev), ordinal), "cuDeviceGet")

        def attr(a: int) -> int:
            v = ctypes.c_int()
            self._check(self.cuda.cuDeviceGetAttribute(ctypes.byref(v), a, dev), "cuDeviceGetAttribute")
            return v.value

        name = ctypes.create_string_buffer(256)
        self._check(self.cuda.cuDeviceGetName(name, 256, dev), "cuDeviceGetName")
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check(self.cuda.cuDeviceComputeCapability(ctypes.byref(major), ctypes.byref(minor), dev),
                    "cuDeviceComputeCapability")
        return DeviceInfo(name.value.decode(errors="replace"), major.value, minor.value, bool(attr(_INTEGRATED)),
                          bool(attr(_CAN_MAP_HOST_MEMORY)), bool(attr(_MANAGED_MEMORY)))
