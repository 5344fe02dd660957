"""The demo's time budget (edgekit.demo_budget): `make demo` fits its work to the machine's measured speed
instead of fixed sizes tuned on one CPU (on an AVX2-only EPYC the classifier alone took 558 s of 900)."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from edgekit import demo, demo_budget, demo_report
from edgekit.demo_budget import Budget, epochs_that_fit, load_fitted, save_fitted


@pytest.mark.parametrize("seconds, step, steps, most, least, want", [
    (300.0, 0.4, 169, 8, 2, 3),  # the AVX2 EPYC: ~78 s per epoch with the overhead -> 3 epochs
    (300.0, 0.15, 169, 8, 2, 8),  # a faster CPU: the recipe's 8, never more
    (10.0, 0.4, 169, 8, 2, 2),  # a very slow CPU: a head epoch and one of the whole network
    (300.0, 0.0, 169, 8, 2, 8),
])
def test_epochs_that_fit(seconds, step, steps, most, least, want):
    assert epochs_that_fit(seconds, step, steps, most, least) == want


def test_shares_are_of_the_time_left(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(demo_budget, "_now", lambda: now[0])
    b = Budget(840.0)
    assert b.left() == 840.0
    now[0] += 240.0  # 240 s spent
    assert b.share("detect") == pytest.approx(600.0 * b.shares.detect)
    assert b.bench_seconds(2) == pytest.approx((600.0 - b.shares.camera_reserve) / 2)
    now[0] += 2000.0  # over budget: shares are 0, the bench keeps its minimum
    assert b.share("classify") == 0.0 and b.bench_seconds(1) == b.shares.min_bench


def test_fitted_plan_survives_a_rerun_and_a_corrupt_file_is_ignored(tmp_path):
    assert load_fitted(tmp_path) == {}
    save_fitted(tmp_path, {"classifier_epochs": 3})
    assert load_fitted(tmp_path) == {"classifier_epochs": 3}
    (tmp_path / demo_budget.PLAN_FILE).write_text("{not json")
    assert load_fitted(tmp_path) == {}


def _cfg(tmp_path, write_digits):
    from edgekit.train.classify_config import ClassifyConfig

    data = write_digits(tmp_path / "crops", {"0": 4, "1": 4, "2": 4})
    return ClassifyConfig(data=str(data), out=str(tmp_path / "m"), arch="mobilenet_v2", pretrained="packaged",
                          imgsz=32, epochs=8, head_epochs=1, batch=8)


def test_classifier_epochs_measured_then_reused(tmp_path, write_digits, monkeypatch):
    """The first run measures a real training step and fits the epochs (an impossible budget: the least,
    a generous one: the recipe's); a re-run reads plan.json and measures nothing."""
    cfg = _cfg(tmp_path, write_digits)
    tight = Budget(1e-3)
    assert demo._fit_classifier_epochs(cfg, tmp_path / "a", tight) == 2
    assert tight.fitted["classifier_step_seconds"] > 0 and tight.fitted["recipe_epochs"] == 8
    assert json.loads((tmp_path / "a" / "plan.json").read_text())["classifier_epochs"] == 2
    assert demo._fit_classifier_epochs(cfg, tmp_path / "b", Budget(1e6)) == 8

    import edgekit.train.classify as classify

    monkeypatch.setattr(classify, "seconds_per_step", lambda *a, **k: pytest.fail("measured again"))
    again = Budget(1e6, fitted=load_fitted(tmp_path / "a"))
    assert demo._fit_classifier_epochs(replace(cfg), tmp_path / "a", again) == 2


def test_budget_paragraph_in_the_report():
    lines = demo_report.budget_lines({"seconds": 840.0, "classifier_epochs": 3, "recipe_epochs": 8,
                                "classifier_step_seconds": 0.41, "detector_train_minutes": 3.2})
    assert "classifier 3 of the recipe's 8 epochs" in lines[0] and "3.2 min" in lines[0]
    assert demo_report.budget_lines(None) == []


def test_detector_time_limit_is_ultralytics_time_mode(tmp_path):
    from edgekit.train.detect import ultralytics_args
    from edgekit.train.detect_config import DetectConfig

    limited = ultralytics_args(DetectConfig(data="d.yaml", max_minutes=3.0), tmp_path / "d.yaml", tmp_path)
    assert limited["time"] == pytest.approx(0.05)  # hours, as ultralytics takes it
    assert "time" not in ultralytics_args(DetectConfig(data="d.yaml"), tmp_path / "d.yaml", tmp_path)


def test_a_refused_export_is_shown_and_the_demo_goes_on(model_copy, monkeypatch):
    """An FP16/INT8 export its own checks refuse (one EdgekitError line) is a row of the report, not the end of
    the demo: on a slower CPU the budget trains a weaker detector, whose FP16 once stopped the demo at minute 12."""
    import edgekit.export.fp16 as fp16
    import edgekit.export.int8 as int8
    from edgekit.errors import EdgekitError

    def refuse(*a, **k):
        raise EdgekitError("FP16 disagrees with FP32 beyond tolerance: ...; nothing written")

    monkeypatch.setattr(fp16, "fp16_from_onnx", refuse)
    monkeypatch.setattr(int8, "int8_from_onnx", refuse)
    rows = demo._exports(model_copy, demo.QUICK, 5.0)
    assert rows["fp16"] == {"refused": "FP16 disagrees with FP32 beyond tolerance: ...; nothing written"}
    assert "refused" in rows["int8"] and rows["fp32"]["file"] == "model.onnx"
