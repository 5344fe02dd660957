"""The scripts are importable and thin: their parsers take the CLI's options, and main() maps user errors
to exit code 2 without a traceback."""
from __future__ import annotations

import subprocess
import sys

import pytest
from repo_files import REPO, load_script



def _load(name: str):
    return load_script("scripts", name)


@pytest.mark.parametrize("name, argv, field, value", [
    ("camera", ["clip.mp4", "out.mp4", "--classifier", "m"], "output", ["out.mp4"]),
    ("compare_latency", ["m", "--backends", "onnxrt", "--repeats", "3"], "repeats", 3),
    ("train_and_export", ["--data", "d", "--epochs", "2", "--precisions", "fp32"], "epochs", 2),
])
def test_parsers_take_the_cli_options(name, argv, field, value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # model and data folders must exist: options are checked as they are parsed
    (tmp_path / "m").mkdir()
    (tmp_path / "d").mkdir()
    args = _load(name).get_args_parser().parse_args(argv)
    assert getattr(args, field) == value


def test_user_errors_exit_2_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, "scripts/train_and_export.py", "--data", str(tmp_path), "--arch", "resnet19"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2 and "did you mean 'resnet18'" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "scripts/compare_latency.py", str(tmp_path / "nothing")],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2 and "nothing does not exist" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "scripts/compare_latency.py", str(tmp_path)],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2 and "no manifest" in r.stderr and "Traceback" not in r.stderr


def test_compare_latency_end_to_end(model_dir, tmp_path):
    mod = _load("compare_latency")
    args = mod.get_args_parser().parse_args([str(model_dir), "--backends", "onnxrt", "--precisions", "fp32",
                                             "--iters", "5", "--warmup", "1", "--out", str(tmp_path)])
    assert mod.main(args) == 0
    assert "| onnxrt | fp32 | 1 | ok |" in (tmp_path / "bench.md").read_text()
