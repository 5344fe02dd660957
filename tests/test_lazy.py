"""edgekit.lazy: a module imported on first attribute use; a missing one is an EdgekitError naming the fix."""
from __future__ import annotations

import sys

import pytest

from edgekit.errors import EdgekitError
from edgekit.lazy import LazyModule, lazy_import


def test_first_attribute_imports_the_real_module():
    mod = LazyModule("json")
    assert isinstance(mod, LazyModule) and "dumps" not in mod.__dict__
    assert mod.dumps([1]) == "[1]"
    assert mod.__dict__["dumps"] is sys.modules["json"].dumps  # later reads are plain lookups
    with pytest.raises(AttributeError):
        mod.no_such_name


def test_dunder_probes_do_not_import(monkeypatch):
    mod = lazy_import("edgekit_no_such_module")
    assert not hasattr(mod, "__wrapped__")  # inspect/pytest probe this: no import, no error


def test_missing_module_names_the_install():
    mod = lazy_import("edgekit_no_such_module")
    with pytest.raises(EdgekitError, match="edgekit_no_such_module cannot be imported.*pip install"):
        mod.anything


def test_missing_cv2_names_jetpacks_opencv(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # "import cv2" now raises ImportError
    with pytest.raises(EdgekitError, match=r"cv2 cannot be imported.*libopencv-python.*numpy<2"):
        LazyModule("cv2").imread  # a fresh stand-in: the shared one may have loaded cv2 already


def test_one_stand_in_per_module_name():
    from edgekit.camera import sources
    from edgekit.vision import preprocess

    assert lazy_import("cv2") is sources.cv2 is preprocess.cv2
