"""edgekit's Python API: `load` a model directory and call it on images, iterate a `Camera` for frames with
results. `import edgekit` re-exports these names lazily (edgekit/__init__.py), so it stays light."""
from edgekit.api.camera import Camera
from edgekit.api.model import Model, load
from edgekit.api.results import Classification, Detection, Detections, Frame, Top

__all__ = ["Camera", "Classification", "Detection", "Detections", "Frame", "Model", "Top", "load"]
