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
    """One --flag per field (underscores become dashes); booleans get --x / --no-x. Flags left out are
    absent from the namespace (argparse.SUPPRESS), so a recipe file's values survive unless overridden."""
    helps = _field_comments(cls)
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name.isupper():
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_ = f"{helps.get(f.name, '')} (default: {default!r})".strip().replace("%", "%%")
        typ = hints[f.name]
        if f.name in positional:
            nargs = "*" if getattr(typ, "__origin__", None) is list else None
            parser.add_argument(f.name, nargs=nargs, default=argparse.SUPPRESS,
                                help=helps.get(f.name, "").replace("%", "%%"))
        elif getattr(typ, "__origin__", None) is list:
            parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, action="append",
                                default=argparse.SUPPRESS, help=help_ + " (repeatable)")
        elif typ is bool:
            parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=argparse.SUPPRESS,
                                action=argparse.BooleanOptionalAction, help=help_)
        else:
            conv = {int: int, float: float}.get(typ, str)
            parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=conv,
                                default=argparse.SUPPRESS, help=help_)


def dataclass_from_args(cls: type, args: argparse.Namespace, recipe: str | None = None) -> Any:
    """The dataclass from its defaults, then the recipe file's values (JSON or YAML; unknown keys are an
    error), then the flags given on the command line."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = load_recipe(recipe, cls) if recipe else {}
    values.update({k: v for k, v in vars(args).items() if k in names})
    return cls(**values)


def _coerce(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    """Check each value against its field's type (YAML reads 1e-3 as a string: accept numeric strings)."""
    from edgekit.errors import EdgekitError

    hints = get_type_hints(cls)
    out = {}
    for k, v in values.items():
        typ = hints[k]
        try:
            if getattr(typ, "__origin__", None) is list:
                if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                    raise ValueError
            elif typ is bool and not isinstance(v, bool):
                raise ValueError
            if typ is float and not isinstance(v, bool):
                v = float(v)
            elif typ is int and not isinstance(v, bool):
                if float(v) != int(float(v)):
                    raise ValueError
                v = int(float(v))
            elif typ is str and not isinstance(v, str):
                raise ValueError
        except (TypeError, ValueError):
            raise EdgekitError(f"{where}: '{k}' must be {getattr(typ, '__name__', typ)}, got {v!r}") from None
        out[k] = v
    return out


def load_recipe(path: str, cls: type) -> dict[str, Any]:
    """A recipe file's options for dataclass `cls`, type-checked."""
    import yaml

    from edgekit.errors import EdgekitError

    try:
        with open(path) as f:
            data = yaml.safe_load(f)  # YAML is a superset of JSON; safe_load never runs code
    except OSError as e:
        raise EdgekitError(f"cannot read recipe {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise EdgekitError(f"recipe {path} is not valid YAML/JSON: {e}") from None
    if not isinstance(data, dict):
        raise EdgekitError(f"recipe {path} must be a mapping of option: value")
    names = {f.name for f in dataclasses.fields(cls) if not f.name.isupper()}
    unknown = sorted(set(data) - names)
    if unknown:
        raise EdgekitError(f"recipe {path}: unknown option(s) {unknown}; allowed: {sorted(names)}")
    return _coerce(cls, data, path)
