"""bench --tinygrad-python: the tinygrad combinations run under another Python (on JetPack 6, a 3.11 venv:
tinygrad 0.14 needs >= 3.11 and JetPack's TensorRT and cv2 are built for 3.10); every other backend stays on
this one. Here the other Python is a wrapper around this one that records each call."""
from __future__ import annotations

import sys

import pytest

from edgekit.errors import EdgekitError
from edgekit.profile.matrix import BenchConfig, run_matrix


def _cfg(model_dir, **kw) -> BenchConfig:
    return BenchConfig(model_dir=str(model_dir), precisions="fp32", warmup=1, iters=3, eval_images=8, threads=1,
                       reference="onnxrt", **kw)


def test_a_missing_python_is_a_user_error(model_dir, tmp_path):
    with pytest.raises(EdgekitError, match="--tinygrad-python .*nope is not an executable Python.*On a Jetson"):
        run_matrix(_cfg(model_dir, backends="onnxrt", tinygrad_python=str(tmp_path / "nope")))


@pytest.mark.slow
def test_tinygrad_runs_under_the_python_given(model_dir, tmp_path):
    calls = tmp_path / "calls.txt"
    wrapper = tmp_path / "python3.11"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    report = run_matrix(_cfg(model_dir, backends="onnxrt,tinygrad", tinygrad_python=str(wrapper)))
    rows = {r["backend"]: r for r in report["results"]}
    assert rows["tinygrad"]["status"] == "ok" and rows["onnxrt"]["status"] == "ok", rows
    lines = calls.read_text().splitlines()
    assert len(lines) == 1 and "edgekit.profile.worker" in lines[0] and "tinygrad-fp32" in lines[0]
    assert rows["tinygrad"]["parity"]["max_rel"] < 1e-3  # the same outputs as onnxrt, from the other Python
