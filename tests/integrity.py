"""What must hold after any command, failed or not (issue 11): nothing half-written. Import from any test:

    from integrity import assert_model_dir_intact, leftover_temp_files
    assert_model_dir_intact(model_dir)   # no temp files, the manifest loads, every artifact's sha256 matches

Temp names are edgekit.fileio's: `.NAME.XXXX.tmp` files (atomic_path) and `.NAME.XXXX` folders (atomic_dir)."""
from __future__ import annotations

import re
from pathlib import Path

_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}(\.tmp)?$")  # mkstemp/mkdtemp's random suffix after the dest name


def leftover_temp_files(root: str | Path) -> list[Path]:
    """Every temp file or folder fileio's atomic helpers leave behind if interrupted, anywhere under `root`."""
    root = Path(root)
    if not root.exists():
        return []
    return sorted(p for p in [root, *root.rglob("*")] if _TEMP.match(p.name))


def assert_model_dir_intact(model_dir: str | Path) -> None:
    """The manifest loads, each artifact it lists exists with the recorded sha256, and no temp file is left."""
    from edgekit.manifest import Manifest

    model_dir = Path(model_dir)
    assert not leftover_temp_files(model_dir), leftover_temp_files(model_dir)
    m = Manifest.load(model_dir)
    for art in m.artifacts:
        m.artifact_path(art)  # raises EdgekitError when missing or changed
