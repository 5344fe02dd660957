"""The TensorRT engine cache: an engine is only valid for the ONNX it came from, the TensorRT version and
GPU that built it, its precision, shapes and DLA core. That key is stored beside the engine in a JSON
sidecar (`model_fp16.engine` + `model_fp16.engine.json`), both written atomically. A build with the same
key reuses the engine; a changed key rebuilds; loading an engine whose key does not match this machine
(copied from elsewhere, another TensorRT, a re-exported ONNX) is refused with the exact rebuild command.
No TensorRT import here."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_write_json, sha256_file

SIDECAR_FORMAT = "edgekit-trt-engine/1"
# Key fields that depend on the machine: they must match where the engine runs.
ENV_FIELDS = ("tensorrt", "gpu", "compute_capability")


@dataclass(frozen=True)
class EngineEnv:
    """The machine side of the key, as TensorRT and CUDA report it."""

    tensorrt: str
    gpu: str
    compute_capability: str
    integrated: bool = False
    cuda_runtime: str | None = None
    cuda_driver: str | None = None


@dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    tensorrt: str
    gpu: str
    compute_capability: str
    precision: str  # as requested; the sidecar also records what was built
    typing: str  # weak | strong
    shapes: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # input -> min/opt/max
    dla_core: int = -1
    calibration: str | None = None  # fingerprint of the INT8 calibration images (weak int8 only)

    def as_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))  # plain lists, as read back from JSON

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()


def sidecar_path(engine: str | os.PathLike) -> Path:
    return Path(f"{engine}.json")


def rebuild_command(model_dir: str | os.PathLike, precision: str, dla_core: int = -1, typing: str = "auto") -> str:
    cmd = ["edgekit", "export", str(model_dir), "--to", "trt", "--precision", precision]
    if dla_core >= 0:
        cmd += ["--dla-core", str(dla_core)]
    if typing != "auto":
        cmd += ["--typing", typing]
    return shlex.join(cmd + ["--force"])


def write_sidecar(engine: Path, key: EngineKey, info: dict[str, Any]) -> dict[str, Any]:
    """Write the key (and what was built) beside an engine that is already in place."""
    data = {"format": SIDECAR_FORMAT, "key": key.as_dict(), "key_digest": key.digest(),
            "engine_sha256": sha256_file(engine), **info}
    atomic_write_json(sidecar_path(engine), data)
    return data


def read_sidecar(engine: Path) -> dict[str, Any] | None:
    """The sidecar's content, or None when it is missing or not one of ours."""
    try:
        data = json.loads(sidecar_path(engine).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT or not isinstance(data.get("key"), dict):
        return None
    return data


def cached_engine(engine: Path, key: EngineKey) -> dict[str, Any] | None:
    """The sidecar when `engine` was built for exactly this key and is intact; None means rebuild."""
    data = read_sidecar(engine) if engine.exists() else None
    if data is None or data["key"] != key.as_dict():
        return None
    return data if sha256_file(engine) == data.get("engine_sha256") else None


def key_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    return [f"{k}: built for {recorded.get(k)!r}, here {current.get(k)!r}"
            for k in sorted(set(recorded) | set(current)) if recorded.get(k) != current.get(k)]


def verify_engine_files(engine: Path, *, rebuild: str, onnx_sha256: str | None = None) -> dict[str, Any]:
    """Checks that need no TensorRT: the sidecar exists, the engine is the one it describes, and (when
    known) it was built from the ONNX the manifest has now. Returns the sidecar."""
    data = read_sidecar(engine)
    if data is None:
        raise EdgekitError(
            f"{engine} has no valid {sidecar_path(engine).name} beside it, so nothing says which ONNX, TensorRT "
            f"and GPU it was built for (copied from another machine?). Build it here: `{rebuild}`")
    if sha256_file(engine) != data.get("engine_sha256"):
        raise EdgekitError(f"{engine} is not the engine its sidecar describes (changed or replaced since it was "
                           f"built); rebuild it: `{rebuild}`")
    if onnx_sha256 and data["key"].get("onnx_sha256") != onnx_sha256:
        raise EdgekitError(f"{engine} was built from an older ONNX (the model was re-exported since); a stale "
                           f"engine would give the old model's answers. Rebuild it: `{rebuild}`")
    return data


def check_engine_env(data: dict[str, Any], env: EngineEnv, *, engine: Path, rebuild: str) -> None:
    """Refuse an engine built with another TensorRT or on another GPU: TensorRT engines are not portable."""
    recorded = {k: data["key"].get(k) for k in ENV_FIELDS}
    current = {k: getattr(env, k) for k in ENV_FIELDS}
    diffs = key_differences(recorded, current)
    if diffs:
        raise EdgekitError(f"{engine} was built elsewhere ({'; '.join(diffs)}); TensorRT engines only run with "
                           f"the TensorRT version and GPU that built them. Rebuild it on this machine: `{rebuild}`")


def timing_cache_path(setting: str, env: EngineEnv) -> Path | None:
    """'none' -> no timing cache; 'auto' -> one file per TensorRT version and GPU under the user cache
    (it holds kernel timings, shared by every model); anything else is a path."""
    if setting in ("none", ""):
        return None
    if setting != "auto":
        return Path(setting).expanduser()
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgekit" / "trt"
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", env.gpu).strip("-").lower() or "gpu"
    return root / f"timing-trt{env.tensorrt}-sm{env.compute_capability.replace('.', '')}-{gpu}.cache"
