"""Optional heavy libraries imported on first use, not at import time (Polygraphy's `mod.lazy_import`).

`cv2 = lazy_import("cv2")` at the top of a module lets the module be imported, and its config dataclasses
read, on a machine without OpenCV: `edgekit info` and every `--help` work on a fresh Jetson before its
libraries are in place. The first attribute read imports the real module; a missing one raises an
EdgekitError that says how to install it, instead of a traceback at start-up."""
from __future__ import annotations

import importlib
import types
from typing import Any

from edgekit.errors import EdgekitError

# What to install, per module: pip's wheels elsewhere, JetPack's packages on a Jetson (README, "On a Jetson").
INSTALL_HINTS = {
    "cv2": "pip install 'edgekit[runtime]' (opencv-python); on a Jetson use JetPack's OpenCV, which has "
           "GStreamer (sudo apt install libopencv-python; a venv made with --system-site-packages sees it; it needs "
           "numpy < 2: pip install 'numpy<2')",
    "PIL.Image": "pip install pillow (the pil_bilinear / pil_bicubic resize of torchvision-trained classifiers)",
}


class LazyModule(types.ModuleType):
    """A stand-in module: the first attribute read imports the real one and copies its namespace in, so later
    reads are plain attribute lookups (no per-call cost in the camera loop)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_loaded"] = False

    def __getattr__(self, attr: str) -> Any:  # only called for names not yet in __dict__
        # introspection (inspect, copy, pytest) probes dunders: those do not import; __version__ does
        if self.__dict__["_lazy_loaded"] or (attr.startswith("__") and attr != "__version__"):
            raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}")
        real = load(self.__name__)
        self.__dict__.update(real.__dict__)
        self.__dict__["_lazy_loaded"] = True
        return getattr(real, attr)


_LAZY: dict[str, LazyModule] = {}


def lazy_import(name: str) -> Any:
    """A module object for `name` that imports it on first attribute access; one per name, shared by every
    edgekit module (a test that patches `edgekit.x.cv2.f` patches it for all of them, as with the real module)."""
    return _LAZY.setdefault(name, LazyModule(name))


def load(name: str) -> types.ModuleType:
    """Import `name` now; a missing (or broken) install is a user error that names the fix."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        hint = INSTALL_HINTS.get(name, f"pip install {name}")
        raise EdgekitError(f"{name} cannot be imported ({e}): {hint}") from e
