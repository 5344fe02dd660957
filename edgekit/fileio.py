"""Small file helpers: atomic writes (never leave a half-written file) and hashing."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on success it is renamed over `dest`, on error removed."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the final file gets the usual permissions
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


MADE_MARKER = ".edgekit-made.json"  # in every folder atomic_dir makes: the files edgekit wrote there
_TOOL_FILES = (".cache",)  # files a tool edgekit drives adds to a folder it made (ultralytics' label caches)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `dest`; on success it replaces `dest`, on error it is removed. An existing
    `dest` is replaced only when edgekit made it and it holds nothing else (check_replaceable), checked before
    and again just before the swap; the new folder records what it holds (MADE_MARKER) for the next time."""
    import shutil

    dest = Path(dest)
    check_replaceable(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700: the folder gets a plain mkdir's mode instead
    old = None
    try:
        yield tmp
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if not p.is_dir())
        (tmp / MADE_MARKER).write_text(json.dumps({"made_by": "edgekit", "files": files}) + "\n")
        check_replaceable(dest)
        if dest.exists():  # moved aside, not deleted, until the new folder is in place
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
            dest.rename(old / dest.name)
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
        if old is not None:
            if (old / dest.name).exists() and not dest.exists():
                (old / dest.name).rename(dest)  # the swap failed: put the old folder back
            shutil.rmtree(old)


def check_replaceable(dest: str | os.PathLike) -> None:
    """Raise EdgekitError unless `dest` is missing, empty, or a folder edgekit made (MADE_MARKER) holding only
    the files edgekit wrote there. Never /, the home folder, the current folder or any folder above it."""
    from edgekit.errors import EdgekitError

    path, where = Path(dest).expanduser(), Path.cwd().resolve()
    real = path.resolve()
    if real == Path(real.anchor) or real == Path.home().resolve() or real == where or real in where.parents:
        what = "/" if real == Path(real.anchor) else "your home folder" if real == Path.home().resolve() else (
            "the current folder" if real == where else "a folder above the current one")
        raise EdgekitError(f"{dest} is {what}: edgekit writes a new folder and never replaces that one; pass a "
                           "new folder (say, --out data/NAME)")
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        raise EdgekitError(f"{dest} exists and is not a folder edgekit made: choose another folder")
    if not any(path.iterdir()):
        return
    foreign = _foreign_files(path)
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise EdgekitError(f"{dest} holds files edgekit did not write ({foreign[0]}{more}), and edgekit replaces only "
                           "folders it made: choose another folder, or move those files away yourself")


def _foreign_files(path: Path) -> list[str]:
    """Files in `path` that its MADE_MARKER does not list (all of them when there is no readable marker)."""
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if not p.is_dir())
    try:
        made = json.loads((path / MADE_MARKER).read_text())
        listed = set(made["files"]) if made.get("made_by") == "edgekit" else set()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # no marker, or not edgekit's
        return files
    return [f for f in files if f not in listed and f != MADE_MARKER and not f.endswith(_TOOL_FILES)]


def atomic_write_bytes(dest: str | os.PathLike, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(dest: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(dest, text.encode())


def atomic_write_json(dest: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(dest, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
