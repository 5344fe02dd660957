"""Output parity between two backends on the same inputs (Polygraphy-style): the numbers that answer
"works in PyTorch, wrong in the exported model". numpy only."""
from __future__ import annotations

import numpy as np


def compare_logits(ref: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """Max abs error, that error relative to the reference's scale (max |ref|), the worst per-sample
    cosine similarity, and top-1 agreement, for [N, C] outputs."""
    ref = np.asarray(ref, np.float64).reshape(len(ref), -1)
    test = np.asarray(test, np.float64).reshape(len(test), -1)
    if ref.shape != test.shape:
        raise ValueError(f"output shapes differ: {ref.shape} vs {test.shape}")
    err = np.abs(ref - test)
    scale = float(np.abs(ref).max()) or 1.0
    denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(test, axis=1)
    cos = np.where(denom > 0, (ref * test).sum(1) / np.maximum(denom, 1e-30), 1.0)
    return {"n": int(len(ref)), "max_abs": float(err.max()), "mean_abs": float(err.mean()), "scale": scale,
            "max_rel": float(err.max() / scale), "min_cosine": float(cos.min()),
            "top1_agreement": float((ref.argmax(1) == test.argmax(1)).mean())}
