"""Run in a subprocess by tests/trt_bindings.py, with a real `tensorrt_bindings` wheel on PYTHONPATH and a
stub of its native libraries on LD_LIBRARY_PATH: writes the module's surface as JSON (stdout).

{"version": "10.3.0", "classes": {qualname: {"bases": [...], "enum": [...] | null, "members": {name: M}}}}
The module itself is the class "" (its functions, classes and values). M is one of
  {"kind": "method", "static": bool, "sigs": [SIG, ...]}   (one SIG per pybind overload)
  {"kind": "property", "writable": bool, "type": "DataType" | null}
  {"kind": "class", "type": qualname}     {"kind": "value", "type": qualname | null}
and every class member has "deprecated": bool (the docs' [DEPRECATED] marks).
SIG = {"params": [{"name", "default": bool, "kind": "pos"|"kwonly"|"varargs"|"varkw"}], "returns": str | null}
Signatures come from pybind's __doc__ (first lines) or inspect for the package's Python functions."""
from __future__ import annotations

import inspect
import json
import re
import sys

KEEP_DUNDERS = {"__init__", "__version__"}


def split_top(text: str) -> list[str]:
    """Split a parameter list on the commas outside brackets (types like Callable[[int], None])."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def parse_params(text: str) -> list[dict]:
    params, kw_only = [], False
    for p in split_top(text):
        if p == "/":
            continue
        if p == "*":
            kw_only = True
            continue
        if p.startswith("**"):
            params.append({"name": p[2:].split(":")[0].strip(), "default": True, "kind": "varkw"})
            continue
        if p.startswith("*"):
            params.append({"name": p[1:].split(":")[0].strip(), "default": True, "kind": "varargs"})
            kw_only = True
            continue
        name = re.split(r"[:=]", p, maxsplit=1)[0].strip()
        params.append({"name": name, "default": "=" in p, "kind": "kwonly" if kw_only else "pos"})
    return params


def parse_doc_sigs(name: str, doc: str | None) -> list[dict]:
    """pybind11 writes `name(a: T, b: U = 0) -> R` as the doc's first line, or one numbered line per
    overload after "Overloaded function."."""
    sigs = []
    for line in (doc or "").splitlines():
        m = re.match(rf"^\s*(?:\d+\.\s+)?{re.escape(name)}\((.*)\)(?:\s*->\s*(.+))?\s*$", line)
        if m and m.group(1) != "*args, **kwargs":
            sigs.append({"params": parse_params(m.group(1)), "returns": (m.group(2) or "").strip() or None})
    return sigs


def python_sigs(fn) -> list[dict]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    kinds = {inspect.Parameter.VAR_POSITIONAL: "varargs", inspect.Parameter.VAR_KEYWORD: "varkw",
             inspect.Parameter.KEYWORD_ONLY: "kwonly"}
    params = [{"name": p.name, "kind": kinds.get(p.kind, "pos"),
               "default": p.default is not p.empty or kinds.get(p.kind) in ("varargs", "varkw")}
              for p in sig.parameters.values()]
    return [{"params": params, "returns": None}]


def qualname(obj, trt) -> str | None:
    t = obj if isinstance(obj, type) else type(obj)
    if not (t.__module__ or "").startswith(trt.__name__):
        return None
    return t.__qualname__


def describe(owner, name: str, obj, trt, is_module: bool) -> dict:
    static = False
    if not is_module:
        raw = inspect.getattr_static(owner, name, None)
        if isinstance(raw, property):
            doc = raw.fget.__doc__ if raw.fget else ""
            m = re.search(r"->\s*(\S+)", doc or "")
            return {"kind": "property", "writable": raw.fset is not None, "type": m.group(1) if m else None}
        static = isinstance(raw, (staticmethod, classmethod))
    if isinstance(obj, type):
        return {"kind": "class", "type": qualname(obj, trt)}
    if inspect.isroutine(obj) or type(obj).__name__ == "instancemethod":  # pybind methods are instancemethods
        sigs = python_sigs(obj) if inspect.isfunction(obj) else parse_doc_sigs(name, getattr(obj, "__doc__", None))
        return {"kind": "method", "static": static or is_module, "sigs": sigs}
    return {"kind": "value", "type": qualname(obj, trt)}


def deprecated_names(doc: str | None) -> set[str]:
    """Members a class's doc marks [DEPRECATED]: `:ivar name: ...` entries (properties) and `  NAME : ...`
    entries (enum values). A mark inside parentheses is about something else (WORKSPACE's doc mentions
    the deprecated IAlgorithmSelector)."""
    entries: dict[str, str] = {}
    name = None
    for line in (doc or "").splitlines():
        m = re.match(r"^\s*:ivar (\w+):(.*)", line) or re.match(r"^  (\w+) :(.*)", line)
        if m:
            name = m.group(1)
            entries[name] = m.group(2)
        elif re.match(r"^\s*:\w+", line):
            name = None
        elif name:
            entries[name] += " " + line.strip()
    out = set()
    for name, text in entries.items():
        while re.search(r"\([^()]*\)", text):
            text = re.sub(r"\([^()]*\)", "", text)
        if "[DEPRECATED]" in text:
            out.add(name)
    return out


def dump_class(cls, key: str, trt, out: dict) -> None:
    if key in out:
        return
    enum = getattr(cls, "__members__", None)
    entry = {"bases": [b.__qualname__ for b in cls.__mro__[1:] if (b.__module__ or "").startswith(trt.__name__)],
             "enum": sorted(enum) if isinstance(enum, dict) else None, "members": {}}
    out[key] = entry
    deprecated = deprecated_names(cls.__doc__)
    for name in dir(cls):
        if name.startswith("__") and name not in KEEP_DUNDERS:
            continue
        if name == "__init__" and not any("__init__" in vars(b) for b in cls.__mro__
                                          if (b.__module__ or "").startswith(trt.__name__)):
            continue  # no constructor bound: pybind11_object's __init__ raises
        try:
            obj = getattr(cls, name)
        except AttributeError:
            continue
        entry["members"][name] = describe(cls, name, obj, trt, False)
        doc = getattr(obj, "__doc__", None) if entry["members"][name]["kind"] == "method" else None
        entry["members"][name]["deprecated"] = name in deprecated or "[DEPRECATED]" in (doc or "")
        if isinstance(obj, type) and qualname(obj, trt):
            dump_class(obj, obj.__qualname__, trt, out)


def main() -> None:
    import tensorrt_bindings as trt

    classes: dict = {}
    module = {"bases": [], "enum": None, "members": {}}
    for name in dir(trt):
        if name.startswith("_") and name not in KEEP_DUNDERS:
            continue
        obj = getattr(trt, name)
        if inspect.ismodule(obj):
            continue
        module["members"][name] = describe(trt, name, obj, trt, True)
        if isinstance(obj, type) and qualname(obj, trt):
            dump_class(obj, obj.__qualname__, trt, classes)
    classes[""] = module
    json.dump({"version": trt.__version__, "classes": classes}, sys.stdout)


if __name__ == "__main__":
    main()
