"""`edgekit info` and every command's `--help` on a machine without OpenCV, torch or matplotlib (a fresh
JetPack 6 device before its libraries are in place, or a venv that cannot see JetPack's cv2). The libraries
are hidden in a subprocess by an import hook, so the test runs here with all of them installed."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgekit.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = ("cv2", "torch", "torchvision", "matplotlib", "ultralytics", "onnx", "onnxruntime", "onnxslim",
          "tensorrt", "tensorrt_bindings", "tinygrad", "cuda", "pycuda", "PIL", "scipy")

# Installed-but-broken: what JetPack's cv2 4.8 (built on numpy 1.x) raises when numpy 2 is installed.
SHIM = textwrap.dedent("""
    import importlib.abc, importlib.machinery, sys
    HIDDEN, BROKEN = set(sys.argv[1].split(",")), set(filter(None, sys.argv[2].split(",")))

    class Broken(importlib.abc.Loader):
        def create_module(self, spec):
            return None
        def exec_module(self, module):
            raise ImportError("numpy.core.multiarray failed to import")

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            top = name.split(".")[0]
            if top in BROKEN:
                return importlib.machinery.ModuleSpec(name, Broken())
            if top in HIDDEN:
                raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)", name=name)
            return None

    sys.meta_path.insert(0, Hide())
    from edgekit.cli import main
    if sys.argv[3] != "--each":
        sys.exit(main(sys.argv[3:]))
    import contextlib, io, json  # --each JSON: one interpreter runs every command line, reports each
    results = []
    for argv in json.loads(sys.argv[4]):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as e:
                code = e.code
        results.append([code, out.getvalue(), err.getvalue()])
    print(json.dumps(results))
""")


def run_hidden(args: list[str], tmp_path: Path, broken: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    hidden = [h for h in HIDDEN if h not in broken]
    return subprocess.run([sys.executable, "-c", SHIM, ",".join(hidden), ",".join(broken), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


def command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every subcommand path of the parser (info, data mnist5k, train detect, ...), found by walking it."""
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append(prefix + (name,))
                paths += command_paths(sub, prefix + (name,))
    return paths


COMMANDS = command_paths(build_parser())


def test_every_command_is_enumerated():
    names = {" ".join(c) for c in COMMANDS}
    assert {"info", "data mnist5k", "data digits-detect", "train classify", "train detect", "export", "bench",
            "compare", "camera", "demo"} <= names


@pytest.fixture(scope="module")
def helps(tmp_path_factory) -> dict[tuple[str, ...], tuple[int, str, str]]:
    """Every command's --help, all in one interpreter with the libraries hidden (a fresh one per command
    would cost a second each)."""
    cmds = [(), *COMMANDS]
    p = run_hidden(["--each", json.dumps([[*c, "--help"] for c in cmds])], tmp_path_factory.mktemp("help"))
    assert p.returncode == 0, p.stderr
    return dict(zip(cmds, map(tuple, json.loads(p.stdout.splitlines()[-1]))))


@pytest.mark.parametrize("cmd", [(), *COMMANDS], ids=lambda c: " ".join(c) or "edgekit")
def test_help_without_optional_libraries(helps, cmd):
    code, out, err = helps[cmd]
    assert code == 0, err
    assert out.startswith(f"usage: edgekit {' '.join(cmd)}".rstrip()), out[:200]
    assert "Traceback" not in err


def test_info_without_optional_libraries(tmp_path):
    p = run_hidden(["info"], tmp_path)
    assert p.returncode == 0, p.stderr
    rows = dict(line.split(None, 1) for line in p.stdout.splitlines() if line.strip() and "  " in line)
    assert rows["edgekit"].strip() and rows["python"].strip() == ".".join(map(str, sys.version_info[:3]))
    assert "GStreamer: ?" in p.stdout  # OpenCV hidden: its GStreamer support is unknown, not a crash
    assert "FAILS" not in p.stdout  # hidden is not installed: nothing is reported as broken


def test_info_reports_a_cv2_that_fails_to_import(tmp_path):
    """JetPack's cv2 under numpy 2 raises ImportError at import: info names it and the fix, exit 0."""
    p = run_hidden(["info"], tmp_path, broken=("cv2",))
    assert p.returncode == 0, p.stderr
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("cv2 import"))
    assert "FAILS: ImportError: numpy.core.multiarray failed to import" in line and "numpy<2" in line


def test_a_command_that_needs_opencv_says_how_to_get_it(tmp_path):
    """Past --help, a command that really needs cv2 fails with one line naming the install, exit 2."""
    p = run_hidden(["data", "mnist5k", "--out", str(tmp_path / "m")], tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    err = p.stderr.strip().splitlines()[-1]
    assert err.startswith("edgekit: error: cv2 cannot be imported") and "libopencv-python" in err


def test_info_on_python310_says_where_tinygrad_goes(monkeypatch, capsys):
    """JetPack 6's Python 3.10 cannot have tinygrad 0.14: info says what to do instead of just 'not installed'."""
    import argparse as ap

    from edgekit import cli, platform

    facts = platform.info()
    facts["libraries"] = {**facts["libraries"], "tinygrad": None}
    monkeypatch.setattr(platform, "info", lambda: facts)
    monkeypatch.setattr(sys, "version_info", (3, 10, 12, "final", 0))
    assert cli.cmd_info(ap.Namespace(json=False)) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("tinygrad"))
    assert "needs Python >= 3.11" in line and "--tinygrad-python" in line
