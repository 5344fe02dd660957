"""TensorRT export: everything around the library, tested here without it (strategy per TensorRT version,
profile shapes, the engine cache key and its refusals, INT8 calibration batches over real images, what the
manifest records, the error when TensorRT is missing); real builds are marked and skip without TensorRT.
(Named test_trt_export.py, not test_trt.py: tests/ has no __init__.py, so two test_trt.py would clash.)"""
from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.export.trt import TrtBuildConfig, onnx_source, record_engine, sidecar_info
from edgekit.export.trt_build import (ParserErrorInfo, format_parser_errors, import_tensorrt, read_onnx_inputs,
                                      tensorrt_missing_message)
from edgekit.export.trt_cache import (EngineEnv, EngineKey, cached_engine, check_engine_env, rebuild_command,
                                      timing_cache_path, verify_engine_files, write_sidecar)
from edgekit.export.trt_plan import (BuildPlan, calibration_batch, engine_filename, fit_to_platform, parse_version,
                                     plan_build, profile_shapes)
from edgekit.manifest import Manifest

STATIC = {"input": [1, 3, 32, 32]}
ORIN = EngineEnv("10.3.0", "Orin", "8.7", integrated=True, cuda_runtime="12.6", cuda_driver="12.6")


def key(**change) -> EngineKey:
    base = EngineKey("ab" * 32, "10.3.0", "Orin", "8.7", "fp16", "weak", profile_shapes(STATIC), -1, None)
    return dataclasses.replace(base, **change)


# ---- strategy per TensorRT version -----------------------------------------------------------------

@pytest.mark.parametrize("version, precision, typing, onnx, flags, calibrate", [
    ("10.3.0", "fp32", "weak", "fp32", (), False),  # JetPack 6
    ("10.3.0", "fp16", "weak", "fp32", ("FP16",), False),
    ("10.3.0", "int8", "weak", "fp32", ("INT8", "FP16"), True),
    ("10.11.0.33", "int8", "weak", "fp32", ("INT8", "FP16"), True),
    ("10.12.0.36", "fp32", "strong", "fp32", (), False),  # weak typing deprecated from here
    ("10.12.0.36", "fp16", "strong", "fp16", (), False),
    ("10.13.3", "int8", "strong", "int8", (), False),
    ("11.0.0", "fp16", "strong", "fp16", (), False),  # and removed
    ("11.4.1", "int8", "strong", "int8", (), False),
])
def test_plan_by_tensorrt_version(version, precision, typing, onnx, flags, calibrate):
    plan = plan_build(version, precision)
    assert (plan.precision, plan.typing, plan.onnx_precision, plan.flags, plan.calibrate) == \
        (precision, typing, onnx, flags, calibrate)


def test_strong_typing_can_be_asked_for_on_tensorrt_10_3():
    assert plan_build("10.3.0", "int8", "strong") == BuildPlan("int8", "strong", "int8")
    assert plan_build("10.12.0", "fp16", "weak").flags == ("FP16",)  # deprecated, still there


@pytest.mark.parametrize("version, precision, typing, expect", [
    ("11.0.0", "int8", "weak", "removed builder precision flags"),
    ("8.6.2", "fp16", "auto", "JetPack 6"),
    ("10.3.0", "bf16", "auto", "unknown precision 'bf16'"),
    ("10.3.0", "fp16", "weakly", "unknown typing 'weakly'"),
    ("ten", "fp16", "auto", "cannot read the TensorRT version"),
])
def test_plan_errors_name_the_fix(version, precision, typing, expect):
    with pytest.raises(EdgekitError, match=expect):
        plan_build(version, precision, typing)


def test_parse_version():
    assert parse_version("10.3.0") == (10, 3, 0)
    assert parse_version("10.12.0.36") == (10, 12, 0, 36)
    assert parse_version("11.0") == (11, 0)


def test_gpu_without_fast_fp16_or_int8_records_the_lower_precision():
    fp16, int8 = plan_build("10.3.0", "fp16"), plan_build("10.3.0", "int8")
    assert fit_to_platform(fp16, True, True) == fp16
    down = fit_to_platform(fp16, False, False)
    assert (down.precision, down.flags) == ("fp32", ()) and "no fast FP16" in down.notes[0]
    down = fit_to_platform(int8, True, False)
    assert (down.precision, down.flags, down.calibrate) == ("fp16", ("FP16",), False)
    assert fit_to_platform(int8, False, False).precision == "fp32"
    strong = plan_build("11.0.0", "int8")
    assert fit_to_platform(strong, False, False) == strong  # the precision is in the ONNX itself


# ---- profile shapes ----------------------------------------------------------------------------

def test_fixed_batch_onnx_keeps_its_shape():
    s = profile_shapes(STATIC)
    assert s == {"input": {"min": [1, 3, 32, 32], "opt": [1, 3, 32, 32], "max": [1, 3, 32, 32]}}
    assert calibration_batch(s, 8) == 1
    with pytest.raises(EdgekitError, match="fixed batch of 1.*--max-batch 4.*--dynamic-batch"):
        profile_shapes(STATIC, max_batch=4)


def test_dynamic_batch_profile():
    dyn = {"input": ["batch", 3, 32, 32]}
    assert profile_shapes(dyn)["input"] == {"min": [1, 3, 32, 32], "opt": [1, 3, 32, 32], "max": [8, 3, 32, 32]}
    s = profile_shapes(dyn, opt_batch=4, max_batch=16)
    assert (s["input"]["opt"][0], s["input"]["max"][0]) == (4, 16)
    assert calibration_batch(s, 8) == 8 and calibration_batch(s, 64) == 16
    with pytest.raises(EdgekitError, match="larger than --max-batch"):
        profile_shapes(dyn, opt_batch=8, max_batch=2)
    with pytest.raises(EdgekitError, match="dynamic axes"):
        profile_shapes({"input": ["batch", 3, "h", "w"]})


def test_onnx_inputs_come_from_the_real_file(tmp_path, model_dir):
    import onnx

    assert read_onnx_inputs(model_dir / "model.onnx") == STATIC
    m = onnx.load(str(model_dir / "model.onnx"))
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.save(m, str(tmp_path / "dyn.onnx"))
    assert read_onnx_inputs(tmp_path / "dyn.onnx") == {"input": ["batch", 3, 32, 32]}


# ---- the engine cache key ------------------------------------------------------------------------

def test_same_inputs_same_key():
    assert key().digest() == key().digest()
    assert EngineKey(**key().as_dict()).digest() == key().digest()  # survives a JSON round trip


@pytest.mark.parametrize("field, value", [
    ("onnx_sha256", "cd" * 32), ("tensorrt", "10.7.0"), ("gpu", "NVIDIA H100 80GB HBM3"),
    ("compute_capability", "8.6"), ("precision", "int8"), ("typing", "strong"),
    ("shapes", profile_shapes({"input": ["batch", 3, 32, 32]})), ("dla_core", 0), ("calibration", "f00d"),
])
def test_each_key_field_changes_the_key(field, value):
    assert key(**{field: value}).digest() != key().digest()


def _engine(tmp_path: Path, k: EngineKey, data: bytes = b"engine bytes (stand-in for a TensorRT plan)") -> Path:
    engine = tmp_path / engine_filename(k.precision, k.dla_core)
    engine.write_bytes(data)
    write_sidecar(engine, k, {"precision": k.precision})
    return engine


def test_cache_hits_only_on_the_same_key_and_intact_engine(tmp_path):
    engine = _engine(tmp_path, key())
    assert engine.name == "model_fp16.engine" and (tmp_path / "model_fp16.engine.json").exists()
    assert cached_engine(engine, key())["engine_sha256"]
    assert cached_engine(engine, key(tensorrt="10.4.0")) is None  # changed key: rebuild
    engine.write_bytes(b"truncated")
    assert cached_engine(engine, key()) is None
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave nothing behind


def test_foreign_engine_is_refused_with_the_rebuild_command(tmp_path):
    engine = _engine(tmp_path, key())  # built on a Jetson Orin with TensorRT 10.3
    cmd = rebuild_command(tmp_path, "fp16")
    assert cmd == f"edgekit export {tmp_path} --to trt --precision fp16 --force"
    data = verify_engine_files(engine, rebuild=cmd)
    check_engine_env(data, ORIN, engine=engine, rebuild=cmd)  # the machine that built it: fine
    here = EngineEnv("10.7.0", "NVIDIA H100 80GB HBM3", "9.0")
    with pytest.raises(EdgekitError) as e:
        check_engine_env(data, here, engine=engine, rebuild=cmd)
    msg = str(e.value)
    assert f"`{cmd}`" in msg
    assert "tensorrt: built for '10.3.0', here '10.7.0'" in msg and "gpu: built for 'Orin'" in msg


def test_engine_without_sidecar_or_changed_or_stale_is_refused(tmp_path):
    cmd = rebuild_command(tmp_path, "int8", dla_core=1, typing="strong")
    assert cmd.endswith("--precision int8 --dla-core 1 --typing strong --force")
    bare = tmp_path / "copied.engine"
    bare.write_bytes(b"engine from elsewhere")
    with pytest.raises(EdgekitError, match=r"no valid copied.engine.json beside it.*copied from another machine"):
        verify_engine_files(bare, rebuild=cmd)
    engine = _engine(tmp_path, key())
    with pytest.raises(EdgekitError, match="re-exported since.*--force`"):
        verify_engine_files(engine, rebuild=cmd, onnx_sha256="ef" * 32)
    engine.write_bytes(b"another engine under the same name")
    with pytest.raises(EdgekitError, match="not the engine its sidecar describes"):
        verify_engine_files(engine, rebuild=cmd)


def test_timing_cache_location(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert timing_cache_path("auto", ORIN) == tmp_path / "edgekit/trt/timing-trt10.3.0-sm87-orin.cache"
    assert timing_cache_path("none", ORIN) is None
    assert timing_cache_path(str(tmp_path / "t.cache"), ORIN) == tmp_path / "t.cache"


# ---- what the manifest records -----------------------------------------------------------------

def test_manifest_records_what_was_built_and_on_what(model_copy):
    manifest = Manifest.load(model_copy)
    onnx_art = manifest.find_artifact("onnxrt", "fp32")
    cfg = TrtBuildConfig(precision="fp16")
    built = fit_to_platform(plan_build("10.3.0", "fp16"), fast_fp16=False, fast_int8=False)  # asked fp16, got fp32
    k = key(onnx_sha256=onnx_art.sha256)
    engine = model_copy / engine_filename("fp16")
    engine.write_bytes(b"engine bytes (stand-in for a TensorRT plan)")
    sidecar = write_sidecar(engine, k, sidecar_info(built, "fp16", onnx_art.path, ORIN, cfg, seconds=12.5))
    art = record_engine(manifest, engine, sidecar, parity={"top1_agreement": 1.0, "passed": True})
    manifest.save()

    art2 = Manifest.load(model_copy).find_artifact("trt")  # validates on load
    assert art2 == art
    assert (art.backend, art.path, art.precision, art.built_from) == ("trt", "model_fp16.engine", "fp32", "model.onnx")
    assert art.options["requested_precision"] == "fp16" and "no fast FP16" in art.options["notes"][0]
    assert art.options["typing"] == "weak" and art.options["flags"] == []
    assert art.options["shapes"]["input"]["opt"] == [1, 3, 32, 32] and art.options["dla_core"] == -1
    assert art.options["sidecar"] == "model_fp16.engine.json" and art.options["key_digest"] == k.digest()
    assert art.options["rebuild"] == f"edgekit export {model_copy} --to trt --precision fp16 --force"
    on = art.built_on
    assert (on["tensorrt"], on["cuda_runtime"], on["device"]) == \
        ("10.3.0", "12.6", {"name": "Orin", "compute_capability": "8.7", "integrated": True})
    assert "jetpack" in on and "libraries" in on and "host" in on
    assert art.parity["passed"] is True


def test_strong_typing_builds_from_the_fp16_or_qdq_onnx(model_copy):
    manifest = Manifest.load(model_copy)
    assert onnx_source(manifest, plan_build("10.3.0", "int8")).path == "model.onnx"  # weak: the fp32 ONNX
    with pytest.raises(EdgekitError, match=r"Q/DQ INT8 ONNX \(model_int8.onnx\)"):
        onnx_source(manifest, plan_build("10.12.0", "int8"))
    # a stand-in file: this checks which artifact is picked, not what is inside it
    (model_copy / "model_fp16.onnx").write_bytes((model_copy / "model.onnx").read_bytes())
    manifest.add_artifact("onnxrt", "model_fp16.onnx", "fp16")
    assert onnx_source(manifest, plan_build("11.0.0", "fp16")).path == "model_fp16.onnx"
    (model_copy / "model_int8.onnx").write_bytes((model_copy / "model.onnx").read_bytes())
    art = manifest.add_artifact("onnxrt", "model_int8.onnx", "int8", options={"activations": "uint8",
                                                                              "symmetric_activations": False})
    with pytest.raises(EdgekitError, match="symmetric int8 Q/DQ only.*--activations int8 --symmetric-activations"):
        onnx_source(manifest, plan_build("11.0.0", "int8"))
    art.options.update(activations="int8", symmetric_activations=True)
    assert onnx_source(manifest, plan_build("11.0.0", "int8")) is art


# ---- config and errors -------------------------------------------------------------------------

def test_config_fields_are_commented_flags_that_fit_beside_the_onnx_export():
    from edgekit.configs import _field_comments, add_dataclass_args
    from edgekit.export.onnx import OnnxExportConfig

    names = [f.name for f in dataclasses.fields(TrtBuildConfig)]
    assert set(names) <= set(_field_comments(TrtBuildConfig))
    shared = set(names) & {f.name for f in dataclasses.fields(OnnxExportConfig)}
    assert shared == {"data", "decoder"}  # shared flags mean the same: the held-out data, the output decoder
    p = argparse.ArgumentParser()
    add_dataclass_args(p, OnnxExportConfig)
    add_dataclass_args(p, TrtBuildConfig, skip=tuple(shared))  # no other clash with `export --to onnx`
    args = p.parse_args(["--precision", "int8", "--dla-core", "0", "--max-batch", "4"])
    assert (args.precision, args.dla_core, args.max_batch) == ("int8", 0, 4)


@pytest.mark.parametrize("change, expect", [
    ({"precision": "fp8"}, "--precision must be one of fp32, fp16, int8, got 'fp8'"),
    ({"typing": "loose"}, "--typing must be one of"),
    ({"precision": "fp32", "dla_core": 0}, "DLA runs fp16 and int8 only"),
    ({"dla_core": -2}, "--dla-core must be from -1 to 7"),
    ({"workspace_mb": 1}, "--workspace-mb must be from 16"),
])
def test_config_validation(change, expect):
    with pytest.raises(EdgekitError, match=expect):
        TrtBuildConfig(**change).validate()


def test_parser_errors_are_reported_per_node():
    errs = [ParserErrorInfo(12, "/layer1/Resize", "Resize", "unsupported mode"), ParserErrorInfo(-1, "", "", "bad")]
    msg = format_parser_errors(Path("m/model.onnx"), errs, "10.3.0")
    assert "TensorRT 10.3.0 could not parse model.onnx (2 error(s))" in msg
    assert "node 12 '/layer1/Resize' (Resize): unsupported mode" in msg and "--opset 17" in msg


def test_missing_tensorrt_says_how_to_get_it(monkeypatch, model_dir):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on a machine without it
    with pytest.raises(EdgekitError) as e:
        import_tensorrt()
    assert "python3-libnvinfer" in str(e.value) and "l4t-jetpack" in str(e.value)
    jetson = tensorrt_missing_message({"model": "NVIDIA Jetson AGX Orin", "l4t": "36.4.0", "jetpack": "6.1/6.2"})
    assert "nvcr.io/nvidia/l4t-jetpack:r36.4.0" in jetson and "--system-site-packages" in jetson
    from edgekit.export.trt import engine_from_onnx

    with pytest.raises(EdgekitError, match="python3-libnvinfer"):
        engine_from_onnx(model_dir, TrtBuildConfig(precision="fp16"))


def _cli_has_trt() -> bool:
    from edgekit.cli import build_parser

    export = build_parser()._subparsers._group_actions[0].choices["export"]
    return any(a.dest == "to" and a.choices and "trt" in a.choices for a in export._actions)


def test_cli_export_to_trt_without_tensorrt_exits_nonzero(tmp_path, model_dir):
    if not _cli_has_trt():
        pytest.skip("edgekit/cli.py does not offer `export --to trt` yet")
    code = ("import sys; sys.modules['tensorrt'] = None; from edgekit.cli import main; "
            f"sys.exit(main(['export', {str(model_dir)!r}, '--to', 'trt']))")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "edgekit: error: TensorRT is not importable" in p.stderr and "python3-libnvinfer" in p.stderr


# ---- on a machine with TensorRT and a GPU --------------------------------------------------------

@pytest.mark.tensorrt
@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_build_checks_records_and_caches(model_copy, precision):
    from edgekit.export.trt import engine_from_onnx

    art = engine_from_onnx(model_copy, TrtBuildConfig(precision=precision, timing_cache="none"))
    assert art.backend == "trt" and art.parity["passed"] and art.parity["images"] == 24
    assert art.built_on["tensorrt"] and art.built_on["device"]["name"]
    again = engine_from_onnx(model_copy, TrtBuildConfig(precision=precision, timing_cache="none"))
    assert again.sha256 == art.sha256 and again.created == art.created  # cached: not rebuilt


# ---- parity batches fit a dynamic engine's profile ---------------------------------------------------
def test_parity_feeds_a_dynamic_engine_batches_within_its_profile(torch_model_copy, monkeypatch):
    """A dynamic-batch engine takes at most its profile's maximum (8 by default): the export's check and
    benchmarks/gpu_trt_check.py feed it no more, and still cover every image."""
    import importlib.util

    from edgekit.export import trt as trt_export
    from edgekit.export.onnx import OnnxExportConfig, onnx_from_torch
    from edgekit.runners import trt as trt_runner
    from edgekit.runners.onnxrt import OnnxrtRunner

    onnx_from_torch(torch_model_copy, OnnxExportConfig(dynamic_batch=True))
    manifest = Manifest.load(torch_model_copy)
    onnx_path = manifest.artifact_path(manifest.find_artifact("onnxrt", "fp32"))
    fed: list[int] = []

    class ProfileLimited(OnnxrtRunner):
        """The TensorRT runner's batch contract (profile maximum 8, refused beyond), computed by ORT."""

        def __init__(self, engine, **options):
            super().__init__(onnx_path)

        def max_batch(self, name):
            return 8

        def _infer(self, feed):
            fed.append(len(feed[manifest.input.name]))
            if fed[-1] > 8:
                raise EdgekitError(f"trt: input shape batch {fed[-1]} is outside the engine's profile (largest 8)")
            return super()._infer(feed)

    monkeypatch.setattr(trt_runner, "TrtRunner", ProfileLimited)
    r = trt_export._check_against_onnxrt(manifest, onnx_path, "fp32", TrtBuildConfig(check_images=20))
    assert r["passed"] and r["images"] == 20 and max(fed) == 8 and sum(fed) == 20

    spec = importlib.util.spec_from_file_location("gpu_trt_check", Path(__file__).parents[2] / "benchmarks" /
                                                  "gpu_trt_check.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    fed.clear()
    x = np.zeros([20, 3, 32, 32], np.float32)
    with ProfileLimited(onnx_path) as runner:
        assert bench._infer_all(runner, manifest.input.name, manifest.outputs[0].name, x).shape == (20, 3)
    assert fed == [8, 8, 4]


def test_feed_batch_follows_the_input_and_the_runners_limit(model_dir):
    from edgekit.runners import load_runner
    from edgekit.runners.base import feed_batch

    with load_runner(model_dir, "onnxrt") as fixed:  # batch of 1 in the ONNX
        assert feed_batch(fixed, "input") == 1
    for limit, want in ((None, 16), (8, 8), (32, 16), (0, 16)):
        class Dynamic:
            def inputs(self):
                return {"input": dataclasses.replace(Manifest.load(model_dir).input, shape=["batch", 3, 32, 32])}

            def max_batch(self, name):
                return limit

        assert feed_batch(Dynamic(), "input") == want


# ---- the timing cache file ---------------------------------------------------------------------------
class BuilderConfig:
    """IBuilderConfig's timing-cache calls as TensorRT answers them: create_timing_cache returns None for
    bytes it cannot parse, and set_timing_cache refuses None with pybind's TypeError."""

    def __init__(self) -> None:
        self.caches: list[bytes] = []
        self.set: object = None

    def create_timing_cache(self, data: bytes):
        if data and not data.startswith(b"TRTC"):
            return None
        self.caches.append(bytes(data))
        return f"cache #{len(self.caches)}"

    def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
        if cache is None:
            raise TypeError("set_timing_cache(): incompatible function arguments")
        self.set = cache
        return True


def test_a_corrupt_timing_cache_is_rebuilt_with_a_warning(tmp_path, caplog):
    from edgekit.export.trt_build import _load_timing_cache

    path = tmp_path / "trt.cache"
    path.write_bytes(b"\x00garbage, a truncated write")
    config = BuilderConfig()
    with caplog.at_level("WARNING"):
        cache = _load_timing_cache(config, path)
    assert cache == config.set == "cache #1" and config.caches == [b""]  # a new, empty cache
    assert "unreadable (corrupt or truncated)" in caplog.text
    path.write_bytes(b"TRTC good")
    assert _load_timing_cache(BuilderConfig(), path) == "cache #1"
    assert _load_timing_cache(BuilderConfig(), None) is None


# ---- a detector's engine check: letterboxed held-out images, box-level parity (the task's) ---------------------
def _ort_as_engine(onnx_path: Path, name: str, fed: list, shift_px: float = 0.0):
    """The TensorRT runner's place filled by ONNX Runtime on the same file (TensorRT is not here): it records
    what it is fed, and may move every box `shift_px` pixels right (an engine that decodes boxes wrongly)."""
    from edgekit.runners.onnxrt import OnnxrtRunner

    class OrtEngine(OnnxrtRunner):
        def __init__(self, engine, **options):
            super().__init__(onnx_path)

        def _infer(self, feed):
            fed.append(feed[name].copy())
            out = super()._infer(feed)
            for v in out.values():
                v[:, 0] += shift_px  # (1, 4+nc, N): row 0 is every anchor's box centre x
            return out

    return OrtEngine


def test_detector_engine_check_feeds_letterboxed_val_images_and_compares_boxes(tiny_yolo_dir, tiny_yolo_wide_data,
                                                                              monkeypatch):
    """`edgekit export DETECTOR --to trt` built the engine, then checked it on classifier inputs (heldout_for on
    an ImageFolder): it failed after the build. The check now takes the task's held-out inputs and parity."""
    from edgekit.data.imagefolder import read_image
    from edgekit.data.yolo import load_split, read_dataset_yaml
    from edgekit.export import trt as trt_export
    from edgekit.runners import trt as trt_runner
    from edgekit.vision.detect import LetterboxInput

    manifest = Manifest.load(tiny_yolo_dir)
    onnx_path = manifest.artifact_path(manifest.find_artifact("onnxrt", "fp32"))
    fed: list[np.ndarray] = []
    monkeypatch.setattr(trt_runner, "TrtRunner", _ort_as_engine(onnx_path, manifest.input.name, fed))
    cfg = TrtBuildConfig(check_images=6, data=str(tiny_yolo_wide_data))
    r = trt_export._check_against_onnxrt(manifest, onnx_path, "fp32", cfg)

    val = load_split(read_dataset_yaml(tiny_yolo_wide_data), "val", limit=6)
    images = [read_image(p) for p in val.paths]
    assert all(img.shape[0] < img.shape[1] for img in images)  # wide: letterboxing pads them
    lb = LetterboxInput((64, 64))
    np.testing.assert_array_equal(np.concatenate(fed), np.concatenate([lb(img)[0].copy() for img in images]))
    assert r["passed"] and r["images"] == 6 and r["min_agreement"] == 0.99
    assert r["detections_agreement"] == 1.0 and r["agreement"] == 1.0 and r["max_rel"] == 0.0
    assert "min_box_iou" in r and "top1_agreement" not in r  # boxes, not an argmax over a flattened head


def test_detector_engine_whose_boxes_moved_is_refused_on_box_parity(tiny_yolo_dir, tiny_yolo_wide_data,
                                                                   monkeypatch):
    from edgekit.export import trt as trt_export
    from edgekit.runners import trt as trt_runner

    manifest = Manifest.load(tiny_yolo_dir)
    onnx_path = manifest.artifact_path(manifest.find_artifact("onnxrt", "fp32"))
    monkeypatch.setattr(trt_runner, "TrtRunner", _ort_as_engine(onnx_path, manifest.input.name, [], shift_px=4.0))
    cfg = TrtBuildConfig(check_images=6, data=str(tiny_yolo_wide_data))
    with pytest.raises(EdgekitError, match=r"the fp16 engine disagrees with ONNX Runtime: mAP50-95 against FP32's "
                                           r"detections \d+\.\d+% \(needs 95%\).*nothing written"):
        trt_export._check_against_onnxrt(manifest, onnx_path, "fp16", cfg)


def test_cli_reports_a_detector_engines_box_agreement(tiny_yolo_dir, monkeypatch, capsys):
    """The summary line read the classifier's top-1 agreement, which a detector's check does not record."""
    if not _cli_has_trt():
        pytest.skip("edgekit/cli.py does not offer `export --to trt` yet")
    from edgekit import cli
    from edgekit.export import trt as trt_export
    from edgekit.manifest import Artifact

    parity = {"agreement": 0.97, "agreement_kind": "mAP50-95 against the FP32 detections (conf >= 0.25)",
              "detections_agreement": 1.0, "passed": True}
    art = Artifact("trt", "model_fp16.engine", "fp16", "0" * 64, built_on={"tensorrt": "10.3.0", "device": {
        "name": "Orin"}}, options={"requested_precision": "fp16"}, parity=parity)
    monkeypatch.setattr(trt_export, "engine_from_onnx", lambda model_dir, cfg: art)
    assert cli.main(["export", str(tiny_yolo_dir), "--to", "trt"]) == 0
    assert ("agreement with ONNX Runtime (mAP50-95 against the FP32 detections (conf >= 0.25)) 97.00%"
            in capsys.readouterr().out)
