"""ultralytics' own benchmark beside edgekit's bench: the same YOLO model, the same held-out images, this machine.

    edgekit bench DETECT_MODEL_DIR ...               # runs it beside the bench (--no-ultralytics: not)
    python benchmarks/ultralytics_bench.py MODEL_DIR [--eval-images 50]
    # writes <out>/ultralytics_vs_edgekit.json and .md

ultralytics, offline (edgekit.export.yolo.ultralytics_env):
  - `ultralytics.utils.benchmarks.benchmark` for its PyTorch (`-`) and ONNX formats: it exports the checkpoint
    to ONNX itself, validates each format (batch 1, conf 0.001, square letterbox) and reports mAP50-95 and its
    inference time, ms per image (a mean over the val images; its FPS is 1000 / that mean);
  - `YOLO(file).val(...)` of the same two files with the same settings, for mAP50 and its per-stage times
    (its "preprocess" is the batch's transfer and /255 only: its dataloader letterboxes untimed).
edgekit: `edgekit bench` (edgekit.profile.matrix) for torch and onnxrt at fp32 on the same images: mAP, p50 and
mean inference latency over `--iters` timed calls on one image, end-to-end per stage (letterbox + infer +
decode/NMS). Each side with the threads ultralytics uses: torch at ultralytics' NUM_THREADS (it sets that for
CPU), ONNX Runtime at its default.

The val images are symlinked (labels copied) into a temporary folder, so ultralytics' label cache lands there,
not in the dataset. ultralytics reads a checkpoint that edgekit writes in that temporary folder from the model
directory's weights-only model_state.pt (edgekit.export.yolo.checkpoint_from_state): the directory's own model.pt
(a pickle) is never unpickled. A directory without model_state.pt skips ultralytics' side, saying why.

Importable: run_ultralytics_benchmark(model_dir, data_yaml, out_dir) -> dict; without ultralytics it returns
(and writes) the reason it skipped."""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

NAME = "ultralytics_vs_edgekit"
log = logging.getLogger(__name__)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir", help="an edgekit detect model directory (manifest.json, model.pt, model.onnx)")
    p.add_argument("--data", default="", help="dataset yaml (default: the one recorded in the manifest)")
    p.add_argument("--eval-images", type=int, default=50, help="first N val images, both sides (0 = all)")
    p.add_argument("--iters", type=int, default=100, help="edgekit: timed calls per backend")
    p.add_argument("--out", default="benchmarks/results", help="folder for ultralytics_vs_edgekit.json and .md")
    return p


def run_ultralytics_benchmark(model_dir: str | Path, data_yaml: str | Path | None = None,
                              out_dir: str | Path = "benchmarks/results", *, eval_images: int = 50, iters: int = 100) -> dict:
    """ultralytics' benchmark and val of the model directory's checkpoint and edgekit's bench of the same model,
    on the first `eval_images` val images; writes out_dir/ultralytics_vs_edgekit.json and .md; returns the dict."""
    from edgekit.data.yolo import dataset_yaml_for
    from edgekit.errors import EdgekitError
    from edgekit.manifest import Manifest
    from edgekit.platform import machine_summary
    from edgekit.tasks import require_framework

    manifest = Manifest.load(model_dir)
    require_framework(manifest, "ultralytics", "ultralytics' own benchmark")
    data_yaml = Path(data_yaml or dataset_yaml_for(manifest))
    imgsz = int(manifest.input.shape[2])
    result: dict[str, Any] = {"model_dir": str(model_dir), "data": str(data_yaml), "imgsz": imgsz,
                              "eval_images": eval_images, "machine": machine_summary(),
                              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "loadavg_1m": {"before": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count()}}
    if importlib.util.find_spec("ultralytics") is None:
        result["ultralytics"] = {"skipped": "ultralytics is not installed: pip install 'edgekit[train]'"}
        threads = {"torch": 0, "onnxrt": 0}
    else:
        from edgekit.export.yolo import ultralytics_env, yolo_state_file

        ultralytics_env(offline=True)
        from ultralytics.utils import NUM_THREADS

        threads = {"torch": NUM_THREADS, "onnxrt": 0}
        try:
            state = yolo_state_file(manifest)  # sha256-checked; refused when the torch artifact is a pickle
        except EdgekitError as e:
            log.warning("ultralytics' benchmark skipped: %s", e)
            result["ultralytics"] = {"skipped": str(e)}
        else:
            result["ultralytics"] = _ultralytics_side(state, data_yaml, imgsz, eval_images)
    result["threads"] = {"torch": threads["torch"], "onnxrt": "ONNX Runtime default (0)",
                         "note": "torch at ultralytics' NUM_THREADS (min(8, cores - 1)), which it sets for CPU"}
    result["edgekit"] = _edgekit_side(model_dir, data_yaml, eval_images, iters, threads)
    result["loadavg_1m"]["after"] = round(os.getloadavg()[0], 2)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{NAME}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / f"{NAME}.md").write_text(markdown(result))
    return result


def _subset_yaml(data_yaml: Path, n: int, work: Path) -> tuple[Path, list[Path]]:
    """A dataset yaml whose val split is the first `n` val images edgekit evaluates (symlinked, labels copied)."""
    import yaml

    from edgekit.data.yolo import label_path, list_images, read_dataset_yaml

    spec = read_dataset_yaml(data_yaml)
    images = list_images(spec.splits["val"])[: n or None]
    (work / "images" / "val").mkdir(parents=True)
    (work / "labels" / "val").mkdir(parents=True)
    for img in images:
        (work / "images" / "val" / img.name).symlink_to(img.resolve())
        if label_path(img).exists():
            shutil.copyfile(label_path(img), work / "labels" / "val" / f"{img.stem}.txt")
    doc = {"path": str(work), "train": "images/val", "val": "images/val", "names": dict(enumerate(spec.names))}
    (work / "data.yaml").write_text(yaml.safe_dump(doc))
    return work / "data.yaml", images


def _ultralytics_side(state: Path, data_yaml: Path, imgsz: int, n: int) -> dict:
    import ultralytics
    from ultralytics import YOLO
    from ultralytics.utils.benchmarks import benchmark

    from edgekit.export.yolo import checkpoint_from_state

    side: dict[str, Any] = {"version": ultralytics.__version__, "benchmark": [], "val": {}}
    with tempfile.TemporaryDirectory(prefix="edgekit-ultralytics-bench-") as tmp:
        work = Path(tmp)
        sub_yaml, images = _subset_yaml(data_yaml, n, work / "data")
        side["images"] = len(images)
        # ultralytics exports beside its input, so its input lives here; edgekit pickles it from weights-only data
        pt = checkpoint_from_state(state, work / "model.pt")
        with _cwd(work):  # benchmark() appends to ./benchmarks.log
            for fmt in ("-", "onnx"):
                t0 = time.perf_counter()
                df = benchmark(model=str(pt), data=str(sub_yaml), imgsz=imgsz, device="cpu", format=fmt)
                for row in df.rows(named=True):
                    side["benchmark"].append({**_benchmark_row(row), "seconds": round(time.perf_counter() - t0, 1)})
            for name, file in (("PyTorch", pt), ("ONNX", work / "model.onnx")):
                if not file.exists():
                    side["val"][name] = {"skipped": f"{file.name} was not written (see the benchmark row)"}
                    continue
                m = YOLO(str(file), task="detect").val(data=str(sub_yaml), batch=1, imgsz=imgsz, rect=False,
                                                       plots=False, device="cpu", conf=0.001, verbose=False)
                side["val"][name] = {"mAP50-95": float(m.box.map), "mAP50": float(m.box.map50),
                                     "speed_ms_per_image": {k: round(float(v), 3) for k, v in m.speed.items()}}
            if (work / "model.onnx").exists():
                import onnx

                g = onnx.load(str(work / "model.onnx"), load_external_data=False)
                side["onnx_opset"] = next(o.version for o in g.opset_import if o.domain in ("", "ai.onnx"))
    return side


@contextlib.contextmanager
def _cwd(path: Path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def _benchmark_row(row: dict) -> dict:
    """ultralytics' string-formatted row -> numbers (its '-' marks a missing value)."""
    def num(v):
        try:
            return float(v)
        except (TypeError, ValueError):
            return None

    metric = next(k for k in row if k.startswith("metrics/"))
    return {"format": row["Format"], "status": row["Status❔"], "size_mb": num(row["Size (MB)"]),
            "mAP50-95": num(row[metric]), "inference_ms_per_image": num(row["Inference time (ms/im)"]),
            "fps": num(row["FPS"])}


def _edgekit_side(model_dir, data_yaml: Path, n: int, iters: int, threads: dict) -> dict:
    from edgekit.profile.matrix import BenchConfig, run_matrix

    side: dict[str, Any] = {}
    for backend in ("torch", "onnxrt"):
        rep = run_matrix(BenchConfig(model_dir=str(model_dir), backends=backend, precisions="fp32", eval_images=n,
                                     data=str(data_yaml), iters=iters, threads=threads[backend], reference="onnxrt"))
        r = rep["results"][0]
        if r["status"] != "ok":
            side[backend] = {"status": r["status"], "reason": r["reason"]}
            continue
        acc, e2e = r.get("accuracy") or {}, r.get("end_to_end_ms") or {}
        side[backend] = {"status": "ok", "mAP50-95": acc.get("value"), "mAP50": acc.get("mAP50"),
                         "images": acc.get("n"),
                         "inference_ms": {k: r["latency_ms"][k] for k in ("p50_ms", "p90_ms", "mean_ms", "n")},
                         "end_to_end_ms": {"p50_ms": e2e.get("p50_ms"), **(e2e.get("stages_p50_ms") or {})},
                         "cold_start_s": r["cold_start_s"], "peak_rss_mb": r["peak_rss_mb"]}
    return side


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"# ultralytics vs edgekit: {res['model_dir']}", "",
             f"{m['cpu']['name']} ({m['cpu']['cores']} cores); {res['created']}; imgsz {res['imgsz']}, the first "
             f"{res['eval_images'] or 'all'} val images of {res['data']}. Threads: torch {res['threads']['torch']}, "
             f"ONNX Runtime its default, on both sides. 1-minute load average {res['loadavg_1m']['before']} before, "
             f"{res['loadavg_1m'].get('after')} after, on {res['loadavg_1m']['cpu_count']} CPUs.", ""]
    ul = res["ultralytics"]
    if "skipped" in ul:
        lines += [f"ultralytics: skipped ({ul['skipped']}).", ""]
    lines += ["| who | runtime | mAP50-95 | mAP50 | inference ms/image | how timed | pre ms | post ms | e2e p50 ms |",
              "|---|---|---|---|---|---|---|---|---|"]
    f = lambda v, d=4: "" if v is None else f"{v:.{d}g}"  # noqa: E731
    for b in ul.get("benchmark", []):
        lines.append(f"| ultralytics benchmark() | {b['format']} ({b['status']}) | {f(b['mAP50-95'])} | | "
                     f"{f(b['inference_ms_per_image'])} | mean over the val images | | | |")
    for name, v in ul.get("val", {}).items():
        if "skipped" in v:
            continue
        s = v["speed_ms_per_image"]
        lines.append(f"| ultralytics val() | {name} | {f(v['mAP50-95'])} | {f(v['mAP50'])} | {f(s.get('inference'))} | "
                     f"mean over the val images | {f(s.get('preprocess'))} (no letterbox) | "
                     f"{f(s.get('postprocess'))} | |")
    for backend, v in res["edgekit"].items():
        if v["status"] != "ok":
            lines.append(f"| edgekit bench | {backend} | {v['status']}: {v['reason']} | | | | | | |")
            continue
        i, e = v["inference_ms"], v["end_to_end_ms"]
        lines.append(f"| edgekit bench | {backend} | {f(v['mAP50-95'])} | {f(v['mAP50'])} | {f(i['p50_ms'])} "
                     f"(mean {f(i['mean_ms'])}) | p50 of {i['n']} calls on one image | {f(e.get('preprocess'))} "
                     f"(letterbox) | {f(e.get('postprocess'))} | {f(e.get('p50_ms'))} |")
    lines += ["", "mAP: both sides score predictions at conf 0.001, NMS IoU 0.7, matched in the letterboxed frame "
              "(edgekit.vision.map follows ultralytics 8.4's val). Inference: ultralytics times each val image once "
              "(after one warm-up) through its AutoBackend, edgekit times the runner's infer + sync after warm-up.", ""]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    res = run_ultralytics_benchmark(args.model_dir, args.data or None, args.out, eval_images=args.eval_images,
                                    iters=args.iters)
    print(markdown(res))
    return 0

