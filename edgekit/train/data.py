"""Feeding an ImageSet to torch: train-time augmentation with numpy/OpenCV (seeded per epoch and image,
so a resumed run sees the same batches), and the manifest's own preprocessing for evaluation."""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from edgekit.data.imagefolder import ImageSet
from edgekit.manifest import InputSpec
from edgekit.vision.preprocess import normalize, preprocess_classify, to_bgr


def random_resized_crop(img: np.ndarray, size: tuple[int, int], scale_min: float, rng: np.random.Generator) -> np.ndarray:
    """torchvision's RandomResizedCrop: a random area fraction in [scale_min, 1] and aspect in [3/4, 4/3]."""
    h, w = img.shape[:2]
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(scale_min, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            img = img[y:y + ch, x:x + cw]
            break
    return cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


class TrainDataset(torch.utils.data.Dataset):
    def __init__(self, data: ImageSet, spec: InputSpec, *, scale_min: float, hflip: float, seed: int) -> None:
        self.data, self.spec, self.scale_min, self.hflip, self.seed = data, spec, scale_min, hflip, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        rng = np.random.default_rng((self.seed, self.epoch, i))
        img = random_resized_crop(to_bgr(self.data.image(i)), self.spec.crop, self.scale_min, rng)
        if self.hflip and rng.random() < self.hflip:
            img = img[:, ::-1]
        return torch.from_numpy(normalize(img, self.spec)), int(self.data.labels[i])


class EvalDataset(torch.utils.data.Dataset):
    def __init__(self, data: ImageSet, spec: InputSpec) -> None:
        self.data, self.spec = data, spec

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(preprocess_classify(self.data.image(i), self.spec)), int(self.data.labels[i])


def train_batches(order: list[int], batch: int) -> list[list[int]]:
    """`order` cut into batches of `batch`; a last batch of one image joins the one before it, since BatchNorm
    in training mode cannot normalise a single value per channel ("Expected more than 1 value per channel")."""
    out = [order[i:i + batch] for i in range(0, len(order), batch)]
    if len(out) > 1 and len(out[-1]) == 1:
        last = out.pop()
        out[-1] = out[-1] + last
    return out


def epoch_order(n: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[int]:
    """This rank's share of a seeded permutation, padded so every rank has the same number of steps."""
    perm = np.random.default_rng((seed, epoch, 7919)).permutation(n)
    per_rank = math.ceil(n / world)
    perm = np.concatenate([perm, perm[: per_rank * world - n]])
    return perm[rank::world].tolist()
