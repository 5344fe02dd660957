"""Dataclass configs <-> argparse. Each command keeps its typed defaults in one dataclass whose fields carry
a trailing `# comment`; those comments become the --help text, so the defaults live in one visible place.
What a field accepts (a range, a set of words, a pattern, an existing path) is declared beside it with
`option(...)`, and checked the same way for a flag, a recipe file's value and a config built in code."""
from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import math
import os
import re
from pathlib import Path
from typing import Any, get_type_hints

# ONNX opsets the exports accept. torch 2.14's torch.onnx.export(dynamo=False) writes opsets 9..23 that pass
# onnx.checker and ONNX Runtime parity (mobilenet_v2/v3_small, resnet18, efficientnet_b0); it refuses 2-4 and
# 24+, and 1, 5-8 fail. INT8's per-channel Q/DQ needs 13 (DequantizeLinear's axis): opset 9-12 exported, then
# failed at `--precision int8`. TensorRT 10.3 (JetPack 6) parses up to 17 fully.
ONNX_OPSETS = (13, 23)
MAX_INT = 2**31 - 1  # every integer option fits a C int (what torch, OpenCV and the runtimes take)
PATH_KINDS = ("dir", "file", "any", "out_dir", "out_file")  # inputs that must exist / outputs that must be writable


@dataclasses.dataclass(frozen=True)
class Check:
    """What one field accepts. Bounds apply to numbers; `choices` and `pattern` (a full match) to words;
    `path` to a path: an input that must exist (dir, file, any) or an output that can be written there
    (out_dir, out_file). `empty` allows '' for a str (it means the default); `hint` says it in words."""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] = ()
    pattern: str = ""
    path: str = ""
    empty: bool = False
    hint: str = ""

    def __post_init__(self) -> None:
        if self.path not in ("", *PATH_KINDS):
            raise ValueError(f"unknown path kind {self.path!r}; one of {PATH_KINDS}")

    def problem(self, value: Any) -> str | None:
        """Why `value` is refused ('must be ...'), or None when it is accepted."""
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, (int, float)):
            return self._number_problem(value)
        if isinstance(value, str):
            return self._text_problem(value)
        return None

    def _number_problem(self, v: float) -> str | None:
        if not math.isfinite(v):
            return f"must be a finite number, got {v!r}"
        if isinstance(v, int) and abs(v) > MAX_INT:
            return f"is too large (the limit is {MAX_INT}), got {v!r}"
        if ((self.ge is not None and v < self.ge) or (self.gt is not None and v <= self.gt)
                or (self.le is not None and v > self.le) or (self.lt is not None and v >= self.lt)):
            return f"must be {self.hint or self.range_text()}, got {v!r}"
        return None

    def range_text(self) -> str:
        if self.ge is not None and self.le is not None:
            return f"from {_num(self.ge)} to {_num(self.le)}"
        parts = [f"{w} {_num(b)}" for b, w in ((self.ge, ">="), (self.gt, ">"), (self.le, "<="), (self.lt, "<"))
                 if b is not None]
        return " and ".join(parts)

    def _text_problem(self, v: str) -> str | None:
        if not v:
            return None if self.empty else f"must not be empty{f' ({self.hint})' if self.hint else ''}"
        if self.choices and v not in self.choices:
            from edgekit.errors import did_you_mean

            return f"must be one of {', '.join(self.choices)}{did_you_mean(v, self.choices)}, got {v!r}"
        if self.pattern and not re.fullmatch(self.pattern, v):
            return f"must be {self.hint or 'of the form ' + self.pattern}, got {v!r}"
        if self.path:
            return path_problem(v, self.path)
        return None


def _num(b: float) -> str:
    return str(int(b)) if float(b).is_integer() else repr(b)


def option(default: Any, **check: Any) -> Any:
    """A dataclass field with a default and what it accepts: `imgsz: int = option(224, ge=16)  # comment`."""
    return dataclasses.field(default=default, metadata={"check": Check(**check)})


def field_check(f: dataclasses.Field) -> Check | None:
    return f.metadata.get("check")


def path_problem(path: str, kind: str) -> str | None:
    """Why `path` cannot be used as `kind` (PATH_KINDS), or None. Outputs: the nearest existing folder above
    must be a writable folder (and the path itself a folder or a file, as asked), so a command fails in the
    first second rather than after its work."""
    p = Path(path).expanduser()
    if kind in ("dir", "file", "any"):
        if not p.exists():
            return f"names nothing: {path} does not exist"
        if kind == "dir" and not p.is_dir():
            from edgekit.errors import model_file_hint

            hint = model_file_hint(p)
            return f"must be a folder, and {hint}" if hint else f"must be a folder, and {path} is a file"
        if kind == "file" and not p.is_file():
            return f"must be a file, and {path} is {'a folder' if p.is_dir() else 'not a regular file'}"
        return None
    if p.exists():
        if kind == "out_dir" and not p.is_dir():
            return f"must be a folder to write into, and {path} is a file"
        if kind == "out_file" and p.is_dir():
            return f"must be a file to write, and {path} is a folder"
        here = p if p.is_dir() else p.parent
    else:
        here = p.parent
        while not here.exists() and here != here.parent:
            here = here.parent
        if not here.is_dir():
            return f"cannot be created: {here} is a file, not a folder"
    if not os.access(here, os.W_OK | os.X_OK):
        return f"cannot be written: {here} is read-only (for this user)"
    return None


def check_values(cls: type, values: dict[str, Any], where: str = "") -> None:
    """Raise EdgekitError naming the first value a field of `cls` refuses (`where`: a recipe file's name;
    empty: the values are flags)."""
    from edgekit.errors import EdgekitError

    for f in dataclasses.fields(cls):
        check = field_check(f)
        if check is None or f.name not in values:
            continue
        why = check.problem(values[f.name])
        if why:
            what = f"{where}: '{f.name}'" if where else f"--{f.name.replace('_', '-')}"
            raise EdgekitError(f"{what} {why}")


def check_config(cfg: Any) -> None:
    """Check every declared field of a config built in code (the CLI checks flags and recipes as it reads them)."""
    check_values(type(cfg), dataclasses.asdict(cfg))


class _Value:
    """argparse type= for a declared field: converts, then checks, so a bad flag is one usage error."""

    def __init__(self, typ: type, check: Check | None) -> None:
        self.typ, self.check = typ, check
        self.__name__ = typ.__name__  # argparse names the type in its "invalid ... value" message

    def __call__(self, text: str) -> Any:
        try:
            value = self.typ(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if self.typ is int else 'a number'}, "
                                             f"got {text!r}") from None
        why = (self.check or Check()).problem(value) if self.typ is not str or self.check else None
        if why:
            raise argparse.ArgumentTypeError(why)
        return value


def value_type(typ: type = str, **check: Any) -> _Value:
    """argparse type= for an option declared by hand (not from a dataclass field): `value_type(path="dir")`."""
    return _Value(typ, Check(**check))


class OneLineParser(argparse.ArgumentParser):
    """A usage error is one line on stderr naming the --help to read, and exit code 2 (not argparse's
    multi-line usage block), like every other edgekit error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"edgekit: error: {message} (see `{self.prog} --help`)\n")

_COMMENT = re.compile(r"^\s+(\w+)\s*:[^=#]+(?:=[^#]*)?#\s*(.+)$")


@functools.lru_cache(maxsize=None)  # reading a class's source is ~3/4 of building the CLI's parser
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
        typ = _plain(hints[f.name])
        if f.name in positional:
            nargs = "*" if getattr(typ, "__origin__", None) is list else None
            parser.add_argument(f.name, nargs=nargs, default=argparse.SUPPRESS, help=helps.get(f.name, "").replace(
                "%", "%%"), type=None if nargs else _Value(str, field_check(f)))
        elif getattr(typ, "__origin__", None) is list:
            parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, action="append",
                                default=argparse.SUPPRESS, help=help_ + " (repeatable)")
        elif typ is bool:
            parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=argparse.SUPPRESS,
                                action=argparse.BooleanOptionalAction, help=help_)
        else:
            conv = _Value({int: int, float: float}.get(typ, str), field_check(f))
            parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=conv,
                                default=argparse.SUPPRESS, help=help_)


def _plain(typ: Any) -> Any:
    """`X | None` -> X: an optional field's flag takes an X (absent, the field keeps its None)."""
    args = getattr(typ, "__args__", ())
    rest = [a for a in args if a is not type(None)]
    return rest[0] if type(None) in args and len(rest) == 1 else typ


def dataclass_from_args(cls: type, args: argparse.Namespace, recipe: str | None = None) -> Any:
    """The dataclass from its defaults, then the recipe file's values (JSON or YAML; unknown keys are an
    error), then the flags given on the command line."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = load_recipe(recipe, cls) if recipe else {}
    values.update({k: v for k, v in vars(args).items() if k in names})
    check_values(cls, values)  # flags were checked as they were parsed; this catches a namespace built in code
    return cls(**values)


def _coerce(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    """Check each value against its field's type (YAML reads 1e-3 as a string: accept numeric strings)."""
    from edgekit.errors import EdgekitError

    hints = get_type_hints(cls)
    out = {}
    for k, v in values.items():
        typ = _plain(hints[k])
        if v is None and typ is not hints[k]:  # an optional field left to its default
            out[k] = v
            continue
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
    values = _coerce(cls, data, path)
    check_values(cls, values, path)
    return values
