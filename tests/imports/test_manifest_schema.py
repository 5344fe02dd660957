"""edgekit/manifest.schema.json documents the manifest: every manifest the fixtures, the trainers' layouts and
`edgekit import` write validates against it, and its properties are the Manifest dataclasses' fields."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from edgekit.manifest import Artifact, InputSpec, Manifest, Postprocess, TensorSpec

jsonschema = pytest.importorskip("jsonschema")
SCHEMA = json.loads((Path(__file__).parents[2] / "edgekit" / "manifest.schema.json").read_text())


def _validate(model_dir: Path) -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.validate(json.loads((model_dir / "manifest.json").read_text()), SCHEMA)


def test_schema_properties_are_the_dataclass_fields():
    defs = SCHEMA["$defs"]
    for cls, props in ((Manifest, SCHEMA["properties"]), (InputSpec, defs["input"]["properties"]),
                       (TensorSpec, defs["tensor"]["properties"]), (Artifact, defs["artifact"]["properties"]),
                       (Postprocess, defs["postprocess"]["properties"])):
        assert set(props) == {f.name for f in dataclasses.fields(cls)} - {"model_dir"}, cls.__name__


def test_fixture_manifests_validate(model_dir, tiny_yolo_dir):
    for d in (model_dir, tiny_yolo_dir):  # a classifier with torch + ONNX, a detector with model_state.pt + ONNX
        _validate(d)


def test_imported_manifests_validate(tiny_yolo_dir, tmp_path):
    from edgekit.imports import ImportConfig, import_model

    from tests.imports.onnx_models import classifier

    import_model(tiny_yolo_dir / "model.onnx", tmp_path / "det")
    import_model(classifier(tmp_path / "c.onnx"), tmp_path / "cls", ImportConfig(crop="32"))
    for d in ("det", "cls"):
        _validate(tmp_path / d)


def test_schema_rejects_what_the_loader_rejects(tiny_yolo_dir):
    data = json.loads((tiny_yolo_dir / "manifest.json").read_text())
    for bad in ({**data, "typo": 1}, {**data, "task": "segment"}, {**data, "input": {**data["input"], "layout": "CHW"}},
                {**data, "postprocess": {"decoder": "yolov8", "iou": 0}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, SCHEMA)
        with pytest.raises(Exception, match="unknown|task|layout|iou"):
            Manifest.from_dict(bad)
