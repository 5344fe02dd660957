"""The model card beside the artifacts: `<model_dir>/manifest.json`.

Every stage reads it and writes it, so preprocessing is never guessed and every artifact says what it
really is (the precision actually built, its sha256, what it was built from and on). The schema is
versioned and validated on load; unknown keys are rejected so typos surface instead of being ignored.
"""
from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError, model_file_hint, unknown_choice
from edgekit.fileio import atomic_write_json, sha256_file

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
BACKENDS = ("torch", "onnxrt", "trt", "tinygrad")
PRECISIONS = ("fp32", "fp16", "int8")
TASKS = ("classify", "detect")
DTYPES = ("float32", "float16", "int8", "uint8", "int32", "int64", "bool")
DECODERS = ("yolov8", "yolov5", "end2end")  # built-in detector output decoders (edgekit.vision.decoders)
_PLUGIN = re.compile(r"[A-Za-z_][\w.\-]*|[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
# How resize_crop scales an image. "area": OpenCV INTER_AREA when shrinking, INTER_LINEAR when enlarging (what
# edgekit trains with; the default, so manifests written before this field read as they always did).
# "pil_bilinear" / "pil_bicubic": Pillow's antialiased filters, which torchvision's Resize applies to PIL images:
# what torchvision-trained weights were trained and evaluated with (INTER_AREA moves ImageNet top-5).
INTERPOLATIONS = ("area", "pil_bilinear", "pil_bicubic")


@dataclass
class TensorSpec:
    """One input or output tensor. A dimension is an int, or a string naming a dynamic axis ("batch")."""

    name: str
    shape: list[int | str]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise EdgekitError("tensor spec: 'name' must be a non-empty string")
        if not isinstance(self.shape, (list, tuple)) or not all(
            (isinstance(d, int) and d >= 0) or isinstance(d, str) for d in self.shape
        ):
            raise EdgekitError(f"tensor '{self.name}': shape must be a list of ints or axis names, got {self.shape!r}")
        self.shape = list(self.shape)
        if self.dtype not in DTYPES:
            raise unknown_choice(f"dtype for tensor '{self.name}'", str(self.dtype), DTYPES)

    @property
    def is_dynamic(self) -> bool:
        return any(isinstance(d, str) for d in self.shape)


@dataclass
class InputSpec(TensorSpec):
    """The model input and how an image becomes it. `resize` is the shorter side before a centre crop
    to `crop` (H, W); `letterbox` keeps aspect and pads instead (detectors)."""

    layout: str = "NCHW"
    color: str = "RGB"  # channel order the model expects
    resize_mode: str = "resize_crop"  # resize_crop | letterbox
    resize: int = 0  # shorter side before the crop (resize_crop)
    crop: list[int] = field(default_factory=list)  # [H, W]
    scale: float = 1.0 / 255.0  # applied to uint8 pixels first
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    interpolation: str = "area"  # resize_crop's filter, one of INTERPOLATIONS (above)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layout not in ("NCHW", "NHWC"):
            raise unknown_choice("input layout", self.layout, ("NCHW", "NHWC"))
        if self.color not in ("RGB", "BGR"):
            raise unknown_choice("input colour order", self.color, ("RGB", "BGR"))
        if self.resize_mode not in ("resize_crop", "letterbox"):
            raise unknown_choice("input resize_mode", self.resize_mode, ("resize_crop", "letterbox"))
        if self.interpolation not in INTERPOLATIONS:
            raise unknown_choice("input interpolation", self.interpolation, INTERPOLATIONS)
        if len(self.shape) != 4:
            raise EdgekitError(f"input '{self.name}': expected a 4-D image tensor, got shape {self.shape}")
        if not self.crop:
            self.crop = [int(d) for d in (self.shape[2:4] if self.layout == "NCHW" else self.shape[1:3])]
        if len(self.crop) != 2 or len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise EdgekitError(f"input '{self.name}': crop needs [H, W], mean and std 3 values each (std > 0)")
        if not self.resize:
            self.resize = min(self.crop)


@dataclass
class Postprocess:
    """How a detector's raw output becomes boxes, and the thresholds its metric and export checks used, which
    the camera and the bench take as their defaults. The defaults are ultralytics predict's (what
    `edgekit train detect` checks its exports with); manifests written before this field get them."""

    decoder: str = "yolov8"  # a built-in decoder (DECODERS), or a plug-in's module.path:function / entry point name
    conf: float = 0.25  # confidence threshold
    iou: float = 0.7  # NMS IoU threshold
    max_det: int = 300  # detections kept per image

    def __post_init__(self) -> None:
        if not isinstance(self.decoder, str) or not (self.decoder in DECODERS or _PLUGIN.fullmatch(self.decoder)):
            raise EdgekitError(f"postprocess: decoder must be one of {', '.join(DECODERS)} or a plug-in's "
                               f"module.path:function, got {self.decoder!r}")
        for key, ok in (("conf", 0 <= _num(self.conf) <= 1), ("iou", 0 < _num(self.iou) <= 1)):
            if not ok:
                raise EdgekitError(f"postprocess: {key} must be a number in [0, 1], got {getattr(self, key)!r}")
        if isinstance(self.max_det, bool) or not isinstance(self.max_det, int) or self.max_det < 1:
            raise EdgekitError(f"postprocess: max_det must be a positive integer, got {self.max_det!r}")


def _num(v: Any) -> float:
    """A JSON number as a float; anything else as NaN, which fails every range check."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan")


@dataclass
class Artifact:
    """One built file: what it is, what it was built from and on, and what was measured of it."""

    backend: str
    path: str  # relative to the model directory
    precision: str
    sha256: str
    built_from: str | None = None  # path of the artifact it was converted from
    built_on: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # export options (opset, dynamic batch, ...)
    parity: dict[str, Any] = field(default_factory=dict)  # against the reference backend
    accuracy: dict[str, Any] = field(default_factory=dict)  # on held-out data

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise unknown_choice("backend in manifest artifact", self.backend, BACKENDS)
        if self.precision not in PRECISIONS:
            raise unknown_choice("precision in manifest artifact", self.precision, PRECISIONS)
        if Path(self.path).is_absolute() or ".." in Path(self.path).parts:
            raise EdgekitError(f"artifact path '{self.path}' must be relative to the model directory")


@dataclass
class Manifest:
    name: str
    task: str
    labels: list[str]
    input: InputSpec
    outputs: list[TensorSpec]
    source: dict[str, Any] = field(default_factory=dict)  # arch, pretrained, dataset, train args, metrics
    artifacts: list[Artifact] = field(default_factory=list)
    postprocess: Postprocess | None = None  # detectors: decoder and thresholds (a default one when absent)
    schema_version: int = SCHEMA_VERSION
    edgekit_version: str = ""
    model_dir: Path | None = field(default=None, repr=False, compare=False)  # where it was loaded from

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise EdgekitError("manifest: 'name' must be a non-empty string")
        if not isinstance(self.schema_version, int) or self.schema_version < 1:
            raise EdgekitError("manifest: 'schema_version' must be a positive integer")
        if self.task not in TASKS:
            raise unknown_choice("task", self.task, TASKS)
        if not isinstance(self.labels, list) or not self.labels or not all(isinstance(x, str) for x in self.labels):
            raise EdgekitError("manifest: 'labels' must be a non-empty list of class names")
        if not isinstance(self.source, dict):
            raise EdgekitError("manifest: 'source' must be an object")
        if self.task == "detect" and self.postprocess is None:
            self.postprocess = Postprocess()  # older manifests: the yolov8 head, predict's thresholds
        elif self.task != "detect" and self.postprocess is not None:
            raise EdgekitError(f"manifest: 'postprocess' is for detectors, and this is a '{self.task}' model")

    # ---- reading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> "Manifest":
        """Load and validate `<dir>/manifest.json` (a directory or the file itself)."""
        path = Path(path)
        file = path / MANIFEST_NAME if path.is_dir() else path
        if file.is_file() and model_file_hint(file):  # a model file where its directory belongs
            raise EdgekitError(model_file_hint(file))
        if not file.exists():
            hint = "train a model first (edgekit train classify) or pass the directory that holds manifest.json"
            raise EdgekitError(f"no manifest at {file}: {hint}")
        try:
            data = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EdgekitError(f"{file} is not valid JSON ({e}); re-export the model to rewrite it") from None
        try:
            m = cls.from_dict(data)
        except EdgekitError as e:
            raise EdgekitError(f"{file}: {e}") from None
        m.model_dir = file.parent
        return m

    @classmethod
    def from_dict(cls, data: Any) -> "Manifest":
        if not isinstance(data, dict):
            raise EdgekitError("manifest must be a JSON object")
        version = data.get("schema_version")
        if not isinstance(version, int):
            raise EdgekitError("manifest has no integer 'schema_version'")
        if version > SCHEMA_VERSION:
            raise EdgekitError(f"manifest schema {version} is newer than this edgekit ({SCHEMA_VERSION}): upgrade edgekit")
        d = _only_known(cls, data, "manifest")
        for key in ("name", "task", "labels", "input", "outputs"):
            if key not in d:
                raise EdgekitError(f"manifest is missing '{key}'")
        d["input"] = _build(InputSpec, d["input"], "input")
        if not isinstance(d["outputs"], list) or not d["outputs"]:
            raise EdgekitError("manifest 'outputs' must be a non-empty list")
        d["outputs"] = [_build(TensorSpec, o, f"outputs[{i}]") for i, o in enumerate(d["outputs"])]
        if not isinstance(d.get("artifacts", []), list):
            raise EdgekitError("manifest 'artifacts' must be a list")
        d["artifacts"] = [_build(Artifact, a, f"artifacts[{i}]") for i, a in enumerate(d.get("artifacts", []))]
        if d.get("postprocess") is not None:
            d["postprocess"] = _build(Postprocess, d["postprocess"], "postprocess")
        return cls(**d)

    # ---- writing -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("model_dir")
        if d["postprocess"] is None:
            d.pop("postprocess")
        return {"schema_version": d.pop("schema_version"), **d}

    def save(self, model_dir: str | Path | None = None) -> Path:
        model_dir = Path(model_dir or self.model_dir or ".")
        from edgekit import __version__

        self.edgekit_version = __version__
        self.model_dir = model_dir
        dest = model_dir / MANIFEST_NAME
        atomic_write_json(dest, self.to_dict())
        return dest

    # ---- artifacts -----------------------------------------------------------------------------
    def add_artifact(self, backend: str, path: str | Path, precision: str, **info: Any) -> Artifact:
        """Record a built file (replacing any earlier entry for the same backend and precision)."""
        if self.model_dir is None:
            raise EdgekitError("manifest has no model directory; save() it first")
        full = self.model_dir / path
        rel = str(Path(full).resolve().relative_to(Path(self.model_dir).resolve()))
        art = Artifact(
            backend=backend,
            path=rel,
            precision=precision,
            sha256=sha256_file(full),
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **info,
        )
        self.artifacts = [a for a in self.artifacts if not (a.backend == backend and a.precision == precision)]
        self.artifacts.append(art)
        return art

    def find_artifact(self, backend: str, precision: str | None = None) -> Artifact:
        if backend not in BACKENDS:
            raise unknown_choice("backend", backend, BACKENDS)
        if precision is not None and precision not in PRECISIONS:
            raise unknown_choice("precision", precision, PRECISIONS)
        matches = [a for a in self.artifacts if a.backend == backend and precision in (None, a.precision)]
        if not matches:
            have = ", ".join(f"{a.backend}/{a.precision}" for a in self.artifacts) or "none"
            want = backend + (f"/{precision}" if precision else "")
            fix = {"onnxrt": "edgekit export MODEL_DIR --to onnx", "trt": "edgekit export MODEL_DIR --to trt"}.get(
                backend, f"export a {backend} artifact"
            )
            raise EdgekitError(f"{self._where()}has no {want} artifact (has: {have}); build it with `{fix}`")
        order = {p: i for i, p in enumerate(PRECISIONS)}
        return min(matches, key=lambda a: order[a.precision])  # fp32 first when precision is not given

    def artifact_path(self, art: Artifact, *, verify: bool = True) -> Path:
        """Absolute path of an artifact; with `verify`, its sha256 must match what was recorded."""
        if self.model_dir is None:
            raise EdgekitError("manifest was not loaded from a directory")
        p = self.model_dir / art.path
        if not p.exists():
            raise EdgekitError(f"{self._where()}lists {art.path} but the file is missing; re-run the export")
        if verify and sha256_file(p) != art.sha256:
            raise EdgekitError(
                f"{p} does not match the sha256 in its manifest (changed, truncated or copied from another "
                f"export); re-run the export that built it"
            )
        return p

    def _where(self) -> str:
        return f"{self.model_dir}: " if self.model_dir else ""


def _only_known(cls: type, data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise EdgekitError(f"{where} must be an object")
    known = {f.name for f in fields(cls)} - {"model_dir"}
    extra = sorted(set(data) - known)
    if extra:
        raise EdgekitError(f"{where}: unknown key(s) {extra}; allowed: {sorted(known)}")
    return dict(data)


def _build(cls: type, data: Any, where: str) -> Any:
    d = _only_known(cls, data, where)
    try:
        return cls(**d)
    except TypeError as e:
        raise EdgekitError(f"{where}: {e}") from None
    except EdgekitError as e:
        raise EdgekitError(f"{where}: {e}") from None
