"""The GPU check's model: a small CNN whose weights are seeded numpy arrays, written as an ONNX file by hand
(the protobuf wire format, a few dozen lines) so the check needs neither the `onnx` package nor
torchvision, and built as the same network in torch for the torch checks. ONNX Runtime on the CPU and
torch on the CPU must agree on it: that is the check that the file says what the torch network does.

    Conv 3->16 3x3 -> Relu -> Conv 16->32 3x3 /2 -> Relu -> Conv 32->64 3x3 /2 -> Relu
    -> GlobalAveragePool -> Flatten -> Gemm 64->10        input [1, 3, 64, 64] float32, output logits [1, 10]
"""
from __future__ import annotations

import struct

import numpy as np

INPUT, OUTPUT = "input", "logits"
SHAPE = (1, 3, 64, 64)
CONVS = ((3, 16, 1), (16, 32, 2), (32, 64, 2))  # in, out, stride; 3x3 kernels, padding 1
CLASSES = 10


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w: dict[str, np.ndarray] = {}
    for i, (cin, cout, _) in enumerate(CONVS):
        w[f"conv{i}.weight"] = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2 / (cin * 9))).astype(np.float32)
        w[f"conv{i}.bias"] = (rng.standard_normal(cout) * 0.1).astype(np.float32)
    w["fc.weight"] = (rng.standard_normal((CLASSES, CONVS[-1][1])) / np.sqrt(CONVS[-1][1])).astype(np.float32)
    w["fc.bias"] = (rng.standard_normal(CLASSES) * 0.1).astype(np.float32)
    return w


# ---- protobuf wire format: varint keys, varint / 32-bit / length-delimited values ---------------------
def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 as two's complement, as protobuf does
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _int(field: int, n: int) -> bytes:
    return _varint(field << 3) + _varint(n)


def _bytes(field: int, data: bytes | str) -> bytes:
    data = data.encode() if isinstance(data, str) else data
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _float(field: int, x: float) -> bytes:
    return _varint(field << 3 | 5) + struct.pack("<f", x)


# ---- ONNX messages (onnx.proto field numbers) ------------------------------------------------------------
def _tensor(name: str, a: np.ndarray) -> bytes:  # TensorProto: dims 1, data_type 2 (FLOAT = 1), name 8, raw 9
    return b"".join(_int(1, d) for d in a.shape) + _int(2, 1) + _bytes(8, name) + _bytes(9, a.tobytes())


def _value_info(name: str, shape: tuple[int, ...]) -> bytes:  # name 1, type 2 -> tensor_type 1 -> elem 1, shape 2
    dims = b"".join(_bytes(1, _int(1, d)) for d in shape)
    return _bytes(1, name) + _bytes(2, _bytes(1, _int(1, 1) + _bytes(2, dims)))


def _attr(name: str, value: int | float | list[int]) -> bytes:  # name 1, f 2, i 3, ints 8, type 20
    if isinstance(value, list):
        return _bytes(1, name) + b"".join(_int(8, v) for v in value) + _int(20, 7)  # INTS
    if isinstance(value, float):
        return _bytes(1, name) + _float(2, value) + _int(20, 1)  # FLOAT
    return _bytes(1, name) + _int(3, value) + _int(20, 2)  # INT


def _node(op: str, inputs: list[str], outputs: list[str], name: str, **attrs: int | float | list[int]) -> bytes:
    return (b"".join(_bytes(1, i) for i in inputs) + b"".join(_bytes(2, o) for o in outputs) + _bytes(3, name)
            + _bytes(4, op) + b"".join(_bytes(5, _attr(k, v)) for k, v in attrs.items()))


def onnx_bytes(w: dict[str, np.ndarray], opset: int = 17) -> bytes:
    nodes, x = [], INPUT
    for i, (_, _, stride) in enumerate(CONVS):
        nodes.append(_node("Conv", [x, f"conv{i}.weight", f"conv{i}.bias"], [f"c{i}"], f"conv{i}",
                           kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride, stride]))
        nodes.append(_node("Relu", [f"c{i}"], [f"r{i}"], f"relu{i}"))
        x = f"r{i}"
    nodes.append(_node("GlobalAveragePool", [x], ["pool"], "pool"))
    nodes.append(_node("Flatten", ["pool"], ["flat"], "flatten", axis=1))
    nodes.append(_node("Gemm", ["flat", "fc.weight", "fc.bias"], [OUTPUT], "fc", transB=1))
    graph = (b"".join(_bytes(1, n) for n in nodes) + _bytes(2, "gpu_check")
             + b"".join(_bytes(5, _tensor(k, v)) for k, v in w.items())
             + _bytes(11, _value_info(INPUT, SHAPE)) + _bytes(12, _value_info(OUTPUT, (SHAPE[0], CLASSES))))
    # ModelProto: ir_version 1, producer_name 2, graph 7, opset_import 8 (domain 1, version 2)
    return _int(1, 8) + _bytes(2, "edgekit gpu_check") + _bytes(7, graph) + _bytes(8, _bytes(1, "") + _int(2, opset))


def torch_module(w: dict[str, np.ndarray]):
    """The same network in torch (imported here: the rest of the check runs without torch)."""
    import torch
    from torch import nn

    layers: list[nn.Module] = []
    for i, (cin, cout, stride) in enumerate(CONVS):
        conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        conv.weight.data = torch.from_numpy(w[f"conv{i}.weight"].copy())
        conv.bias.data = torch.from_numpy(w[f"conv{i}.bias"].copy())
        layers += [conv, nn.ReLU()]
    fc = nn.Linear(CONVS[-1][1], CLASSES)
    fc.weight.data, fc.bias.data = torch.from_numpy(w["fc.weight"].copy()), torch.from_numpy(w["fc.bias"].copy())
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc).eval()
