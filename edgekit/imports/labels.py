"""Class names for an imported model: a --labels file (txt, yaml or json) or ultralytics' ONNX metadata, and
the check that their count matches what the model outputs."""
from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError


def read_labels(path: str | Path) -> list[str]:
    """A .txt (one name a line, blank lines ignored), or .yaml/.yml/.json holding a list, a mapping id: name
    (ids 0..n-1) or either under `names:` (a YOLO data.yaml)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise EdgekitError(f"cannot read --labels {path} ({e}): pass a text, YAML or JSON file of class names") from None
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        import yaml

        try:
            data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as e:
            raise EdgekitError(f"--labels {path} is not valid {path.suffix[1:].upper()} ({str(e)[:120]})") from None
        if isinstance(data, dict) and "names" in data:
            data = data["names"]
        return names_from(data, f"--labels {path}")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise EdgekitError(f"--labels {path} holds no class names: one name a line")
    return names


def names_from(data: Any, where: str) -> list[str]:
    """A list of names, or a mapping id -> name whose ids are 0..n-1."""
    if isinstance(data, dict):
        try:
            ids = sorted(int(k) for k in data)
        except (TypeError, ValueError):
            raise EdgekitError(f"{where}: class ids must be integers, got {sorted(map(str, data))[:5]}") from None
        if ids != list(range(len(ids))):
            raise EdgekitError(f"{where}: class ids must be 0..{len(ids) - 1} without gaps, got {ids[:10]}")
        data = [data[k] if k in data else data[str(k)] for k in ids]
    if not isinstance(data, list) or not data:
        raise EdgekitError(f"{where}: expected a list of class names or a mapping id: name")
    return [str(n) for n in data]


def metadata_names(text: str) -> list[str] | None:
    """ultralytics writes names as a Python dict literal ("{0: 'person', ...}"): read with literal_eval (literals
    only, never code); None when it is not one."""
    try:
        return names_from(ast.literal_eval(text), "the ONNX metadata 'names'")
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, EdgekitError):
        return None


def check_count(labels: list[str], classes: int, source: str, where: str) -> None:
    if len(labels) != classes:
        raise EdgekitError(f"{where} has {len(labels)} class names but {source} outputs {classes} classes: pass "
                           f"--labels with {classes} names (one per output class, in order)")
