"""User-facing errors. An EdgekitError is a mistake in the input, not a bug: its message says the fix,
and the CLI prints it without a traceback and exits non-zero."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgekitError(Exception):
    """A user error whose message names the fix."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_choice(kind: str, word: str, choices: Iterable[str]) -> EdgekitError:
    choices = sorted(choices)
    return EdgekitError(f"unknown {kind} '{word}'{did_you_mean(word, choices)}; choose from: {', '.join(choices)}")


def model_file_hint(path: object) -> str:
    """For a model FILE passed where a model directory is expected: what the file is and the `edgekit import`
    command that makes a directory from it ('' when it does not look like a model file)."""
    from pathlib import Path

    p = Path(str(path))
    suffix = p.suffix.lower()
    try:
        with open(p, "rb") as f:
            zipped = f.read(4) == b"PK\x03\x04"  # torch.save's format (an ultralytics .pt)
    except OSError:
        zipped = False
    if suffix == ".onnx":
        return (f"{p} is an ONNX model file, not a model directory: make one from it with `edgekit import {p} --out "
                "DIR` and pass DIR")
    if suffix in (".pt", ".pth") or zipped:
        return (f"{p} is a PyTorch checkpoint, not a model directory: for an ultralytics detector run `edgekit import "
                f"{p} --out DIR --trust-pickle` (it is a pickle: only if you trust who made it) and pass DIR")
    if suffix in (".engine", ".plan", ".trt"):
        return (f"{p} is a TensorRT engine, not a model directory: import the ONNX it was built from (`edgekit import "
                "MODEL.onnx --out DIR`), then `edgekit export DIR --to trt`")
    return ""
