"""TensorRT engines (TensorRT 10+ named I/O tensors): set_input_shape, set_tensor_address,
execute_async_v3 on a CUDA stream; _sync is the stream synchronize. Memory comes from cuda_memory
(mapped zero-copy on Jetson, device buffers with async copies on discrete GPUs). The engine's sidecar key
is checked before anything is deserialized: a foreign or stale engine is refused with its rebuild command."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.export.trt_cache import check_engine_env, read_sidecar, rebuild_command, verify_engine_files
from edgekit.manifest import DTYPES, TensorSpec
from edgekit.runners.base import Runner
from edgekit.runners.cuda_memory import CudaBuffer, CudaGraph, Stream, load_cuda_api, resolve_memory_mode


class TrtRunner(Runner):
    """Options: memory ('auto'|'mapped'|'managed'|'device'; auto = mapped on integrated GPUs, device on
    discrete), cuda_graph (capture the enqueue once per input shape and replay it), cuda ('auto'|
    'cuda-python'|'pycuda'), dla_core (when the engine has no sidecar), check_engine (default True)."""

    backend = "trt"
    devices = ("cuda",)

    # ---- load ----------------------------------------------------------------------------------
    def _load(self) -> None:
        from edgekit.export.trt_build import engine_env, import_tensorrt, make_logger

        sidecar, rebuild = None, self.rebuild_command()
        if self.options.get("check_engine", True):
            sidecar = verify_engine_files(self.artifact, rebuild=rebuild, onnx_sha256=self._onnx_sha256())
        trt = import_tensorrt()
        self._api = load_cuda_api(self.options.get("cuda", "auto"))
        env = engine_env(trt, self._api)
        if sidecar is not None:
            check_engine_env(sidecar, env, engine=self.artifact, rebuild=rebuild)
        self.memory = resolve_memory_mode(self.options.get("memory"), self._api.device_info())
        dla = sidecar["key"]["dla_core"] if sidecar else int(self.options.get("dla_core", -1))
        self._logger = make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        if dla >= 0:
            self._runtime.DLA_core = dla
        self._engine = self._runtime.deserialize_cuda_engine(self.artifact.read_bytes())
        if self._engine is None:
            raise EdgekitError(f"TensorRT {trt.__version__} could not load {self.artifact}: "
                               f"{self._logger.last_errors()}. Rebuild it: `{rebuild}`")
        self._context = self._engine.create_execution_context()
        self._buffers: dict[str, CudaBuffer] = {}
        self._graph: CudaGraph | None = None
        self._use_graph = bool(self.options.get("cuda_graph", False))
        self._stream = Stream(self._api)
        try:
            self._describe(trt)
            self._allocate()
        except BaseException:
            self._close()  # load() failed, so close() would not free what was taken
            raise

    def _describe(self, trt: Any) -> None:
        """Names, modes, dtypes and shapes of the engine's I/O tensors (-1 = dynamic)."""
        e = self._engine
        self._names = [e.get_tensor_name(i) for i in range(e.num_io_tensors)]
        self._in = [n for n in self._names if e.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._out = [n for n in self._names if n not in self._in]
        self._shape = {n: list(e.get_tensor_shape(n)) for n in self._names}
        self._dtype = {}
        for n in self._names:
            try:
                self._dtype[n] = np.dtype(trt.nptype(e.get_tensor_dtype(n)))
            except TypeError:  # bf16, fp8, ...: no numpy type
                self._dtype[n] = None
            if self._dtype[n] is None or self._dtype[n].name not in DTYPES:
                raise EdgekitError(f"{self.artifact}: tensor '{n}' is {e.get_tensor_dtype(n)}, which edgekit's "
                                   f"runners do not exchange (use {', '.join(DTYPES)} at the model's inputs/outputs)")

    def _allocate(self) -> None:
        """Buffers for the largest shapes the profile allows, bound once (fixed addresses: graph-safe)."""
        c, e = self._context, self._engine
        self._max: dict[str, tuple[int, ...]] = {}
        for n in self._in:
            shape = self._shape[n]
            self._max[n] = tuple(e.get_tensor_profile_shape(n, 0)[2]) if -1 in shape else tuple(shape)
            c.set_input_shape(n, self._max[n])
        for n in self._out:
            self._max[n] = tuple(c.get_tensor_shape(n))
            if any(d < 0 for d in self._max[n]):
                raise EdgekitError(f"{self.artifact}: output '{n}' has a data-dependent shape {self._max[n]}; "
                                   "edgekit's TensorRT runner needs outputs sized by the inputs")
        for n in self._names:
            nbytes = int(np.prod(self._max[n], dtype=np.int64)) * self._dtype[n].itemsize
            self._buffers[n] = CudaBuffer(self._api, self.memory, nbytes)
            if not c.set_tensor_address(n, self._buffers[n].device):
                raise EdgekitError(f"TensorRT refused the address of tensor '{n}'")
        self._current = {n: self._max[n] for n in self._in}

    def _io(self) -> tuple[dict[str, TensorSpec], dict[str, TensorSpec]]:
        def spec(n: str) -> TensorSpec:
            dims = [d if d >= 0 else ("batch" if i == 0 else f"dim{i}") for i, d in enumerate(self._shape[n])]
            return TensorSpec(n, dims, self._dtype[n].name)

        return {n: spec(n) for n in self._in}, {n: spec(n) for n in self._out}

    def max_batch(self, name: str) -> int | None:
        """The batch the engine's profile allows at most (what the buffers were sized for)."""
        self._require_loaded()
        return int(self._max[name][0]) if self._max[name] else None

    # ---- run -----------------------------------------------------------------------------------
    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
        changed = False
        for n in self._in:
            x = feed[n]
            if x.shape != self._current[n]:
                if not self._context.set_input_shape(n, x.shape):
                    raise EdgekitError(f"{self.backend}: input '{n}' shape {list(x.shape)} is outside the engine's "
                                       f"profile (largest {list(self._max[n])}); rebuild with a larger --max-batch")
                self._current[n], changed = x.shape, True
            buf = self._buffers[n]
            np.copyto(buf.view(x.shape, self._dtype[n]), x, casting="no")
            buf.upload(self._stream, x.nbytes)
        if changed and self._graph is not None:
            self._graph.close()
            self._graph = None
        self._enqueue()
        shapes = {n: tuple(self._context.get_tensor_shape(n)) for n in self._out}
        for n, shape in shapes.items():
            self._buffers[n].download(self._stream, int(np.prod(shape, dtype=np.int64)) * self._dtype[n].itemsize)
        return shapes

    def _enqueue(self) -> None:
        if self._graph is not None:
            self._graph.launch(self._stream)
            return
        if not self._context.execute_async_v3(self._stream.handle):
            raise EdgekitError(f"TensorRT could not run {self.artifact.name}: {self._logger.last_errors()}")
        if self._use_graph:  # TensorRT wants one plain enqueue per shape before a capture
            try:
                self._graph = CudaGraph(self._api, self._stream,
                                        lambda: self._context.execute_async_v3(self._stream.handle))
            except EdgekitError as e:
                self._use_graph = False
                raise EdgekitError(f"capturing a CUDA graph of {self.artifact.name} failed ({e}); "
                                   "run without cuda_graph") from None

    def _sync(self) -> None:
        self._stream.synchronize()

    def _fetch(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
        return {n: self._buffers[n].view(s, self._dtype[n]).copy() for n, s in shapes.items()}

    def _close(self) -> None:
        if getattr(self, "_stream", None) is not None:
            self._stream.synchronize()
        if getattr(self, "_graph", None) is not None:
            self._graph.close()
        for buf in getattr(self, "_buffers", {}).values():
            buf.close()
        if getattr(self, "_stream", None) is not None:
            self._stream.close()
        self._graph = self._stream = None
        self._buffers = {}
        self._context = self._engine = self._runtime = None  # the context goes before its engine

    # ---- the engine's provenance -----------------------------------------------------------------
    def rebuild_command(self) -> str:
        """`edgekit export ... --to trt` that rebuilds this engine on this machine."""
        model_dir = self.manifest.model_dir if self.manifest and self.manifest.model_dir else self.artifact.parent
        sidecar = read_sidecar(self.artifact) or {}
        key = sidecar.get("key") or {}
        return rebuild_command(model_dir, key.get("precision", self.precision), key.get("dla_core", -1),
                               sidecar.get("requested_typing", "auto"))

    def _onnx_sha256(self) -> str | None:
        """The sha256 the manifest records now for the ONNX this engine was built from."""
        if self.manifest is None or self.manifest.model_dir is None:
            return None
        here = Path(self.artifact).resolve()
        art = next((a for a in self.manifest.artifacts if a.backend == "trt"
                    and (self.manifest.model_dir / a.path).resolve() == here), None)
        src = art and next((a for a in self.manifest.artifacts if a.backend == "onnxrt" and a.path == art.built_from),
                           None)
        return src.sha256 if src else None
