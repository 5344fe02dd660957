"""`edgekit import MODEL.onnx`: what is read from the graph and ultralytics' metadata, what flags give, what is
recorded, and one clear line (exit 2, no traceback) for each wrong input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgekit import cli
from edgekit.errors import EdgekitError
from edgekit.fileio import MADE_MARKER, sha256_file
from edgekit.imports import ImportConfig, import_model
from edgekit.manifest import Manifest
from edgekit.runners import load_runner

from tests.imports.onnx_models import classifier, not_an_image, reshaped, strip_metadata


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        rc = cli.main(argv)
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str) -> str:
    assert rc == 2, err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("edgekit: error: "), err
    return err


@pytest.fixture(scope="module")
def tiny_onnx(tiny_yolo_dir) -> Path:
    """ultralytics' own ONNX export of the tiny seeded YOLOv8n (64x64, one class 'digit'), with its metadata."""
    return tiny_yolo_dir / "model.onnx"


def test_ultralytics_onnx_reads_task_labels_and_preprocessing(tiny_onnx, tmp_path, capsys):
    out = tmp_path / "imported"
    rc, stdout, err = run_cli(["import", str(tiny_onnx), "--out", str(out)], capsys)
    assert rc == 0, err
    m = Manifest.load(out)
    assert (m.task, m.labels) == ("detect", ["digit"])
    i = m.input
    assert (i.name, i.shape, i.layout, i.color, i.resize_mode) == ("images", [1, 3, 64, 64], "NCHW", "RGB", "letterbox")
    assert (i.mean, i.std) == ([0.0] * 3, [1.0] * 3) and i.scale == pytest.approx(1 / 255)
    assert [o.shape for o in m.outputs] == [[1, 5, 84]]
    assert m.postprocess.decoder == "yolov8" and m.source["onnx_metadata"]["task"] == "detect"
    inferred = m.source["import"]["inferred"]
    assert inferred["task"] == "ultralytics metadata (task)" and inferred["input_hw"] == "graph"
    assert inferred["labels"] == "ultralytics metadata (names)" and m.source["import"]["given"] == {}
    art = m.find_artifact("onnxrt", "fp32")  # copied unchanged: the same bytes, sha256 recorded
    assert sha256_file(out / art.path) == sha256_file(tiny_onnx) == art.sha256
    assert art.options["int8_float_nodes"]  # the YOLO head stays float in a later INT8 export
    assert "model.onnx" in json.loads((out / MADE_MARKER).read_text())["files"]
    assert "ultralytics metadata" in stdout and "decoder yolov8" in stdout
    # the imported directory runs: same outputs as the source file through the onnxrt runner
    x = np.random.default_rng(0).random((1, 3, 64, 64), np.float32)
    with load_runner(out, "onnxrt") as r:
        got = r.infer({"images": x})["output0"]
    from edgekit.export.accuracy import run_onnx

    np.testing.assert_array_equal(got, run_onnx(tiny_onnx, x, input_name="images"))


def test_without_metadata_labels_come_from_a_file(tiny_onnx, tmp_path):
    bare = strip_metadata(tiny_onnx, tmp_path / "bare.onnx")
    for name, text in (("l.txt", "digit\n"), ("l.yaml", "names: {0: digit}\n"), ("l.json", '["digit"]')):
        (tmp_path / name).write_text(text)
        m = import_model(bare, tmp_path / f"out_{name}", ImportConfig(labels=str(tmp_path / name)))
        assert m.labels == ["digit"] and m.task == "detect" and m.input.resize_mode == "letterbox"
        assert m.source["import"]["given"] == {"labels": str(tmp_path / name)}
        assert "YOLO's preprocessing" in m.source["import"]["inferred"]["resize_mode"]
    with pytest.raises(EdgekitError, match="more than one layout.*--decoder"):  # yolov8 x 1 class or yolov5 x 79
        import_model(bare, tmp_path / "unnamed", ImportConfig())
    m = import_model(bare, tmp_path / "numbered", ImportConfig(decoder="yolov8"))
    assert m.labels == ["0"] and m.source["import"]["inferred"]["labels"].startswith("numbered")


def test_classifier_with_dynamic_size_needs_crop_and_takes_flags(tmp_path, capsys):
    src = classifier(tmp_path / "cls.onnx", classes=4)
    rc, _, err = run_cli(["import", str(src), "--out", str(tmp_path / "a")], capsys)
    assert "dynamic" in one_line_error(rc, err) and "--crop" in err
    (tmp_path / "labels.txt").write_text("a\nb\nc\nd\n")
    m = import_model(src, tmp_path / "b", ImportConfig(crop="48,64", labels=str(tmp_path / "labels.txt")))
    i = m.input
    assert (m.task, i.shape, i.crop, i.resize, i.resize_mode) == ("classify", ["batch", 3, 48, 64], [48, 64],
                                                                   round(48 / 0.875), "resize_crop")
    assert (i.mean, i.std) == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])  # ImageNet, said so
    assert "ImageNet" in m.source["import"]["inferred"]["mean"] and m.source["input_dims_fixed"] is True
    assert m.outputs[0].shape == ["batch", 4]
    m = import_model(src, tmp_path / "c", ImportConfig(crop="32", labels=str(tmp_path / "labels.txt"),
                                                         mean="127", std="128", scale=1.0, resize=40, bgr=True))
    i = m.input
    assert (i.mean, i.std, i.scale, i.resize, i.color) == ([127.0] * 3, [128.0] * 3, 1.0, 40, "BGR")
    assert set(m.source["import"]["given"]) == {"crop", "labels", "mean", "std", "scale", "resize", "bgr"}
    x = np.random.default_rng(0).random((2, 3, 32, 32), np.float32)
    with load_runner(tmp_path / "c", "onnxrt") as r:  # dynamic batch kept, size fixed
        assert r.infer({"x": x})["logits"].shape == (2, 4)


def test_nhwc_classifier_layout_from_the_graph(tmp_path):
    src = classifier(tmp_path / "nhwc.onnx", classes=2, hw=(16, 16), layout="NHWC")
    m = import_model(src, tmp_path / "out", ImportConfig())
    assert (m.input.layout, m.input.shape, m.input.crop) == ("NHWC", ["batch", 16, 16, 3], [16, 16])


@pytest.mark.parametrize("case", ["not-an-image", "truncated", "text", "label-count", "no-decoder", "bgr-detector",
                                  "crop-mismatch"])
def test_wrong_input_is_one_line(case, tiny_onnx, tmp_path, capsys):
    out = tmp_path / "out"
    args, expect = [], ""
    if case == "not-an-image":
        src, expect = not_an_image(tmp_path / "vec.onnx"), "not an image"
    elif case == "truncated":
        src = tmp_path / "half.onnx"
        data = tiny_onnx.read_bytes()
        src.write_bytes(data[:len(data) // 2])
        expect = "not a readable ONNX model"
    elif case == "text":
        src = tmp_path / "model.onnx"
        src.write_text("this is not a model\n")
        expect = "not a readable ONNX model"
    elif case == "label-count":
        src = tiny_onnx
        (tmp_path / "l.txt").write_text("a\nb\nc\n")
        args, expect = ["--labels", str(tmp_path / "l.txt")], "3 class names but"
    elif case == "no-decoder":
        src, args = reshaped(tmp_path / "odd.onnx", (1, 3, 8, 8)), ["--task", "detect"]
        expect = "no built-in decoder fits"
    elif case == "bgr-detector":
        src, args, expect = tiny_onnx, ["--bgr"], "letterboxed NCHW RGB"
    else:
        src, args, expect = tiny_onnx, ["--crop", "32"], "fixed at 64x64"
    rc, _, err = run_cli(["import", str(src), "--out", str(out), *args], capsys)
    assert expect in one_line_error(rc, err)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # nothing half-made


def test_decoder_from_the_shape_or_given(tmp_path, capsys):
    """(1, 24, 8) is a yolov8 head of 20 classes or a yolov5 head of 3: refused without --decoder, never guessed."""
    src = reshaped(tmp_path / "amb.onnx", (1, 24, 8))
    rc, _, err = run_cli(["import", str(src), "--out", str(tmp_path / "a"), "--task", "detect"], capsys)
    assert "--decoder" in one_line_error(rc, err) and "more than one layout" in err
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    m = import_model(src, tmp_path / "b", ImportConfig(task="detect", decoder="yolov5",
                                                         labels=str(tmp_path / "three.txt")))
    assert m.postprocess.decoder == "yolov5" and m.labels == ["a", "b", "c"]
    assert m.source["import"]["given"]["decoder"] == "yolov5"
    (tmp_path / "four.txt").write_text("a\nb\nc\nd\n")
    rc, _, err = run_cli(["import", str(src), "--out", str(tmp_path / "c"), "--task", "detect", "--decoder", "yolov5",
                          "--labels", str(tmp_path / "four.txt")], capsys)
    assert "4 class names but" in one_line_error(rc, err) and "3 classes" in err
    e2e = reshaped(tmp_path / "e2e.onnx", (1, 32, 6))  # end2end rows: the class count is not in the shape
    rc, _, err = run_cli(["import", str(e2e), "--out", str(tmp_path / "d"), "--task", "detect", "--decoder", "end2end"],
                         capsys)
    assert "--labels" in one_line_error(rc, err)
    m = import_model(e2e, tmp_path / "e", ImportConfig(task="detect", decoder="end2end", labels=str(tmp_path / "four.txt")))
    assert (m.postprocess.decoder, len(m.labels)) == ("end2end", 4)


def test_model_file_where_a_directory_is_expected(tiny_onnx, tmp_path, capsys):
    for argv in (["bench", str(tiny_onnx)], ["compare", str(tiny_onnx)], ["export", str(tiny_onnx)],
                 ["camera", "clip.mp4", "--detector", str(tiny_onnx)]):
        rc, _, err = run_cli(argv, capsys)
        assert f"`edgekit import {tiny_onnx} --out DIR`" in one_line_error(rc, err) and "ONNX model file" in err
    with pytest.raises(EdgekitError, match="is an ONNX model file.*edgekit import"):
        Manifest.load(tiny_onnx)  # the Python API: no longer "not valid JSON ... re-export"
    pt = tmp_path / "best.pt"
    shutil.copyfile(tiny_onnx.parent / "model.pt", pt)
    rc, _, err = run_cli(["bench", str(pt)], capsys)
    assert "--trust-pickle" in one_line_error(rc, err) and "PyTorch checkpoint" in err


def test_reimport_replaces_only_what_edgekit_made(tiny_onnx, tmp_path):
    out = tmp_path / "out"
    import_model(tiny_onnx, out)
    import_model(tiny_onnx, out)  # its own folder: replaced
    (out / "notes.txt").write_text("mine")
    with pytest.raises(EdgekitError, match="did not write"):
        import_model(tiny_onnx, out)
    assert (out / "notes.txt").read_text() == "mine"
