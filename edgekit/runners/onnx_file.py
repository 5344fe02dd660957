"""One reader of a model directory's ONNX files: a damaged or foreign file (a truncated download, a corrupt copy
whose sha256 the manifest was rewritten to match) is one EdgekitError naming the fix, never a protobuf, checker
or ONNX Runtime traceback. Used by the FP16, INT8 and TensorRT exports and by the onnxrt and tinygrad runners."""
from __future__ import annotations

from pathlib import Path

from edgekit.errors import EdgekitError


def not_loadable(path: str | Path, who: str, error: BaseException) -> EdgekitError:
    """The error for an ONNX file that `who` (onnx, ONNX Runtime, tinygrad) could not load."""
    first = (str(error).strip().splitlines() or [""])[0][:200]
    return EdgekitError(f"{who} could not load {path} ({type(error).__name__}: {first}): it is damaged or not an "
                        f"ONNX model. Re-export it: `edgekit export {Path(path).parent} --to onnx`")


def load_onnx(path: str | Path, *, external_data: bool = True):
    """onnx.load + onnx.checker.check_model of `path` (an onnx.ModelProto), as one EdgekitError when either fails."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=external_data)
        onnx.checker.check_model(model)
    except (DecodeError, onnx.checker.ValidationError, OSError, ValueError, RuntimeError) as e:
        raise not_loadable(path, "onnx", e) from None
    if not model.graph.node or not model.graph.output:  # an empty or unrelated protobuf can parse as a model
        raise not_loadable(path, "onnx", ValueError("no graph"))
    return model
