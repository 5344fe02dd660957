"""`edgekit import best.pt`: a pickle, so only with --trust-pickle and only in a child process; a detector is
exported with train detect's parity checks, anything else is one clear line."""
from __future__ import annotations

import pytest

from edgekit.imports import ImportConfig, import_model
from edgekit.manifest import Manifest

from tests.imports.test_import_onnx import one_line_error, run_cli


def test_pt_needs_trust_pickle(tiny_yolo_dir, tmp_path, capsys):
    rc, _, err = run_cli(["import", str(tiny_yolo_dir / "model.pt"), "--out", str(tmp_path / "out")], capsys)
    assert "--trust-pickle" in one_line_error(rc, err) and "pickle" in err
    assert not (tmp_path / "out").exists()
    (tmp_path / "two.txt").write_text("a\nb\n")
    rc, _, err = run_cli(["import", str(tiny_yolo_dir / "model.pt"), "--out", str(tmp_path / "out"), "--trust-pickle",
                          "--labels", str(tmp_path / "two.txt")], capsys)
    assert "2 class names but" in one_line_error(rc, err) and not (tmp_path / "out").exists()


@pytest.mark.slow  # a child process loads ultralytics, then an export with parity checks (about a minute here)
def test_pt_detector_imported_in_a_child_process(tiny_yolo_dir, tmp_path, monkeypatch):
    import edgekit.export.yolo as ey

    pt = tiny_yolo_dir / "model.pt"
    loaded = []
    real = ey.load_yolo
    monkeypatch.setattr(ey, "load_yolo", lambda path, *a, **k: (loaded.append(str(path)), real(path, *a, **k))[1])
    (tmp_path / "names.yaml").write_text("names: [digit]\n")  # the seeded checkpoint has ultralytics' default names
    m = import_model(pt, tmp_path / "out", ImportConfig(trust_pickle=True, labels=str(tmp_path / "names.yaml")))
    assert str(pt) not in loaded and str(pt.resolve()) not in loaded  # this process loaded only edgekit's own copy
    assert (m.task, m.labels, m.input.shape, m.input.resize_mode) == ("detect", ["digit"], [1, 3, 64, 64], "letterbox")
    assert m.source["import"]["inferred"]["imgsz"] == "checkpoint (train_args.imgsz)"
    assert m.source["import"]["given"] == {"labels": str(tmp_path / "names.yaml")}
    assert m.source["imported_from"] == str(pt.resolve()) and m.postprocess.decoder == "yolov8"
    torch_art, onnx_art = m.find_artifact("torch", "fp32"), m.find_artifact("onnxrt", "fp32")
    assert torch_art.path == "model_state.pt" and torch_art.parity["max_rel"] <= 1e-4
    p = onnx_art.parity  # train detect's checks: raw outputs and boxes against ultralytics' PyTorch model
    assert p["passed"] and p["max_rel"] <= 1e-3 and p["detections_agreement"] == 1.0
    assert Manifest.load(tmp_path / "out").outputs[0].shape == [1, 5, 84]


@pytest.mark.slow  # two child processes that import torch and ultralytics
def test_pt_that_is_not_a_detector(tmp_path, capsys):
    import torch
    from ultralytics.nn.tasks import ClassificationModel

    from edgekit.zoo import ultralytics_env

    ultralytics_env()
    cls_pt = tmp_path / "cls.pt"
    torch.save({"model": ClassificationModel("yolov8n-cls.yaml", nc=3, verbose=False), "train_args": {"task": "classify"}},
               cls_pt)
    rc, _, err = run_cli(["import", str(cls_pt), "--out", str(tmp_path / "a"), "--trust-pickle"], capsys)
    assert "'classify' model, not a detector" in one_line_error(rc, err)
    plain = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(3)}, plain)
    rc, _, err = run_cli(["import", str(plain), "--out", str(tmp_path / "b"), "--trust-pickle"], capsys)
    assert "ultralytics cannot load" in one_line_error(rc, err)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
