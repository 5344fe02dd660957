"""A folder of images without labels (any depth, any file names): what `--calib-data` calibrates and measures
agreement on, and what `edgekit import` checks parity on. Unreadable files are skipped and counted."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgekit.data.imagefolder import CACHE_LIMIT_BYTES, IMAGE_EXTS, ImageSet, decode_image
from edgekit.errors import EdgekitError

log = logging.getLogger(__name__)


def load_unlabelled(root: str | Path, *, minimum: int, what: str) -> ImageSet:
    """Every readable image under `root` (sorted by path), as an ImageSet of one class 'unlabelled'. Fewer
    than `minimum` readable images is an error naming `what` needs them."""
    root = Path(root)
    if not root.is_dir():
        raise EdgekitError(f"{root} is not a folder: {what} takes a folder of images (no labels needed)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    cache = sum(p.stat().st_size for p in files) <= CACHE_LIMIT_BYTES
    paths, images, skipped = [], [], []
    for p in files:
        img, why = decode_image(p)
        if img is None:
            skipped.append((p, why))
            continue
        paths.append(p)
        if cache:
            images.append(img)
    if skipped:
        log.warning("skipped %d unreadable image(s) under %s, e.g. %s (%s)", len(skipped), root, *skipped[0])
    if len(paths) < minimum:
        raise EdgekitError(f"{root} holds {len(paths)} readable image(s) ({', '.join(sorted(IMAGE_EXTS))}); {what} "
                           f"needs at least {minimum}: add pictures like the ones the model will see (no labels "
                           "needed)")
    return ImageSet(["unlabelled"], paths, np.zeros(len(paths), np.int64), images if cache else None, skipped)
