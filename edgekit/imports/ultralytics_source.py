"""`edgekit import best.pt --trust-pickle`: a model directory from an ultralytics detection checkpoint (YOLOv5u,
YOLOv8, YOLO11), exported to ONNX without training.

A .pt is a pickle: unpickling it runs any code it holds. edgekit never does that silently and never in the CLI's
own process: only with --trust-pickle, and then in a child process (`python -m edgekit.imports.ultralytics_source`)
that loads it with ultralytics, refuses anything but a detector, and writes what the parent needs as data: the
weights-only model_state.pt (edgekit.train.detect.save_yolo_state, checked to rebuild the same model) and a JSON
of names, strides and training size. The parent then writes the manifest and exports model.onnx exactly as
`edgekit train detect` does (edgekit.export.yolo.onnx_from_yolo: ultralytics' exporter on edgekit's own rebuilt
checkpoint, raw-output and box parity against PyTorch, mAP when --data is given)."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_dir, atomic_write_json, atomic_write_text, sha256_file
from edgekit.imports.config import ImportConfig
from edgekit.imports.labels import check_count, read_labels
from edgekit.manifest import Manifest, Postprocess, TensorSpec
from edgekit.platform import machine_summary

log = logging.getLogger(__name__)

INFO_FILE = ".checkpoint.json"  # what the child tells the parent (removed before the folder is in place)
DEFAULT_IMGSZ = 640


def pickle_refusal(pt: str) -> EdgekitError:
    return EdgekitError(f"{pt} is a pickle (an ultralytics .pt checkpoint): loading it runs any code it holds. Pass "
                        "--trust-pickle if you trust who made it (edgekit then loads it in a separate process), or "
                        "import an ONNX export of it instead")


def import_ultralytics(source: str | Path, out: str | Path, cfg: ImportConfig) -> Manifest:
    """Write the model directory `out` for the ultralytics checkpoint `source`; returns its manifest."""
    from edgekit.export.yolo import STATE_FILE, YoloExportConfig, onnx_from_yolo
    from edgekit.train.detect import anchors, input_spec

    pt = str(source)
    if not cfg.trust_pickle:
        raise pickle_refusal(pt)
    if cfg.task and cfg.task != "detect":
        raise EdgekitError(f"--task {cfg.task}: edgekit imports ultralytics checkpoints that detect; import a "
                           "classifier as ONNX (yolo export format=onnx) instead")
    if cfg.decoder and cfg.decoder != "yolov8":
        raise EdgekitError(f"--decoder {cfg.decoder}: an ultralytics checkpoint exports the yolov8 layout; drop "
                           "--decoder")
    with atomic_dir(out) as tmp:
        info = load_in_child(pt, tmp)
        (tmp / INFO_FILE).unlink()
        nc = int(info["nc"])
        labels, labels_from = list(info["names"]), "checkpoint (names)"
        if cfg.labels:
            labels, labels_from = read_labels(cfg.labels), "given"
            check_count(labels, nc, pt, f"--labels {cfg.labels}")
        imgsz = cfg.imgsz or info["imgsz"] or DEFAULT_IMGSZ
        imgsz_from = "given" if cfg.imgsz else ("checkpoint (train_args.imgsz)" if info["imgsz"] else
                                                f"default ({DEFAULT_IMGSZ}: the checkpoint does not record it)")
        source_info = {"format": "ultralytics .pt", "imported_from": str(Path(pt).resolve()), "sha256": info["sha256"],
                       "arch": info["arch"], "framework": f"ultralytics {info['ultralytics']}",
                       "strides": info["strides"], "parameters": info["parameters"],
                       "import": {"given": cfg.given(), "inferred": {k: v for k, v in (
                           ("task", "checkpoint (task)"), ("labels", labels_from), ("imgsz", imgsz_from),
                           ("preprocessing", "ultralytics (letterbox, RGB, / 255)")) if v != "given"}},
                       "machine": machine_summary()}
        if cfg.data:
            from edgekit.imports.onnx_source import _dataset

            source_info["dataset"] = _dataset(cfg.data, labels)
        manifest = Manifest(name=Path(out).name, task="detect", labels=labels, input=input_spec(imgsz),
                            outputs=[TensorSpec("output0", [1, 4 + nc, anchors(imgsz, info["strides"])])],
                            source=source_info, postprocess=Postprocess(decoder="yolov8"))
        atomic_write_text(tmp / "labels.txt", "\n".join(labels) + "\n")
        manifest.save(tmp)
        manifest.add_artifact("torch", STATE_FILE, "fp32", built_from=str(Path(pt).resolve()),
                              built_on=machine_summary(), parity=info["state_parity"],
                              options={"format": "edgekit-yolo-state/1 (torch.load weights_only=True)"})
        manifest.save(tmp)
        onnx_from_yolo(tmp, YoloExportConfig(opset=cfg.opset, data=cfg.data or None))
    return Manifest.load(out)


def load_in_child(pt: str, dest: Path) -> dict:
    """Unpickle `pt` in a child process that writes dest/model_state.pt and dest/INFO_FILE; its info."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the edgekit the parent runs, first on the child's path
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    log.info("loading %s in a separate process (a pickle: --trust-pickle was given)", pt)
    cmd = [sys.executable, "-m", "edgekit.imports.ultralytics_source", "--trust-pickle", str(Path(pt).resolve()),
           str(dest)]
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    if r.returncode != 0:
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        ours = [ln for ln in lines if ln.startswith("edgekit: error: ")]
        if ours:
            raise EdgekitError(ours[-1][len("edgekit: error: "):])
        raise EdgekitError(f"loading {pt} in a separate process failed (exit {r.returncode}): "
                           f"{lines[-1][:300] if lines else 'no message'}")
    return json.loads((dest / INFO_FILE).read_text())


def write_state(pt: str, dest: Path) -> dict:
    """In the child: load the checkpoint, refuse a non-detector, write model_state.pt and the info JSON."""
    from edgekit.export.yolo import STATE_FILE, load_yolo
    from edgekit.train.detect import save_yolo_state

    model = load_yolo(pt)
    if model.task != "detect":
        raise EdgekitError(f"{pt} is an ultralytics '{model.task}' model, not a detector: edgekit imports detection "
                           "checkpoints (.pt); for another task export it to ONNX (yolo export format=onnx) and "
                           "import that")
    names = model.names
    names = [str(names[k]) for k in sorted(names)] if isinstance(names, dict) else [str(n) for n in names]
    net = model.model
    parity = save_yolo_state(net, names, dest / STATE_FILE)
    args = (getattr(model, "ckpt", None) or {}).get("train_args") or {}
    imgsz = args.get("imgsz")
    imgsz = int(max(imgsz)) if isinstance(imgsz, (list, tuple)) and imgsz else (int(imgsz) if imgsz else 0)
    import ultralytics

    info = {"names": names, "nc": int(net.model[-1].nc), "strides": [int(s) for s in net.stride], "imgsz": imgsz,
            "arch": Path(str((net.yaml or {}).get("yaml_file") or "yolo")).stem, "ultralytics": ultralytics.__version__,
            "parameters": int(sum(p.numel() for p in net.parameters())), "sha256": sha256_file(pt),
            "state_parity": parity}
    atomic_write_json(dest / INFO_FILE, info)
    return info


def main(argv: list[str] | None = None) -> int:
    """The child's entry point: a user error is one `edgekit: error:` line and exit 2 (read by the parent)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] != "--trust-pickle":  # the child unpickles: it too says so on its command line
        print("usage: python -m edgekit.imports.ultralytics_source --trust-pickle CHECKPOINT.pt DEST_DIR",
              file=sys.stderr)
        return 2
    argv = argv[1:]
    try:
        write_state(argv[0], Path(argv[1]))
    except EdgekitError as e:
        print(f"edgekit: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # the child process of load_in_child; never reaches back into the CLI
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    sys.exit(main())
