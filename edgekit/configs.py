"""Dataclass configs <-> argparse. Each command keeps its typed defaults in one dataclass whose fields carry
a trailing `# comment`; those comments become the --help text, so the defaults live in one visible place."""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
from typing import Any, get_type_hints

_COMMENT = re.compile(r"^\s+(\w+)\s*:[^=#]+(?:=[^#]*)?#\s*(.+)$")


def _field_comments(cls: type) -> dict[str, str]:
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    return {m.group(1): m.group(2).strip() for m in map(_COMMENT.match, src.splitlines()) if m}


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = (),
                       positional: tuple[str, ...] = ()) -> None:
    """One --flag per field (underscores become dashes); booleans get --x / --no-x."""
    helps = _field_comments(cls)
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name.isupper():
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_ = f"{helps.get(f.name, '')} (default: {default!r})".strip().replace("%", "%%")
        typ = hints[f.name]
        if f.name in positional:
            parser.add_argument(f.name, help=helps.get(f.name, "").replace("%", "%%"))
        elif typ is bool:
            parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=default,
                                action=argparse.BooleanOptionalAction, help=help_)
        else:
            conv = {int: int, float: float}.get(typ, str)
            parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=conv, default=default,
                                help=help_)


def dataclass_from_args(cls: type, args: argparse.Namespace) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in vars(args).items() if k in names})
