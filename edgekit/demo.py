"""`edgekit demo` (`make demo`): the whole pipeline on the bundled data, offline, on any machine.

data (real MNIST digits) -> transfer learning (MobileNetV2 on its packaged ImageNet backbone) -> ONNX
export checked against PyTorch -> torch vs ONNX Runtime latency -> one report folder.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)
RECIPES = Path(__file__).resolve().parents[1] / "models"
TOP1_FLOOR = 0.97  # what the demo classifier must reach on the held-out split


def run_demo(out: str | Path, *, quick: bool = False) -> int:
    from edgekit.data.mnist import write_mnist5k
    from edgekit.export.onnx import OnnxExportConfig, onnx_from_torch
    from edgekit.platform import machine_summary
    from edgekit.profile.quick import bench_backends, format_table
    from edgekit.train.classify import train_classifier
    from edgekit.train.classify_config import ClassifyConfig
    from edgekit.configs import load_recipe

    out = Path(out)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def step(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 1)
        log.info("[demo] %s done in %.1f s", name, timings[name])

    log.info("[demo] 1/4 data: real MNIST digits -> ImageFolder")
    t0 = time.perf_counter()
    data = out / "data" / "mnist5k"
    write_mnist5k(data)
    step("data", t0)

    log.info("[demo] 2/4 train: MobileNetV2 (packaged ImageNet backbone), 1 head-only epoch, then fine-tune")
    t0 = time.perf_counter()
    model_dir = out / "models" / "mnist_mobilenet_v2"
    recipe = RECIPES / "mnist_mobilenet_v2.yaml"
    if not recipe.exists():
        raise EdgekitError(f"{recipe} is missing: run the demo from an edgekit source checkout (make demo)")
    values = load_recipe(str(recipe), ClassifyConfig)
    values.update(data=str(data), out=str(model_dir), **({"epochs": 2} if quick else {}))
    cfg = ClassifyConfig(**values)
    summary = train_classifier(cfg)
    step("train", t0)

    log.info("[demo] 3/4 export: ONNX opset 17, checked against PyTorch on the held-out images")
    t0 = time.perf_counter()
    art = onnx_from_torch(model_dir, OnnxExportConfig())
    step("export", t0)

    log.info("[demo] 4/4 latency: torch vs onnxrt on the same input")
    t0 = time.perf_counter()
    rows = bench_backends(str(model_dir), ["torch", "onnxrt"], iters=100 if quick else 300)
    step("bench", t0)

    report = out / "report"
    report.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_dir / "confusion_matrix.png", report / "confusion_matrix.png")
    m = summary["metrics"]
    result = {"model_dir": str(model_dir), "val_top1": m["top1"], "top1_floor": TOP1_FLOOR,
              "train_seconds": m["train_seconds"], "onnx_parity": art.parity, "latency": rows,
              "step_seconds": timings, "total_seconds": round(time.perf_counter() - t_start, 1),
              "machine": machine_summary(), "quick": quick}
    atomic_write_json(report / "summary.json", result)
    table = format_table(rows)
    p = art.parity
    md = (f"# edgekit demo\n\n- classifier: MobileNetV2 @64 px on MNIST-5k, val top-1 **{m['top1']:.2%}** "
          f"(floor {TOP1_FLOOR:.0%}), {m['train_seconds']:.0f} s of training\n"
          f"- ONNX vs PyTorch on {p['n']} held-out images: max abs {p['max_abs']:.2e} ({p['max_rel']:.1e} of scale), "
          f"top-1 agreement {p['top1_agreement']:.2%}\n\n## Latency (batch 1, inference only)\n\n{table}\n\n"
          f"![confusion matrix](confusion_matrix.png)\n")
    atomic_write_text(report / "summary.md", md)
    print(md)
    ok = m["top1"] >= TOP1_FLOOR or quick
    print(f"report: {report}/summary.md (and summary.json, confusion_matrix.png); "
          f"{result['total_seconds']:.0f} s in all")
    print("next: edgekit info | edgekit bench", model_dir, "| edgekit train classify --data YOUR_IMAGEFOLDER")
    if not ok:
        print(f"edgekit: error: val top-1 {m['top1']:.2%} is below the demo's floor {TOP1_FLOOR:.0%}")
    return 0 if ok else 1
