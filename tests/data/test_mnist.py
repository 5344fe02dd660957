"""The bundled MNIST-5k: a fixed, seeded 350/50/100 split per class, written as an ImageFolder whose pixels
are the source's, idempotently and atomically."""
from __future__ import annotations

import hashlib
import os

import cv2
import numpy as np
import pytest

from edgekit.data.imagefolder import load_imagefolder
from edgekit.data.mnist import DONE, SPLIT, split_indices, write_mnist5k
from edgekit.errors import EdgekitError


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("mnist5k") / "m5k"
    counts = write_mnist5k(out)
    return out, counts


def _files(out, split):
    """{mnist index: path} of one written split."""
    return {int(p.stem): p for p in (out / split).rglob("*.png")}


def test_load_mnist5k_is_5000_real_digits(mnist5k):
    images, labels = mnist5k
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (5000,) and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [500] * 10
    assert images.min() == 0 and images.max() == 255
    assert 0.05 < (images > 127).mean() < 0.35  # ink on a black background, not noise


def test_split_indices_are_disjoint_complete_and_per_class(mnist5k):
    labels = mnist5k[1]
    s = split_indices(labels)
    assert {k: len(v) for k, v in s.items()} == {"train": 3500, "val": 500, "heldout": 1000}
    sets = {k: set(v.tolist()) for k, v in s.items()}
    assert not sets["train"] & sets["val"]
    assert not sets["train"] & sets["heldout"] and not sets["val"] & sets["heldout"]
    assert sets["train"] | sets["val"] | sets["heldout"] == set(range(5000))
    for k, n in SPLIT.items():
        assert np.bincount(labels[s[k]], minlength=10).tolist() == [n] * 10
    again = split_indices(labels)
    assert all((again[k] == s[k]).all() for k in s)  # seeded: the same split every time


def test_split_never_changes_between_versions(mnist5k):
    # Models record the split they trained on and the detection data uses the held-back digits: a change of
    # seed or algorithm would silently leak held-out digits into training. Pinned values.
    s = split_indices(mnist5k[1])
    assert s["val"][:5].tolist() == [55, 57, 71, 76, 82]
    assert s["heldout"][:5].tolist() == [9, 13, 28, 29, 38]
    digests = {k: hashlib.sha256(v.astype(np.int64).tobytes()).hexdigest()[:16] for k, v in s.items()}
    assert digests == {"train": "540fffa141709f8e", "val": "8ad90a9da86d6cad", "heldout": "1ec5f3c9dd478d9c"}


def test_write_counts_and_layout(written):
    out, counts = written
    assert counts == {"train": 3500, "val": 500}
    assert (out / DONE).is_file()
    for split, n in (("train", 350), ("val", 50)):
        assert sorted(p.name for p in (out / split).iterdir()) == [str(d) for d in range(10)]
        for d in range(10):
            assert len(list((out / split / str(d)).glob("*.png"))) == n
    assert sorted(p.name for p in out.parent.iterdir()) == ["m5k"]  # no temp folder left beside it


def test_written_files_are_the_split_with_the_source_pixels(written, mnist5k):
    out, _ = written
    images, labels = mnist5k
    s = split_indices(labels)
    for split in ("train", "val"):
        files = _files(out, split)
        assert sorted(files) == s[split].tolist()  # and so nothing from heldout
        for i, p in files.items():
            assert p.parent.name == str(labels[i])
            img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            assert img.shape == (28, 28)
            np.testing.assert_array_equal(img, images[i], err_msg=str(p))


def test_reads_back_as_an_imagefolder(written):
    train, val = load_imagefolder(written[0])
    assert train.classes == [str(d) for d in range(10)]
    assert (len(train), len(val), train.skipped) == (3500, 500, [])


def test_rerun_is_idempotent_and_does_not_rewrite(written):
    out, counts = written
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    inode = out.stat().st_ino
    assert write_mnist5k(out) == counts
    assert out.stat().st_ino == inode
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_refuses_a_foreign_nonempty_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(EdgekitError, match="is not an edgekit mnist5k folder: choose another --out$"):
        write_mnist5k(tmp_path)
    with pytest.raises(EdgekitError, match="holds files edgekit did not write"):
        write_mnist5k(tmp_path, force=True)  # --force never wipes a folder edgekit did not make
    assert os.listdir(tmp_path) == ["mine.txt"]


@pytest.mark.slow
def test_an_interrupted_write_is_redone(tmp_path):
    out = tmp_path / "m5k"
    out.mkdir()  # an empty folder (e.g. made by the user) is fine
    (out.parent / ".m5k.leftover").mkdir()  # a temp dir left by a killed run is ignored
    assert write_mnist5k(out) == {"train": 3500, "val": 500}
    assert (out / DONE).exists()


@pytest.mark.slow
def test_force_rewrites(tmp_path, mnist5k):
    out = tmp_path / "m5k"
    write_mnist5k(out)
    victim = next((out / "val" / "3").iterdir())
    victim.write_bytes(b"damaged")
    assert write_mnist5k(out, force=True) == {"train": 3500, "val": 500}
    img = cv2.imread(str(victim), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(img, mnist5k[0][int(victim.stem)])


def test_a_disk_that_fills_up_leaves_nothing_and_one_line(tmp_path):
    """Files capped at 100 bytes (RLIMIT_FSIZE, as a full disk fails writes): every PNG fails to write. OpenCV's
    imwrite only returned False, so the folder used to be marked complete with no images in it."""
    import resource
    import signal
    import subprocess
    import sys

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the cap fails with EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))

    p = subprocess.run([sys.executable, "-m", "edgekit", "data", "mnist5k", "--out", "m"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, preexec_fn=small_files)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("edgekit: error: File too large") and p.stderr.count("\n") == 1, p.stderr
    assert list(tmp_path.iterdir()) == []
