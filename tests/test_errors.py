"""did_you_mean and unknown_choice: the wording every 'unknown X' error shares."""
from __future__ import annotations

import pytest

from edgekit.errors import EdgekitError, did_you_mean, unknown_choice


@pytest.mark.parametrize("word, choices, expected", [
    ("resnet19", ["resnet18", "resnet34", "mobilenet_v2"], " (did you mean 'resnet18'?)"),
    ("onnx", ["torch", "onnxrt", "trt"], " (did you mean 'onnxrt'?)"),
    ("fp61", ["fp32", "fp16", "int8"], " (did you mean 'fp16'?)"),
    ("TORCH", ["torch"], ""),  # case matters: no silent normalisation
    ("xyz", ["torch", "onnxrt"], ""),
    ("anything", [], ""),
])
def test_did_you_mean(word, choices, expected):
    assert did_you_mean(word, choices) == expected


def test_did_you_mean_takes_any_iterable():
    assert did_you_mean("onnxrtt", (b for b in ("torch", "onnxrt"))) == " (did you mean 'onnxrt'?)"


def test_unknown_choice_names_kind_suggestion_and_sorted_choices():
    err = unknown_choice("backend", "onnx", ["trt", "torch", "onnxrt"])
    assert isinstance(err, EdgekitError)
    assert str(err) == "unknown backend 'onnx' (did you mean 'onnxrt'?); choose from: onnxrt, torch, trt"


def test_unknown_choice_without_close_match_lists_choices_only():
    assert str(unknown_choice("precision", "bf16x", ["fp32", "int8"])) == \
        "unknown precision 'bf16x'; choose from: fp32, int8"


def test_edgekit_error_is_an_exception_not_a_bug_class():
    # The CLI catches EdgekitError alone; it must not swallow programming errors such as KeyError.
    assert issubclass(EdgekitError, Exception)
    assert not issubclass(EdgekitError, (KeyError, ValueError, TypeError, AssertionError))
