"""The torch runner, the reference backend: it rebuilds the manifest's architecture with the saved weights
(checked against the model that wrote them), and refuses what it cannot run with an EdgekitError."""
from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import torch

from edgekit.errors import EdgekitError
from edgekit.manifest import Manifest
from edgekit.runners import load_runner
from edgekit.runners.torch import TorchRunner, build_from_manifest
from edgekit.train.models import build_model


def test_outputs_equal_the_saved_model_and_classify_real_digits(torch_model_dir, val_batch):
    x, labels = val_batch
    model, _ = build_model("resnet18", 3, "none")
    model.load_state_dict(torch.load(torch_model_dir / "model.pt", weights_only=True))
    with torch.no_grad():
        want = model.eval()(torch.from_numpy(x)).numpy()
    with load_runner(torch_model_dir, "torch") as r:
        got = np.concatenate([r.infer({"input": x[i:i + 1]})["logits"] for i in range(len(x))])
        assert list(r.outputs()) == ["logits"] and r.inputs()["input"].shape == ["batch", 3, 32, 32]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert (got.argmax(1) == labels).mean() >= 0.75  # the trained head was loaded, not a random one


def test_output_is_a_float32_numpy_array(torch_model_dir, val_batch):
    with load_runner(torch_model_dir, "torch") as r:
        out = r.infer({"input": val_batch[0][:1]})
    assert isinstance(out["logits"], np.ndarray) and out["logits"].dtype == np.float32


def test_close_frees_the_model(torch_model_dir):
    r = load_runner(torch_model_dir, "torch").load()
    assert isinstance(r.model, torch.nn.Module) and not r.model.training
    r.close()
    assert r.model is None and not r.loaded


def test_needs_the_manifest(torch_model_dir):
    with pytest.raises(EdgekitError, match="needs the model's manifest.*load_runner\\(MODEL_DIR, 'torch'\\)"):
        TorchRunner(torch_model_dir / "model.pt").load()


@pytest.mark.parametrize("kw, expect", [
    ({"precision": "fp16"}, "fp16 runs on CUDA only"),
    ({"precision": "int8"}, "no int8 mode"),
])
def test_unsupported_precision_is_an_edgekit_error(torch_model_dir, kw, expect):
    m = Manifest.load(torch_model_dir)
    with pytest.raises(EdgekitError, match=expect):
        TorchRunner(torch_model_dir / "model.pt", manifest=m, **kw).load()


def test_cuda_without_a_gpu_is_an_edgekit_error(torch_model_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(EdgekitError, match="sees no CUDA device: run with --device cpu"):
        load_runner(torch_model_dir, "torch", device="cuda").load()


def test_unknown_device_is_rejected(torch_model_dir):
    with pytest.raises(EdgekitError, match="runs on cpu, cuda, not 'trt'"):
        load_runner(torch_model_dir, "torch", device="trt")


def test_weights_for_another_class_count_are_an_edgekit_error(torch_model_dir):
    m = Manifest.load(torch_model_dir)
    m4 = dataclasses.replace(m, labels=["a", "b", "c", "d"], model_dir=m.model_dir)
    with pytest.raises(EdgekitError, match="does not hold resnet18 weights for 4 classes"):
        TorchRunner(torch_model_dir / "model.pt", manifest=m4).load()


def test_weights_for_another_arch_are_an_edgekit_error(torch_model_dir):
    m = Manifest.load(torch_model_dir)
    m.source = {**m.source, "arch": "resnet34"}
    with pytest.raises(EdgekitError, match="does not hold resnet34 weights"):
        TorchRunner(torch_model_dir / "model.pt", manifest=m).load()


def test_manifest_without_arch_is_an_edgekit_error(torch_model_dir):
    m = Manifest.load(torch_model_dir)
    m.source = {}
    with pytest.raises(EdgekitError, match="no 'arch'"):
        TorchRunner(torch_model_dir / "model.pt", manifest=m).load()


@pytest.mark.parametrize("content", [
    pytest.param(b"hello, not weights", id="text"),
    pytest.param(b"", id="empty"),
    pytest.param("half", id="truncated"),
    pytest.param(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), id="random-bytes"),
    pytest.param("list", id="not-a-state-dict"),
])
def test_unreadable_weights_are_an_edgekit_error(torch_model_copy, content):
    pt = torch_model_copy / "model.pt"
    if content == "half":
        content = pt.read_bytes()[: pt.stat().st_size // 2]
    if content == "list":
        torch.save([torch.zeros(1)], pt)
    else:
        pt.write_bytes(content)
    m = Manifest.load(torch_model_copy)
    with pytest.raises(EdgekitError, match="re-train or restore the file"):
        build_from_manifest(m, pt)
    # and through the public entry point, past the sha256 check
    with pytest.raises(EdgekitError, match="re-train or restore the file"):
        load_runner(torch_model_copy, "torch", verify=False).load()
