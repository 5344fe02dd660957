"""What the digits-detect image set and its test video share: the settings (`DigitsDetectConfig`, the options
of `edgekit data digits-detect`) and how one MNIST digit is pasted onto a frame with its box. A module of its
own so that edgekit.data.digits_detect (the image set) and edgekit.data.digits_video (the test video) both
import it, and neither imports the other's caller."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgekit.configs import check_config, option
from edgekit.errors import EdgekitError, unknown_choice
from edgekit.lazy import lazy_import

cv2 = lazy_import("cv2")  # imported on first use: `edgekit --help` and `info` work without OpenCV

CLASS_MODES = ("digit", "digits")
INK = 0.25  # alpha above which a pasted pixel counts as the digit (defines its box)
VIDEO_INK = "contrasting per frame"  # light on dark, dark on light, decided by what is under the digit


@dataclass
class DigitsDetectConfig:
    out: str = option("data/digits-detect", path="out_dir")  # output folder (YOLO layout + data.yaml)
    train: int = 400  # training images
    val: int = 100  # held-out images (other digits, other frames than train)
    imgsz: int = 320  # image width in pixels; height is imgsz * 3/4 (a 4:3 camera frame)
    classes: str = "digit"  # digit: one class 'digit' | digits: ten classes '0'..'9'
    min_digits: int = 1  # digits per image, at least
    max_digits: int = 5  # digits per image, at most
    min_size: float = 0.08  # smallest digit height, as a fraction of the image height
    max_size: float = 0.45  # largest digit height, as a fraction of the image height
    empty_fraction: float = 0.05  # share of images with no digit at all (background only)
    random_ink: float = 0.0  # share of digits in a random light or dark ink, whatever is under them (the test
    #                          video's case: some hard to see); the rest contrast with it. 0 = all contrast
    video_frames: int = 300  # frames of the moving-digits test video, 12 s at 25 FPS (0 = no video)
    video_width: int = 640  # test video size (4:3)
    video_digits: int = 4  # digits on screen at once in the test video (one per lane)
    video_switch: int = 50  # frames each digit stays before a new one takes its lane (0 = the same digits throughout)
    crops: int = 1  # classification crops per pasted digit (train and val), each from a jittered box; 0 = none
    crop_jitter: float = 0.1  # each box edge moves by up to this fraction of the box's width or height
    crop_images: int = 2000  # extra train-segment images rendered only for train crops, with MNIST-5k train/val digits
    seed: int = option(0, ge=0)  # which digits, frames and placements
    force: bool = False  # rebuild even when complete (only a folder edgekit made, holding nothing else, is replaced)

    def validate(self) -> None:
        check_config(self)  # the ranges declared beside each field
        if self.classes not in CLASS_MODES:
            raise unknown_choice("--classes", self.classes, CLASS_MODES)
        if self.train < 1 or self.val < 1:
            raise EdgekitError("--train and --val must be at least 1 image each")
        if self.imgsz < 32 or self.video_width < 64 and self.video_frames:
            raise EdgekitError("--imgsz must be at least 32 (and --video-width at least 64)")
        if not 1 <= self.min_digits <= self.max_digits:
            raise EdgekitError("need 1 <= --min-digits <= --max-digits")
        if not 0 < self.min_size <= self.max_size <= 0.9:
            raise EdgekitError("need 0 < --min-size <= --max-size <= 0.9 (fractions of the image height)")
        if not 0 <= self.random_ink <= 1:
            raise EdgekitError("--random-ink must be in [0, 1] (a share of the digits)")
        if not 0 <= self.empty_fraction < 1:
            raise EdgekitError("--empty-fraction must be in [0, 1)")
        if self.video_frames < 0 or not 1 <= self.video_digits <= 8 or self.video_switch < 0:
            raise EdgekitError("--video-frames and --video-switch must be >= 0 and --video-digits between 1 and 8")
        if self.crops < 0 or self.crop_images < 0 or not 0 <= self.crop_jitter <= 0.3:
            raise EdgekitError("--crops and --crop-images must be >= 0 and --crop-jitter in [0, 0.3] (a fraction of "
                               "the box size)")

    def settings(self) -> dict:
        """What decides the contents (not where they go, not --force). Options that are off are left out with
        what they alone decide (so a folder built before they existed still matches)."""
        skip = ("out", "force") + (() if self.crops else ("crops", "crop_jitter", "crop_images")) + (
            () if self.random_ink else ("random_ink",))
        out = {k: v for k, v in asdict(self).items() if k not in skip}
        if self.video_frames:
            out["video_ink"] = VIDEO_INK  # how the video's digits are inked: a change rebuilds the video
        return out


def digit_alpha(digit: np.ndarray, h: int, w: int) -> np.ndarray:
    """The MNIST digit (28x28, ink = bright) cropped to its ink and resized to h x w, as alpha in [0, 1]."""
    ys, xs = np.nonzero(digit > 32)
    crop = digit[ys.min():ys.max() + 1, xs.min():xs.max() + 1] if len(ys) else digit
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0


def paste(img: np.ndarray, alpha: np.ndarray, x: int, y: int, rng: np.random.Generator,
          colour: tuple[float, float, float] | None = None, opacity: float | None = None) -> list[int] | None:
    """Blend a digit into img at (x, y) in a colour that contrasts with what is under it. Returns its box
    [x1, y1, x2, y2) in pixels: the tight extent of the pixels where alpha > INK (None if it has none)."""
    h, w = alpha.shape
    region = img[y:y + h, x:x + w]
    if colour is None:
        dark_bg = region.mean() < 128
        base = rng.uniform(190, 255) if dark_bg else rng.uniform(0, 70)
        colour = tuple(float(np.clip(base + rng.uniform(-25, 25), 0, 255)) for _ in range(3))
    if opacity is None:
        opacity = rng.uniform(0.65, 1.0)
    a = (alpha * opacity)[:, :, None]
    region[...] = (region * (1 - a) + np.asarray(colour, np.float32) * a + 0.5).astype(np.uint8)
    ys, xs = np.nonzero(alpha > INK)
    if not len(ys):
        return None
    return [x + int(xs.min()), y + int(ys.min()), x + int(xs.max()) + 1, y + int(ys.max()) + 1]
