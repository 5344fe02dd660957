"""edgekit: train, export and run vision models on NVIDIA Jetson.

    import edgekit
    with edgekit.load("models/trained/digit_detector") as model:
        print(model("image.jpg"))

The API's names are imported on first use (PEP 562 module __getattr__), so `import edgekit` loads neither OpenCV,
ONNX Runtime nor torch: a script that only reads `edgekit.__version__` stays light."""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = ("Camera", "Classification", "Detection", "Detections", "Frame", "Model", "Top", "load")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module("edgekit.api"), name)
        globals()[name] = value  # later reads are plain lookups
        return value
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_API))
