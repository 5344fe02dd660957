"""The base class's bookkeeping: lifecycle, feed checks, timing. The mechanics are driven with a small fake
runner where that makes them observable (what is inside the timed region); everything a backend must do
right is checked with the real ONNX Runtime runner on the tiny model."""
from __future__ import annotations

import gc
import time
import warnings

import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.manifest import BACKENDS, TensorSpec
from edgekit.runners import available_backends, load_runner, runner_class
from edgekit.runners.base import Runner


class SleepyRunner(Runner):
    """Doubles its input; _infer, _sync and _fetch each take a known time so timing can be checked."""

    backend = "fake"
    devices = ("cpu", "gpu")
    INFER_S, SYNC_S, FETCH_S = 0.02, 0.03, 0.5

    def _load(self):
        self.calls = []

    def _io(self):
        return ({"x": TensorSpec("x", ["batch", 3], "float32")}, {"y": TensorSpec("y", ["batch", 3], "float32")})

    def _infer(self, feed):
        self.calls.append("infer")
        time.sleep(self.INFER_S)
        return feed["x"] * 2

    def _sync(self):
        self.calls.append("sync")
        time.sleep(self.SYNC_S)

    def _fetch(self, raw):
        self.calls.append("fetch")
        time.sleep(self.FETCH_S)
        return {"y": raw}

    def _close(self):
        self.calls.append("close")


@pytest.fixture
def artifact(tmp_path):
    p = tmp_path / "model.fake"
    p.write_bytes(b"x")
    return p


# ---- fake runner: mechanics ------------------------------------------------------------------------

def test_timing_covers_infer_and_sync_but_not_fetch(artifact):
    with SleepyRunner(artifact) as r:
        out = r.infer({"x": np.ones((2, 3), np.float32)})
        assert r.calls == ["infer", "sync", "fetch"]
    np.testing.assert_array_equal(out["y"], np.full((2, 3), 2, np.float32))
    lo = (SleepyRunner.INFER_S + SleepyRunner.SYNC_S) * 1e9
    assert lo <= r.last_infer_ns < lo + SleepyRunner.FETCH_S * 1e9 * 0.9
    assert list(r.infer_ns) == [r.last_infer_ns]


def test_construction_is_cheap_and_load_is_lazy(tmp_path):
    r = SleepyRunner(tmp_path / "does-not-exist.fake")  # no error until load()
    assert not r.loaded
    with pytest.raises(EdgekitError, match="does-not-exist.fake does not exist"):
        r.load()
    assert not r.loaded


def test_unknown_device_is_rejected_at_construction(artifact):
    with pytest.raises(EdgekitError, match="runs on cpu, gpu, not 'tpu'"):
        SleepyRunner(artifact, device="tpu")


def test_dynamic_dims_accept_any_size_fixed_dims_are_checked(artifact):
    with SleepyRunner(artifact) as r:
        assert r.infer({"x": np.zeros((5, 3), np.float32)})["y"].shape == (5, 3)
        with pytest.raises(EdgekitError, match=r"must have shape \['batch', 3\], got \[5, 4\]"):
            r.infer({"x": np.zeros((5, 4), np.float32)})
        with pytest.raises(EdgekitError, match="must have shape"):
            r.infer({"x": np.zeros((3,), np.float32)})  # rank is checked too


def test_load_twice_is_one_load_and_close_twice_is_one_close(artifact):
    r = SleepyRunner(artifact)
    assert r.load() is r
    calls = r.calls
    assert r.load() is r and r.calls is calls  # _load not called again
    r.close()
    r.close()
    assert calls.count("close") == 1


def test_inputs_and_outputs_need_load(artifact):
    r = SleepyRunner(artifact)
    with pytest.raises(EdgekitError, match="not loaded"):
        r.inputs()
    with pytest.raises(EdgekitError, match="not loaded"):
        r.outputs()
    with r:
        assert list(r.inputs()) == ["x"] and list(r.outputs()) == ["y"]
        r.inputs().clear()  # a copy: the runner's own specs are unaffected
        assert list(r.inputs()) == ["x"]


# ---- the real ONNX Runtime runner --------------------------------------------------------------------

@pytest.fixture(scope="module")
def x1(val_batch):
    return val_batch[0][:1]


@pytest.fixture(scope="module", params=["onnxrt", "torch"])
def loaded_runner(request, model_dir):
    with load_runner(model_dir, request.param) as r:
        yield r


def test_infer_before_load_is_an_edgekit_error(model_dir, x1):
    r = load_runner(model_dir, "onnxrt")
    with pytest.raises(EdgekitError, match="not loaded: call load\\(\\) or use `with runner:`"):
        r.infer({"input": x1})


def test_context_manager_loads_and_closes(model_dir, x1):
    r = load_runner(model_dir, "onnxrt")
    with r as same:
        assert same is r and r.loaded
        r.infer({"input": x1})
    assert not r.loaded
    with pytest.raises(EdgekitError, match="not loaded"):
        r.infer({"input": x1})


def test_context_manager_closes_on_error(model_dir):
    r = load_runner(model_dir, "onnxrt")
    with pytest.raises(ZeroDivisionError):
        with r:
            1 / 0
    assert not r.loaded


def test_runner_can_be_loaded_again_after_close(model_dir, x1):
    r = load_runner(model_dir, "onnxrt")
    with r:
        first = r.infer({"input": x1})["logits"]
    with r:
        np.testing.assert_array_equal(r.infer({"input": x1})["logits"], first)


def test_resource_warning_when_never_closed(model_dir):
    r = load_runner(model_dir, "onnxrt").load()
    with pytest.warns(ResourceWarning, match="was never closed; use `with` or close\\(\\)"):
        del r
        gc.collect()


def test_no_resource_warning_when_closed_or_never_loaded(model_dir):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = load_runner(model_dir, "onnxrt").load()
        r.close()
        never = load_runner(model_dir, "onnxrt")
        del r, never
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_one_timing_sample_per_infer_call(model_dir, val_batch):
    x = val_batch[0]
    with load_runner(model_dir, "onnxrt") as r:
        assert list(r.infer_ns) == [] and r.last_infer_ns == 0
        for i in range(4):
            r.infer({"input": x[i:i + 1]})
        assert len(r.infer_ns) == 4
        assert all(isinstance(t, int) and t > 0 for t in r.infer_ns)
        assert r.last_infer_ns == r.infer_ns[-1]
        with pytest.raises(EdgekitError):
            r.infer({"input": x[:1].astype(np.float64)})
        assert len(r.infer_ns) == 4  # a rejected feed is not timed


@pytest.mark.parametrize("feed, expect", [
    ({"input": np.zeros((1, 3, 16, 16), np.float32)}, r"must have shape \[(1|'batch'), 3, 32, 32\], got \[1, 3, 16, 16\]"),
    ({"input": np.zeros((3, 32, 32), np.float32)}, r"got \[3, 32, 32\]"),
    ({"input": np.zeros((1, 3, 32, 32), np.float64)}, r"must be float32, got float64; convert it with "
                                                       r"\.astype\(np\.float32\)"),
    ({"input": np.zeros((1, 3, 32, 32), np.uint8)}, "must be float32, got uint8"),
    ({"input": [[0.0]]}, "must be a numpy array, got list"),
    ({}, r"missing \['input'\]"),
    ({"images": np.zeros((1, 3, 32, 32), np.float32)}, r"missing \['input'\]; unexpected \['images'\]"),
    ({"input": np.zeros((1, 3, 32, 32), np.float32), "extra": np.zeros(1, np.float32)}, r"unexpected \['extra'\]"),
])
def test_bad_feed_is_an_edgekit_error(loaded_runner, feed, expect):
    with pytest.raises(EdgekitError, match=expect):
        loaded_runner.infer(feed)


def test_fixed_batch_is_enforced_and_eager_torch_takes_any(loaded_runner):
    x = np.zeros((2, 3, 32, 32), np.float32)
    if loaded_runner.backend == "torch":  # eager PyTorch has no fixed batch
        assert loaded_runner.infer({"input": x})["logits"].shape[0] == 2
    else:  # the ONNX export has a fixed batch of 1
        with pytest.raises(EdgekitError, match=r"got \[2, 3, 32, 32\]"):
            loaded_runner.infer({"input": x})


# ---- the registry ----------------------------------------------------------------------------------

def test_available_backends_are_manifest_backends_in_manifest_order():
    avail = available_backends()
    assert {"torch", "onnxrt"} <= set(avail)
    assert list(avail) == [b for b in BACKENDS if b in avail]


def test_runner_class_unknown_backend_says_did_you_mean():
    with pytest.raises(EdgekitError, match="unknown backend 'onnx' \\(did you mean 'onnxrt'\\?\\)"):
        runner_class("onnx")


def test_runner_classes_name_their_backend():
    for b in ("torch", "onnxrt"):
        assert runner_class(b).backend == b and issubclass(runner_class(b), Runner)


def test_load_runner_uses_the_artifact_and_manifest(model_dir):
    r = load_runner(model_dir, "onnxrt")
    assert type(r) is runner_class("onnxrt")
    assert (r.artifact, r.device, r.precision) == (model_dir / "model.onnx", "cpu", "fp32")
    assert r.manifest.model_dir == model_dir and not r.loaded


def test_load_runner_passes_options(model_dir):
    r = load_runner(model_dir, "onnxrt", threads=1, graph_opt="basic")
    assert r.options == {"threads": 1, "graph_opt": "basic"}
