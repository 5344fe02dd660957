"""Classification metrics and the confusion-matrix plot."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.fileio import atomic_path


def classification_metrics(logits: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """top-1, top-5 (when there are more than 5 classes), per-class accuracy and the confusion matrix."""
    pred = logits.argmax(1)
    k = min(5, logits.shape[1])
    top5 = (np.argsort(-logits, axis=1)[:, :k] == labels[:, None]).any(1)
    cm = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(cm, (labels, pred), 1)
    per_class = {c: (float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None) for i, c in enumerate(classes)}
    return {"top1": float((pred == labels).mean()), f"top{k}": float(top5.mean()), "n": int(len(labels)),
            "per_class": per_class, "confusion": cm.tolist()}


def plot_confusion(cm: list[list[int]], classes: list[str], dest: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * n + 2), max(3.5, 0.5 * n + 1.5)))
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        ax.set_xticks(range(n), classes, rotation=90 if n > 10 else 0)
        ax.set_yticks(range(n), classes)
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (row-normalised colour, counts)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return dest
