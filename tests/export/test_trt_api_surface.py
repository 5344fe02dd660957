"""Every TensorRT attribute, enum member, method, argument count and override edgekit uses, checked against
the REAL Python bindings of JetPack 6's TensorRT 10.3, the newest 10.x and the newest 11.x (no GPU needed:
tests/trt_bindings.py imports each wheel against a stub of the native libraries), and the precision path
edgekit picks per version (weak typing + builder flags + INT8 calibrator before 10.12, strong typing from
10.12, no weak typing on 11) checked to use only what that version has."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from trt_bindings import VERSIONS, Surface, Unavailable, load_surface, run_with_bindings
from trt_usage import Use, file_uses, trt_uses

from edgekit.errors import EdgekitError
from edgekit.export.trt_plan import fit_to_platform, network_flags, plan_build

ROOT = Path(__file__).resolve().parents[2]
# The files the TensorRT path runs through; any other file that writes `trt.<name>` is found and walked too.
TRT_FILES = ("edgekit/export/trt.py", "edgekit/export/trt_build.py", "edgekit/export/trt_plan.py",
             "edgekit/export/trt_cache.py", "edgekit/export/calibrator_trt.py", "edgekit/runners/trt.py",
             "edgekit/platform.py", "benchmarks/gpu_trt_check.py")
JETPACK6, NEWEST_10, NEWEST_11 = VERSIONS
_SURFACES: dict[str, Surface | str] = {}


def surface_of(version: str) -> Surface:
    """One real TensorRT version's bindings surface (downloaded and stub-imported once, then cached);
    skips, with the reason, where the registry is unreachable, no wheel fits, or there is no C compiler."""
    if version not in _SURFACES:
        try:
            _SURFACES[version] = load_surface(version)
        except Unavailable as e:
            _SURFACES[version] = str(e)
    got = _SURFACES[version]
    if isinstance(got, str):
        pytest.skip(got)
    return got


@pytest.fixture(scope="session", params=VERSIONS)
def surface(request) -> Surface:
    return surface_of(request.param)


def trt_files() -> list[Path]:
    found = {p for d in ("edgekit", "benchmarks", "scripts") for p in (ROOT / d).rglob("*.py")
             if re.search(r"\btrt\.[A-Za-z_]", p.read_text())}
    return sorted(found | {ROOT / f for f in TRT_FILES})


_USES: dict[str, list[Use]] = {}


def edgekit_uses(surface: Surface) -> list[Use]:
    if surface.version not in _USES:
        _USES[surface.version] = [u for p in trt_files() for u in file_uses(p, ROOT, surface)]
    return _USES[surface.version]


def weak_typing_allowed(version: str) -> bool:
    """Whether edgekit would ever build weakly typed (flags, calibrators) with this TensorRT."""
    try:
        plan_build(version, "fp16", "weak")
    except EdgekitError:
        return False
    return True


def failures(uses: list[Use], version: str) -> list[Use]:
    weak_ok = weak_typing_allowed(version)
    return [u for u in uses if u.problem and not u.optional and (weak_ok or not u.weak)]


# ---- the real bindings -----------------------------------------------------------------------------
def test_the_real_bindings_import_against_the_stub(surface):
    assert surface.version in VERSIONS  # trt.__version__ of the imported module
    for cls in ("Builder", "IBuilderConfig", "OnnxParser", "Runtime", "ICudaEngine", "IExecutionContext", "ILogger"):
        assert surface.has_class(cls), cls
    assert "execute_async_v3" in surface.data["classes"]["IExecutionContext"]["members"]


def test_edgekit_objects_work_with_the_real_bindings(surface, tmp_path):
    """edgekit's ILogger and calibrator subclasses made and called through the real pybind trampolines;
    trt.nptype on every DataType raises only TypeError (what the runner catches) where numpy has none."""
    script = Path(__file__).resolve().parents[1] / "trt_real_objects.py"
    r = run_with_bindings(surface.version, [str(script), str(tmp_path)], extra_path=[ROOT])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["version"] == surface.version and out["import_tensorrt"]
    assert out["logger"] == {"is_ilogger": True, "errors": ["boom"]}
    assert out["builder"] == "TypeError"  # the stub has no engine: nothing here can build
    if weak_typing_allowed(surface.version):
        assert out["calibrator"] == {"is_calibrator": True, "batch_size": 1, "batches": [[True], [True], None],
                                     "copied": [True, True], "seen": 4, "cache_before": None,
                                     "cache_after": "table", "freed": True}
    else:
        assert "calibrator" not in out
    nptype = out["nptype"]
    assert {k: nptype[k] for k in ("FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8")} == {
        "FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "BOOL": "bool", "UINT8": "uint8"}
    assert nptype["BF16"] == "TypeError"


# ---- edgekit against each version -------------------------------------------------------------------
def test_edgekit_uses_only_what_each_tensorrt_version_has(surface):
    uses = edgekit_uses(surface)
    bad = failures(uses, surface.version)
    assert not bad, f"TensorRT {surface.version}:\n" + "\n".join(map(str, bad))


def test_nothing_outside_the_weak_path_is_deprecated(surface):
    """A deprecated member is the next one removed, and the docs say which. The weak path (builder
    precision flags, INT8 calibrators) is itself the deprecated way, kept for JetPack 6's 10.3."""
    dep = [u for u in edgekit_uses(surface) if u.deprecated and not u.weak and not u.optional]
    assert not dep, f"TensorRT {surface.version} marks these [DEPRECATED]:\n" + "\n".join(map(str, dep))


def test_the_walk_reaches_instances_overrides_and_call_sites(surface):
    """Not blind: methods of objects TensorRT returns, properties written, overrides of TensorRT's
    virtuals and parameters typed from call sites are all among the checked uses."""
    seen = {(u.owner, u.name, u.what) for u in edgekit_uses(surface)}
    expected = {("Builder", "create_network", "call"), ("OnnxParser", "parse_from_file", "call"),
                ("ParserError", "desc", "call"), ("IBuilderConfig", "set_timing_cache", "call"),
                ("IBuilderConfig", "DLA_core", "set"), ("INetworkDefinition", "get_layer", "call"),  # _use_dla's params
                ("ITimingCache", "serialize", "call"), ("ILogger", "log", "override"),
                ("ICudaEngine", "get_tensor_profile_shape", "call"), ("IExecutionContext", "execute_async_v3", "call"),
                ("Runtime", "DLA_core", "set"), ("", "nptype", "call")}
    if surface.has_class("IInt8EntropyCalibrator2"):
        expected |= {("IInt8EntropyCalibrator2", "get_batch", "override"),
                     ("IInt8EntropyCalibrator2", "write_calibration_cache", "override")}
    assert expected <= seen, sorted(expected - seen)
    for u in edgekit_uses(surface):  # every call is checked against a parsed signature, none waved through
        m = surface.member(u.owner, u.name) if u.what in ("call", "override") else None
        if m is not None:
            init = surface.member(u.name, "__init__") if m["kind"] == "class" else m
            assert init and init["sigs"], str(u)


def test_every_computed_lookup_is_a_flag_name_the_plan_test_covers(surface):
    dynamic = {(u.where.split(":")[0], u.owner) for u in edgekit_uses(surface) if u.what == "dynamic"}
    assert dynamic == {("edgekit/export/trt_build.py", "BuilderFlag"),
                       ("edgekit/export/trt_build.py", "NetworkDefinitionCreationFlag")}


# ---- the path edgekit picks per version ---------------------------------------------------------------
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_the_plan_per_version_uses_only_what_it_has(surface, precision):
    v = surface.version
    plan = plan_build(v, precision)
    strong = tuple(int(x) for x in v.split(".")[:2]) >= (10, 12)
    assert plan.typing == ("strong" if strong else "weak")
    flags = surface.enum("BuilderFlag")
    net = network_flags(v, plan.typing)
    assert set(net) <= set(surface.enum("NetworkDefinitionCreationFlag"))
    assert not any(surface.member("NetworkDefinitionCreationFlag", f)["deprecated"] for f in net), net
    if plan.typing == "strong":
        assert net == (() if v.startswith("11.") else ("STRONGLY_TYPED",))  # 11: always strongly typed
        assert not plan.flags and not plan.calibrate and plan.onnx_precision == precision
    else:  # 10.3: the FP32 ONNX + builder flags, and an entropy calibrator for INT8
        assert plan.onnx_precision == "fp32" and plan.calibrate == (precision == "int8")
        for fast16 in (True, False):
            for fast8 in (True, False):
                fitted = fit_to_platform(plan, fast16, fast8)
                assert set(fitted.flags) <= set(flags), (fitted, flags)
        if plan.calibrate:
            assert surface.member("IBuilderConfig", "int8_calibrator")["writable"]
            assert surface.member("", "IInt8EntropyCalibrator2")["kind"] == "class"
    for asked in ("fp16", "int8"):  # --typing weak: allowed on 10.x (deprecated from 10.12), refused on 11
        if weak_typing_allowed(v):
            assert set(plan_build(v, asked, "weak").flags) <= set(flags)


def test_tensorrt_11_really_removed_the_weak_path_and_edgekit_refuses_it():
    s = surface_of(NEWEST_11)
    assert not {"FP16", "INT8"} & set(s.enum("BuilderFlag"))
    assert not s.has_class("IInt8EntropyCalibrator2") and s.member("IBuilderConfig", "int8_calibrator") is None
    with pytest.raises(EdgekitError, match="--typing strong"):
        plan_build(s.version, "int8", "weak")
    weak_gaps = [u for u in edgekit_uses(s) if u.problem and u.weak]
    assert weak_gaps, "the weak-path code would run on 11 if edgekit allowed it: it must be refused"


@pytest.mark.parametrize("dist", ["tensorrt", "tensorrt-cu12", "tensorrt-cu13"])
def test_platform_reports_tensorrt_from_each_wheel_family(monkeypatch, dist):
    """`pip install tensorrt-cu13` (TensorRT 11 for CUDA 13) has no `tensorrt` distribution either."""
    import edgekit.platform as platform

    monkeypatch.setattr(platform, "version", lambda d: NEWEST_11 if d == dist else None)
    assert platform.libraries()["tensorrt"] == NEWEST_11


def test_network_flags_per_version():
    assert network_flags("10.3.0", "strong") == network_flags("10.16.1.11", "strong") == ("STRONGLY_TYPED",)
    assert network_flags("10.3.0", "weak") == network_flags("11.0.0", "strong") == network_flags("12.1", "strong") == ()


# ---- the checker fails when it should (crafted code against the real surfaces) --------------------------
def problems(code: str, surface: Surface) -> list[str]:
    return [f"{u.owner}.{u.name}: {u.problem}" for u in trt_uses(code, "snippet.py", surface)
            if u.problem and not u.optional]


def test_a_made_up_member_fails_on_every_version(surface):
    assert problems("def f(trt):\n    return trt.BuilderFlag.NOT_A_FLAG\n", surface)
    assert problems("def f(trt):\n    return trt.NoSuchBuilder\n", surface)
    assert problems("import tensorrt as t\nt.Runtime(None).no_such_method()\n", surface)


def test_a_member_removed_in_11_fails_there_only(surface):
    code = ("def f(trt, logger):\n    c = trt.Builder(logger).create_builder_config()\n"
            "    c.set_flag(trt.BuilderFlag.FP16)\n")
    found = problems(code, surface)
    assert found == ([f"BuilderFlag.FP16: trt.BuilderFlag has no 'FP16' in TensorRT {surface.version}"]
                     if surface.version.startswith("11.") else [])


@pytest.mark.parametrize("code, expect", [
    ("def f(trt, logger):\n    trt.Builder(logger).create_network(0, 1)\n", "create_network: called with 2"),
    ("def f(trt):\n    trt.Runtime()\n", "Runtime: called with 0"),  # the constructor needs the logger
    ("def f(trt, logger):\n    c = trt.Builder(logger).create_builder_config()\n"
     "    c.set_timing_cache(c, ignore=False)\n", "set_timing_cache: called with 1 .* and ignore="),
    ("def f(trt, logger):\n    e = trt.Runtime(logger).deserialize_cuda_engine(b'')\n"
     "    e.create_execution_context().execute_async_v3()\n", r"execute_async_v3: .*\(self, stream_handle\)"),
    ("def f(trt, logger):\n    trt.Builder(logger).num_DLA_cores = 2\n", "num_DLA_cores is not a writable property"),
    ("def f(trt, logger):\n    helper(trt.Builder(logger).create_builder_config())\n"
     "def helper(config):\n    config.set_flagz(1)\n", "IBuilderConfig has no 'set_flagz'"),  # typed by its caller
    ("def f(trt):\n    class Log(trt.ILogger):\n        def log(self, msg):\n            pass\n",
     r"log\(\) takes 2 argument\(s\) with self; .* calls trt.ILogger.log\(self, severity, msg\)"),
], ids=["too-many-args", "ctor-args", "keyword", "method-of-returned-object", "read-only", "call-site",
        "override-arity"])
def test_wrong_calls_fail(surface, code, expect):
    found = problems(code, surface)
    assert len(found) == 1 and re.search(expect, found[0]), found


def test_guarded_and_weak_path_uses_are_told_apart(surface):
    code = ("def f(trt, config, plan):\n"
            "    if hasattr(trt.BuilderFlag, 'NEWER_FLAG'):\n        config.set_flag(trt.BuilderFlag.NEWER_FLAG)\n"
            "    if plan.typing == 'weak':\n        trt.BuilderFlag.ONLY_WEAK\n")
    uses = trt_uses(code, "snippet.py", surface)
    newer = [u for u in uses if u.name == "NEWER_FLAG"]
    weak = [u for u in uses if u.name == "ONLY_WEAK"]
    assert newer and all(u.optional for u in newer)
    assert weak and all(u.weak and u.problem for u in weak)
    assert failures(weak, JETPACK6) and not failures(weak, NEWEST_11)
