"""Recipe files and flags: defaults, then the file, then the command line; unknown keys and wrong types fail."""
from __future__ import annotations

import argparse

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
