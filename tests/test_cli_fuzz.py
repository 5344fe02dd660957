"""Every option of every command, fed bad values (negative, zero, huge, not a number, empty, a path to a file,
a folder or nothing, as fits its type): exit code 2, one `edgekit: error:` line on stderr and no traceback,
before any work starts, with nothing written. The options are read from edgekit.cli.build_parser(), so a new
option is covered without touching this file; a new command needs a line in BASE and WORK (the test says so).

Runs in-process (edgekit.cli.main) with each command's work function replaced by one that raises: a value
that gets past validation is caught there, so nothing trains or exports. The few values that are valid are
listed in ALLOWED, each with the reason; for those the test checks that validation does let them through."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from edgekit import cli

# The work each command starts once its options are valid (replaced by _reached in these tests).
WORK = {
    "info": ["edgekit.platform.info"],
    "data mnist5k": ["edgekit.data.mnist.write_mnist5k"],
    "data digits-detect": ["edgekit.data.digits_detect.write_digits_detect"],
    "train classify": ["edgekit.train.classify.train_classifier"],
    "train detect": ["edgekit.train.detect.train_detector"],
    "export": ["edgekit.export.onnx.onnx_from_torch", "edgekit.export.fp16.fp16_from_onnx",
               "edgekit.export.int8.int8_from_onnx", "edgekit.export.trt.engine_from_onnx"],
    "bench": ["edgekit.profile.matrix.run_matrix"],
    "compare": ["edgekit.profile.matrix.run_matrix"],
    "camera": ["edgekit.camera.loop.run_camera"],
    "demo": ["edgekit.demo.run_demo"],
    "import": ["edgekit.imports.import_model"],
}

# Valid arguments for each command (positionals by name, then options); MODEL / DIGITS / YAML are filled in.
BASE = {
    "info": ({}, []),
    "data mnist5k": ({}, ["--out", "out"]),
    "data digits-detect": ({}, ["--out", "out"]),
    "train classify": ({}, ["--data", "DIGITS", "--out", "run"]),
    "train detect": ({}, ["--data", "YAML", "--out", "run"]),
    "export": ({"model_dir": "MODEL"}, []),
    "bench": ({"model_dir": "MODEL"}, ["--out", "report"]),
    "compare": ({"model_dir": "MODEL"}, []),
    "camera": ({"input": "clip.mp4"}, []),
    "demo": ({}, []),
    "import": ({"source": "model.onnx"}, ["--out", "imported"]),
}

ZERO_MEANS = {  # options where 0 is a value with a meaning, not a mistake
    "--threads": "0 = the library's default thread count", "--workers": "0 = load in the main process",
    "--seed": "seed 0 is a seed", "--calib-seed": "seed 0 is a seed",
    "--head-epochs": "0 = no head-only warm-up", "--warmup-epochs": "0 = no warm-up",
    "--backbone-lr-scale": "0 = a frozen backbone through the optimizer",
    "--weight-decay": "0 = no decay", "--label-smoothing": "0 = none", "--clip-grad": "0 = off",
    "--hflip": "0 = never flip", "--fliplr": "0 = never flip", "--momentum": "0 = plain SGD",
    "--lr0": "0 = ultralytics' default", "--patience": "0 = never stop early",
    "--mosaic": "0 = no mosaic", "--close-mosaic": "0 = mosaic to the end", "--freeze": "0 = nothing frozen",
    "--val-conf": "0 = every detection counts for mAP", "--parity-images": "0 = skip the parity check",
    "--eval-images": "0 = the whole held-out split", "--check-images": "0 = skip the check",
    "--min-top1-agreement": "0 = report agreement, do not require it",
    "--fp16-min-agreement": "0 = report agreement, do not require it",
    "--int8-budget": "0 = no accuracy loss allowed", "--max-float-nodes": "0 = a quarter of the layers",
    "--latency-rounds": "0 = skip the latency comparison", "--opt-batch": "0 = 1",
    "--max-batch": "0 = max(8, opt batch)", "--dla-core": "0 = the first DLA core", "--warmup": "0 = no warm-up",
    "--conf": "0 = keep every detection", "--max-frames": "0 = until the stream ends",
    "--flip": "0 = CSI flip-method none", "--empty-fraction": "0 = every image has digits",
    "--random-ink": "0 = all digits contrast", "--video-frames": "0 = no test video",
    "--video-switch": "0 = the same digits throughout", "--crops": "0 = no crops", "--crop-jitter": "0 = exact boxes",
    "--crop-images": "0 = no extra crop images", "--int8-min-agreement": "0 = no agreement gate",
    "--source-timeout": "0 = wait for a frame for ever", "--reconnects": "0 = reconnect without limit",
    "--max-minutes": "0 = --epochs decides", "--max-seconds": "0 = no time limit",
}
EMPTY_MEANS = {  # options where an empty string means the default
    "--data": "empty = the dataset recorded in the manifest",
    "--block-ops": "empty = no extra ops kept in FP32", "--block-nodes": "empty = no nodes kept in FP32",
    "--exclude-nodes": "empty = no nodes kept in float", "--skip": "empty = nothing skipped",
    "--det-precision": "empty = the best the model directory has", "--cls-precision": "the same",
    "--device": "empty = each backend's default", "--detector": "empty = no detector",
    "--classifier": "empty = no classifier", "--report": "empty = no report", "--truth": "empty = no scoring",
    "--same-as": "empty = no comparison", "--out": "empty = <model_dir>/bench",
    "--tinygrad-python": "empty = this Python",
    "--task": "empty = from the model", "--labels": "empty = the model's metadata",
    "--decoder": "empty = import: from the output shape; camera, export, bench, compare: the manifest's", "--weights": "empty = the packaged or torchvision ones",
    "--mean": "empty = from the model", "--std": "empty = from the model", "--crop": "empty = the graph's size",
}
ALLOWED: dict[tuple[str, str, str], str] = {
    **{("*", opt, "zero"): why for opt, why in ZERO_MEANS.items()},
    **{("*", opt, "empty"): why for opt, why in EMPTY_MEANS.items()},
    ("export", "--dla-core", "negative"): "-1 = the GPU, no DLA",
    ("export", "--int8-min-agreement", "negative"): "-1 = the task's own minimum (0.9 top-1, 0.7 box mAP)",
    ("export", "--fp16-min-agreement", "negative"): "-1 = the task's own minimum (0.99 top-1, 0.97 box mAP)",
    # Camera outputs are URIs (display://0, a video, a .jsonl, a folder) opened by the camera's sinks; what they
    # accept is the camera runtime's (issue 11, item 4, camera part).
    ("camera", "output", "empty"): "sinks decide", ("camera", "output", "bogus-word"): "a file name",
    ("import", "--imgsz", "zero"): "0 = the size the checkpoint was trained at",
    ("import", "--scale", "zero"): "0 = from the model", ("import", "--resize", "zero"): "0 = from the model",
}
# Values valid only in the combinations given above
ALLOWED_EMPTY_ONLY_FOR = {"--data": {"bench", "compare", "import"}, "--out": {"bench"},
                          "--device": {"bench", "compare", "camera"}}


def _allowed(cmd: str, opt: str, label: str) -> str | None:
    if opt in ALLOWED_EMPTY_ONLY_FOR and label == "empty" and cmd not in ALLOWED_EMPTY_ONLY_FOR[opt]:
        return None
    return ALLOWED.get((cmd, opt, label)) or ALLOWED.get(("*", opt, label))


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {prefix: parser}
    out = {}
    for name, p in subs[0].choices.items():
        out.update(_commands(p, f"{prefix} {name}".strip()))
    return out


def _values(action: argparse.Action) -> list[tuple[str, str | None]]:
    """(label, value) pairs to try; value None: the flag with an explicit value (--flag=x) where it takes none."""
    if action.nargs == 0:
        return [("explicit-value", None)]
    if action.choices:
        return [("bogus-word", "bogus"), ("empty", "")]
    check = getattr(action.type, "check", None)
    typ = getattr(action.type, "typ", action.type or str)
    if typ is int:
        return [("negative", "-1"), ("zero", "0"), ("fraction", "1.5"), ("huge", "9" * 20), ("not-a-number", "abc"),
                ("empty", "")]
    if typ is float:
        return [("negative", "-1"), ("zero", "0"), ("nan", "nan"), ("inf", "inf"), ("huge", "1e400"),
                ("not-a-number", "abc"), ("empty", "")]
    vals = [("empty", "")]
    kind = check.path if check else ""
    if kind in ("dir", "file", "any"):
        vals.append(("missing-path", "no/such/path"))
    if kind in ("dir", "out_dir"):
        vals.append(("a-file", "a-file"))
    if kind in ("file", "out_file"):
        vals.append(("a-folder", "a-folder"))
    if kind in ("out_dir", "out_file"):
        vals.append(("under-a-file", "a-file/out"))
    if check and (check.choices or check.pattern):
        vals.append(("bogus-word", "bogus word"))
    if not check and action.option_strings == [] and action.nargs == "*":
        vals.append(("bogus-word", "bogus word"))
    return vals


def _cases():
    cases = []
    for cmd, parser in _commands(cli.build_parser()).items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            name = action.option_strings[-1] if action.option_strings else action.dest
            for label, value in _values(action):
                cases.append(pytest.param(cmd, name, label, value, id=f"{cmd}|{name}|{label}"))
    return cases


class _Reached(Exception):
    """Raised in place of a command's work: its options got through validation."""


def _reached(*_a, **_k):
    raise _Reached


@pytest.fixture(scope="module")
def fuzz_paths(tmp_path_factory, torch_model_dir, digits_imagefolder) -> dict[str, str]:
    yaml = tmp_path_factory.mktemp("yolo") / "data.yaml"
    yaml.write_text("path: .\ntrain: images/train\nval: images/val\nnames: ['digit']\n")
    return {"MODEL": str(torch_model_dir), "DIGITS": str(digits_imagefolder), "YAML": str(yaml)}


def _tree(root: Path) -> set[tuple[str, float]]:
    return {(str(p.relative_to(root)), p.stat().st_mtime) for p in root.rglob("*")}


def test_every_command_has_a_base_and_its_work():
    assert set(_commands(cli.build_parser())) == set(BASE) == set(WORK)


def test_every_allowed_value_is_still_tried():
    """An entry that no longer matches an option (renamed, removed) is dropped, not left to allow a new one."""
    tried = {(c.values[0], c.values[1], c.values[2]) for c in _cases()}
    for cmd, opt, label in ALLOWED:
        assert any((cmd in ("*", c)) and o == opt and lab == label for c, o, lab in tried), (cmd, opt, label)


@pytest.mark.parametrize("cmd, opt, label, value", _cases())
def test_bad_value_is_one_line_and_exit_2(cmd, opt, label, value, fuzz_paths, tmp_path, monkeypatch, capsys):
    for target in WORK[cmd]:
        monkeypatch.setattr(target, _reached)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not what was asked for\n")
    (tmp_path / "a-folder").mkdir()
    positionals, options = BASE[cmd]
    fill = {k: fuzz_paths.get(v, v) for k, v in positionals.items()}
    options = [fuzz_paths.get(o, o) for o in options]
    if opt.startswith("-"):
        options = options + ([f"{opt}=x"] if value is None else [opt, value])
    else:
        fill[opt] = value
    argv = [*cmd.split(), *fill.values(), *options]
    before, model_before = _tree(tmp_path), _tree(Path(fuzz_paths["MODEL"]))
    capsys.readouterr()
    try:
        rc = cli.main(argv)
    except SystemExit as e:
        rc = e.code
    except _Reached:
        rc = "reached the work"
    err = capsys.readouterr().err
    why = _allowed(cmd, opt, label)
    if why:
        assert rc == "reached the work", f"{argv}: allowed ({why}) but refused: {err}"
        return
    assert rc == 2, f"{argv}: {rc}; stderr: {err}"
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("edgekit: error: "), err
    assert _tree(tmp_path) == before and _tree(Path(fuzz_paths["MODEL"])) == model_before
