"""`--decoder` on export, bench and compare: a model directory whose manifest names a plug-in decoder is refused
with "pass --decoder X" (a directory never loads code by itself), and with the flag every command reads the
outputs through the plug-in: the export's metric and agreement, and the bench's scoring in the parent and its
end-to-end pipeline in each worker process."""
from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest

from tests.imports.test_import_onnx import one_line_error, run_cli

# ultralytics' (1, 4+nc, N) layout read by edgekit's own decoder; each call is logged (with the process id) to
# the file named by EDGEKIT_TEST_DECODER_LOG, so the test sees which processes decoded through it
PLUGIN = '''
import os
from edgekit.vision.decoders import decode_yolo

def decode(pred, *, conf, iou, max_det, **kw):
    with open(os.environ["EDGEKIT_TEST_DECODER_LOG"], "a") as f:
        f.write(f"{os.getpid()}\\n")
    return decode_yolo(pred, conf=conf, iou=iou, max_det=max_det, **kw)
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch) -> tuple[str, object]:
    """(the plug-in's module:function, its call log), importable here and in child processes."""
    name = f"edgekit_test_cmd_decoder_{tmp_path.name.replace('-', '_')}"
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / f"{name}.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(tmp_path / "plugins"),
                                                                 os.environ.get("PYTHONPATH", "")) if p))
    log = tmp_path / "decoder_calls.txt"
    monkeypatch.setenv("EDGEKIT_TEST_DECODER_LOG", str(log))
    yield f"{name}:decode", log
    sys.modules.pop(name, None)


@pytest.fixture
def plugin_dir(plugin, tiny_yolo_dir, tmp_path):
    """The tiny YOLO's ONNX imported with the plug-in as its decoder (and its dataset as held-out data)."""
    from edgekit.imports import ImportConfig, import_model
    from edgekit.manifest import Manifest

    out = tmp_path / "model"
    data = tiny_yolo_dir.parent / "data" / "data.yaml"
    import_model(tiny_yolo_dir / "model.onnx", out, ImportConfig(data=str(data), decoder=plugin[0]))
    assert Manifest.load(out).postprocess.decoder == plugin[0]
    plugin[1].unlink(missing_ok=True)
    return out


def _pids(log) -> set[int]:
    return {int(x) for x in log.read_text().split()} if log.exists() else set()


def test_export_needs_and_takes_decoder(plugin, plugin_dir, capsys):
    spec, log = plugin
    rc, out, err = run_cli(["export", str(plugin_dir), "--precision", "fp16", "--eval-images", "4"], capsys)
    assert f"pass --decoder {spec}" in one_line_error(rc, err)
    assert not log.exists()  # refused before any code of the plug-in ran
    rc, out, err = run_cli(["export", str(plugin_dir), "--precision", "fp16", "--eval-images", "4",
                            "--decoder", spec], capsys)
    assert rc == 0, err
    assert "mAP50-95" in out and _pids(log) == {os.getpid()}
    from edgekit.manifest import Manifest

    art = Manifest.load(plugin_dir).find_artifact("onnxrt", "fp16")
    assert art.accuracy["metric"] == "mAP50-95" and art.parity["agreement"] > 0.9  # FP16 boxes, read by the plug-in


@pytest.mark.slow
def test_bench_and_compare_pass_decoder_to_their_workers(plugin, plugin_dir, tmp_path, capsys):
    spec, log = plugin
    d = str(plugin_dir)
    common = ["--backends", "onnxrt", "--precisions", "fp32", "--eval-images", "4", "--no-ultralytics"]
    rc, out, err = run_cli(["bench", d, *common, "--warmup", "1", "--iters", "2", "--out", str(tmp_path / "b0")],
                           capsys)
    assert f"pass --decoder {spec}" in one_line_error(rc, err)
    rc, out, err = run_cli(["bench", d, *common, "--warmup", "1", "--iters", "2", "--out", str(tmp_path / "b"),
                            "--decoder", spec], capsys)
    assert rc == 0, err
    report = json.loads((tmp_path / "b" / "bench.json").read_text())
    (row,) = report["results"]
    assert row["status"] == "ok" and "mAP50" in row["accuracy"] and row["end_to_end_ms"]
    assert report["config"]["decoder"] == spec
    pids = _pids(log)
    assert os.getpid() in pids and len(pids) >= 2  # scored here, and the worker's pipeline decoded through it too
    log.unlink()
    rc, out, err = run_cli(["compare", d, *common, "--decoder", spec], capsys)
    assert rc == 0 and "| onnxrt | fp32 |" in out, err
    assert os.getpid() in _pids(log)
