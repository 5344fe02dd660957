"""A cv2.VideoCapture stand-in for driving the capture thread in tests (loop mechanics only)."""
from __future__ import annotations

import time

import numpy as np


class FakeCamera:
    """A cv2.VideoCapture stand-in that drives the capture thread: frames at a set pace, then death."""

    def __init__(self, frames: int, period: float = 0.0, shape=(48, 64, 3)):
        self.left, self.period, self.shape, self.i = frames, period, shape, 0

    def isOpened(self):
        return True

    def read(self):
        if self.left <= 0:
            time.sleep(0.002)
            return False, None
        time.sleep(self.period)
        self.left -= 1
        self.i += 1
        f = np.zeros(self.shape, np.uint8)
        if f.ndim == 3 and f.shape[2] >= 2:
            f[..., 0], f[..., 1] = self.i % 256, self.i // 256  # the frame number, in two channels
        else:
            f[...] = self.i % 256
        return True, f

    def get(self, prop):
        return 30.0

    def release(self):
        self.left = 0
