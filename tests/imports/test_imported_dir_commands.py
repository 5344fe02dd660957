"""An imported model directory is taken by the later commands exactly like a trained one (short runs)."""
from __future__ import annotations

import json

import pytest

from repo_files import write_noise_video
from tests.imports.test_import_onnx import run_cli


@pytest.fixture(scope="module")
def imported_tiny(tiny_yolo_dir, tmp_path_factory):
    """The tiny YOLO's ultralytics ONNX imported with its dataset recorded (held-out data for later commands)."""
    from edgekit.imports import ImportConfig, import_model

    out = tmp_path_factory.mktemp("imported") / "tiny"
    data = tiny_yolo_dir.parent / "data" / "data.yaml"
    import_model(tiny_yolo_dir / "model.onnx", out, ImportConfig(data=str(data)))
    return out


def test_bench_compare_camera_export_take_an_imported_dir(imported_tiny, tmp_path, capsys):
    d = str(imported_tiny)
    rc, out, err = run_cli(["bench", d, "--backends", "onnxrt", "--precisions", "fp32", "--warmup", "1", "--iters", "3",
                            "--eval-images", "4", "--no-ultralytics", "--out", str(tmp_path / "bench")], capsys)
    assert rc == 0, err
    rows = json.loads((tmp_path / "bench" / "bench.json").read_text())["results"]
    assert [(r["backend"], r["precision"], r["status"]) for r in rows] == [("onnxrt", "fp32", "ok")]
    rc, out, err = run_cli(["compare", d, "--backends", "onnxrt", "--precisions", "fp32", "--eval-images", "4"], capsys)
    assert rc == 0 and "| onnxrt | fp32 |" in out, err
    video = write_noise_video(tmp_path / "clip.avi", 3, (96, 80))
    rc, out, err = run_cli(["camera", str(video), str(tmp_path / "r.jsonl"), "--detector", d, "--max-frames", "3"],
                           capsys)
    assert rc == 0, err
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 3
    rc, out, err = run_cli(["export", d, "--precision", "fp16", "--eval-images", "4"], capsys)  # its recorded dataset
    assert rc == 0, err
    from edgekit.manifest import Manifest

    assert Manifest.load(d).find_artifact("onnxrt", "fp16").precision == "fp16"
