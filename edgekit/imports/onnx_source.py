"""`edgekit import MODEL.onnx`: a model directory around an ONNX file that edgekit did not make.

What the manifest needs is read from the file where it can be, and taken from flags where it cannot:
  - the input (name, shape, layout) from the graph; a dynamic height/width is fixed to --crop or the metadata's
    imgsz in the copy (the runners and the camera loop feed one size);
  - the output shapes by running the graph once in ONNX Runtime on zeros (a dynamic graph has no static ones);
  - task, labels, input size and stride from ultralytics' metadata (`task`, `names`, `imgsz`, `stride`) when
    the file has it, else from --task / --labels, else from the output shape;
  - preprocessing: flags win; else ultralytics' (letterbox or resize + crop, RGB, / 255) for its files, else
    the usual convention of the task (YOLO's for a detector, ImageNet's for a classifier), said so.
Each value's origin is recorded in manifest.source["import"] (`given` and `inferred`), so nothing is guessed
silently. The file is copied into the directory (atomically, with edgekit's made-marker) as model.onnx, the
onnxrt fp32 artifact, so export fp16/int8/trt, bench, compare and camera take the directory like a trained one."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_dir, atomic_write_bytes, atomic_write_text, sha256_file
from edgekit.imports.config import ImportConfig, floats, sizes
from edgekit.imports.labels import check_count, metadata_names, read_labels
from edgekit.manifest import DECODERS, InputSpec, Manifest, Postprocess, TensorSpec
from edgekit.platform import machine_summary

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
META_KEYS = ("task", "names", "imgsz", "stride", "end2end", "batch", "author", "version", "description", "license")
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
CROP_PCT = 0.875  # a classifier's usual resize = crop / 0.875 (torchvision, timm)


def read_onnx(path: str | Path):
    """The parsed, checked ONNX model, or one EdgekitError saying the file is not one."""
    from edgekit.runners.onnx_file import load_onnx

    try:
        return load_onnx(path)
    except EdgekitError as e:  # its message says "re-export": wrong advice for a file the user brings
        why = str(e).split(" (", 1)[-1].split("): it is damaged", 1)[0]
        raise EdgekitError(f"{path} is not a readable ONNX model ({why}): it is truncated, damaged or another "
                           "format; export it again from its framework, or pass an ultralytics .pt with "
                           "--trust-pickle") from None


def metadata(model) -> dict[str, str]:
    """ultralytics' metadata_props that edgekit reads (strings, as stored)."""
    return {p.key: p.value for p in model.metadata_props if p.key in META_KEYS}


def _literal(text: str | None) -> Any:
    import ast

    try:
        return ast.literal_eval(text) if text else None  # literals only: never code
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def image_input(model, cfg: ImportConfig, source: str) -> tuple[str, list, str]:
    """(input name, dims with None where dynamic, layout) of the graph's one image input."""
    init = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise EdgekitError(f"{source} has {len(inputs)} inputs ({names}): edgekit imports models with one image input")
    inp = inputs[0]
    t = inp.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    shown = [d if d is not None else "?" for d in dims]
    if t.elem_type != 1:  # TensorProto.FLOAT
        import onnx

        kind = onnx.TensorProto.DataType.Name(t.elem_type).lower()
        extra = (": import the FP32 model, then `edgekit export DIR --precision fp16`" if kind == "float16" else
                 ": edgekit imports image models with a float32 input")
        raise EdgekitError(f"{source}: input '{inp.name}' is {kind} {shown}{extra}")
    nchw, nhwc = len(dims) == 4 and dims[1] == 3, len(dims) == 4 and dims[3] == 3
    if not (nchw or nhwc):
        raise EdgekitError(f"{source}: input '{inp.name}' has shape {shown}, not an image: edgekit imports models "
                           "whose input is one colour image, (N, 3, H, W) or (N, H, W, 3)")
    layout = "NHWC" if cfg.nhwc or (nhwc and not nchw) else "NCHW"
    if cfg.nhwc and not nhwc:
        raise EdgekitError(f"--nhwc: input '{inp.name}' has shape {shown}, which is not (N, H, W, 3)")
    return inp.name, dims, layout


def input_hw(dims: list, layout: str, meta: dict, cfg: ImportConfig, source: str) -> tuple[list[int], str]:
    """(H, W) of the network input and where it came from."""
    hw = dims[2:4] if layout == "NCHW" else dims[1:3]
    if None not in hw:
        if cfg.crop and sizes(cfg.crop) != hw:
            raise EdgekitError(f"--crop {cfg.crop}: the graph's input is fixed at {hw[0]}x{hw[1]}; drop --crop or "
                               "pass that size")
        return [int(d) for d in hw], "graph"
    if cfg.crop:
        return sizes(cfg.crop), "given"
    imgsz = _literal(meta.get("imgsz"))
    if isinstance(imgsz, int) or (isinstance(imgsz, (list, tuple)) and len(imgsz) in (1, 2)):
        return sizes(",".join(str(int(v)) for v in (imgsz if isinstance(imgsz, (list, tuple)) else [imgsz]))), \
            "ultralytics metadata (imgsz)"
    raise EdgekitError(f"{source}: the input's height and width are dynamic and the file does not say its size: "
                       "pass --crop H,W (the size the model was trained at)")


def fix_dims(model, name: str, dims: list, layout: str, hw: list[int]) -> bool:
    """Set a dynamic height/width of the input to `hw` in place (the batch axis keeps its name); True when
    anything changed."""
    inp = next(i for i in model.graph.input if i.name == name)
    axes = (2, 3) if layout == "NCHW" else (1, 2)
    changed = False
    for axis, size in zip(axes, hw):
        if dims[axis] is None:
            d = inp.type.tensor_type.shape.dim[axis]
            d.Clear()
            d.dim_value = int(size)
            changed = True
    return changed


def probe_outputs(path: Path, name: str, shape: list[int], source: str) -> dict[str, np.ndarray]:
    """Every output of the graph on one all-zero input (ONNX Runtime, CPU): the shapes a dynamic graph does not
    declare, and proof that the file runs here."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        outs = sess.run(None, {name: np.zeros(shape, np.float32)})
    except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidGraph, NotImplemented, ...)
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise EdgekitError(f"ONNX Runtime cannot run {source} ({type(e).__name__}: {first}): edgekit runs imported "
                           "models with ONNX Runtime; re-export it with standard ONNX operators") from None
    return {o.name: v for o, v in zip(sess.get_outputs(), outs)}


def resolve_task(cfg: ImportConfig, meta: dict, outputs: dict[str, np.ndarray], source: str) -> tuple[str, str]:
    if cfg.task:
        return cfg.task, "given"
    task = meta.get("task")
    if task in ("classify", "detect"):
        return task, "ultralytics metadata (task)"
    if task:
        raise EdgekitError(f"{source} is an ultralytics '{task}' model: edgekit imports classify and detect models")
    first = next(iter(outputs.values()))
    if len(outputs) == 1 and first.ndim == 2:
        return "classify", "output shape (N, classes)"
    if first.ndim == 3:
        return "detect", "output shape (1, rows, anchors)"
    shapes = ", ".join(str(list(v.shape)) for v in outputs.values())
    raise EdgekitError(f"{source}: cannot tell the task from its output(s) {shapes}: pass --task classify or detect")


def resolve_labels(cfg: ImportConfig, meta: dict, classes: int | None, source: str) -> tuple[list[str], str]:
    if cfg.labels:
        names, origin = read_labels(cfg.labels), "given"
        where = f"--labels {cfg.labels}"
    elif metadata_names(meta.get("names", "")):
        names, origin, where = metadata_names(meta["names"]), "ultralytics metadata (names)", "its metadata"
    else:
        if classes is None:
            raise EdgekitError(f"{source} does not say its class names and its output does not say how many: pass "
                               "--labels FILE")
        log.warning("no class names given or in the file: naming the %d classes 0..%d (pass --labels FILE)",
                    classes, classes - 1)
        return [str(i) for i in range(classes)], "numbered (no --labels, no metadata)"
    if classes is not None:
        check_count(names, classes, source, where)
    return names, origin


def detect_decoder(cfg: ImportConfig, outputs: dict[str, np.ndarray], meta: dict, labels_n: int | None,
                   source: str) -> tuple[str, int | None]:
    """(decoder, number of classes the output implies, None when it does not say: end2end, plug-ins) of a
    detector, from edgekit.vision.decoders.choose_decoder (never a guess: ambiguous or unmatched is an error
    naming --decoder). A label count that only the shape contradicts is reported as that."""
    from edgekit.vision.decoders import choose_decoder

    shape = list(next(iter(outputs.values())).shape)
    if len(outputs) != 1 and not (cfg.decoder and cfg.decoder not in DECODERS):
        shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in outputs.items())
        raise EdgekitError(f"{source} has {len(outputs)} outputs ({shapes}): the built-in decoders read one; pass "
                           "--decoder module.path:function (an installed plug-in)")
    try:
        decoder = choose_decoder(shape, labels_n, meta, cfg.decoder or None)
    except EdgekitError as e:
        if labels_n is None:
            raise EdgekitError(f"{source}: {e}") from None
        classes = None  # does the shape fit the metadata's class count, or no count? then the labels are wrong
        for n in dict.fromkeys([len(metadata_names(meta.get("names", "")) or []) or None, None]):
            try:
                classes = _classes(choose_decoder(shape, n, meta, cfg.decoder or None), shape)
                break
            except EdgekitError:
                continue
        if classes is None:
            raise EdgekitError(f"{source}: {e}") from None
        raise EdgekitError(f"{labels_n} class names but {source}'s output {shape} holds {classes} classes: pass "
                           f"--labels with {classes} names (one per output class, in order)") from None
    return decoder, _classes(decoder, shape)


def _classes(decoder: str, shape: list[int]) -> int | None:
    return {"yolov8": shape[1] - 4, "yolov5": shape[2] - 5}.get(decoder) if len(shape) == 3 else None


def build_input_spec(cfg: ImportConfig, task: str, name: str, dims: list, layout: str, hw: list[int],
                     meta: dict) -> tuple[InputSpec, dict[str, str]]:
    """The manifest's input spec and, for each preprocessing value, where it came from."""
    ul = bool(meta.get("task"))
    if task == "detect":
        _detector_flags_supported(cfg, layout)
        origin = "ultralytics metadata" if ul else "YOLO's preprocessing (ultralytics' LetterBox, RGB, / 255)"
        base = dict(resize_mode="letterbox", resize=max(hw), scale=1 / 255, mean=[0.0] * 3, std=[1.0] * 3)
    elif ul:  # ultralytics' classify transforms: shorter side to imgsz, centre crop, / 255, no mean/std
        origin = "ultralytics metadata (its classify transforms)"
        base = dict(resize_mode="resize_crop", resize=min(hw), scale=1 / 255, mean=[0.0] * 3, std=[1.0] * 3)
    else:
        origin = "ImageNet convention (no metadata: pass --mean/--std/--scale/--resize if the model differs)"
        base = dict(resize_mode="resize_crop", resize=round(min(hw) / CROP_PCT), scale=1 / 255, mean=IMAGENET[0],
                    std=IMAGENET[1])
    given = {"mean": floats(cfg.mean) if cfg.mean else None, "std": floats(cfg.std) if cfg.std else None,
             "scale": cfg.scale or None, "resize": cfg.resize or None,
             "resize_mode": "letterbox" if cfg.letterbox else None}
    values, where = {}, {}
    for key, default in base.items():
        values[key] = given[key] if given.get(key) is not None else default
        where[key] = "given" if given.get(key) is not None else origin
    if cfg.letterbox and cfg.resize:
        raise EdgekitError("--letterbox and --resize: a letterboxed input is resized to fit, not cropped; drop --resize")
    where.update(color="given" if cfg.bgr else "default (RGB)", layout="given" if cfg.nhwc else "graph")
    shape = [dims[0] if dims[0] is not None else "batch", *((3, *hw) if layout == "NCHW" else (*hw, 3))]
    spec = InputSpec(name=name, shape=shape, dtype="float32", layout=layout, color="BGR" if cfg.bgr else "RGB",
                     crop=list(hw), **values)
    return spec, where


def _detector_flags_supported(cfg: ImportConfig, layout: str) -> None:
    """edgekit's detector pipeline (camera, bench, export checks) feeds letterboxed NCHW RGB / 255: a flag that
    asks for anything else would be ignored there, so it is refused here."""
    odd = [f for f, on in (("--bgr", cfg.bgr), ("--mean", cfg.mean and floats(cfg.mean) != [0.0] * 3),
                           ("--std", cfg.std and floats(cfg.std) != [1.0] * 3),
                           ("--scale", cfg.scale and abs(cfg.scale - 1 / 255) > 1e-9), ("--resize", cfg.resize),
                           ("--nhwc", layout == "NHWC")) if on]
    if odd:
        raise EdgekitError(f"{', '.join(odd)}: edgekit's detector pipeline feeds letterboxed NCHW RGB / 255 "
                           "(ultralytics' preprocessing) and nothing else; drop them or re-export the detector so")


def import_onnx(source: str | Path, out: str | Path, cfg: ImportConfig) -> Manifest:
    """Write the model directory `out` for the ONNX file `source`; returns its manifest."""
    import onnx

    source = str(source)
    model = read_onnx(source)
    meta = metadata(model)
    name, dims, layout = image_input(model, cfg, source)
    hw, hw_from = input_hw(dims, layout, meta, cfg, source)
    fixed = fix_dims(model, name, dims, layout, hw)
    with atomic_dir(out) as tmp:
        atomic_write_bytes(tmp / ONNX_FILE, model.SerializeToString())
        feed = [1, 3, *hw] if layout == "NCHW" else [1, *hw, 3]
        outputs = probe_outputs(tmp / ONNX_FILE, name, feed, source)
        task, task_from = resolve_task(cfg, meta, outputs, source)
        named = len(read_labels(cfg.labels)) if cfg.labels else len(metadata_names(meta.get("names", "")) or []) or None
        decoder, classes = (detect_decoder(cfg, outputs, meta, named, source) if task == "detect"
                            else (None, _classifier_classes(outputs, source)))
        labels, labels_from = resolve_labels(cfg, meta, classes, source)
        spec, where = build_input_spec(cfg, task, name, dims, layout, hw, meta)
        out_specs = [TensorSpec(k, ["batch" if i == 0 and spec.is_dynamic else int(d) for i, d in enumerate(v.shape)],
                                str(v.dtype)) for k, v in outputs.items()]
        inferred = {"task": task_from, "labels": labels_from, "input_hw": hw_from, **where}
        if decoder:
            inferred["decoder"] = "given" if cfg.decoder else "output shape and metadata (choose_decoder)"
        src = {"format": "onnx", "imported_from": str(Path(source).resolve()), "sha256": sha256_file(source),
               "onnx_metadata": meta, "input_dims_fixed": fixed,
               "import": {"given": cfg.given(), "inferred": {k: v for k, v in inferred.items() if v != "given"}},
               "machine": machine_summary()}
        if cfg.data:
            src["dataset"] = _dataset(cfg.data, labels)
        manifest = Manifest(name=Path(out).name, task=task, labels=labels, input=spec, outputs=out_specs, source=src,
                            postprocess=Postprocess(decoder=decoder) if decoder else None)
        atomic_write_text(tmp / "labels.txt", "\n".join(labels) + "\n")
        manifest.save(tmp)
        opts: dict[str, Any] = {"imported": "input height/width fixed to the size above" if fixed else "copied unchanged",
                                "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                                              None)}
        from edgekit.tasks import task_for

        float_nodes = task_for(manifest.task).float_nodes(onnx.load(str(tmp / ONNX_FILE)))  # the head stays float
        if float_nodes:
            opts["int8_float_nodes"] = float_nodes
        manifest.add_artifact("onnxrt", ONNX_FILE, "fp32", built_from=str(Path(source).resolve()),
                              built_on=machine_summary(), options=opts)
        manifest.save(tmp)
    return Manifest.load(out)


def _classifier_classes(outputs: dict[str, np.ndarray], source: str) -> int:
    out = next(iter(outputs.values()))
    if len(outputs) != 1 or out.ndim != 2:
        shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in outputs.items())
        raise EdgekitError(f"{source}: a classifier must have one (N, classes) output, it has {shapes}")
    return int(out.shape[1])


def _dataset(data: str, labels: list[str]) -> dict:
    """A YOLO data.yaml with the model's classes, recorded so later commands find held-out data."""
    from edgekit.data.yolo import read_dataset_yaml

    spec = read_dataset_yaml(data)
    if spec.names != labels:
        raise EdgekitError(f"--data {data} has classes {spec.names}, the model has {labels}: pass a dataset with the "
                           "model's own classes")
    return {"format": "yolo", "yaml": str(spec.yaml.resolve()), "root": str(spec.root), "names": spec.names}
