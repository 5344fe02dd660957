"""The torch runner, the reference backend: it rebuilds the manifest's architecture with the saved weights
(checked against the model that wrote them), and refuses what it cannot run with an EdgekitError. Detectors:
ultralytics' DetectionModel rebuilt from the weights-only file, against its own ONNX export."""
from __future__ import annotations

import dataclasses
from pathlib import Path

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


# ---- detectors: ultralytics' DetectionModel rebuilt from the weights-only file --------------------------

DETECT_TOLERANCE = 1e-4  # max abs error of the head output over its max |value|: fused PyTorch vs ONNX Runtime


@pytest.fixture
def tiny_yolo_copy(tmp_path, tiny_yolo_dir):
    import shutil

    return Path(shutil.copytree(tiny_yolo_dir, tmp_path / tiny_yolo_dir.name))


def _held_out(model_dir):
    from edgekit.data.yolo import detection_inputs

    return detection_inputs(Manifest.load(model_dir), split="val")


def test_detector_matches_its_onnx_export_on_held_out_images(tiny_yolo_dir):
    from edgekit.compare import compare_logits
    from edgekit.vision.map import compare_detections

    x = _held_out(tiny_yolo_dir).x
    outs = {}
    for backend in ("torch", "onnxrt"):
        with load_runner(tiny_yolo_dir, backend) as r:
            outs[backend] = np.concatenate([r.infer({"images": x[i:i + 1]})["output0"] for i in range(len(x))])
    torch_out, onnx_out = outs["torch"], outs["onnxrt"]
    assert torch_out.shape == onnx_out.shape == (len(x), 5, 84) and torch_out.dtype == np.float32
    assert compare_logits(onnx_out, torch_out)["max_rel"] <= DETECT_TOLERANCE
    det = compare_detections(onnx_out, torch_out)
    assert det["detections_agreement"] == 1.0 and det["min_box_iou"] >= 0.99
    assert min(n for n, _ in det["detections_per_image"]) > 0  # real detections were compared, not empty lists


def test_detector_accepts_any_batch(tiny_yolo_dir):
    x = _held_out(tiny_yolo_dir).x[:3]
    with load_runner(tiny_yolo_dir, "torch") as r:
        assert r.inputs()["images"].shape == ["batch", 3, 64, 64]
        batched = r.infer({"images": x})["output0"]
        single = np.concatenate([r.infer({"images": x[i:i + 1]})["output0"] for i in range(3)])
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-4 * np.abs(single).max())


def test_the_torch_artifact_is_weights_only(tiny_yolo_dir):
    from edgekit.runners.torch import YOLO_STATE_FORMAT

    m = Manifest.load(tiny_yolo_dir)
    art = m.find_artifact("torch", "fp32")
    assert art.path == "model_state.pt" and art.built_from == "model.pt"
    state = torch.load(m.artifact_path(art), weights_only=True)  # no class outside torch's allow-list
    assert state["format"] == YOLO_STATE_FORMAT and state["nc"] == 1 and state["names"] == ["digit"]
    assert state["yaml"]["backbone"] and all(v.dtype != torch.float16 for v in state["state_dict"].values())
    assert art.parity["max_rel"] <= DETECT_TOLERANCE  # the rebuild check made when it was written


def test_an_ultralytics_checkpoint_is_refused_with_the_conversion_command(tiny_yolo_copy):
    m = Manifest.load(tiny_yolo_copy)
    m.add_artifact("torch", "model.pt", "fp32")  # a model directory from before model_state.pt
    m.save()
    with pytest.raises(EdgekitError, match="full pickle.*python -m edgekit.train.detect"):
        load_runner(tiny_yolo_copy, "torch").load()


def test_the_one_time_conversion_writes_the_weights_only_artifact(tiny_yolo_copy):
    from edgekit.export.yolo import yolo_state_file
    from edgekit.fileio import sha256_file
    from edgekit.train.detect import state_from_checkpoint

    (tiny_yolo_copy / "model_state.pt").unlink()
    m = Manifest.load(tiny_yolo_copy)
    m.add_artifact("torch", "model.pt", "fp32")
    m.source.pop("checkpoint_sha256")
    m.save()
    with pytest.raises(EdgekitError, match="runs any code it holds.*--trust-pickle"):
        state_from_checkpoint(tiny_yolo_copy)  # a pickle is unpickled only when the user says so
    assert not (tiny_yolo_copy / "model_state.pt").exists()
    art = state_from_checkpoint(tiny_yolo_copy, trust_pickle=True)
    m = Manifest.load(tiny_yolo_copy)
    assert art.path == "model_state.pt" and m.find_artifact("torch", "fp32").path == "model_state.pt"
    assert m.source["checkpoint_sha256"] == sha256_file(tiny_yolo_copy / "model.pt")
    assert yolo_state_file(m) == tiny_yolo_copy / "model_state.pt"  # what the ONNX export reads
    assert state_from_checkpoint(tiny_yolo_copy).sha256 == art.sha256  # a second call changes nothing
    with load_runner(tiny_yolo_copy, "torch") as r:
        assert r.infer({"images": _held_out(tiny_yolo_copy).x[:1]})["output0"].shape == (1, 5, 84)


def test_the_conversion_never_unpickles_a_changed_checkpoint(tiny_yolo_copy):
    from edgekit.train.detect import state_from_checkpoint

    m = Manifest.load(tiny_yolo_copy)
    m.add_artifact("torch", "model.pt", "fp32")
    m.save()
    with open(tiny_yolo_copy / "model.pt", "ab") as f:
        f.write(b"\0")  # not the file edgekit wrote: refused on its sha256, before anything loads it
    with pytest.raises(EdgekitError, match="does not match the sha256"):
        state_from_checkpoint(tiny_yolo_copy, trust_pickle=True)


@pytest.mark.parametrize("change, expect", [
    ("labels", "holds a 1-class YOLO, the manifest names 2 classes"),
    ("other-dict", "not an edgekit YOLO state file"),
    ("garbage", "not a readable weights file"),
    ("function-as-layer", "not a known layer \\('torch_safe_load'\\)"),
    ("eval-activation", "not a known layer \\(\"__import__"),
])
def test_bad_detector_weights_are_an_edgekit_error(tiny_yolo_copy, change, expect):
    m = Manifest.load(tiny_yolo_copy)
    path = tiny_yolo_copy / "model_state.pt"
    if change == "labels":
        m.labels = ["digit", "letter"]
    elif change == "other-dict":
        torch.save({"weight": torch.zeros(1)}, path)
    elif change == "garbage":
        path.write_bytes(b"not weights")
    else:  # a crafted yaml: parse_model would call this function / eval() this string
        state = torch.load(path, weights_only=True)
        if change == "function-as-layer":
            state["yaml"]["head"][-1] = [-1, 1, "torch_safe_load", ["/tmp/evil.pt"]]
        else:
            state["yaml"]["activation"] = "__import__('os').system('touch /tmp/edgekit-pwned')"
        torch.save(state, path)
    with pytest.raises(EdgekitError, match=expect):
        TorchRunner(path, manifest=m).load()


@pytest.mark.slow
def test_conversion_from_the_command_line(tiny_yolo_copy):
    import subprocess
    import sys

    m = Manifest.load(tiny_yolo_copy)
    m.add_artifact("torch", "model.pt", "fp32")
    m.save()
    r = subprocess.run([sys.executable, "-m", "edgekit.train.detect", str(tiny_yolo_copy), "--trust-pickle"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "model_state.pt" and Manifest.load(tiny_yolo_copy).find_artifact("torch").path == \
        "model_state.pt"
