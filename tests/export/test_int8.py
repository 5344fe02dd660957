"""INT8 (QDQ) export with real ONNX Runtime on real digits: the graph really is quantized (and excluded
nodes really stay float), calibration is cached by what decides the ranges, too few calibration images is
an error, accuracy lands in the manifest, and the sensitivity fallback recovers a model that plain INT8
breaks."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from edgekit.data.inputs import CalibrationSet
from edgekit.errors import EdgekitError
from edgekit.export import calibration
from edgekit.export.int8 import Int8ExportConfig, int8_from_onnx
from edgekit.manifest import Manifest, TensorSpec
from edgekit.runners import load_runner

from conftest import CLASSES, tiny_input_spec

EXCLUDED = "/layer1/layer1.0/conv1/Conv"
# Fast settings for the tiny model: its 60 training images, no latency timing, a budget one image wide.
FAST = dict(calib_images=40, latency_rounds=0, int8_budget=100.0)


def _logits(runner, x):
    return np.concatenate([runner.infer({"input": x[i:i + 1]})["logits"] for i in range(len(x))])


@pytest.fixture(scope="module")
def int8_dir(tmp_path_factory, model_dir) -> Path:
    """The tiny resnet18 exported to INT8 once, with one conv kept in float by name."""
    out = tmp_path_factory.mktemp("int8") / model_dir.name
    shutil.copytree(model_dir, out)
    int8_from_onnx(out, Int8ExportConfig(**FAST, exclude_nodes=EXCLUDED))
    return out


def _producer_ops(model) -> dict[str, str]:
    return {o: n.op_type for n in model.graph.node for o in n.output}


def test_qdq_graph_structure(int8_dir):
    model = onnx.load(str(int8_dir / "model_int8.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 10 and ops.count("DequantizeLinear") >= 20
    producer = _producer_ops(model)
    inits = {i.name: i for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 20
    for conv in convs:
        w = conv.input[1]
        if conv.name == EXCLUDED:  # float weights from an FP32 initializer, and a float input (no DQ in front:
            # ONNX Runtime would re-quantize the weights per-tensor at load time, see the test below)
            assert w in inits and inits[w].data_type == TensorProto.FLOAT
            assert producer[conv.input[0]] == "Clip"
        else:  # int8 weights through a DequantizeLinear, per output channel, activations quantized too
            assert producer[w] == "DequantizeLinear" and producer[conv.input[0]] == "DequantizeLinear"
            dq = next(n for n in model.graph.node if w in n.output)
            assert inits[dq.input[0]].data_type == TensorProto.INT8
            assert len(onnx.numpy_helper.to_array(inits[dq.input[1]]).shape) == 1  # per-channel scales
    io = [(v.name, v.type.tensor_type.elem_type) for v in (*model.graph.input, *model.graph.output)]
    assert io == [("input", TensorProto.FLOAT), ("logits", TensorProto.FLOAT)]
    assert [o.domain for o in model.opset_import] == [""]  # unused imports (ai.onnx.preview, ...) stripped
    opts = Manifest.load(int8_dir).find_artifact("onnxrt", "int8").options
    assert opts["float_nodes"] == [EXCLUDED] and opts["format"] == "QDQ" and opts["per_channel"]
    assert "ai.onnx.preview" in opts["opset_imports_removed"] or opts["opset_imports_removed"] == []


def test_accuracy_written_into_the_manifest(int8_dir, val_batch):
    x, labels = val_batch
    m = Manifest.load(int8_dir)
    art, base = m.find_artifact("onnxrt", "int8"), m.find_artifact("onnxrt", "fp32")
    assert (art.path, art.precision, art.built_from) == ("model_int8.onnx", "int8", "model.onnx")
    with load_runner(m, "onnxrt", precision="int8") as r8, load_runner(m, "onnxrt", precision="fp32") as r32:
        got, want = _logits(r8, x), _logits(r32, x)
    assert art.accuracy["value"] == pytest.approx(float((got.argmax(1) == labels).mean()))
    assert base.accuracy["value"] == pytest.approx(float((want.argmax(1) == labels).mean()))
    assert base.accuracy["value"] >= 0.75
    assert art.accuracy["metric"] == "top1" and art.accuracy["split"] == "val" and art.accuracy["n"] == 24
    assert art.accuracy["drop_points"] == pytest.approx(100 * (base.accuracy["value"] - art.accuracy["value"]),
                                                        abs=1e-3)
    assert art.parity["top1_agreement"] == pytest.approx(float((got.argmax(1) == want.argmax(1)).mean()))
    assert not np.array_equal(got, want)  # it is not the FP32 model again
    c = art.options["calibration"]
    assert c["split"] == "train" and c["images"] == 40 and c["method"] == "percentile" and c["hit"] is False
    val_files = {p.name for p in (Path(c["root"]) / "val").rglob("*.png")}
    calibrated = json.loads((int8_dir / c["cache"]).with_suffix(".key.json").read_text())["images"]
    assert len(calibrated) == 40 and all(p.startswith("train/") for p in calibrated)
    assert not {Path(p).name for p in calibrated} & val_files  # calibration never sees an evaluation image


@pytest.mark.slow
def test_calibration_cache_hit_and_miss(model_copy, monkeypatch, capsys):
    calls = []
    real = calibration.run_calibration

    def counting(*a, **k):
        calls.append(k.get("input_name"))
        return real(*a, **k)

    monkeypatch.setattr(calibration, "run_calibration", counting)
    first = int8_from_onnx(model_copy, Int8ExportConfig(**FAST))
    assert len(calls) == 1 and first.options["calibration"]["hit"] is False
    cache = model_copy / first.options["calibration"]["cache"]
    assert cache.is_file()

    # Same settings through the CLI (per-channel off does not change the ranges): no calibration run.
    from edgekit.cli import main

    assert main(["export", str(model_copy), "--precision", "int8", "--calib-images", "40", "--latency-rounds", "0",
                 "--int8-budget", "100", "--no-per-channel"]) == 0
    assert "cache hit" in capsys.readouterr().out
    second = Manifest.load(model_copy).find_artifact("onnxrt", "int8")
    assert len(calls) == 1 and second.options["calibration"]["hit"] is True
    assert second.options["calibration"]["key_sha256"] == first.options["calibration"]["key_sha256"]
    assert second.options["per_channel"] is False

    # A setting that changes the ranges misses: another method, other images.
    third = int8_from_onnx(model_copy, Int8ExportConfig(**{**FAST, "calibration": "minmax"}))
    fourth = int8_from_onnx(model_copy, Int8ExportConfig(**{**FAST, "calib_images": 36}))
    assert len(calls) == 3
    assert third.options["calibration"]["hit"] is False and fourth.options["calibration"]["hit"] is False
    assert len({a.options["calibration"]["cache"] for a in (first, third, fourth)}) == 3


def test_too_few_calibration_images_is_an_error(model_copy):
    with pytest.raises(EdgekitError, match=r"--calib-images 10 is below the minimum of 32"):
        int8_from_onnx(model_copy, Int8ExportConfig(**{**FAST, "calib_images": 10}))
    with pytest.raises(EdgekitError, match=r"has only 60 readable images; INT8 calibration needs at least 100"):
        int8_from_onnx(model_copy, Int8ExportConfig(**{**FAST, "calib_images": 200, "min_calib_images": 100}))
    assert not (model_copy / "model_int8.onnx").exists()
    assert not (model_copy / "calibration").exists()


def test_unknown_calibration_method_is_an_error(model_copy):
    with pytest.raises(EdgekitError, match="--calibration must be one of minmax, entropy, percentile, got 'kl'"):
        int8_from_onnx(model_copy, Int8ExportConfig(**{**FAST, "calibration": "kl"}))


# ---- the sensitivity fallback ------------------------------------------------------------------------------

OUTLIER = 50000.0  # a constant activation channel: per-tensor activation scales lose everything else


def _outlier_net(x, labels):
    """A small conv net trained briefly on the digits, whose second conv also outputs one constant channel of
    size OUTLIER that nothing reads (kept so during training). FP32 does not care; per-tensor INT8 activations
    of that tensor get a step of ~OUTLIER/255, wider than the real signal, and accuracy collapses."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 16, 3, 2, 1)
            self.c2 = nn.Conv2d(16, 17, 3, 2, 1)
            self.c3 = nn.Conv2d(17, 32, 3, 2, 1)
            self.fc = nn.Linear(32 * 16, len(CLASSES))
            self.project()

        @torch.no_grad()
        def project(self):
            self.c2.weight[16] = 0
            self.c2.bias[16] = OUTLIER
            self.c3.weight[:, 16] = 0

        def forward(self, x):
            x = torch.relu(self.c3(torch.relu(self.c2(torch.relu(self.c1(x))))))
            return self.fc(x.flatten(1))

    torch.manual_seed(0)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    x, y = torch.from_numpy(x), torch.from_numpy(labels)
    for _ in range(40):
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        net.project()
    return net.eval()


@pytest.fixture(scope="module")
def outlier_dir(tmp_path_factory, digits_imagefolder) -> Path:
    import torch

    from edgekit.data.imagefolder import load_split
    from edgekit.vision.preprocess import batch_classify

    spec = tiny_input_spec()
    train = load_split(digits_imagefolder / "train")
    net = _outlier_net(batch_classify(train.images, spec), train.labels)
    out = tmp_path_factory.mktemp("outlier") / "outlier_net"
    out.mkdir()
    with torch.no_grad():
        torch.onnx.export(net, torch.zeros(spec.shape), str(out / "model.onnx"), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"])
    m = Manifest(name=out.name, task="classify", labels=list(CLASSES), input=spec,
                 outputs=[TensorSpec("logits", [1, len(CLASSES)], "float32")],
                 source={"arch": "outlier_net", "dataset": {"root": str(digits_imagefolder), "val_split": 0.1,
                                                            "seed": 0}})
    m.save(out)
    m.add_artifact("onnxrt", "model.onnx", "fp32")
    m.save(out)
    return out


@pytest.fixture
def outlier_copy(tmp_path, outlier_dir) -> Path:
    return Path(shutil.copytree(outlier_dir, tmp_path / outlier_dir.name))


def test_sensitivity_fallback_recovers_accuracy(outlier_copy):
    cfg = dict(calib_images=40, latency_rounds=2, int8_budget=5.0)  # 24 val images: 5 points = one image
    with pytest.raises(EdgekitError, match=r"INT8 loses .* points of top1 .*--no-fallback.*nothing written"):
        int8_from_onnx(outlier_copy, Int8ExportConfig(**cfg, fallback=False))
    assert not (outlier_copy / "model_int8.onnx").exists()

    art = int8_from_onnx(outlier_copy, Int8ExportConfig(**cfg))
    base = Manifest.load(outlier_copy).find_artifact("onnxrt", "fp32").accuracy["value"]
    a, o = art.accuracy, art.options
    assert base >= 0.75
    assert a["plain_int8_drop_points"] >= 30  # plain INT8 really broke it
    assert a["plain_int8_drop_points"] == pytest.approx(100 * (base - a["plain_int8_value"]), abs=1e-3)
    assert a["within_budget"] and a["drop_points"] <= 5.0  # and the fallback brought it back
    kept = o["float_nodes"]
    assert kept == ["/c3/Conv"]  # the layer that reads the outlier tensor; its input now skips quantization
    assert o["fallback"]["steps"][-1]["set"] == "held-out"
    assert o["fallback"]["ranking"][0]["node"] in kept
    model = onnx.load(str(outlier_copy / "model_int8.onnx"))
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) >= 1  # still an INT8 model
    assert o["int8_nodes"] >= 1 and o["latency"]["int8"]["p50_ratio"] > 0


def test_over_budget_can_be_written_only_when_asked(outlier_copy):
    art = int8_from_onnx(outlier_copy, Int8ExportConfig(calib_images=40, latency_rounds=0, int8_budget=5.0,
                                                        fallback=False, allow_over_budget=True))
    assert art.accuracy["within_budget"] is False and art.accuracy["drop_points"] > 5.0
    assert art.options["float_nodes"] == [] and art.options["fallback"] is None
    assert Manifest.load(outlier_copy).find_artifact("onnxrt", "int8").accuracy["within_budget"] is False


def _imbalanced_convs(path: Path) -> None:
    """conv -> relu -> conv -> relu -> conv, where the middle conv's output channel 0 has 100x larger weights
    and a bias that keeps it below zero (the ReLU removes it). Per-channel weight scales do not care; one
    per-tensor scale is set by channel 0 and rounds the other channels' weights to a few levels."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(8, 4, 1)).eval()
    with torch.no_grad():
        net[2].weight[0] *= 100.0
        net[2].bias[0] = -1e4
        torch.onnx.export(net, torch.zeros(1, 3, 16, 16), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["out"])


@pytest.fixture
def imbalanced(tmp_path):
    """(the FP32 file, its calibration cache, 16 inputs) for _imbalanced_convs."""
    src = tmp_path / "net.onnx"
    _imbalanced_convs(src)
    x = np.random.default_rng(0).standard_normal((48, 1, 3, 16, 16)).astype(np.float32)
    key = calibration.cache_key("test", False, "minmax", {"symmetric": False}, "x")
    cset = CalibrationSet(x[:, 0], np.zeros(48, np.int64), [], str(tmp_path), "x")
    cache, _ = calibration.calibrate(src, cset, key, tmp_path / "calibration", input_name="input")
    return src, cache, x[:16]


def _ort_run(path, x, level, names=None) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = level
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return [np.concatenate(o) for o in zip(*(s.run(names, {"input": xi}) for xi in x))]


def _float_conv(conv, weights: dict, x: np.ndarray) -> np.ndarray:
    """`conv` alone, in FP32, with the FP32 model's weights, on `x` (no graph optimisations)."""
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)], "conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(weights[conv.input[1]], "w"),
                               numpy_helper.from_array(weights[conv.input[2]], "b")])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    # IR 8 (opset 17's): onnx 1.23 writes IR 14 by default, which onnxruntime 1.30 refuses (seen on a VNNI host)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]


def test_excluded_conv_really_runs_in_float(tmp_path, imbalanced):
    """ONNX Runtime's WeightBiasQuantization re-quantizes (per-tensor) the float weights of a Conv that sits
    between a DequantizeLinear and a QuantizeLinear: quantize_static's nodes_to_exclude alone does not keep
    a layer float at run time. What must hold on any CPU: the excluded conv has no DequantizeLinear in front
    of it, and in ONNX Runtime's fully optimised run its output is the FP32 conv of whatever input it got
    (taken from that same run, so the int8 kernels before it, which differ between CPUs, do not matter)."""
    import onnxruntime as ort

    from edgekit.export.qdq import QuantSettings, candidate_nodes, quantize_qdq

    src, cache, x = imbalanced
    middle = "/2/Conv"
    assert middle in candidate_nodes(onnx.load(str(src)))
    dest = tmp_path / "middle_float.onnx"
    quantize_qdq(src, dest, cache, QuantSettings("minmax"), exclude=[middle])
    model = onnx.load(str(dest))
    producer = _producer_ops(model)
    conv = next(n for n in model.graph.node if n.name == middle)
    assert [producer.get(i) for i in conv.input] == ["Clip", None, None]  # float input, FP32 weights and bias
    fp32 = onnx.load(str(src))
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in fp32.graph.initializer}
    assert all(np.array_equal(onnx.numpy_helper.to_array(i), weights[i.name]) for i in model.graph.initializer
               if i.name in conv.input[1:])

    seen = tmp_path / "seen.onnx"  # the same file, the conv's input and output also read out
    model.graph.output.extend(onnx.helper.make_tensor_value_info(t, TensorProto.FLOAT, None)
                              for t in (conv.input[0], conv.output[0]))
    onnx.save(model, str(seen))
    conv_in, conv_out = _ort_run(seen, x, ort.GraphOptimizationLevel.ORT_ENABLE_ALL, [conv.input[0], conv.output[0]])
    want = _float_conv(conv, weights, conv_in)
    # per output channel: channel 0 is 100x the others (per-tensor INT8 weights left them 30-60% off)
    err = np.abs(conv_out - want).max(axis=(0, 2, 3)) / np.abs(want).max(axis=(0, 2, 3))
    assert err.max() < 1e-4, err


def test_float_layer_keeps_its_activation(tmp_path, imbalanced):
    """The QDQ graph's own semantics (no optimisations: float arithmetic, no CPU int8 kernel) stay close to
    FP32 with the middle conv kept float: it keeps the ReLU the quantizer had folded into its input's
    QuantizeLinear (dropping it gave 0.47 here); per-channel INT8 handles the imbalance."""
    import onnxruntime as ort

    from edgekit.export.qdq import QuantSettings, quantize_qdq

    src, cache, x = imbalanced
    ref = _ort_run(src, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)[0]
    for exclude in ([], ["/2/Conv"]):
        dest = tmp_path / f"{len(exclude)}.onnx"
        quantize_qdq(src, dest, cache, QuantSettings("minmax"), exclude=exclude)
        out = _ort_run(dest, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)[0]
        assert float(((out - ref) ** 2).sum() / (ref ** 2).sum()) < 1e-3, exclude


def test_weights_chosen_for_this_cpu_do_not_saturate(tmp_path, imbalanced):
    """With the weight range --reduce-range auto picks for the CPU the test runs on, ONNX Runtime's optimised
    int8 kernels compute what the QDQ graph says (within 2% of the output's scale: rounding of the fused
    requantization). 8-bit weights on an AVX2-only x86 missed by 7% here: u8s8 pair sums saturate int16."""
    import onnxruntime as ort

    from edgekit.export.qdq import QuantSettings, quantize_qdq, reduce_range_for
    from edgekit.platform import cpu_int8

    src, cache, x = imbalanced
    reduce_range, _ = reduce_range_for("auto", cpu_int8()["kind"])
    dest = tmp_path / "int8.onnx"
    quantize_qdq(src, dest, cache, QuantSettings("minmax", reduce_range=reduce_range))
    fast = _ort_run(dest, x, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)[0]
    plain = _ort_run(dest, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)[0]
    assert np.abs(fast - plain).max() <= 0.02 * np.abs(plain).max(), (cpu_int8(), reduce_range)


@pytest.fixture(scope="module")
def mobilenet_dir(tmp_path_factory, digits_imagefolder) -> Path:
    """A real MobileNetV2 (the packaged ImageNet backbone, BN folded into its depthwise convs by the export)
    with a nearest-centroid head on the training digits, exported like edgekit exports (opset 17, onnxslim)."""
    import onnxslim
    import torch

    from edgekit.data.imagefolder import load_split
    from edgekit.train.models import build_model
    from edgekit.vision.preprocess import batch_classify

    spec = tiny_input_spec()
    train = load_split(digits_imagefolder / "train")
    model, _ = build_model("mobilenet_v2", len(CLASSES), "packaged")
    model.eval()
    head, model.classifier[1] = model.classifier[1], torch.nn.Identity()
    with torch.no_grad():
        f = model(torch.from_numpy(batch_classify(train.images, spec))).double().numpy()
        mu = np.stack([f[train.labels == c].mean(0) for c in range(len(CLASSES))])
        head.weight.copy_(torch.from_numpy(mu))
        head.bias.copy_(torch.from_numpy(-0.5 * (mu ** 2).sum(1)))
    model.classifier[1] = head
    out = tmp_path_factory.mktemp("mobilenet") / "mobilenet_v2"
    out.mkdir()
    with torch.no_grad():
        torch.onnx.export(model, torch.zeros(spec.shape), str(out / "model.onnx"), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"])
    onnx.save(onnxslim.slim(onnx.load(str(out / "model.onnx"))), str(out / "model.onnx"))
    m = Manifest(name=out.name, task="classify", labels=list(CLASSES), input=spec,
                 outputs=[TensorSpec("logits", [1, len(CLASSES)], "float32")],
                 source={"arch": "mobilenet_v2", "dataset": {"root": str(digits_imagefolder), "val_split": 0.1,
                                                             "seed": 0}})
    m.save(out)
    m.add_artifact("onnxrt", "model.onnx", "fp32")
    m.save(out)
    return out


@pytest.mark.slow
def test_fallback_recovers_mobilenet_v2_that_per_tensor_int8_breaks(mobilenet_dir):
    """The hard case: MobileNetV2's BN-folded depthwise weights under one scale per tensor. Plain INT8 drops
    to chance; keeping the few layers that cause it in float brings it back within the budget."""
    cfg = dict(calib_images=40, latency_rounds=0, int8_budget=5.0, per_channel=False, calibration="minmax")
    art = int8_from_onnx(mobilenet_dir, Int8ExportConfig(**cfg))
    a, o = art.accuracy, art.options
    base = Manifest.load(mobilenet_dir).find_artifact("onnxrt", "fp32").accuracy["value"]
    assert base >= 0.75
    assert a["plain_int8_drop_points"] >= 30 and a["plain_int8_value"] <= 0.5
    assert a["within_budget"] and a["drop_points"] <= 5.0
    kept = o["float_nodes"]
    assert 1 <= len(kept) <= o["fallback"]["candidates"] // 4
    assert o["int8_nodes"] >= 40  # still an INT8 model: most layers stay quantized
    model = onnx.load(str(mobilenet_dir / "model_int8.onnx"))
    producer = _producer_ops(model)
    for node in model.graph.node:
        if node.name in kept:  # the kept layers really are float in the file: float weights, no DQ in front
            assert producer.get(node.input[1]) != "DequantizeLinear"
            assert producer.get(node.input[0]) != "DequantizeLinear"


def test_unknown_excluded_node_is_an_error(model_copy):
    with pytest.raises(EdgekitError, match=r"no node '/layer1/layer1.0/conv9/Conv' \(did you mean"):
        int8_from_onnx(model_copy, Int8ExportConfig(**FAST, exclude_nodes="/layer1/layer1.0/conv9/Conv"))


# ---- the CPU, the agreement gate, the search's groups and time budget ---------------------------------------

def test_cpu_and_weight_range_recorded(int8_dir, caplog):
    from edgekit.export.qdq import reduce_range_for
    from edgekit.platform import cpu_int8

    art = Manifest.load(int8_dir).find_artifact("onnxrt", "int8")
    o = art.options
    assert o["cpu"] == cpu_int8() and o["config"]["reduce_range"] == "auto"
    assert (o["reduce_range"], o["reduce_range_choice"]) == reduce_range_for("auto", cpu_int8()["kind"])
    assert o["min_agreement"] == 0.9 and art.parity["min_agreement"] == 0.9
    assert art.parity["passed"] is (art.parity["agreement"] >= 0.9)
    assert art.accuracy["plain_int8_agreement"] == pytest.approx(art.parity["agreement"], abs=1e-9)


def test_reduce_range_override_and_portability_warning(model_copy, caplog):
    art = int8_from_onnx(model_copy, Int8ExportConfig(**FAST, reduce_range="off", int8_min_agreement=0))
    o = art.options
    assert o["reduce_range"] is False and o["reduce_range_choice"] == "asked (--reduce-range off)"
    assert o["portability"] and o["portability"] in caplog.text  # 8-bit weights behave differently elsewhere
    art = int8_from_onnx(model_copy, Int8ExportConfig(**FAST, reduce_range="on", int8_min_agreement=0))
    assert art.options["reduce_range"] is True and art.options["portability"] is None
    with pytest.raises(EdgekitError, match="--reduce-range must be one of auto, on, off, got 'maybe'"):
        int8_from_onnx(model_copy, Int8ExportConfig(**FAST, reduce_range="maybe"))


def test_agreement_gate_refuses_what_labels_would_pass(outlier_copy):
    """A budget that any accuracy meets (placeholder labels make accuracy meaningless): plain INT8 of the
    outlier net still disagrees with FP32 on most images, and that alone refuses it."""
    cfg = dict(calib_images=40, latency_rounds=0, int8_budget=100.0, fallback=False)
    with pytest.raises(EdgekitError, match=r"keeps top-1 agreement .*% with FP32 \(minimum 90%\).*nothing written"):
        int8_from_onnx(outlier_copy, Int8ExportConfig(**cfg))
    assert not (outlier_copy / "model_int8.onnx").exists()
    art = int8_from_onnx(outlier_copy, Int8ExportConfig(**cfg, allow_over_budget=True))
    assert art.accuracy["within_budget"] is True and art.parity["passed"] is False
    assert art.parity["agreement"] < 0.9 and art.options["min_agreement"] == 0.9
    art = int8_from_onnx(outlier_copy, Int8ExportConfig(**cfg, int8_min_agreement=0.0))  # the gate off
    assert art.parity["passed"] is True


def test_group_nodes():
    from edgekit.export.sensitivity import group_nodes

    names = [f"n{i}" for i in range(64)]
    groups = group_nodes(names, 16)
    assert len(groups) == 16 and all(len(g) == 4 for g in groups) and [n for g in groups for n in g] == names
    assert group_nodes(names[:5], 16) == [[n] for n in names[:5]]
    assert [len(g) for g in group_nodes(names[:10], 4)] == [3, 3, 2, 2]


def test_fallback_ranks_groups_of_layers(outlier_copy, monkeypatch):
    """More layers than MAX_UNITS: ranked and kept float by groups of consecutive layers."""
    from edgekit.export import sensitivity

    monkeypatch.setattr(sensitivity, "MAX_UNITS", 3)  # c1 c2 c3 Flatten fc -> [c1 c2] [c3 Flatten] [fc]
    art = int8_from_onnx(outlier_copy, Int8ExportConfig(calib_images=40, latency_rounds=0, int8_budget=5.0,
                                                        max_float_nodes=2))
    f = art.options["fallback"]
    assert f["grouped"] and f["candidates"] == 5
    assert [r["nodes"] for r in f["ranking"]][0] == ["/c3/Conv", "/Flatten"]  # c3 reads the outlier tensor
    assert sorted(map(len, (r["nodes"] for r in f["ranking"]))) == [1, 2, 2]
    assert art.options["float_nodes"] == ["/c3/Conv", "/Flatten"]
    assert art.accuracy["within_budget"] and art.parity["passed"] and not f["out_of_time"]


def test_fallback_out_of_time_stops_and_says_so(outlier_copy):
    cfg = dict(calib_images=40, latency_rounds=0, int8_budget=5.0, fallback_seconds=1e-6)
    with pytest.raises(EdgekitError, match=r"ran out of its 0 s \(--fallback-seconds\).*nothing written"):
        int8_from_onnx(outlier_copy, Int8ExportConfig(**cfg))
    assert not (outlier_copy / "model_int8.onnx").exists()
    art = int8_from_onnx(outlier_copy, Int8ExportConfig(**cfg, allow_over_budget=True))
    f = art.options["fallback"]
    assert f["out_of_time"] and f["time_budget_seconds"] == 1e-6 and art.options["float_nodes"] == []
    assert art.accuracy["within_budget"] is False  # the best found was plain INT8: nothing was tried in time


def test_dynamic_batch_model_calibrates_when_the_images_do_not_fill_the_last_batch(torch_model_copy, model_dir):
    """A dynamic-batch ONNX calibrates in batches of 32; 40 images leave a last batch of 8, which ORT's
    calibrator cannot stack with the others in one call (it raised a ValueError). The ranges are those the
    fixed-batch export of the same network gets from the same images, one at a time."""
    from edgekit.export.onnx import OnnxExportConfig, onnx_from_torch

    onnx_from_torch(torch_model_copy, OnnxExportConfig(dynamic_batch=True, parity_images=8))
    art = int8_from_onnx(torch_model_copy, Int8ExportConfig(**FAST))
    assert (torch_model_copy / art.path).is_file() and art.precision == "int8"
    x = np.random.default_rng(0).random((40, 3, 32, 32), np.float32)
    got = {}
    for d in (torch_model_copy, model_dir):
        got[d] = calibration.run_calibration(d / "model.onnx", x, "minmax", {}, input_name="input").data
    dyn, fixed = got[torch_model_copy], got[model_dir]
    assert dyn.keys() == fixed.keys()
    for name in fixed:
        np.testing.assert_allclose(np.asarray(dyn[name].range_value, np.float64),
                                   np.asarray(fixed[name].range_value, np.float64), rtol=1e-4, atol=1e-6)
