"""A corrupt model.onnx whose sha256 matches (the manifest rewritten too) ends in one line naming the fix, from
the FP16, INT8 and TensorRT exports and the runners, never a protobuf/checker/ORT traceback (issue 11, item 6);
`edgekit compare` exits 1 when no row ran."""
from __future__ import annotations

import pytest
from integrity import assert_model_dir_intact

from edgekit.cli import main
from edgekit.errors import EdgekitError
from edgekit.manifest import Manifest

FIX = "Re-export it: `edgekit export"


def _corrupt(d, how: str) -> None:
    import onnx

    path = d / "model.onnx"
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "text":
        path.write_bytes(b"this is not an onnx model\n")
    else:  # a well-formed protobuf whose graph names an operator that does not exist
        m = onnx.load(str(path))
        m.graph.node[0].op_type = "NoSuchOp"
        onnx.save(m, str(path))
    m = Manifest.load(d)
    m.add_artifact("onnxrt", "model.onnx", "fp32")  # the sha256 rewritten to match, as a tamperer would
    m.save()


def _one_line(capsys, rc: int) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("edgekit: error:")]
    assert rc == 2 and "Traceback" not in err and len(lines) == 1, err[-3000:]
    return lines[0]


@pytest.mark.parametrize("how", ["truncated", "text", "bad-graph"])
def test_fp16_and_int8_from_a_corrupt_onnx_is_one_line(model_copy, capsys, how):
    _corrupt(model_copy, how)
    for precision in ("fp16", "int8"):
        line = _one_line(capsys, main(["-q", "export", str(model_copy), "--precision", precision]))
        assert "model.onnx" in line and FIX in line
    assert not (model_copy / "model_fp16.onnx").exists() and not (model_copy / "model_int8.onnx").exists()
    assert_model_dir_intact(model_copy)


@pytest.mark.parametrize("how", ["truncated", "bad-graph"])
def test_runners_and_the_trt_reader_say_the_same(model_copy, how):
    from edgekit.export.trt_build import read_onnx_inputs
    from edgekit.runners import load_runner

    _corrupt(model_copy, how)
    with pytest.raises(EdgekitError, match="could not load .*model.onnx.*Re-export it"):
        load_runner(model_copy, "onnxrt").load()
    with pytest.raises(EdgekitError, match="could not load .*model.onnx.*Re-export it"):
        read_onnx_inputs(model_copy / "model.onnx")  # what the TensorRT export reads first


def test_compare_exits_1_when_no_row_ran(model_copy, capsys):
    _corrupt(model_copy, "truncated")
    rc = main(["-q", "compare", str(model_copy), "--backends", "onnxrt", "--precisions", "fp32,fp16",
               "--eval-images", "4"])
    out, err = capsys.readouterr()
    assert rc == 1 and "nothing was compared" in err and "Traceback" not in err + out
    assert "| onnxrt | fp32 |" in out and "| onnxrt | fp16 |" in out  # each row says why
