"""tinygrad: the model's ONNX file (the one ONNX Runtime runs) through tinygrad's OnnxRunner under TinyJit,
on the CPU (kernels compiled with clang) or CUDA. Shapes are fixed; load() does the warm-up, so infer() is
always the captured JIT.

On CUDA, tinygrad runs in a CUDA context of its own and makes it current on every launch; every call into
tinygrad here restores the caller's current context afterwards (edgekit.runners.cuda_context), so a TensorRT
runner on the same thread keeps working in the primary context. Inputs: tinygrad's own copies ('copy', the
default on discrete GPUs, needing no other CUDA binding) or zero-copy buffers ('mapped' / 'managed' from
edgekit.runners.cuda_memory over cuda-python or pycuda, the default on Jetson when one is installed).

Two caches under one per-user directory (~/.cache/edgekit/tinygrad; option cache_dir or EDGEKIT_TINYGRAD_CACHE):
`cache.db` is tinygrad's own (compiled kernels by source, BEAM results by kernel), and `jit/<key>.pkl` is
the captured JIT (kernels chosen, compiled, memory planned, weights included), keyed by the ONNX file's
sha256 and every setting that changes the code. The kernel cache alone saves only the clang calls; most
of a cold start is tinygrad's own scheduling and code generation, which only the captured JIT skips.
Both caches are pickles, as tinygrad's cache.db always is: the directory must be the user's own.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import platform
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tinygrad.helpers as tg_helpers
from tinygrad import Context, Device, Tensor, TinyJit
from tinygrad.dtype import _from_np_dtype, _to_np_dtype

from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_path, sha256_file
from edgekit.manifest import DTYPES, TensorSpec
from edgekit.platform import cpu, version
from edgekit.runners.base import Runner
from edgekit.runners.onnx_file import not_loadable

log = logging.getLogger(__name__)

CACHE_ENV = "EDGEKIT_TINYGRAD_CACHE"
_TARGETS = {"cpu": "CPU", "cuda": "CUDA"}  # edgekit device -> tinygrad DEV
_OPTIONS = ("cache_dir", "beam", "jit_cache", "threads", "batch", "memory")
_JIT_FORMAT = 1  # how this file builds the JIT (inputs on NPY, outputs by name): bump when it changes
# tinygrad settings (tinygrad.helpers, so always defined) that change the kernels or the plan: in the JIT key
_KEY_SETTINGS = ("DEV", "BEAM", "NOOPT", "WINO", "IMAGE", "FLOAT16", "OPENPILOT_HACKS", "TC", "TC_SELECT", "TC_OPT",
                 "TRANSCENDENTAL", "NOLOCALS", "SPLIT_REDUCEOP", "NO_MEMORY_PLANNER", "DISABLE_FAST_IDIV",
                 "FUSE_OPTIM", "MAX_BUFFER_SIZE", "MAX_KERNEL_BUFFERS", "EMULATED_DTYPES", "DEFAULT_FLOAT",
                 "DEFAULT_INT", "NUM_CPU_THREADS")


def default_cache_dir() -> Path:
    """$EDGEKIT_TINYGRAD_CACHE, else $XDG_CACHE_HOME/edgekit/tinygrad, else ~/.cache/edgekit/tinygrad."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgekit" / "tinygrad"


class TinygradRunner(Runner):
    """Options: cache_dir (default: default_cache_dir()), beam (BEAM search width; 0 = tinygrad's heuristic
    kernels; results are cached), jit_cache (reuse the captured JIT across processes, default True),
    threads (NUM_CPU_THREADS the kernels are written for; 0 = all cores), batch (the size of a dynamic
    batch axis, default 1). After load(), `info` says what was used: device, cache paths, beam, JIT cache
    hit or miss, load seconds."""

    backend = "tinygrad"
    devices = ("cpu", "cuda")  # its artifact is the onnxrt ONNX file (edgekit.runners.artifact_backend)

    def __init__(self, artifact: str | Path, *, device: str = "cpu", **kw: Any) -> None:
        if device not in self.devices:
            raise EdgekitError(f"tinygrad runs here on 'cpu' (clang) or 'cuda', not '{device}': pass device='cpu' "
                               "or 'cuda' (--device), or use the trt backend for TensorRT")
        unknown = sorted(set(kw) - {"precision", "manifest", *_OPTIONS})
        if unknown:
            raise EdgekitError(f"unknown tinygrad option(s) {unknown}; allowed: {', '.join(_OPTIONS)}")
        super().__init__(artifact, device=device, **kw)
        self.info: dict[str, Any] = {}
        self._last: dict[str, Tensor] = {}
        self._held: dict[str, Tensor] = {}
        self._zc: dict[str, tuple[Any, np.ndarray, Tensor]] = {}  # zero-copy: buffer, host view, tensor
        # CUDA: every call into tinygrad restores the caller's current context (edgekit.runners.cuda_context)
        self._keep_context: Any = contextlib.nullcontext()

    # ---- load: a cached JIT, or parse + warm-up (eager call, then JIT capture) -----------------
    def _load(self) -> None:
        t0 = time.perf_counter()
        self._target = _TARGETS[self.device]
        beam, threads = int(self.options.get("beam", 0)), int(self.options.get("threads", 0))
        cache_dir = Path(self.options.get("cache_dir") or default_cache_dir()).expanduser().resolve()
        use_jit_cache = bool(self.options.get("jit_cache", True))
        db = _point_kernel_cache(cache_dir)
        with Context(DEV=self._target, BEAM=beam, **({"NUM_CPU_THREADS": threads} if threads else {})):
            self._open_device()
            with self._keep_context:
                jit_file = cache_dir / "jit" / f"{self._jit_key()}.pkl"
                state = "off"
                if use_jit_cache:
                    state = "hit" if jit_file.exists() and self._load_jit(jit_file) else "miss"
                if state != "hit":
                    self._parse_and_capture()
                    if use_jit_cache:
                        self._save_jit(jit_file)
                self._last = self._run(self._zeros())  # first exec after capture or unpickle: page everything in
                self._sync()
                self.info = {"tinygrad": version("tinygrad"), "device": self._target,
                             "renderer": type(Device[self._target].renderer).__name__, "cache_dir": str(cache_dir),
                             "kernel_cache": str(db), "beam": beam, "jit_cache": state,
                             "jit_file": str(jit_file) if use_jit_cache else None, "settings": _settings(),
                             "memory": self._memory_mode(),
                             "load_s": round(time.perf_counter() - t0, 3)}

    def _open_device(self) -> None:
        if self.device == "cpu":
            cc = os.environ.get("CC") or "clang"
            if not shutil.which(cc):
                raise EdgekitError(f"tinygrad's CPU backend compiles its kernels with {cc}, which is not installed: "
                                   "apt-get install clang (or set CC to a clang binary)")
        try:
            if self.device == "cuda":
                from edgekit.runners.cuda_context import KeepCurrentContext, TinygradCudaDriver

                self._cuda_driver = TinygradCudaDriver()
                self._keep_context = KeepCurrentContext(self._cuda_driver)
            with self._keep_context:  # opening CUDA makes tinygrad's new context current
                dev = Device[self._target]
            if self.device == "cuda":  # from now on every call into tinygrad runs in tinygrad's context
                self._keep_context.inside = dev.context
        except Exception as e:  # tinygrad raises what the driver's loader raises (OSError, AttributeError, ...)
            raise EdgekitError(
                f"tinygrad cannot open {self._target} ({type(e).__name__}: {str(e).strip()[:200]}); on Jetson check "
                "that JetPack's CUDA (libcuda, nvrtc) is installed and visible, or run with --device cpu") from None

    def _parse_and_capture(self) -> None:
        from tinygrad.nn.onnx import OnnxRunner

        try:
            onnx = OnnxRunner(self.artifact)
        except Exception as e:  # the protobuf parser raises plain Python errors on bad files
            raise not_loadable(self.artifact, "tinygrad", e) from None
        self._in_specs = {n: TensorSpec(n, self._fixed_shape(n, v.shape), _dtype_name(v.dtype))
                          for n, v in onnx.graph_inputs.items()}
        target = self._target
        # the host->device copy is inside the JIT, so a call schedules nothing (2.7 ms less per call on the CPU)
        self._jit = TinyJit(lambda **feed: {k: v.realize() for k, v in onnx(
            {n: t.to(target) for n, t in feed.items()}).items()})
        feed = self._zeros()
        try:
            self._run(feed)  # 1st call: eager; 2nd call: captured
            outs = self._run(feed)
        except NotImplementedError as e:
            raise EdgekitError(f"tinygrad cannot run {self.artifact.name}: {e}; use the onnxrt backend for this "
                               "model") from None
        self._out_specs = {n: TensorSpec(n, list(t.shape), _dtype_name(t.dtype)) for n, t in outs.items()}

    def _fixed_shape(self, name: str, shape: tuple) -> list[int]:
        fixed = []
        for i, d in enumerate(shape):
            if isinstance(d, int):
                fixed.append(d)
            elif i == 0:
                fixed.append(int(self.options.get("batch", 1)))
            else:
                raise EdgekitError(f"tinygrad runs fixed shapes, but input '{name}' has a dynamic axis {i} ('{d}'): "
                                   "re-export without dynamic axes (the batch axis can stay: option batch=N)")
        return fixed

    # ---- the JIT cache ---------------------------------------------------------------------------
    def _jit_key(self) -> str:
        """Everything that changes the captured program: the model's bytes, tinygrad's version and the
        settings in effect (DEV, BEAM, NUM_CPU_THREADS, WINO, ... from options or the environment), the
        machine (CPU kernels are compiled for the native CPU) and the pickle's Python."""
        facts = {"onnx": sha256_file(self.artifact), "tinygrad": version("tinygrad"), "format": _JIT_FORMAT,
                 "settings": _settings(), "batch": int(self.options.get("batch", 1)), "arch": platform.machine(),
                 "memory": self._memory_mode(),  # the captured program reads device or zero-copy inputs
                 "cpu": cpu()["name"], "python": sys.version_info[:2]}
        return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]

    def _load_jit(self, path: Path) -> bool:
        if not _owned_by_me(path):  # a pickle runs code when loaded: only ever our own, unshared files
            log.warning("tinygrad: not loading JIT cache %s: it must belong to this user and be writable by no one "
                        "else; recompiling", path)
            return False
        try:
            with open(path, "rb") as f:
                saved = pickle.load(f)
            self._jit = saved["jit"]
            self._in_specs = {s["name"]: TensorSpec(**s) for s in saved["inputs"]}
            self._out_specs = {s["name"]: TensorSpec(**s) for s in saved["outputs"]}
        except Exception as e:  # a truncated or foreign file: rebuild it rather than fail
            log.warning("tinygrad: ignoring unreadable JIT cache %s (%s); recompiling", path, type(e).__name__)
            return False
        return True

    def _save_jit(self, path: Path) -> None:
        saved = {"jit": self._jit, "inputs": [vars(s) for s in self._in_specs.values()],
                 "outputs": [vars(s) for s in self._out_specs.values()], "artifact": str(self.artifact)}
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                pickle.dump(saved, f, protocol=pickle.HIGHEST_PROTOCOL)
        except (OSError, pickle.PicklingError, TypeError, AttributeError) as e:
            log.warning("tinygrad: could not save the JIT to %s (%s); the next start compiles again", path, e)

    # ---- hooks -----------------------------------------------------------------------------------
    def _io(self) -> tuple[dict[str, TensorSpec], dict[str, TensorSpec]]:
        return dict(self._in_specs), dict(self._out_specs)

    def _zeros(self) -> dict[str, np.ndarray]:
        return {n: np.zeros(s.shape, s.dtype) for n, s in self._in_specs.items()}

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, Tensor]:
        if self._memory_mode() in ("mapped", "managed"):
            return self._jit(**self._zero_copy_inputs(feed))
        # NPY wraps the host array without a copy: held until _sync, as the device may copy it asynchronously
        self._held = {n: Tensor(np.ascontiguousarray(a), device="NPY") for n, a in feed.items()}
        return self._jit(**self._held)

    # ---- zero-copy inputs on CUDA (Jetson): the GPU reads the host buffer the frame was written into ----
    def _memory_mode(self) -> str:
        """'copy' (tinygrad copies the host array in) or 'mapped' / 'managed' (zero-copy inputs); once."""
        if not hasattr(self, "_mode"):
            self._mode = self._resolve_memory_mode()
        return self._mode

    def _resolve_memory_mode(self) -> str:
        requested = self.options.get("memory", "auto")
        if self.device != "cuda" or requested == "copy":
            return "copy"
        from edgekit.runners.cuda_memory import default_memory_mode, load_cuda_api, resolve_memory_mode

        if requested in (None, "", "auto"):
            # tinygrad's own libcuda binding says what the GPU is: a discrete GPU gets tinygrad's own copies
            # and never needs cuda-python or pycuda; an integrated one uses them for zero-copy when present
            mode = default_memory_mode(self._driver().device_info(0))
            if mode == "device":
                return "copy"
            try:
                self._api = load_cuda_api()
            except EdgekitError as e:
                log.warning("tinygrad: zero-copy (%s) inputs need cuda-python or pycuda; using tinygrad's own "
                            "copies. %s", mode, e)
                return "copy"
            return mode
        self._api = load_cuda_api()
        mode = resolve_memory_mode(requested, self._api.device_info(0))
        return "copy" if mode == "device" else mode  # discrete GPU: tinygrad's own copy

    def _driver(self) -> Any:
        if getattr(self, "_cuda_driver", None) is None:
            from edgekit.runners.cuda_context import TinygradCudaDriver

            self._cuda_driver = TinygradCudaDriver()
        return self._cuda_driver

    def input_views(self) -> dict[str, np.ndarray]:
        """Zero-copy mode: numpy views of the input buffers the GPU reads. Write a frame's pixels straight into
        them and pass the same arrays to infer(): nothing is copied at all."""
        if self._memory_mode() == "copy":
            raise EdgekitError("input_views() needs device='cuda' with memory='mapped' or 'managed'")
        if not self._zc:
            with self._keep_context:
                self._zero_copy_inputs(self._zeros())
        return {n: v for n, (_, v, _) in self._zc.items()}

    def _zero_copy_inputs(self, feed: Mapping[str, np.ndarray]) -> dict[str, Tensor]:
        from edgekit.runners.cuda_memory import CudaBuffer

        if not self._zc:  # one buffer per input for the runner's life: the captured JIT keeps reading it
            for n, s in self._in_specs.items():
                dt = np.dtype(s.dtype)
                buf = CudaBuffer(self._api, self._mode, int(np.prod(s.shape)) * dt.itemsize)
                t = Tensor.from_blob(buf.device, tuple(s.shape), dtype=_from_np_dtype(dt), device=self._target)
                self._zc[n] = (buf, buf.view(s.shape, dt), t)
        for n, a in feed.items():
            _, view, _ = self._zc[n]
            if a is not view:
                np.copyto(view, a)  # the only host write; with input_views() even this is skipped
        return {n: t for n, (_, _, t) in self._zc.items()}

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, Tensor]:
        with self._keep_context:
            self._last = self._run(feed)
        return self._last

    def _sync(self) -> None:
        # The JIT's outputs are realised buffers, but the device runs its queue asynchronously (the CPU too).
        with self._keep_context:
            Tensor.realize(*self._last.values())
            Device[self._target].synchronize()
        self._held = {}

    def _fetch(self, raw: dict[str, Tensor]) -> dict[str, np.ndarray]:
        with self._keep_context:
            return {name: t.numpy() for name, t in raw.items()}  # numpy() copies: the JIT reuses its buffers

    def _close(self) -> None:
        with self._keep_context:  # freeing the JIT's buffers and kernels goes through tinygrad's context too
            self._jit, self._last = None, {}
            for buf, _, _ in self._zc.values():
                buf.close()
            self._zc = {}


def _point_kernel_cache(cache_dir: Path) -> Path:
    """Make this process and its compile/BEAM workers use `cache_dir/cache.db` as tinygrad's cache."""
    db = cache_dir / "cache.db"
    try:
        (cache_dir / "jit").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgekitError(f"cannot use {cache_dir} as the tinygrad cache ({e.strerror}): pass cache_dir= or set "
                           f"{CACHE_ENV} to a directory you can write") from None
    os.environ["CACHEDB"] = str(db)  # read at import by the spawned compile/BEAM workers
    if tg_helpers.CACHEDB != str(db):
        # tinygrad reads CACHEDB once at import and keeps one connection: re-point it, and restart the
        # worker pool, whose processes hold the old path
        from tinygrad.engine.worker import terminate_worker_pool

        if tg_helpers._db_connection is not None:
            tg_helpers._db_connection.close()
        tg_helpers.CACHEDB, tg_helpers._db_connection = str(db), None
        tg_helpers._db_tables.clear()
        terminate_worker_pool()
    return db


def _settings() -> dict[str, str]:
    known = tg_helpers.ContextVar._cache
    return {k: repr(known[k].value) for k in _KEY_SETTINGS if k in known}


def _dtype_name(dtype: Any) -> str:
    np_type = _to_np_dtype(dtype)
    name = np.dtype(np_type).name if np_type is not None else str(dtype)
    if name not in DTYPES:
        raise EdgekitError(f"tinygrad: tensor dtype {name} is not one edgekit handles ({', '.join(DTYPES)})")
    return name


def _owned_by_me(path: Path) -> bool:
    """The file and its folder belong to this user and are not group- or world-writable."""
    try:
        for p in (path, path.parent):
            st = p.stat()
            if st.st_uid != os.getuid() or st.st_mode & 0o022:
                return False
    except OSError:
        return False
    return True
