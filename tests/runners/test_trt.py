"""TensorRT runner: registered, cheap to construct, and it refuses foreign or stale engines before touching
TensorRT (with the exact rebuild command); where TensorRT is missing, loading says how to get it. Real
engines are checked against ONNX Runtime on real digits where TensorRT and a GPU exist (skipped here)."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.export.trt import TrtBuildConfig, record_engine, sidecar_info
from edgekit.export.trt_cache import EngineEnv, EngineKey, rebuild_command, write_sidecar
from edgekit.export.trt_plan import plan_build, profile_shapes
from edgekit.manifest import Manifest
from edgekit.runners import available_backends, load_runner, runner_class
from edgekit.runners.trt import TrtRunner

ORIN = EngineEnv("10.3.0", "Orin", "8.7", integrated=True, cuda_runtime="12.6", cuda_driver="12.6")


def add_engine(model_dir: Path, *, onnx_sha256: str | None = None, sidecar: bool = True) -> Path:
    """Record a stand-in engine file (not a TensorRT plan) with its sidecar, as a build on a Jetson would."""
    manifest = Manifest.load(model_dir)
    onnx_art = manifest.find_artifact("onnxrt", "fp32")
    key = EngineKey(onnx_sha256 or onnx_art.sha256, "10.3.0", "Orin", "8.7", "fp16", "weak",
                    profile_shapes({"input": [1, 3, 32, 32]}))
    engine = model_dir / "model_fp16.engine"
    engine.write_bytes(b"engine bytes (stand-in for a TensorRT plan)")
    info = sidecar_info(plan_build("10.3.0", "fp16"), "fp16", onnx_art.path, ORIN, TrtBuildConfig(), seconds=1.0)
    data = write_sidecar(engine, key, info)
    record_engine(manifest, engine, data, parity={})
    manifest.save()
    if not sidecar:
        (model_dir / "model_fp16.engine.json").unlink()
    return engine


def test_registered_as_the_trt_backend():
    assert "trt" in available_backends()
    assert runner_class("trt") is TrtRunner and TrtRunner.devices == ("cuda",)


def test_construction_is_cheap_and_checks_the_device(tmp_path):
    r = TrtRunner(tmp_path / "absent.engine", device="cuda", memory="mapped", cuda_graph=True)
    assert not r.loaded and r.options == {"memory": "mapped", "cuda_graph": True}
    with pytest.raises(EdgekitError, match="the trt runner runs on cuda, not 'cpu'"):
        TrtRunner(tmp_path / "absent.engine", device="cpu")
    with pytest.raises(EdgekitError, match="does not exist"):
        r.load()


def test_importing_the_runner_imports_neither_tensorrt_nor_torch():
    code = textwrap.dedent("""
        import sys
        import edgekit.runners.trt, edgekit.export.trt
        print(sorted(m for m in ("tensorrt", "torch", "pycuda", "cuda.bindings") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_engine_without_its_sidecar_is_refused_with_the_rebuild_command(model_copy):
    add_engine(model_copy, sidecar=False)
    with pytest.raises(EdgekitError) as e:
        load_runner(model_copy, "trt").load()
    assert "no valid model_fp16.engine.json beside it" in str(e.value)
    assert f"`edgekit export {model_copy} --to trt --precision fp16 --force`" in str(e.value)


def test_engine_from_an_older_onnx_is_refused(model_copy):
    add_engine(model_copy, onnx_sha256="0" * 64)  # the model was re-exported after this engine was built
    with pytest.raises(EdgekitError, match=r"built from an older ONNX.*edgekit export .* --to trt --precision fp16"):
        load_runner(model_copy, "trt").load()


def test_valid_engine_where_tensorrt_is_missing_says_how_to_get_it(model_copy, monkeypatch):
    add_engine(model_copy)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    runner = load_runner(model_copy, "trt")
    assert runner.rebuild_command() == rebuild_command(model_copy, "fp16")
    with pytest.raises(EdgekitError, match="TensorRT is not importable.*python3-libnvinfer"):
        runner.load()
    assert not runner.loaded


def test_engine_changed_after_the_manifest_is_caught(model_copy):
    engine = add_engine(model_copy)
    engine.write_bytes(b"someone else's engine")
    with pytest.raises(EdgekitError, match="does not match the sha256 in its manifest"):
        load_runner(model_copy, "trt")


# ---- with TensorRT and a GPU ------------------------------------------------------------------------



@pytest.fixture(scope="module")
def built_fp32(tmp_path_factory, model_dir) -> Path:
    import shutil

    from edgekit.export.trt import engine_from_onnx

    out = Path(shutil.copytree(model_dir, tmp_path_factory.mktemp("trt") / model_dir.name))
    engine_from_onnx(out, TrtBuildConfig(precision="fp32", timing_cache="none"))
    return out


@pytest.mark.tensorrt
@pytest.mark.cuda
@pytest.mark.parametrize("options", [{}, {"memory": "device"}, {"memory": "mapped"}, {"memory": "managed"},
                                     {"cuda_graph": True}])
def test_real_engine_matches_onnxruntime_on_real_digits(built_fp32, val_batch, options):
    from edgekit.compare import compare_logits

    x, _ = val_batch
    with load_runner(built_fp32, "onnxrt") as ref, load_runner(built_fp32, "trt", **options) as trt:
        want = np.concatenate([ref.infer({"input": x[i:i + 1]})["logits"] for i in range(len(x))])
        got = np.concatenate([trt.infer({"input": x[i:i + 1]})["logits"] for i in range(len(x))])
        again = trt.infer({"input": x[:1]})["logits"]
        assert trt.inputs()["input"].shape == [1, 3, 32, 32] and len(trt.infer_ns) == len(x) + 1
    r = compare_logits(want, got)
    assert r["max_rel"] <= 1e-3 and r["top1_agreement"] == 1.0, r
    np.testing.assert_array_equal(again, got[:1])


@pytest.mark.tensorrt
@pytest.mark.cuda
def test_real_engine_with_a_foreign_sidecar_is_refused(built_fp32, tmp_path):
    import json
    import shutil

    d = Path(shutil.copytree(built_fp32, tmp_path / "copied"))
    side = d / "model_fp32.engine.json"
    data = json.loads(side.read_text())
    data["key"]["tensorrt"] = "10.3.0-from-a-jetson"
    side.write_text(json.dumps(data))
    with pytest.raises(EdgekitError, match="was built elsewhere.*--to trt --precision fp32"):
        load_runner(d, "trt").load()


def test_sidecar_key_is_what_the_runner_compares(model_copy):
    engine = add_engine(model_copy)
    from edgekit.export.trt_cache import check_engine_env, read_sidecar

    data = read_sidecar(engine)
    check_engine_env(data, ORIN, engine=engine, rebuild="cmd")
    with pytest.raises(EdgekitError, match="compute_capability: built for '8.7', here '8.6'"):
        check_engine_env(data, dataclasses.replace(ORIN, compute_capability="8.6"), engine=engine, rebuild="cmd")
