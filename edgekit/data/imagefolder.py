"""ImageFolder datasets (root/<class>/<image>), read with OpenCV. Corrupt or truncated images are skipped
and counted; a dataset with nothing usable left is an error that says what to fix."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.lazy import lazy_import

cv2 = lazy_import("cv2")  # imported on first use: `edgekit --help` and `info` work without OpenCV

log = logging.getLogger(__name__)
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
CACHE_LIMIT_BYTES = 512 << 20  # decode once and keep in memory below this much encoded data


def read_image(path: str | Path) -> np.ndarray | None:
    """Decode an image file as uint8 BGR, or None when it is corrupt, truncated or not an image."""
    return decode_image(path)[0]


def decode_image(path: str | Path) -> tuple[np.ndarray | None, str]:
    """(uint8 BGR image, "") or (None, why not). The format is judged by the file's content (magic bytes), never
    its name: a PNG named .jpg is a PNG, a text file named .png is not an image."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        return None, f"unreadable file ({type(e).__name__})"
    if data.size == 0:
        return None, "empty file"
    head = data[:16].tobytes()
    kind = image_kind(head)
    if kind is None:
        return None, "not an image (content is not JPEG, PNG, BMP, WebP or TIFF)"
    if kind == "jpeg" and not jpeg_complete(data.tobytes()):
        return None, "truncated JPEG"  # libjpeg decodes a truncated file into a half-grey image with a warning
    if kind == "png" and b"IEND" not in data[-12:].tobytes():
        return None, "truncated PNG"
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None or not img.size:
        return None, f"corrupt {kind.upper()}"
    return img, ""


def image_kind(head: bytes) -> str | None:
    """The image format its first bytes say: jpeg | png | bmp | webp | tiff, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None


def skipped_summary(skipped: list[tuple[Path, str]]) -> dict:
    """What a manifest records about the images a dataset scan skipped: how many, how many per reason, and a
    few of them."""
    reasons: dict[str, int] = {}
    for _, why in skipped:
        reasons[why] = reasons.get(why, 0) + 1
    return {"count": len(skipped), "reasons": reasons, "examples": [str(p) for p, _ in skipped[:5]]}


def jpeg_complete(buf: bytes) -> bool:
    """True when the JPEG's scan data is followed by its end-of-image marker. Walks the segment headers to
    the first start-of-scan (so EXIF thumbnails, which carry their own markers, are skipped), then looks for
    EOI after it; bytes after EOI (phone motion-photo trailers) are allowed."""
    if not buf.startswith(b"\xff\xd8"):
        return False
    i = 2
    while i + 4 <= len(buf):
        if buf[i] != 0xFF:
            return False
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xDA:  # start of scan: entropy-coded data follows; 0xFF in it is byte-stuffed
            return buf.find(b"\xff\xd9", i + 2) != -1
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            i += 2
            continue
        i += 2 + int.from_bytes(buf[i + 2:i + 4], "big")
    return False


@dataclass
class ImageSet:
    """Labelled images of one split. `images` holds decoded pixels when the set is small enough."""

    classes: list[str]
    paths: list[Path]
    labels: np.ndarray
    images: list[np.ndarray] | None = None
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int) -> np.ndarray:
        if self.images is not None:
            return self.images[i]
        img = read_image(self.paths[i])
        if img is None:  # it decoded at scan time; it changed since
            raise EdgekitError(f"{self.paths[i]} became unreadable during the run; remove it and restart")
        return img

    def subset(self, idx: np.ndarray | list[int]) -> "ImageSet":
        idx = list(map(int, idx))
        return ImageSet(self.classes, [self.paths[i] for i in idx], self.labels[idx],
                        None if self.images is None else [self.images[i] for i in idx])


def list_classes(root: Path) -> list[str]:
    if not root.is_dir():
        raise EdgekitError(f"dataset folder {root} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise EdgekitError(f"dataset folder {root} is empty: expected one sub-folder per class, "
                           f"{root}/<class>/<image>.jpg (try `edgekit data mnist5k --out DIR`)")
    if len(classes) == 1:
        raise EdgekitError(f"dataset folder {root} has a single class ('{classes[0]}'): a classifier needs at "
                           "least two class folders")
    return classes


def load_split(root: str | Path, classes: list[str] | None = None, *, cache: bool | None = None) -> ImageSet:
    """Scan and validate root/<class>/*. With `classes`, the folder must have exactly those classes."""
    root = Path(root)
    found = list_classes(root)
    if classes is not None and found != classes:
        raise EdgekitError(f"{root} has classes {found} but the training split has {classes}: "
                           "the class folders of every split must match")
    files: list[tuple[Path, int]] = []
    for ci, c in enumerate(found):
        files += [(p, ci) for p in sorted((root / c).rglob("*")) if p.suffix.lower() in IMAGE_EXTS and p.is_file()]
    if not files:
        raise EdgekitError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) under {root}/<class>/")
    if cache is None:
        cache = sum(p.stat().st_size for p, _ in files) <= CACHE_LIMIT_BYTES
    paths, labels, images, skipped = [], [], [], []
    for p, ci in files:
        img, why = decode_image(p)
        if img is None:
            skipped.append((p, why))
            continue
        paths.append(p)
        labels.append(ci)
        if cache:
            images.append(img)
    if skipped:
        log.warning("skipped %d unreadable image(s) under %s, e.g. %s (%s)", len(skipped), root, *skipped[0])
    if not paths:
        raise EdgekitError(f"all {len(skipped)} images under {root} are unreadable ({skipped[0][1]}: "
                           f"{skipped[0][0]}, ...); nothing to train on")
    counts = np.bincount(labels, minlength=len(found))
    empty = [found[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise EdgekitError(f"class folder(s) {empty} under {root} hold no readable image: add images or remove them")
    return ImageSet(found, paths, np.asarray(labels, np.int64), images if cache else None, skipped)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): `fraction` of each class (at least one where the class has two or more)."""
    if not 0 < fraction < 1:
        raise EdgekitError(f"val split must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = max(1, round(len(idx) * fraction)) if len(idx) > 1 else 0
        val += idx[:k].tolist()
        train += idx[k:].tolist()
    return np.sort(train), np.sort(val)


def load_imagefolder(root: str | Path, *, val_split: float = 0.1, seed: int = 0,
                     cache: bool | None = None) -> tuple[ImageSet, ImageSet]:
    """(train, val) from root/train + root/val when both exist, else a seeded stratified split of root."""
    root = Path(root)
    if (root / "train").is_dir():
        train = load_split(root / "train", cache=cache)
        if (root / "val").is_dir():
            return train, load_split(root / "val", train.classes, cache=cache)
        full = train
    else:
        full = load_split(root, cache=cache)
    tr, va = stratified_split(full.labels, val_split, seed)
    train, val = full.subset(tr), full.subset(va)
    train.skipped = full.skipped
    return train, val


def splits_for(manifest, data: str | Path | None = None) -> tuple[ImageSet, ImageSet, str]:
    """(train, val, root) of the dataset recorded in the model's manifest, or of `data`, split exactly as
    training split it; the classes must be the model's."""
    ds = manifest.source.get("dataset") or {}
    root = data or ds.get("root")
    if not root or not Path(root).exists():
        raise EdgekitError(f"the dataset this model was trained on ({root or 'not recorded'}) is not here: "
                           "pass --data DIR (an ImageFolder with the model's classes)")
    train, val = load_imagefolder(root, val_split=ds.get("val_split", 0.1), seed=ds.get("seed", 0))
    if val.classes != list(manifest.labels):
        raise EdgekitError(f"{root} has classes {val.classes}, the model has {manifest.labels}: "
                           "pass --data with the model's own classes")
    return train, val, str(root)


def heldout_for(manifest, data: str | Path | None = None, limit: int | None = None) -> ImageSet:
    """The model's validation split (as recorded in its manifest), or the val split of `data`."""
    _, val, _ = splits_for(manifest, data)
    return val.subset(range(min(len(val), limit))) if limit else val


def write_image(path: str | Path, img: np.ndarray, params: tuple[int, ...] = ()) -> None:
    """Encode and write an image; a full disk or an unwritable folder raises OSError. cv2.imwrite only returns
    False then, and a dataset builder that does not look would mark a folder with missing images complete."""
    path = Path(path)
    ok, buf = cv2.imencode(path.suffix, img, list(params))
    if not ok:
        raise EdgekitError(f"OpenCV cannot encode an image as {path.suffix} ({path})")
    path.write_bytes(buf.tobytes())
