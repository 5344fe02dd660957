"""The manifest: round trip, validation on load (every mistake an EdgekitError that says the fix),
artifact bookkeeping (sha256, lookup, 'did you mean')."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit import __version__
from edgekit.errors import EdgekitError
from edgekit.manifest import SCHEMA_VERSION, Artifact, InputSpec, Manifest, TensorSpec
from edgekit.runners import load_runner


def _manifest(**kw) -> Manifest:
    base = dict(name="m", task="classify", labels=["cat", "dog"],
                input=InputSpec("input", [1, 3, 32, 32], resize=37, crop=[32, 32]),
                outputs=[TensorSpec("logits", [1, 2])], source={"arch": "resnet18"})
    base.update(kw)
    return Manifest(**base)


@pytest.fixture
def saved(tmp_path) -> tuple[Path, dict]:
    """A saved manifest with one artifact; returns (model_dir, its JSON as a dict)."""
    (tmp_path / "model.pt").write_bytes(b"weights")
    m = _manifest()
    m.save(tmp_path)
    m.add_artifact("torch", "model.pt", "fp32", accuracy={"val_top1": 0.9})
    m.save()
    return tmp_path, json.loads((tmp_path / "manifest.json").read_text())


def _write(model_dir: Path, data) -> Path:
    (model_dir / "manifest.json").write_text(data if isinstance(data, str) else json.dumps(data))
    return model_dir


def _load_error(model_dir: Path) -> str:
    with pytest.raises(EdgekitError) as e:
        Manifest.load(model_dir)
    return str(e.value)


# ---- round trip ------------------------------------------------------------------------------------

def test_round_trip_keeps_every_field(saved):
    model_dir, _ = saved
    m = Manifest.load(model_dir)
    again = Manifest.load(model_dir / "manifest.json")  # the file itself works too
    assert m == again
    assert m.model_dir == model_dir
    assert m.labels == ["cat", "dog"]
    assert m.input == InputSpec("input", [1, 3, 32, 32], resize=37, crop=[32, 32])
    assert m.input.mean == [0.485, 0.456, 0.406] and m.input.scale == pytest.approx(1 / 255)
    assert m.outputs == [TensorSpec("logits", [1, 2], "float32")]
    assert m.edgekit_version == __version__ and m.schema_version == SCHEMA_VERSION
    (art,) = m.artifacts
    assert (art.backend, art.path, art.precision, art.accuracy) == ("torch", "model.pt", "fp32", {"val_top1": 0.9})
    # save(load(x)) writes the same JSON back
    m.save()
    assert json.loads((model_dir / "manifest.json").read_text()) == saved[1]


def test_saved_json_starts_with_schema_version_and_has_no_model_dir(saved):
    _, data = saved
    assert list(data)[0] == "schema_version"
    assert "model_dir" not in data


def test_save_is_atomic_no_temp_files_left(saved):
    model_dir, _ = saved
    assert sorted(p.name for p in model_dir.iterdir()) == ["manifest.json", "model.pt"]


def test_input_spec_defaults_crop_from_shape_and_resize_from_crop():
    spec = InputSpec("x", [1, 3, 24, 40])
    assert spec.crop == [24, 40] and spec.resize == 24
    nhwc = InputSpec("x", [1, 24, 40, 3], layout="NHWC")
    assert nhwc.crop == [24, 40]


def test_dynamic_shape():
    assert TensorSpec("x", ["batch", 3]).is_dynamic
    assert not TensorSpec("x", [1, 3]).is_dynamic


# ---- validation on load ----------------------------------------------------------------------------

def test_missing_file_says_how_to_get_one(tmp_path):
    msg = _load_error(tmp_path)
    assert "no manifest at" in msg and "edgekit train classify" in msg


def test_invalid_json_says_reexport(tmp_path):
    msg = _load_error(_write(tmp_path, '{"schema_version": 1, "name": '))
    assert "is not valid JSON" in msg and "re-export" in msg


def test_binary_garbage_is_invalid_json(tmp_path):
    (tmp_path / "manifest.json").write_bytes(b"\xff\xfe\x00garbage")
    assert "is not valid JSON" in _load_error(tmp_path)


def test_not_an_object(tmp_path):
    assert "must be a JSON object" in _load_error(_write(tmp_path, "[1, 2]"))


@pytest.mark.parametrize("key", ["name", "task", "labels", "input", "outputs"])
def test_missing_key(saved, key):
    model_dir, data = saved
    del data[key]
    msg = _load_error(_write(model_dir, data))
    assert f"manifest is missing '{key}'" in msg
    assert str(model_dir / "manifest.json") in msg  # says which file


def test_missing_schema_version(saved):
    model_dir, data = saved
    del data["schema_version"]
    assert "no integer 'schema_version'" in _load_error(_write(model_dir, data))


@pytest.mark.parametrize("where", ["top", "input", "output", "artifact"])
def test_unknown_key_is_rejected_and_allowed_keys_listed(saved, where):
    model_dir, data = saved
    target = {"top": data, "input": data["input"], "output": data["outputs"][0], "artifact": data["artifacts"][0]}
    target[where]["colour"] = "RGB"  # a typo of an allowed key must not be ignored
    msg = _load_error(_write(model_dir, data))
    assert "unknown key(s) ['colour']" in msg and "allowed:" in msg


def test_bad_dtype_names_the_tensor_and_suggests(saved):
    model_dir, data = saved
    data["input"]["dtype"] = "float23"
    msg = _load_error(_write(model_dir, data))
    assert "dtype for tensor 'input'" in msg and "did you mean 'float32'" in msg


def test_newer_schema_says_upgrade(saved):
    model_dir, data = saved
    data["schema_version"] = SCHEMA_VERSION + 1
    msg = _load_error(_write(model_dir, data))
    assert "newer than this edgekit" in msg and "upgrade edgekit" in msg


@pytest.mark.parametrize("patch, expect", [
    ({"task": "segment"}, "unknown task 'segment'"),
    ({"labels": []}, "'labels' must be a non-empty list"),
    ({"outputs": []}, "'outputs' must be a non-empty list"),
    ({"input": {"name": "input", "shape": [1, 3, 32]}}, "expected a 4-D image tensor"),
    ({"input": {"name": "input", "shape": [1, 3, 32, 32], "color": "RBG"}}, "did you mean 'RGB'"),
    ({"input": {"name": "input", "shape": [1, 3, 32, 32], "std": [0.2, 0.0, 0.2]}}, "std > 0"),
    ({"input": {"name": "input", "shape": [1, 3, -1, 32]}}, "shape must be a list of ints"),
    ({"input": {"shape": [1, 3, 32, 32]}}, "input:"),  # missing name: a TypeError turned into EdgekitError
])
def test_bad_values_are_edgekit_errors(saved, patch, expect):
    model_dir, data = saved
    data.update(patch)
    assert expect in _load_error(_write(model_dir, data))


@pytest.mark.parametrize("field, value", [
    ("backend", "onnx"), ("precision", "fp31"), ("path", "/etc/passwd"), ("path", "../model.pt"),
])
def test_bad_artifact_entries(saved, field, value):
    model_dir, data = saved
    data["artifacts"][0][field] = value
    msg = _load_error(_write(model_dir, data))
    assert "artifacts[0]" in msg
    if field == "backend":
        assert "did you mean 'onnxrt'" in msg
    if field == "precision":
        assert "did you mean 'fp32'" in msg
    if field == "path":
        assert "must be relative to the model directory" in msg


@pytest.mark.parametrize("key, value", [
    pytest.param("labels", "cat", id="labels-as-string"),
    pytest.param("labels", 5, id="labels-as-int"),
    pytest.param("artifacts", 5, id="artifacts-as-int"),
    pytest.param("source", ["resnet18"], id="source-as-list"),
    pytest.param("outputs", {"logits": [1, 2]}, id="outputs-as-dict"),
    pytest.param("input", ["input"], id="input-as-list"),
    pytest.param("schema_version", "1", id="schema-version-as-string"),
])
def test_wrong_json_types_are_edgekit_errors(saved, key, value):
    model_dir, data = saved
    data[key] = value
    msg = _load_error(_write(model_dir, data))
    assert str(model_dir / "manifest.json") in msg


# ---- artifacts -------------------------------------------------------------------------------------

def test_add_artifact_records_sha256_and_replaces_same_backend_precision(tmp_path):
    import hashlib

    (tmp_path / "model.pt").write_bytes(b"v1")
    m = _manifest()
    m.save(tmp_path)
    first = m.add_artifact("torch", "model.pt", "fp32")
    assert first.sha256 == hashlib.sha256(b"v1").hexdigest()
    assert first.created  # an ISO timestamp
    (tmp_path / "model.pt").write_bytes(b"v2")
    m.add_artifact("torch", tmp_path / "model.pt", "fp32")  # an absolute path is stored relative
    (art,) = m.artifacts
    assert art.path == "model.pt" and art.sha256 == hashlib.sha256(b"v2").hexdigest()


def test_add_artifact_needs_a_saved_manifest():
    with pytest.raises(EdgekitError, match="save\\(\\) it first"):
        _manifest().add_artifact("torch", "model.pt", "fp32")


def test_find_artifact_prefers_fp32_and_filters_precision():
    arts = [Artifact("onnxrt", f"m_{p}.onnx", p, "0" * 64) for p in ("int8", "fp16", "fp32")]
    m = _manifest(artifacts=arts)
    assert m.find_artifact("onnxrt").precision == "fp32"
    assert m.find_artifact("onnxrt", "fp16").path == "m_fp16.onnx"


@pytest.mark.parametrize("backend, command", [("onnxrt", "edgekit export MODEL_DIR --to onnx"),
                                              ("trt", "edgekit export MODEL_DIR --to trt")])
def test_find_missing_artifact_names_the_export_command(saved, backend, command):
    m = Manifest.load(saved[0])
    with pytest.raises(EdgekitError) as e:
        m.find_artifact(backend)
    msg = str(e.value)
    assert f"has no {backend} artifact" in msg and "has: torch/fp32" in msg and f"`{command}`" in msg


def test_find_missing_precision_lists_what_exists(saved):
    m = Manifest.load(saved[0])
    with pytest.raises(EdgekitError, match="has no torch/fp16 artifact \\(has: torch/fp32\\)"):
        m.find_artifact("torch", "fp16")


@pytest.mark.parametrize("args, suggestion", [(("onnx",), "onnxrt"), (("torhc",), "torch"),
                                              (("torch", "fp23"), "fp32"), (("torch", "int4"), "int8")])
def test_unknown_backend_or_precision_says_did_you_mean(args, suggestion):
    with pytest.raises(EdgekitError, match=f"did you mean '{suggestion}'"):
        _manifest().find_artifact(*args)


def test_artifact_path_missing_file_says_rerun_export(saved):
    model_dir, _ = saved
    m = Manifest.load(model_dir)
    (model_dir / "model.pt").unlink()
    with pytest.raises(EdgekitError, match="model.pt but the file is missing; re-run the export"):
        m.artifact_path(m.find_artifact("torch"))


@pytest.mark.parametrize("damage", ["modify", "truncate", "replace"])
def test_sha256_mismatch_raises_via_load_runner(model_copy, damage):
    onnx = model_copy / "model.onnx"
    data = onnx.read_bytes()
    if damage == "modify":
        data = data[:-1] + bytes([data[-1] ^ 0xFF])
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = b"not an onnx file"
    onnx.write_bytes(data)
    with pytest.raises(EdgekitError) as e:
        load_runner(model_copy, "onnxrt")
    assert "does not match the sha256 in its manifest" in str(e.value)
    assert "re-run the export" in str(e.value)


def test_unchanged_artifact_passes_the_sha256_check(model_dir):
    m = Manifest.load(model_dir)
    assert m.artifact_path(m.find_artifact("onnxrt")) == model_dir / "model.onnx"


def test_load_runner_with_verify_false_skips_the_check(model_copy):
    (model_copy / "model.onnx").write_bytes(b"garbage")
    runner = load_runner(model_copy, "onnxrt", verify=False)  # construction is cheap; load() would fail
    assert runner.artifact == model_copy / "model.onnx"



# ---- a detector's postprocess: decoder and thresholds --------------------------------------------------

def _detect_dict(**post) -> dict:
    m = _manifest(task="detect", labels=["person"], outputs=[TensorSpec("output0", [1, 5, 84])])
    d = m.to_dict()
    if post:
        d["postprocess"] = post
    else:
        d.pop("postprocess")  # as written before the field existed
    return d


def test_old_detect_manifests_get_the_yolov8_decoder_and_predict_thresholds(tmp_path):
    from edgekit.manifest import Postprocess

    m = Manifest.load(_write(tmp_path, _detect_dict()))
    assert m.postprocess == Postprocess("yolov8", 0.25, 0.7, 300)
    m.postprocess = Postprocess("end2end", 0.3, 0.5, 100)
    m.save()
    assert json.loads((tmp_path / "manifest.json").read_text())["postprocess"] == {
        "decoder": "end2end", "conf": 0.3, "iou": 0.5, "max_det": 100}
    assert Manifest.load(tmp_path).postprocess == Postprocess("end2end", 0.3, 0.5, 100)
    assert "postprocess" not in _manifest().to_dict()  # a classifier has none


@pytest.mark.parametrize("post, why", [
    ({"decoder": "yolov8", "nms_iou": 0.5}, "unknown key"),
    ({"decoder": "yolo 8"}, "decoder must be one of yolov8, yolov5, end2end"),
    ({"decoder": "./my.py:decode"}, "decoder must be one of"),
    ({"conf": 1.5}, "conf must be a number in \\[0, 1\\]"),
    ({"iou": 0}, "iou must be"),
    ({"iou": "0.5"}, "iou must be"),
    ({"max_det": 0}, "max_det must be a positive integer"),
    ({"max_det": 2.5}, "max_det"),
])
def test_postprocess_is_validated_on_load(tmp_path, post, why):
    msg = _load_error(_write(tmp_path, _detect_dict(**post)))
    assert "postprocess" in msg
    import re
    assert re.search(why, msg), msg


def test_postprocess_plugin_names_load_and_classifiers_refuse_one(tmp_path):
    assert Manifest.load(_write(tmp_path, _detect_dict(decoder="mypkg.decoders:decode"))).postprocess.decoder == \
        "mypkg.decoders:decode"
    d = _manifest().to_dict()
    d["postprocess"] = {"decoder": "yolov8"}
    assert "for detectors" in _load_error(_write(tmp_path, d))
