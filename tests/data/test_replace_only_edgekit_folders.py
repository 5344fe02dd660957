"""--force replaces only a folder edgekit made (issue 11, item 2): `edgekit data mnist5k --out . --force`
emptied the current folder and `--out SOMEDIR --force` wiped a folder edgekit did not create. Every folder
atomic_dir makes records what it wrote (.edgekit-made.json); nothing else is ever replaced."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from integrity import leftover_temp_files

from edgekit.cli import main
from edgekit.errors import EdgekitError
from edgekit.fileio import MADE_MARKER, atomic_dir, check_replaceable


def _refused(capsys, argv: list[str], expect: str) -> None:
    try:
        rc = main(argv)
    except SystemExit as e:  # refused while the options are read (argparse exits with 2)
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("edgekit: error:")]
    assert "Traceback" not in err and len(lines) == 1 and expect in lines[0], err
    assert "--force" not in lines[0]  # never suggested where it would delete what edgekit did not write


@pytest.mark.parametrize("out, expect", [(".", "the current folder"), ("..", "a folder above the current one"),
                                         ("/", "is /:"), ("~", "your home folder")])
def test_force_refuses_cwd_its_ancestors_root_and_home(tmp_path, monkeypatch, capsys, out, expect):
    work = tmp_path / "home" / "me" / "work"
    work.mkdir(parents=True)
    (work / "thesis.tex").write_text("keep me")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    _refused(capsys, ["data", "mnist5k", "--out", out, "--force"], expect)
    _refused(capsys, ["data", "digits-detect", "--out", out, "--force"], expect)
    assert sorted(os.listdir(work)) == ["thesis.tex"] and (work / "thesis.tex").read_text() == "keep me"
    assert os.listdir(tmp_path / "home" / "me") == ["work"]


def test_force_refuses_a_folder_edgekit_did_not_make(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"...")
    for cmd in ("mnist5k", "digits-detect"):
        _refused(capsys, ["data", cmd, "--out", str(photos), "--force"], "holds files edgekit did not write")
    (tmp_path / "file").write_text("x")
    _refused(capsys, ["data", "mnist5k", "--out", str(tmp_path / "file"), "--force"], "is a file")
    assert os.listdir(photos) == ["holiday.jpg"] and (tmp_path / "file").read_text() == "x"
    assert not leftover_temp_files(tmp_path)


def test_force_replaces_a_folder_edgekit_made_unless_it_holds_foreign_files(tmp_path, capsys):
    out = tmp_path / "m5k"
    assert main(["data", "mnist5k", "--out", str(out)]) == 0
    made = json.loads((out / MADE_MARKER).read_text())
    assert made["made_by"] == "edgekit" and len(made["files"]) == 4001  # 4,000 images and .complete
    victim = next((out / "val" / "3").iterdir())
    victim.write_bytes(b"damaged")  # a file edgekit wrote, changed: still edgekit's to replace
    (out / "labels.cache").write_bytes(b"")  # what ultralytics adds beside labels: tolerated
    assert main(["data", "mnist5k", "--out", str(out), "--force"]) == 0
    assert victim.read_bytes()[:4] == b"\x89PNG" and not (out / "labels.cache").exists()
    (out / "val" / "3" / "notes.txt").write_text("mine")
    _refused(capsys, ["data", "mnist5k", "--out", str(out), "--force"], "(val/3/notes.txt)")
    assert (out / "val" / "3" / "notes.txt").read_text() == "mine"
    assert not leftover_temp_files(tmp_path)


def test_atomic_dir_leaves_the_old_folder_when_the_build_fails(tmp_path):
    dest = tmp_path / "d"
    with atomic_dir(dest) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(dest) as tmp:
        (tmp / "a.txt").write_text("2")
        raise RuntimeError("interrupted")
    assert (dest / "a.txt").read_text() == "1" and not leftover_temp_files(tmp_path)
    with atomic_dir(dest) as tmp:
        (tmp / "b.txt").write_text("3")
    assert sorted(os.listdir(dest)) == [MADE_MARKER, "b.txt"] and not leftover_temp_files(tmp_path)


def test_an_empty_or_missing_folder_is_fine_a_marker_of_another_tool_is_not(tmp_path):
    check_replaceable(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty")
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / MADE_MARKER).write_text("not json")
    (fake / "x").write_text("")
    with pytest.raises(EdgekitError, match=r"did not write \(\.edgekit-made\.json and 1 more\)"):
        check_replaceable(Path(fake))


def test_a_made_folder_has_a_plain_mkdir_mode_not_mkdtemps_0700(tmp_path):
    """atomic_dir builds in a mkdtemp folder (mode 0700): a model or data folder others on the device (a
    container user, a service account) cannot read was the result; it gets the mode of a plain mkdir."""
    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "made") as d:
            (d / "x.txt").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "made").stat().st_mode & 0o777 == 0o755
