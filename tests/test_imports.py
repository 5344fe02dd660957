"""The import graph: no cycle among edgekit's modules (function-local imports count: they hide a cycle from
the reader, not from the design), the task layer imports only what lies below it, and every module imports
alone in a fresh interpreter (a module that works only after another was imported first is a hidden cycle)."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edgekit"
# what the task layer may import (STYLE.md: ... runners -> tasks -> data -> vision -> manifest, zoo, configs ->
# fileio, errors, platform); compare and lazy are numpy / stdlib helpers below all of them
BELOW_TASKS = ("tasks", "data", "vision", "manifest", "zoo", "configs", "fileio", "errors", "platform", "compare",
               "lazy")


def module_files() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its own name, not `.__init__`)."""
    mods = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = p
    return mods


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The edgekit modules `path` imports, at any depth in the file (`from a.b import c` counts a.b, and a.b.c
    when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != "edgekit"}
    return found


def import_graph() -> dict[str, set[str]]:
    mods = module_files()
    return {m: imports_of(p, set(mods)) - {m} for m, p in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    graph = import_graph()
    assert "edgekit.tasks" in graph and "edgekit.tasks" in graph["edgekit.export.fp16"]  # the walk sees imports
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_task_layer_imports_only_what_lies_below_it():
    graph = import_graph()
    upward = {m: sorted(t for t in targets if t.split(".")[1] not in BELOW_TASKS)
              for m, targets in graph.items() if m.startswith("edgekit.tasks")}
    assert len(upward) >= 4 and not any(upward.values()), upward


def _import_alone(module: str, banned: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    code = (f"import sys; import {module}; "
            f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {banned!r}); "
            "sys.exit(f'imported {loaded}' if loaded else 0)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)


TASK_LAYER = sorted(m for m in module_files() if m.startswith("edgekit.tasks")) + ["edgekit.data.inputs"]


@pytest.mark.parametrize("module", TASK_LAYER)
def test_task_layer_modules_import_alone_without_heavy_libraries(module):
    """Every stage asks the task, the camera loop and the onnxrt runner included: the task layer never pulls in
    torch, ONNX Runtime or TensorRT."""
    p = _import_alone(module, banned=("torch", "onnxruntime", "tensorrt", "tinygrad", "ultralytics"))
    assert p.returncode == 0, p.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("module", sorted(m for m in module_files() if m != "edgekit.__main__"))
def test_every_module_imports_alone(module):
    p = _import_alone(module)
    assert p.returncode == 0, p.stderr[-2000:]
