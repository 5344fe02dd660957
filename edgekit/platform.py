"""What this machine is: Jetson model and L4T/JetPack, CPU, GPU, CUDA, power mode, and the versions of
every backend. Nothing here imports torch, TensorRT or tinygrad: versions are read from package metadata,
and CUDA facts from the driver files or nvidia-smi when present."""
from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import platform as _py
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

# L4T release -> JetPack (the pairs NVIDIA publishes; newest first).
_JETPACK = {"36.4": "6.1/6.2", "36.3": "6.0", "36.2": "6.0 DP", "35.6": "5.1.4", "35.5": "5.1.3",
            "35.4": "5.1.2", "35.3": "5.1.1", "35.2": "5.1", "35.1": "5.0.2", "32.7": "4.6.x"}


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return None


def jetson() -> dict[str, Any] | None:
    """Jetson facts, or None on anything else."""
    model = _read("/proc/device-tree/model")
    release = _read("/etc/nv_tegra_release")
    if not release and not (model and ("jetson" in model.lower() or "nvidia" in model.lower())):
        return None
    info: dict[str, Any] = {"model": model}
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", release or "")
    if m:
        l4t = f"{m.group(1)}.{m.group(2)}"
        info["l4t"] = l4t
        info["jetpack"] = next((jp for k, jp in _JETPACK.items() if l4t.startswith(k)), "unknown")
    nvp = _run(["nvpmodel", "-q"])
    if nvp:
        m = re.search(r"NV Power Mode:\s*(\S+)", nvp)
        info["power_mode"] = m.group(1) if m else nvp.splitlines()[0]
    return info


def cpu() -> dict[str, Any]:
    name = None
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.lower().startswith(("model name", "hardware")):
            name = line.split(":", 1)[1].strip()
            break
    return {"name": name or _py.processor() or _py.machine(), "arch": _py.machine(), "cores": os.cpu_count(),
            "int8": cpu_int8()}


# What decides how ONNX Runtime's CPU int8 kernels multiply (u8 activations x s8 weights):
#   x86-vnni    VPDPBUSD (AVX512-VNNI or AVX-VNNI) accumulates in 32 bits: exact.
#   x86-avx512  AVX-512BW without VNNI, and x86-avx2: VPMADDUBSW adds two u8 x s8 products into int16 and
#   x86-avx2    saturates (255 x 127 x 2 > 32767); 7-bit weights (reduce_range) keep the sum in range.
#   arm-i8mm / arm-dotprod / arm: SMMLA / SDOT / widening multiplies, 32-bit accumulation: exact.
X86_ARCHES = ("x86_64", "amd64", "i386", "i686", "x86")
ARM_ARCHES = ("aarch64", "arm64", "armv8l", "armv7l")


# x86 CPUs whose ONNX Runtime u8s8 kernels sum u8 x s8 pairs into int16 (VPMADDUBSW) and saturate with 8-bit
# weights; VNNI CPUs (VPDPBUSD, int32 sums) and ARM do not
SATURATING_INT8_CPUS = ("x86-avx2", "x86-avx512", "x86")


def cpu_int8_kind(cpuinfo: str, arch: str) -> dict[str, Any]:
    """{"kind", "features"} of a CPU from its /proc/cpuinfo text ("flags" on x86, "Features" on ARM) and
    its architecture (platform.machine()). Pure: tests feed it crafted texts."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    arch = arch.lower()
    if arch in X86_ARCHES:
        wanted = ("avx512_vnni", "avx_vnni", "avx512bw", "avx2")
        if {"avx512_vnni", "avx_vnni"} & flags:
            kind = "x86-vnni"
        elif "avx512bw" in flags:
            kind = "x86-avx512"
        elif "avx2" in flags:
            kind = "x86-avx2"
        else:
            kind = "x86"
    elif arch in ARM_ARCHES:
        wanted = ("asimddp", "i8mm")  # asimddp: the SDOT/UDOT dot-product instructions (FEAT_DotProd)
        kind = "arm-i8mm" if "i8mm" in flags else "arm-dotprod" if "asimddp" in flags else "arm"
    else:
        wanted, kind = (), "unknown"
    return {"kind": kind, "arch": arch, "features": [f for f in wanted if f in flags]}


@lru_cache(maxsize=1)
def cpu_int8() -> dict[str, Any]:
    """cpu_int8_kind of this machine (the aarch64 hwcaps show in /proc/cpuinfo's Features line)."""
    return cpu_int8_kind(_read("/proc/cpuinfo") or "", _py.machine())


def gpu() -> dict[str, Any] | None:
    """The NVIDIA GPU as the driver reports it (nvidia-smi), or the integrated GPU on a Jetson."""
    out = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap", "--format=csv,noheader"])
    if out:
        parts = [p.strip() for p in out.splitlines()[0].split(",")]
        info: dict[str, Any] = {"name": parts[0], "driver": parts[1] if len(parts) > 1 else None,
                                "memory": parts[2] if len(parts) > 2 else None,
                                "compute_capability": parts[3] if len(parts) > 3 else None}
        m = re.search(r"CUDA Version:\s*([\d.]+)", _run(["nvidia-smi"]) or "")
        info["cuda_driver"] = m.group(1) if m else None
        return info
    if jetson():
        return {"name": "integrated (Jetson)", "integrated": True}
    return None


def cuda_toolkit() -> str | None:
    for f in ("/usr/local/cuda/version.json", "/usr/local/cuda/version.txt"):
        text = _read(f)
        if text:
            m = re.search(r'"cuda"\s*:\s*\{[^}]*"version"\s*:\s*"([\d.]+)"', text) or re.search(r"([\d]+\.[\d.]+)", text)
            if m:
                return m.group(1)
    nvcc = _run(["nvcc", "--version"])
    m = re.search(r"release ([\d.]+)", nvcc or "")
    return m.group(1) if m else None


def version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def module_present(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def libraries() -> dict[str, Any]:
    """Versions of the libraries edgekit drives (from metadata; TensorRT from JetPack has no pip metadata)."""
    ort = None
    for d in ("onnxruntime-gpu", "onnxruntime"):
        if version(d):
            ort = {"version": version(d), "package": d}
            break
    trt = version("tensorrt") or version("tensorrt-cu12") or version("tensorrt-cu13") or version("tensorrt-libs")
    if trt is None and module_present("tensorrt"):
        trt = "present (no pip metadata: JetPack)"
    return {
        "python": _py.python_version(),
        "numpy": version("numpy"),
        "torch": version("torch"),
        "torchvision": version("torchvision"),
        "onnx": version("onnx"),
        "onnxruntime": ort,
        "tensorrt": trt,
        "cuda-python": version("cuda-python") or version("cuda-bindings"),
        "pycuda": version("pycuda"),
        "tinygrad": version("tinygrad"),
        "ultralytics": version("ultralytics"),
        "opencv": version("opencv-python") or version("opencv-python-headless") or version("opencv-contrib-python")
        or ("present" if module_present("cv2") else None),
    }


def idle_cores(samples: int = 5, interval: float = 0.02) -> int:
    """Cores this process may use that other work is not using right now, at least 1: the cores it may run on
    less the tasks runnable apart from this one (the median of a few reads of /proc/loadavg's running count,
    which counts this thread too). Instantaneous, unlike the load average, which lags a minute behind. Where
    /proc/loadavg is missing: every core."""
    import time

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores = min(cores, cpu_quota() or cores)
    running = []
    for i in range(samples):
        text = _read("/proc/loadavg")
        if text is None:
            return cores
        running.append(int(text.split()[3].split("/")[0]) - 1)
        if i + 1 < samples:
            time.sleep(interval)
    others = sorted(running)[len(running) // 2]
    return max(1, min(cores, cores - others))


def cpu_quota() -> int | None:
    """The cgroup's CPU limit in whole cores (a container's --cpus), rounded up; None when there is none."""
    import math

    v2 = _read("/sys/fs/cgroup/cpu.max")  # "max 100000" or "200000 100000"
    quota, period = (v2.split() + ["", ""])[:2] if v2 else (_read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
                                                             _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))
    try:
        q, p = int(quota), int(period)
    except (TypeError, ValueError):  # "max", missing files
        return None
    return max(1, math.ceil(q / p)) if q > 0 and p > 0 else None


def ort_providers() -> list[str]:
    ort, _ = try_import("onnxruntime")
    return list(ort.get_available_providers()) if ort else []


def opencv_gstreamer() -> bool | None:
    cv2, _ = try_import("cv2")
    if cv2 is None:
        return None
    m = re.search(r"GStreamer:\s*(\w+)", cv2.getBuildInformation())
    return bool(m and m.group(1).upper() == "YES")


def try_import(name: str) -> tuple[Any, str | None]:
    """(module, None); (None, None) when it is not installed; (None, why) when it is installed but does not
    import: JetPack's cv2 4.8 (built on numpy 1.x) under numpy 2 is the usual one on a Jetson."""
    if not module_present(name):
        return None, None
    try:
        return importlib.import_module(name), None
    except ImportError as e:
        return None, f"{type(e).__name__}: {e}".splitlines()[0]


def import_errors() -> dict[str, str]:
    """The installed libraries edgekit drives that fail to import, with the first line of why."""
    errors = {n: try_import(n)[1] for n in ("cv2", "onnxruntime")}
    return {n: e for n, e in errors.items() if e}


@lru_cache(maxsize=1)
def machine_summary() -> dict[str, Any]:
    """The facts stored with every built artifact and every measurement."""
    return {"host": _py.node(), "os": f"{_py.system()} {_py.release()}", "cpu": cpu(), "gpu": gpu(),
            "jetson": jetson(), "cuda": cuda_toolkit(), "libraries": libraries()}


def info() -> dict[str, Any]:
    """Everything `edgekit info` prints."""
    s = dict(machine_summary())
    s["onnxruntime_providers"] = ort_providers()
    s["opencv_gstreamer"] = opencv_gstreamer()
    s["clang"] = shutil.which("clang")
    s["import_errors"] = import_errors()
    return s


def _run(cmd: list[str]) -> str | None:
    if not shutil.which(cmd[0]):
        return None
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 else None
