"""Tiny ONNX graphs built with onnx.helper (no torch): a classifier with a dynamic input size, a graph whose input
is not an image, and graphs whose output has any layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _save(nodes, inputs, outputs, inits, path: Path, metadata: dict | None = None) -> Path:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # ONNX Runtime 1.18+ reads it everywhere
    for k, v in (metadata or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def classifier(path: Path, classes: int = 4, hw: tuple = ("H", "W"), layout: str = "NCHW") -> Path:
    """(N, 3, H, W) -> mean colour -> a fixed linear layer -> (N, classes) logits."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(3 * classes, dtype=np.float32).reshape(3, classes) / 10, "w")
    shape = ["N", 3, *hw] if layout == "NCHW" else ["N", *hw, 3]
    nodes = [] if layout == "NCHW" else [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2])]
    nodes += [helper.make_node("GlobalAveragePool", ["x" if layout == "NCHW" else "xt"], ["p"]),
              helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["logits"])]
    return _save(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                 [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], [w], path)


def not_an_image(path: Path) -> Path:
    from onnx import TensorProto, helper

    return _save([helper.make_node("Relu", ["x"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], [], path)


def reshaped(path: Path, shape: tuple[int, ...]) -> Path:
    """(1, 3, 8, 8) -> `shape` (192 values): an output of any layout, for the decoder choice."""
    from onnx import TensorProto, helper, numpy_helper

    target = numpy_helper.from_array(np.array(shape, np.int64), "shape")
    return _save([helper.make_node("Reshape", ["x", "shape"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))], [target], path)


def strip_metadata(src: Path, dst: Path) -> Path:
    import onnx

    m = onnx.load(str(src))
    del m.metadata_props[:]
    onnx.save(m, str(dst))
    return dst
