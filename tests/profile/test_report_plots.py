"""`edgekit bench` draws its PNGs with matplotlib where it is installed, and without it (a Jetson installed
with only what runs there) still writes bench.json/csv/md, says how to get the plots and exits 0."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from edgekit.profile.report import NO_PLOTS, PLOTS, write_report

ROOT = Path(__file__).resolve().parents[2]


def _report() -> dict:
    lat = {"p50_ms": 1.0, "p90_ms": 1.2, "p99_ms": 1.5, "mean_ms": 1.1, "std_ms": 0.1, "n": 10}
    return {"model_dir": "m", "task": "classify", "created": "now", "machine": {"cpu": {"name": "cpu", "cores": 2}},
            "results": [{"backend": "onnxrt", "precision": "fp32", "batch": 1, "status": "ok", "latency_ms": lat,
                         "peak_rss_mb": 50.0, "accuracy": {"metric": "top1", "value": 0.9, "n": 24}}]}


def test_report_with_matplotlib_has_its_plots(tmp_path):
    text = write_report(_report(), tmp_path).read_text()
    assert all((tmp_path / p).stat().st_size > 0 for p in PLOTS)
    assert "![latency](latency.png)" in text and NO_PLOTS not in text


def test_report_without_matplotlib_says_how_to_get_plots(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # not installed, as far as imports can tell
    text = write_report(_report(), tmp_path).read_text()
    assert not any((tmp_path / p).exists() for p in PLOTS)
    assert text.rstrip().endswith(NO_PLOTS) and ".png" not in text
    assert "| onnxrt | fp32 | 1 | ok | 1 |" in text  # the tables are all there
    assert {"bench.json", "bench.csv", "bench.md"} <= {p.name for p in tmp_path.iterdir()}
    assert NO_PLOTS in caplog.text and "pip install 'matplotlib" in NO_PLOTS


def test_bench_command_finishes_without_matplotlib(tmp_path, model_dir):
    shim = textwrap.dedent("""
        import sys
        sys.modules["matplotlib"] = None  # what a venv without matplotlib looks like to `import matplotlib`
        from edgekit.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    out = tmp_path / "bench"
    p = subprocess.run([sys.executable, "-c", shim, "bench", str(model_dir), "--backends", "onnxrt", "--precisions",
                        "fp32", "--warmup", "1", "--iters", "3", "--eval-images", "8", "--threads", "1",
                        "--reference", "onnxrt", "--out", str(out)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr[-2000:]
    assert NO_PLOTS in p.stdout and "(and bench.json, bench.csv)" in p.stdout
    assert not any((out / name).exists() for name in PLOTS)
    assert json.loads((out / "bench.json").read_text())["results"][0]["status"] == "ok"
