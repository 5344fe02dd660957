"""torch -> ONNX: opset 17 with the manifest's tensor names, a parity check against PyTorch on real held-out
digits recorded in the manifest, and an atomic write (a failed export leaves nothing behind)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edgekit.compare import compare_logits
from edgekit.errors import EdgekitError
from edgekit.export.onnx import OnnxExportConfig, onnx_from_torch
from edgekit.fileio import sha256_file
from edgekit.manifest import Manifest
from edgekit.runners import load_runner


def _listing(d):
    return sorted(p.name for p in d.iterdir())


# ---- the session's export (conftest.model_dir, default options) -------------------------------------

def test_onnx_file_has_opset_17_and_the_manifest_names(model_dir):
    model = onnx.load(str(model_dir / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain: o.version for o in model.opset_import}[""] == 17
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("input", "logits")
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, 3, 32, 32]
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [1, 3]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_manifest_records_the_artifact_with_sha256_and_parity(model_dir):
    m = Manifest.load(model_dir)
    art = m.find_artifact("onnxrt")
    assert (art.path, art.precision, art.built_from) == ("model.onnx", "fp32", "model.pt")
    assert art.sha256 == sha256_file(model_dir / "model.onnx")
    assert art.options == {"opset": 17, "dynamic_batch": False, "slim": True}
    p = art.parity
    assert p["passed"] is True and p["top1_agreement"] == 1.0
    assert p["reference"] == "torch" and p["n"] == p["images"] == 24  # every held-out digit
    assert p["max_rel"] <= p["tolerance"] == 1e-3 and p["min_cosine"] > 0.9999
    assert art.built_on["libraries"]["onnxruntime"]["version"]  # what it was built with
    assert m.find_artifact("torch").path == "model.pt"  # the source artifact is kept
    assert _listing(model_dir) == ["manifest.json", "model.onnx", "model.pt"]  # no temp files left


def test_recorded_parity_is_what_a_rerun_measures(model_dir, val_batch):
    x = val_batch[0]
    with load_runner(model_dir, "torch") as t, load_runner(model_dir, "onnxrt") as o:
        ref = np.concatenate([t.infer({"input": x[i:i + 1]})["logits"] for i in range(len(x))])
        got = np.concatenate([o.infer({"input": x[i:i + 1]})["logits"] for i in range(len(x))])
    again = compare_logits(ref, got)
    recorded = Manifest.load(model_dir).find_artifact("onnxrt").parity
    assert again["top1_agreement"] == recorded["top1_agreement"] == 1.0
    assert again["scale"] == pytest.approx(recorded["scale"], rel=1e-5)
    assert again["max_rel"] <= 1e-4


# ---- more exports (slow: each one traces, slims and checks) -----------------------------------------

@pytest.mark.slow
def test_dynamic_batch_exports_a_batch_axis_and_runs_batch_4(torch_model_copy, val_batch):
    art = onnx_from_torch(torch_model_copy, OnnxExportConfig(dynamic_batch=True, parity_images=8))
    assert art.options["dynamic_batch"] is True and art.parity["passed"] and art.parity["n"] == 8
    model = onnx.load(str(torch_model_copy / "model.onnx"))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    x = val_batch[0][:4]
    with load_runner(torch_model_copy, "onnxrt") as o, load_runner(torch_model_copy, "torch") as t:
        assert o.inputs()["input"].shape == ["batch", 3, 32, 32]
        got = o.infer({"input": x})["logits"]
        ref = np.concatenate([t.infer({"input": x[i:i + 1]})["logits"] for i in range(4)])
    assert got.shape == (4, 3)
    r = compare_logits(ref, got)
    assert r["max_rel"] <= 1e-4 and r["top1_agreement"] == 1.0


@pytest.mark.slow
def test_without_slim_and_with_explicit_data(torch_model_copy, digits_imagefolder):
    art = onnx_from_torch(torch_model_copy, OnnxExportConfig(slim=False, parity_images=6,
                                                             data=str(digits_imagefolder)))
    assert art.options["slim"] is False
    assert art.parity["passed"] and art.parity["n"] == 6


@pytest.mark.slow
def test_failed_parity_raises_and_writes_nothing(torch_model_copy):
    before = {p.name: p.read_bytes() for p in torch_model_copy.iterdir()}
    # no export matches PyTorch to 1e-12 of the logits' scale (float32 alone rounds at ~1e-7)
    with pytest.raises(EdgekitError) as e:
        onnx_from_torch(torch_model_copy, OnnxExportConfig(tolerance=1e-12))
    msg = str(e.value)
    assert "disagrees with PyTorch beyond tolerance" in msg and "nothing written" in msg and "--no-slim" in msg
    assert {p.name: p.read_bytes() for p in torch_model_copy.iterdir()} == before  # no model.onnx, no temp


@pytest.mark.slow
def test_failed_reexport_keeps_the_previous_onnx_usable(model_copy, val_batch):
    onnx_bytes = (model_copy / "model.onnx").read_bytes()
    manifest = (model_copy / "manifest.json").read_text()
    with pytest.raises(EdgekitError, match="nothing written"):
        onnx_from_torch(model_copy, OnnxExportConfig(tolerance=0.0, min_top1_agreement=1.01))
    assert (model_copy / "model.onnx").read_bytes() == onnx_bytes
    assert (model_copy / "manifest.json").read_text() == manifest
    assert _listing(model_copy) == ["manifest.json", "model.onnx", "model.pt"]
    with load_runner(model_copy, "onnxrt") as r:  # the sha256 still matches
        assert r.infer({"input": val_batch[0][:1]})["logits"].shape == (1, 3)


@pytest.mark.slow
def test_missing_held_out_data_is_an_edgekit_error_and_writes_nothing(torch_model_copy, tmp_path):
    with pytest.raises(EdgekitError, match="pass --data DIR"):
        onnx_from_torch(torch_model_copy, OnnxExportConfig(data=str(tmp_path / "gone")))
    assert _listing(torch_model_copy) == ["manifest.json", "model.pt"]


# ---- refused before any work ------------------------------------------------------------------------

def test_no_manifest(tmp_path):
    with pytest.raises(EdgekitError, match="no manifest at"):
        onnx_from_torch(tmp_path)


def test_detect_models_go_to_the_yolo_exporter(torch_model_copy):
    """Detection manifests are exported by edgekit.export.yolo (tests/export/test_yolo.py); a classifier's
    weights under a 'detect' manifest are not an ultralytics checkpoint: a clear error naming the file."""
    data = json.loads((torch_model_copy / "manifest.json").read_text())
    data["task"] = "detect"
    (torch_model_copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(EdgekitError, match="torch artifact is model.pt, an ultralytics pickle, and edgekit never "
                       "unpickles a model directory"):
        onnx_from_torch(torch_model_copy)


def test_no_torch_artifact_says_so(torch_model_copy):
    data = json.loads((torch_model_copy / "manifest.json").read_text())
    data["artifacts"] = []
    (torch_model_copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(EdgekitError, match="has no torch/fp32 artifact"):
        onnx_from_torch(torch_model_copy)


def test_changed_weights_are_refused_by_sha256(torch_model_copy):
    with open(torch_model_copy / "model.pt", "ab") as f:
        f.write(b"\0")
    with pytest.raises(EdgekitError, match="does not match the sha256"):
        onnx_from_torch(torch_model_copy)
    assert not (torch_model_copy / "model.onnx").exists()
