"""The three built-in layouts from ONE real checkpoint (the tiny seeded YOLOv8n of tests/conftest.py), each an
ONNX file run by ONNX Runtime: the yolov8 head edgekit exports, ultralytics' own `nms=True` export (1, 300, 6),
and a YOLOv5-layout head made by a tiny torch wrapper (transposed, with an objectness column and the class
scores divided by it, so obj * cls gives them back). Each is chosen by choose_decoder from its shape and
metadata, and all give the same boxes on the detector's images (IoU >= 0.99, same classes)."""
from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.vision.decoders import Detections, choose_decoder
from edgekit.vision.detect import LetterboxInput, box_iou, postprocess

pytestmark = pytest.mark.slow  # two exports of the tiny model (ultralytics' and torch's)


def _onnx_meta_and_shape(path: Path) -> tuple[dict, list]:
    import onnx

    m = onnx.load(str(path))
    shape = [d.dim_value or d.dim_param for d in m.graph.output[0].type.tensor_type.shape.dim]
    return {p.key: p.value for p in m.metadata_props}, shape


def _yolov5_layout(model_pt: Path, out: Path, imgsz: int) -> Path:
    import torch
    from ultralytics import YOLO

    class V5Head(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x):
            y = self.model(x)
            y = (y[0] if isinstance(y, (tuple, list)) else y).transpose(1, 2)  # (1, N, 4+nc)
            obj = y[..., 4:].amax(-1, keepdim=True)
            return torch.cat([y[..., :4], obj, y[..., 4:] / obj.clamp_min(1e-12)], -1)  # (1, N, 5+nc)

    model = YOLO(str(model_pt)).model.float().eval()  # this test's own checkpoint (conftest), not a user's file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter, as edgekit's own exports use
        torch.onnx.export(V5Head(model), torch.zeros(1, 3, imgsz, imgsz), str(out), input_names=["images"],
                          output_names=["output0"], opset_version=17, dynamo=False)
    return out


@pytest.fixture(scope="module")
def three_layouts(tiny_yolo_dir, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    from edgekit.export.yolo import export_onnx, ultralytics_env
    from edgekit.manifest import Manifest

    ultralytics_env()
    m = Manifest.load(tiny_yolo_dir)
    imgsz, nc = int(m.input.shape[2]), len(m.labels)
    work = tmp_path_factory.mktemp("layouts")
    e2e = export_onnx(tiny_yolo_dir / "model.pt", work, imgsz=imgsz, nms=True)
    v5 = _yolov5_layout(tiny_yolo_dir / "model.pt", work / "v5.onnx", imgsz)
    files = {"yolov8": tiny_yolo_dir / "model.onnx", "end2end": e2e, "yolov5": v5}
    chosen = {}
    for name, path in files.items():
        meta, shape = _onnx_meta_and_shape(path)
        requested = "yolov5" if name == "yolov5" else None
        if name != "yolov8":  # (1, N, 6) with one class: a YOLOv5 head or an NMS'd graph, without metadata
            with pytest.raises(EdgekitError, match="--decoder"):
                choose_decoder(shape, nc, {})
        chosen[name] = (path, choose_decoder(shape, nc, meta, requested))
    return chosen


def _run(path: Path, decoder: str, images: list[np.ndarray], imgsz: int) -> list[Detections]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pre, out = LetterboxInput((imgsz, imgsz)), []
    for img in images:
        x, lb = pre(img)
        out.append(postprocess(sess.run(None, {"images": x})[0], lb, decoder=decoder, conf=0.25, iou=0.7,
                               max_det=300))
    return out


def test_three_layouts_of_one_checkpoint_decode_to_the_same_boxes(tiny_yolo_dir, three_layouts):
    assert {k: v[1] for k, v in three_layouts.items()} == {"yolov8": "yolov8", "end2end": "end2end",
                                                          "yolov5": "yolov5"}
    _, shape = _onnx_meta_and_shape(three_layouts["end2end"][0])
    assert shape == [1, 300, 6]
    images = [cv2.imread(str(p)) for p in sorted((tiny_yolo_dir.parent / "data" / "images" / "val").glob("*.jpg"))]
    dets = {name: _run(path, dec, images, 64) for name, (path, dec) in three_layouts.items()}
    assert sum(len(d) for d in dets["yolov8"]) >= len(images)  # it does find things on its own images
    for name in ("end2end", "yolov5"):
        for i, (a, b) in enumerate(zip(dets["yolov8"], dets[name])):
            assert len(a) == len(b), (name, i, len(a), len(b))
            if not len(a):
                continue
            iou = box_iou(a.boxes, b.boxes)
            j = iou.argmax(1)
            assert len(set(j.tolist())) == len(j), (name, i)
            assert iou[np.arange(len(j)), j].min() >= 0.99, (name, i, iou.max(1))
            np.testing.assert_array_equal(a.classes, b.classes[j])
            np.testing.assert_allclose(a.scores, b.scores[j], atol=1e-4)
