"""edgekit bench/compare: every combination in its own process on the same held-out inputs; what cannot run
is listed with the reason, a crashing one does not stop the others, and the report is complete."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.profile import matrix
from edgekit.profile.matrix import BenchConfig, run_matrix
from edgekit.profile.report import write_report

REPO = Path(__file__).resolve().parents[2]


def _cfg(model_dir, **kw) -> BenchConfig:
    base = dict(model_dir=str(model_dir), backends="torch,onnxrt", precisions="fp32,int8", warmup=2, iters=10,
                eval_images=24, threads=1)
    base.update(kw)
    return BenchConfig(**base)


@pytest.fixture(scope="module")
def report(model_dir) -> dict:
    return run_matrix(_cfg(model_dir))


def _row(report, backend, precision, batch=1):
    return next(r for r in report["results"] if (r["backend"], r["precision"], r["batch"]) == (backend, precision, batch))


def test_each_combination_measured_or_explained(report):
    for b in ("torch", "onnxrt"):
        r = _row(report, b, "fp32")
        assert r["status"] == "ok", r
        lat = r["latency_ms"]
        assert lat["n"] >= 10 and 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"]
        assert r["cold_start_s"] > 0 and r["peak_rss_mb"] > 0 and r["throughput_ips"] > 0
        assert r["end_to_end_ms"]["n"] == 3 * 16 and r["end_to_end_ms"]["p50_ms"] > 0  # 16 real images, 3 passes
        assert r["accuracy"]["n"] == 24 and r["accuracy"]["value"] >= 0.6
    assert "export" in _row(report, "onnxrt", "int8")["reason"]
    assert "no int8 mode" in _row(report, "torch", "int8")["reason"]


def test_parity_against_the_reference(report):
    ref, ort = _row(report, "torch", "fp32"), _row(report, "onnxrt", "fp32")
    assert ref["parity"]["max_abs"] == 0.0 and ref["parity"]["reference"] == "torch/fp32"
    assert ort["parity"]["max_rel"] <= 1e-4 and ort["parity"]["top1_agreement"] == 1.0
    assert ort["accuracy"]["value"] == ref["accuracy"]["value"]


def test_the_onnxrt_worker_stays_small(report):
    # its own process, no torch: far below the torch worker's peak (torch alone is several hundred MB)
    assert _row(report, "onnxrt", "fp32")["peak_rss_mb"] < 0.5 * _row(report, "torch", "fp32")["peak_rss_mb"]


def test_report_files(report, tmp_path):
    md = write_report(report, tmp_path)
    text = md.read_text()
    assert "| torch | fp32 | 1 | ok |" in text and "Not run here" in text
    rows = list(csv.DictReader((tmp_path / "bench.csv").open()))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok", "skipped"}
    assert json.loads((tmp_path / "bench.json").read_text())["machine"]["cpu"]["cores"] >= 1
    for png in ("latency.png", "accuracy_latency.png", "memory.png"):
        img = cv2.imread(str(tmp_path / png))
        assert img is not None and img.shape[0] >= 300 and img.std() > 5  # a drawn plot, not a blank canvas


def test_a_crashing_combination_does_not_stop_the_others(model_dir, tmp_path, monkeypatch):
    # A wrapper standing in for the interpreter: the onnxrt worker dies of SIGSEGV, the others run normally.
    wrapper = tmp_path / "python"
    wrapper.write_text(f"""#!{sys.executable}
import json, os, signal, sys
spec = json.load(open(sys.argv[3]))
if spec["backend"] == "onnxrt":
    os.kill(os.getpid(), signal.SIGSEGV)
os.execv({sys.executable!r}, [{sys.executable!r}] + sys.argv[1:])
""")
    wrapper.chmod(0o755)
    monkeypatch.setattr(matrix.sys, "executable", str(wrapper))
    rep = run_matrix(_cfg(model_dir, precisions="fp32", iters=5))
    crashed = _row(rep, "onnxrt", "fp32")
    assert crashed["status"] == "failed" and "crashed (exit code -11)" in crashed["reason"]
    assert _row(rep, "torch", "fp32")["status"] == "ok"


def test_batch_beyond_a_fixed_export_is_explained(model_dir):
    rep = run_matrix(_cfg(model_dir, backends="onnxrt", precisions="fp32", batch="1,4", iters=5))
    assert _row(rep, "onnxrt", "fp32", 1)["status"] == "ok"
    four = _row(rep, "onnxrt", "fp32", 4)
    assert four["status"] == "skipped" and "--dynamic-batch" in four["reason"]


@pytest.mark.parametrize("field, value, message", [
    ("backends", "onnx", "did you mean 'onnxrt'"), ("precisions", "fp8", "unknown precision"),
    ("batch", "one", "--batch"),
])
def test_bad_arguments(model_dir, field, value, message):
    with pytest.raises(EdgekitError, match=message):
        run_matrix(_cfg(model_dir, **{field: value}))


def test_compare_cli(model_dir):
    r = subprocess.run([sys.executable, "-m", "edgekit", "compare", str(model_dir), "--backends", "torch,onnxrt",
                        "--precisions", "fp32", "--eval-images", "8"], capture_output=True, text=True, cwd=REPO,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    line = next(x for x in r.stdout.splitlines() if x.startswith("| onnxrt | fp32"))
    assert "100.00%" in line


def test_skip_leaves_a_pair_out_with_its_reason_and_rejects_a_malformed_pair(model_dir):
    cfg = BenchConfig(model_dir=str(model_dir), backends="onnxrt", precisions="fp32,fp16", warmup=1, iters=2,
                      eval_images=4, skip="onnxrt/fp16")
    rows = run_matrix(cfg)["results"]
    assert [(r["precision"], r["status"]) for r in rows] == [("fp32", "ok"), ("fp16", "skipped")]
    assert rows[1]["reason"] == "left out (--skip)"
    with pytest.raises(EdgekitError, match="backend/precision pairs"):
        run_matrix(BenchConfig(model_dir=str(model_dir), backends="onnxrt", precisions="fp32", skip="tinygrad"))


def test_max_seconds_lists_the_combinations_that_would_start_too_late(model_dir, monkeypatch):
    """--max-seconds: the first combination always runs; one that would start after the limit is listed as not
    run, with the reason (the clock is driven by the test: 0 s at the start, 100 s after the first run)."""
    clock = iter([0.0, 0.0, 100.0, 100.0, 100.0])
    monkeypatch.setattr(matrix, "_now", lambda: next(clock))
    cfg = BenchConfig(model_dir=str(model_dir), backends="onnxrt,torch", precisions="fp32", warmup=1, iters=2,
                      eval_images=4, max_seconds=30)
    rows = run_matrix(cfg)["results"]
    assert [(r["backend"], r["status"]) for r in rows] == [("onnxrt", "ok"), ("torch", "skipped")]
    assert "--max-seconds 30" in rows[1]["reason"]


@pytest.mark.parametrize("change, message", [
    (dict(iters=0), "--iters must be >= 1"), (dict(eval_images=-3), "--eval-images must be >= 0"),
    (dict(batch="0"), "batch sizes from 1 to 4096"), (dict(data="EMPTY"), "holds no images"),
    (dict(data="FILE"), "not a YOLO data.yaml"), (dict(out="FILE/report"), "--out cannot be created"),
])
def test_bad_options_fail_before_the_first_run(model_dir, tmp_path, monkeypatch, change, message):
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "EMPTY" / "notes.txt").write_text("no images here, like /etc\n")
    (tmp_path / "FILE").write_text("a file\n")
    change = {k: v.replace("EMPTY", str(tmp_path / "EMPTY")).replace("FILE", str(tmp_path / "FILE"))
              if isinstance(v, str) else v for k, v in change.items()}
    monkeypatch.setattr(matrix, "_spawn", lambda *a, **k: pytest.fail("a combination ran"))
    with pytest.raises(EdgekitError, match=message):
        _cfg(model_dir, **change).validate()


def test_data_given_but_unreadable_is_refused_not_replaced_by_random_inputs(model_dir, tmp_path, monkeypatch):
    data = tmp_path / "flat"
    data.mkdir()
    cv2.imwrite(str(data / "a.png"), np.zeros((8, 8), np.uint8))  # an image, but no class folders
    monkeypatch.setattr(matrix, "_spawn", lambda *a, **k: pytest.fail("a combination ran on random inputs"))
    with pytest.raises(EdgekitError, match=f"--data {data}"):
        run_matrix(_cfg(model_dir, data=str(data)))


def test_a_report_that_fails_half_way_leaves_the_folder_as_it_was(report, tmp_path, monkeypatch):
    from edgekit.profile import report as report_mod

    (tmp_path / "bench.md").write_text("the previous report\n")

    def broken_plot(rep, folder):
        (Path(folder) / "latency.png").write_bytes(b"half")
        raise ValueError("plotting failed")

    monkeypatch.setattr(report_mod, "plot_all", broken_plot)
    with pytest.raises(ValueError):
        write_report(report, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.md"]
    assert (tmp_path / "bench.md").read_text() == "the previous report\n"
