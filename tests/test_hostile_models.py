"""A model directory is data, never code (issue 11, item 1): a crafted model.pt whose unpickling writes a marker
file, claimed by the manifest with a matching sha256, must never be unpickled by any command: export (onnx, fp16,
int8), bench (with its ultralytics comparison), compare, camera, `python -m edgekit.train.detect DIR` and
`edgekit train detect --model x.pt` (without --trust-pickle). Where a command refuses, it exits 2 with one line.
After every command the directory is intact (tests/integrity.py)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from integrity import assert_model_dir_intact

from edgekit.cli import main
from edgekit.fileio import sha256_file
from edgekit.manifest import Manifest


class _Payload:
    """Unpickling this runs open(marker, "w"): the file appears only if someone unpickled it fully."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _hostile(tmp_path: Path, tiny_yolo_dir: Path, *, legacy: bool) -> tuple[Path, Path]:
    """A copy of the tiny detector whose model.pt is the payload, its sha256 rewritten in the manifest (as an
    attacker who supplies the directory would). legacy: model.pt is also the torch artifact (no model_state.pt)."""
    import torch

    d = Path(shutil.copytree(tiny_yolo_dir, tmp_path / "hostile"))
    marker = tmp_path / "PWNED"
    torch.save({"model": _Payload(marker), "train_args": {"task": "detect"}}, d / "model.pt")
    m = Manifest.load(d)
    m.source["checkpoint_sha256"] = sha256_file(d / "model.pt")
    if legacy:
        m.add_artifact("torch", "model.pt", "fp32")
        (d / "model_state.pt").unlink()
    m.save()
    return d, marker


def _refused(rc: int, err: str, expect: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == 2 and "Traceback" not in err, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("edgekit: error:") and expect in lines[0], err[-2000:]


def _data(d: Path) -> str:
    return Manifest.load(d).source["dataset"]["yaml"]


def test_a_pickle_is_refused_before_anything_loads_it(tmp_path, tiny_yolo_dir, capsys):
    d, marker = _hostile(tmp_path, tiny_yolo_dir, legacy=True)
    _refused(main(["-q", "export", str(d)]), capsys.readouterr().err, "--trust-pickle")
    rc = main(["-q", "export", str(d), "--to", "trt"])  # from model.onnx where TensorRT is; refused elsewhere
    assert rc in (0, 2) and "Traceback" not in capsys.readouterr().err
    _refused(main(["-q", "train", "detect", "--data", _data(d), "--out", str(tmp_path / "t"), "--model",
                   str(d / "model.pt")]), capsys.readouterr().err, "--trust-pickle")
    frames = tmp_path / "frames"
    frames.mkdir()
    shutil.copyfile(sorted(Path(_data(d)).parent.glob("images/val/*.jpg"))[0], frames / "0.jpg")
    _refused(main(["-q", "camera", str(frames), str(tmp_path / "r.jsonl"), "--detector", str(d), "--det-backend",
                   "torch", "--max-frames", "1", "--headless"]), capsys.readouterr().err, "--trust-pickle")
    r = subprocess.run([sys.executable, "-m", "edgekit.train.detect", str(d)], capture_output=True, text=True,
                       timeout=300)
    _refused(r.returncode, r.stderr, "--trust-pickle")
    assert not marker.exists()
    assert_model_dir_intact(d)
    assert not (d / "model_state.pt").exists() and not (tmp_path / "t").exists()


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_fp16_and_int8_export_read_the_onnx_only(tmp_path, tiny_yolo_dir, precision, capsys):
    d, marker = _hostile(tmp_path, tiny_yolo_dir, legacy=True)
    int8 = ["--calib-images", "4", "--min-calib-images", "1", "--no-fallback", "--latency-rounds", "0",
            "--allow-over-budget"]
    rc = main(["-q", "export", str(d), "--precision", precision, *(int8 if precision == "int8" else [])])
    assert rc == 0, capsys.readouterr().err[-2000:]
    assert not marker.exists()
    assert_model_dir_intact(d)


@pytest.mark.slow
def test_bench_and_compare_never_unpickle_it(tmp_path, tiny_yolo_dir, capsys):
    d, marker = _hostile(tmp_path, tiny_yolo_dir, legacy=True)
    common = ["--backends", "torch,onnxrt", "--precisions", "fp32", "--eval-images", "2"]
    assert main(["-q", "compare", str(d), *common]) == 0  # onnxrt answers; torch refuses the pickle
    out = capsys.readouterr().out
    assert "--trust-pickle" in out and not marker.exists()
    rc = main(["-q", "bench", str(d), *common, "--warmup", "1", "--iters", "2", "--out", str(tmp_path / "b")])
    assert rc == 0 and not marker.exists()  # ultralytics' comparison skipped: there is no weights-only file
    assert "skipped" in (tmp_path / "b" / "ultralytics_vs_edgekit.md").read_text()
    assert_model_dir_intact(d)


@pytest.mark.slow
def test_with_model_state_pt_export_and_bench_run_without_the_pickle(tmp_path, tiny_yolo_dir, capsys):
    """The usual layout: the weights-only torch artifact beside a (here hostile) model.pt. Export and ultralytics'
    comparison work from model_state.pt; model.pt is never read."""
    d, marker = _hostile(tmp_path, tiny_yolo_dir, legacy=False)
    assert main(["-q", "export", str(d), "--parity-images", "2"]) == 0, capsys.readouterr().err[-2000:]
    assert Manifest.load(d).find_artifact("onnxrt", "fp32").built_from == "model_state.pt"
    rc = main(["-q", "bench", str(d), "--backends", "onnxrt", "--precisions", "fp32", "--eval-images", "2",
               "--warmup", "1", "--iters", "2", "--out", str(tmp_path / "b")])
    assert rc == 0 and not marker.exists()
    res = (tmp_path / "b" / "ultralytics_vs_edgekit.md").read_text()
    assert "skipped" not in res and "ultralytics benchmark()" in res
    assert_model_dir_intact(d)
