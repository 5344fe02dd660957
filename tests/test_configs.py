"""Recipe files and flags: defaults, then the file, then the command line; unknown keys and wrong types fail."""
from __future__ import annotations

import argparse
import os

import pytest

from edgekit.configs import add_dataclass_args, dataclass_from_args, load_recipe
from edgekit.errors import EdgekitError
from edgekit.train.classify_config import ClassifyConfig
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[1] / "models"


def _parse(argv: list[str], recipe: str | None = None) -> ClassifyConfig:
    p = argparse.ArgumentParser()
    add_dataclass_args(p, ClassifyConfig)
    return dataclass_from_args(ClassifyConfig, p.parse_args(argv), recipe)


def test_flags_override_recipe_and_recipe_overrides_defaults(tmp_path):
    r = tmp_path / "r.yaml"
    r.write_text("arch: resnet18\nlr: 1e-3\nepochs: 7\namp: false\n")
    cfg = _parse(["--epochs", "3", "--amp"], str(r))
    assert (cfg.arch, cfg.lr, cfg.epochs, cfg.amp) == ("resnet18", 1e-3, 3, True)
    assert cfg.batch == ClassifyConfig().batch
    assert _parse([]).arch == ClassifyConfig().arch


@pytest.mark.parametrize("text, message", [
    ("archh: resnet18\n", r"unknown option\(s\) \['archh'\]"),
    ("epochs: 2.5\n", "'epochs' must be int"),
    ("amp: 3\n", "'amp' must be bool"),
    ("lr: fast\n", "'lr' must be float"),
    ("- a\n- b\n", "mapping"),
    ("a: [\n", "not valid YAML"),
])
def test_bad_recipes(tmp_path, text, message):
    r = tmp_path / "bad.yaml"
    r.write_text(text)
    with pytest.raises(EdgekitError, match=message):
        load_recipe(str(r), ClassifyConfig)


def test_shipped_recipes_load(tmp_path):
    for r in RECIPES.glob("*.yaml"):
        cfg = ClassifyConfig(**load_recipe(str(r), ClassifyConfig))
        cfg.data, cfg.out = str(tmp_path), str(tmp_path / "run")
        cfg.validate()


@pytest.mark.parametrize("argv, message", [
    (["train", "classify", "--lr", "-1"], "argument --lr: must be > 0"),
    (["train", "classify", "--scale-min", "-1"], "argument --scale-min: must be > 0"),
    (["train", "classify", "--threads", "-1"], "argument --threads: must be from 0 to 1024"),
    (["train", "classify", "--workers", "-1"], "argument --workers: must be from 0 to 256"),
    (["train", "classify", "--device", "gpu0"], "argument --device: must be auto, cpu, cuda or cuda:N"),
    (["train", "classify", "--label-smoothing", "2"], "argument --label-smoothing: must be >= 0 and < 1"),
    (["train", "classify", "--imgsz", "1"], "argument --imgsz: must be from 32 to 4096"),
    (["bench", ".", "--iters", "0"], "argument --iters: must be >= 1"),
    (["bench", ".", "--eval-images", "-3"], "argument --eval-images: must be >= 0"),
    (["export", ".", "--opset", "99"], "argument --opset: must be from 13 to 23"),
    (["export", ".", "--opset", "5"], "argument --opset: must be from 13 to 23"),
    (["camera", "x.mp4", "--max-frames", "-5"], "argument --max-frames: must be >= 0"),
    (["camera", "x.mp4", "--conf", "-1"], "argument --conf: must be from 0 to 1"),
    (["camera", "x.mp4", "--max-det", "-1"], "argument --max-det: must be from 1 to 100000"),
])
def test_issue_11_options_are_one_line_errors(argv, message, capsys):
    from edgekit import cli

    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("edgekit: error: "), err
    assert message in err


def test_recipe_values_are_checked_like_flags(tmp_path):
    r = tmp_path / "r.yaml"
    r.write_text("lr: -1\n")
    with pytest.raises(EdgekitError, match=r"'lr' must be > 0 and <= 10, got -1.0"):
        load_recipe(str(r), ClassifyConfig)


def test_a_config_built_in_code_is_checked_by_validate(tmp_path):
    cfg = ClassifyConfig(data=str(tmp_path), out=str(tmp_path / "run"), label_smoothing=2.0)
    with pytest.raises(EdgekitError, match="--label-smoothing must be >= 0 and < 1, got 2.0"):
        cfg.validate()


def test_output_paths_are_checked_before_any_work(tmp_path):
    from edgekit.configs import path_problem

    (tmp_path / "f").write_text("x")
    assert "is a file" in path_problem(str(tmp_path / "f" / "out"), "out_dir")
    assert "is a file" in path_problem(str(tmp_path / "f"), "out_dir")
    assert path_problem(str(tmp_path / "new" / "deeper"), "out_dir") is None
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.geteuid() != 0:  # root writes anywhere
            assert "read-only" in path_problem(str(ro / "out"), "out_dir")
    finally:
        ro.chmod(0o700)


def test_an_oserror_in_a_command_is_one_line(capsys):
    import errno

    from edgekit.cli import run_command

    def full_disk(_args):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/model.onnx")

    assert run_command(full_disk, argparse.Namespace()) == 2
    assert capsys.readouterr().err == "edgekit: error: No space left on device: runs/x/model.onnx\n"
