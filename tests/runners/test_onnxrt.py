"""ONNX Runtime runner: checked against the torch reference on the same real images; broken files are
EdgekitErrors; loading and running it never imports torch."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgekit.compare import compare_logits
from edgekit.errors import EdgekitError
from edgekit.runners import load_runner
from edgekit.runners.onnxrt import OnnxrtRunner

HEAVY = ("torch", "torchvision", "tinygrad", "ultralytics")


def _logits(runner, x: np.ndarray) -> np.ndarray:
    return np.concatenate([runner.infer({"input": x[i:i + 1]})["logits"] for i in range(len(x))])


def test_matches_torch_on_real_digits(model_dir, val_batch):
    x, labels = val_batch
    with load_runner(model_dir, "torch") as ref, load_runner(model_dir, "onnxrt") as ort:
        want, got = _logits(ref, x), _logits(ort, x)
    assert got.shape == want.shape == (len(x), 3) and got.dtype == np.float32
    # the comparison means something: the reference predicts all three classes, mostly correctly
    assert set(want.argmax(1)) == {0, 1, 2}
    assert (want.argmax(1) == labels).mean() >= 0.75
    r = compare_logits(want, got)
    assert r["max_rel"] <= 1e-4, r
    assert r["top1_agreement"] == 1.0, r
    assert r["min_cosine"] > 0.99999, r


def test_same_input_gives_identical_logits(model_dir, val_batch):
    with load_runner(model_dir, "onnxrt") as r:
        a = r.infer({"input": val_batch[0][:1]})["logits"]
        b = r.infer({"input": val_batch[0][:1].copy()})["logits"]
    np.testing.assert_array_equal(a, b)


def test_io_specs_come_from_the_onnx_file(model_dir):
    with load_runner(model_dir, "onnxrt", threads=1) as r:
        (inp,) = r.inputs().values()
        (out,) = r.outputs().values()
        assert r.providers == ["CPUExecutionProvider"]
    assert (inp.name, inp.shape, inp.dtype) == ("input", [1, 3, 32, 32], "float32")
    assert (out.name, out.shape, out.dtype) == ("logits", [1, 3], "float32")


def test_truncated_onnx_is_an_edgekit_error_on_load(tmp_path, model_dir):
    data = (model_dir / "model.onnx").read_bytes()
    bad = tmp_path / "model.onnx"
    bad.write_bytes(data[: len(data) // 2])
    r = OnnxrtRunner(bad)
    with pytest.raises(EdgekitError) as e:
        r.load()
    assert "ONNX Runtime could not load" in str(e.value) and f"edgekit export {tmp_path} --to onnx" in str(e.value)
    assert not r.loaded


def test_non_onnx_file_is_an_edgekit_error_on_load(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_text("this is a text file, not a protobuf\n")
    with pytest.raises(EdgekitError, match="damaged or not an ONNX model. Re-export it"):
        OnnxrtRunner(bad).load()


def test_missing_file_is_an_edgekit_error_on_load(tmp_path):
    with pytest.raises(EdgekitError, match="does not exist"):
        OnnxrtRunner(tmp_path / "nope.onnx").load()


def test_cuda_device_without_the_provider_says_what_to_install(model_dir):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this ONNX Runtime has CUDA")
    with pytest.raises(EdgekitError, match="has no CUDAExecutionProvider.*onnxruntime-gpu.*--device cpu"):
        load_runner(model_dir, "onnxrt", device="cuda").load()


def test_unknown_graph_opt_is_an_edgekit_error(model_dir):
    with pytest.raises(EdgekitError, match="graph_opt"):
        load_runner(model_dir, "onnxrt", graph_opt="fast").load()


@pytest.mark.parametrize("level", ["all", "extended", "basic", "disable"])
def test_every_graph_opt_level_gives_the_same_logits(model_dir, val_batch, level):
    x = val_batch[0][:4]
    with load_runner(model_dir, "onnxrt", graph_opt=level, threads=1) as r, \
            load_runner(model_dir, "onnxrt") as default:
        r_ = compare_logits(_logits(default, x), _logits(r, x))
    assert r_["max_rel"] <= 1e-5 and r_["top1_agreement"] == 1.0


def test_loading_and_running_never_imports_torch(model_dir, digits_imagefolder):
    """The camera loop on ONNX Runtime must not pay for torch (~600 MB RSS on a Jetson)."""
    child = textwrap.dedent(f"""
        import json, sys
        import edgekit
        from edgekit.data.imagefolder import load_split
        from edgekit.runners import load_runner
        from edgekit.vision.preprocess import batch_classify

        with load_runner(sys.argv[1], "onnxrt") as r:
            x = batch_classify(load_split(sys.argv[2]).images[:1], r.manifest.input)
            out = r.infer({{"input": x}})
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
        print(json.dumps({{"heavy": heavy, "shape": list(out["logits"].shape)}}))
    """)
    p = subprocess.run([sys.executable, "-c", child, str(model_dir), str(digits_imagefolder / "val")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result == {"heavy": [], "shape": [1, 3]}


def test_import_edgekit_is_light():
    child = (f"import sys, edgekit, edgekit.runners, edgekit.manifest; "
             f"print([m for m in sys.modules if m.split('.')[0] in {HEAVY + ('onnxruntime', 'cv2')!r}])")
    p = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


@pytest.mark.parametrize("precision, fp16, int8", [("fp32", False, False), ("fp16", True, False), ("int8", True, True)])
def test_tensorrt_provider_options_follow_the_artifact(tmp_path, precision, fp16, int8):
    from edgekit.runners.onnxrt import OnnxrtRunner

    r = OnnxrtRunner(tmp_path / "m.onnx", device="trt", precision=precision, trt_cache_dir=tmp_path / "c",
                     trt_profile_shapes="input:1x3x8x8,input:2x3x8x8,input:4x3x8x8")
    o = r._provider_options("TensorrtExecutionProvider")
    assert (o["trt_fp16_enable"], o["trt_int8_enable"]) == (fp16, int8)
    # engines built with other precision flags never share a cache folder
    assert o["trt_engine_cache_path"].endswith(f"fp16{int(fp16)}-int8{int(int8)}")
    assert (o["trt_profile_min_shapes"], o["trt_profile_max_shapes"]) == ("input:1x3x8x8", "input:4x3x8x8")
    assert r._provider_options("CPUExecutionProvider") == {}


def test_tensorrt_profile_shapes_of_several_inputs(tmp_path):
    """ONNX Runtime separates inputs with ',' inside each of min/opt/max: the three are separated by ';'."""
    from edgekit.runners.onnxrt import OnnxrtRunner, profile_shape_options

    want = {"trt_profile_min_shapes": "images:1x3x64x64,scale:1x2",
            "trt_profile_opt_shapes": "images:4x3x64x64,scale:4x2",
            "trt_profile_max_shapes": "images:8x3x64x64,scale:8x2"}
    text = "images:1x3x64x64,scale:1x2;images:4x3x64x64,scale:4x2;images:8x3x64x64,scale:8x2"
    r = OnnxrtRunner(tmp_path / "m.onnx", device="trt", trt_profile_shapes=text)
    assert want.items() <= r._provider_options("TensorrtExecutionProvider").items()
    assert profile_shape_options(text) == want
    assert profile_shape_options({"min": "images:1x3x64x64,scale:1x2", "opt": "images:4x3x64x64,scale:4x2",
                                  "max": "images:8x3x64x64,scale:8x2"}) == want
    one = profile_shape_options("input:1x3x8x8,input:2x3x8x8,input:4x3x8x8")  # one input: the older form
    assert one["trt_profile_opt_shapes"] == "input:2x3x8x8"


@pytest.mark.parametrize("value, expect", [
    ("a:1x3,b:1x4,a:4x3", "separated by ';'"),  # not one input's min,opt,max: ambiguous
    ("a:1x3;a:2x3", "separated by ';'"),
    ("a:1x3,b:1x4;a:2x3;a:4x3,b:4x4", "must name the same inputs"),
    ("a:1x3;a:2xN;a:4x3", "'a:2xN' is not NAME:DxDx"),
])
def test_bad_tensorrt_profile_shapes_name_the_format(value, expect):
    from edgekit.runners.onnxrt import profile_shape_options

    with pytest.raises(EdgekitError, match=expect):
        profile_shape_options(value)


def test_an_8bit_int8_file_warns_on_a_cpu_whose_kernels_saturate(monkeypatch, caplog, tmp_path):
    """ONNX Runtime's u8s8 kernels saturate on x86 without VNNI (issue 13): an INT8 file built with 8-bit
    weights elsewhere says so when it is loaded there; 7-bit weights, or a VNNI/ARM CPU, say nothing."""
    import edgekit.platform
    from edgekit.runners import warn_if_int8_saturates

    built_on_vnni = {"reduce_range": False, "cpu": {"kind": "x86-vnni"}}
    for here, options, warns in (("x86-avx2", built_on_vnni, True), ("x86-avx512", built_on_vnni, True),
                                 ("x86-vnni", built_on_vnni, False), ("arm-dotprod", built_on_vnni, False),
                                 ("x86-avx2", {**built_on_vnni, "reduce_range": True}, False),
                                 ("x86-avx2", {}, False)):  # a file from before the option was recorded
        monkeypatch.setattr(edgekit.platform, "cpu_int8", lambda here=here: {"kind": here, "features": []})
        caplog.clear()
        with caplog.at_level("WARNING", logger="edgekit.runners"):
            msg = warn_if_int8_saturates(options, tmp_path / "model_int8.onnx")
        assert bool(msg) == warns and bool(caplog.records) == warns, (here, options)
        if warns:
            assert "built on x86-vnni" in msg and f"this {here} CPU" in msg and "--reduce-range auto" in msg
