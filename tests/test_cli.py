"""The `edgekit` command, run as users run it (`python -m edgekit ...` in a subprocess): user errors print
one 'edgekit: error:' line and exit 2 with no traceback; every --help works; heavy libraries stay unloaded
where they are not needed."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit import __version__
from edgekit.manifest import Manifest


def edgekit(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def _assert_user_error(p: subprocess.CompletedProcess, expect: str) -> None:
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("edgekit: error:")]
    assert len(lines) == 1, p.stderr
    assert expect in lines[0], lines[0]


# ---- user errors -----------------------------------------------------------------------------------

def test_export_without_manifest(tmp_path):
    (tmp_path / "not_a_model").mkdir()
    _assert_user_error(edgekit("export", "not_a_model", cwd=tmp_path), "no manifest at not_a_model/manifest.json")


def test_export_with_changed_weights(tmp_path, torch_model_copy):
    with open(torch_model_copy / "model.pt", "ab") as f:
        f.write(b"\0")
    _assert_user_error(edgekit("export", torch_model_copy, cwd=tmp_path), "does not match the sha256")


@pytest.mark.parametrize("args, expect", [
    (["--data", "EMPTY"], "is empty: expected one sub-folder per class"),
    (["--data", "DIGITS", "--arch", "resnet19"], "--arch: must be one of mobilenet_v2, "),
    (["--data", "DIGITS", "--arch", "resnet19"], "(did you mean 'resnet18'?)"),
    ([], "no dataset given: pass --data DIR"),
])
def test_train_classify_user_errors(tmp_path, digits_imagefolder, args, expect):
    (tmp_path / "EMPTY").mkdir()
    args = [str(digits_imagefolder) if a == "DIGITS" else a for a in args]
    p = edgekit("train", "classify", *args, "--out", "run", "--pretrained", "none", cwd=tmp_path)
    _assert_user_error(p, expect)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_data_into_a_foreign_folder(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"...")
    p = edgekit("data", "mnist5k", "--out", "photos", cwd=tmp_path)
    _assert_user_error(p, "choose another --out")
    assert "--force" not in p.stderr  # it would wipe the photos
    _assert_user_error(edgekit("data", "mnist5k", "--out", "photos", "--force", cwd=tmp_path), "did not write")
    assert [p.name for p in (tmp_path / "photos").iterdir()] == ["holiday.jpg"]


@pytest.mark.parametrize("args, help_", [(["bogus"], "edgekit --help"), (["export", "m", "--to", "tflite"],
                                         "edgekit export --help"), (["data"], "edgekit data --help")])
def test_bad_usage_exits_2_with_one_line_naming_the_help(tmp_path, args, help_):
    p = edgekit(*args, cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert p.stderr.startswith("edgekit: error: ") and f"(see `{help_}`)" in p.stderr


# ---- help and version --------------------------------------------------------------------------------

@pytest.mark.parametrize("cmd", [[], ["info"], ["data"], ["data", "mnist5k"], ["train"], ["train", "classify"],
                                 ["export"], ["bench"], ["demo"]], ids=lambda c: " ".join(c) or "edgekit")
def test_help_of_every_subcommand(tmp_path, cmd):
    p = edgekit(*cmd, "--help", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"usage: edgekit {' '.join(cmd)}".rstrip())
    assert "Traceback" not in p.stderr


def test_train_classify_help_lists_every_option_with_its_comment_and_default(tmp_path):
    from dataclasses import fields

    from edgekit.train.classify_config import ClassifyConfig

    out = edgekit("train", "classify", "--help", cwd=tmp_path).stdout
    for f in fields(ClassifyConfig):
        assert f"--{f.name.replace('_', '-')}" in out, f.name
    flat = " ".join(out.split())
    assert "resize the shorter side to imgsz / crop_pct, then centre-crop (default: 0.875)" in flat
    assert "--amp, --no-amp" in flat


def test_export_help_lists_its_options(tmp_path):
    flat = " ".join(edgekit("export", "--help", cwd=tmp_path).stdout.split())
    for flag in ("--opset", "--dynamic-batch", "--no-slim", "--parity-images", "--tolerance",
                 "--min-top1-agreement", "--data", "--to {onnx,trt}", "--workspace-mb", "--dla-core",
                 "--precision {fp32,fp16,int8}", "--calibration"):
        assert flag in flat, flag
    assert "(default: 17)" in flat


def test_version(tmp_path):
    p = edgekit("--version", cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.strip() == f"edgekit {__version__}"


# ---- commands that work ------------------------------------------------------------------------------

def _imported(stderr: str) -> set[str]:
    """Top-level packages named in `python -X importtime` output."""
    names = set()
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+\d+ \|\s*(\S+)", line)
        if m:
            names.add(m.group(1).split(".")[0])
    return names


def test_info_runs_without_importing_torch(tmp_path):
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "edgekit", "info"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    imported = _imported(p.stderr)
    assert "edgekit" in imported and "numpy" in imported  # the parse works
    assert not imported & {"torch", "torchvision", "tinygrad", "ultralytics", "tensorrt"}
    assert re.search(rf"^edgekit\s+{re.escape(__version__)}$", p.stdout, re.M)
    assert re.search(r"^onnxruntime\s+\d+\.\d+.*providers: .*CPUExecutionProvider", p.stdout, re.M)


def test_info_json(tmp_path):
    p = edgekit("info", "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    facts = json.loads(p.stdout)
    assert "CPUExecutionProvider" in facts["onnxruntime_providers"]
    assert facts["cpu"]["cores"] >= 1 and facts["libraries"]["numpy"]


def test_data_mnist5k(tmp_path):
    p = edgekit("data", "mnist5k", "--out", "m5k", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "wrote MNIST-5k to m5k: 3500 train, 500 val images in 10 class folders" in p.stdout
    out = tmp_path / "m5k"
    assert (out / ".complete").is_file()
    assert sum(1 for _ in (out / "train").rglob("*.png")) == 3500
    assert sum(1 for _ in (out / "val").rglob("*.png")) == 500
    again = edgekit("data", "mnist5k", "--out", "m5k", cwd=tmp_path)  # idempotent
    assert again.returncode == 0 and again.stdout == p.stdout


@pytest.mark.slow
def test_export_writes_onnx_and_reports_parity(tmp_path, torch_model_copy):
    p = edgekit("export", torch_model_copy, "--parity-images", "8", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    art = Manifest.load(torch_model_copy).find_artifact("onnxrt")
    assert f"wrote {torch_model_copy}/model.onnx (opset 17, sha256 {art.sha256[:12]})" in p.stdout
    assert "vs PyTorch on 8 held-out images" in p.stdout and "top-1 agreement 100.00%" in p.stdout
    assert "ONNX vs PyTorch on 8 held-out images" in p.stderr  # the log line, on stderr
    assert art.parity["n"] == 8 and art.parity["passed"]
