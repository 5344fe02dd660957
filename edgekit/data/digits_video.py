"""The test video of `edgekit data digits-detect`: real MNIST digits (the 'video' pool, never in train or val)
moving across real footage, with ground truth per frame (boxes and digit labels) for the camera loop's
end-to-end accuracy (edgekit.camera.accuracy)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgekit.data.digits_parts import INK, VIDEO_INK, DigitsDetectConfig, digit_alpha, paste
from edgekit.errors import EdgekitError
from edgekit.lazy import lazy_import

cv2 = lazy_import("cv2")  # imported on first use: `edgekit --help` and `info` work without OpenCV


def cover(frame: np.ndarray, wh: tuple[int, int]) -> np.ndarray:
    """Resize to fill wh, centre-cropping what is left over (keeps the aspect)."""
    fh, fw = frame.shape[:2]
    s = max(wh[0] / fw, wh[1] / fh)
    nw, nh = max(wh[0], round(fw * s)), max(wh[1], round(fh * s))
    big = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
    x, y = (nw - wh[0]) // 2, (nh - wh[1]) // 2
    return big[y:y + wh[1], x:x + wh[0]]


def _draw_order(labels: np.ndarray, n: int, rng: np.random.Generator) -> list[int]:
    """n pool indices, classes as even as n allows (shuffled rounds of 0-9), no digit image twice while the pool
    lasts: every class shows up in the video, not whichever the draw favoured."""
    by_class = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels).tolist()}
    out: list[int] = []
    while len(out) < n:
        for c in rng.permutation(sorted(by_class)).tolist():
            if len(out) < n:
                if not by_class[c]:
                    by_class[c] = list(rng.permutation(np.flatnonzero(labels == c)))
                out.append(int(by_class[c].pop()))
    return out


def write_video(dest: Path, frames: list[np.ndarray], pool: tuple[np.ndarray, np.ndarray, np.ndarray],
                cfg: DigitsDetectConfig, rng: np.random.Generator) -> dict:
    """Digits moving across real footage (played forward then back). Each of cfg.video_digits lanes shows one
    digit at a time, bouncing off the sides, and a new one (another digit image, size, speed) every
    cfg.video_switch frames: many digits are seen, not a handful. No digit occludes another; its ink, frame by
    frame, contrasts with what is under it. Ground truth per frame in digits.jsonl (ids unique per digit)."""
    w, h, fps = cfg.video_width, round(cfg.video_width * 3 / 4), 25.0
    images, labels, mnist_idx = pool
    lane_h = h / cfg.video_digits
    period = cfg.video_switch or cfg.video_frames
    starts = range(0, cfg.video_frames, period)
    picks = iter(_draw_order(labels, cfg.video_digits * len(starts), rng))
    movers = []
    for t0 in starts:
        for k in range(cfg.video_digits):
            i = next(picks)
            dh = round(min(lane_h * 0.8, h * rng.uniform(0.1, 0.25)))
            ys, xs = np.nonzero(images[i] > 32)
            dw = max(3, round(dh * (xs.max() - xs.min() + 1) / (ys.max() - ys.min() + 1)))
            movers.append({
                "id": len(movers), "lane": k, "t0": t0, "t1": t0 + period, "digit": int(labels[i]),
                "mnist_index": int(mnist_idx[i]), "alpha": digit_alpha(images[i], dh, dw),
                "x": rng.uniform(0, w - dw), "vx": rng.choice([-1, 1]) * rng.uniform(2, 7),
                "y0": k * lane_h + (lane_h - dh) / 2, "amp": (lane_h - dh) / 2 * 0.8,
                "phase": rng.uniform(0, 2 * np.pi), "opacity": rng.uniform(0.85, 1.0)})
    order = list(range(len(frames))) + list(range(len(frames) - 2, 0, -1))  # ping-pong through real footage
    writer = cv2.VideoWriter(str(dest), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise EdgekitError(f"OpenCV cannot write {dest} (mp4v): install opencv-python (not a build without video "
                           "I/O) or pass --video-frames 0")
    rows = []
    try:
        for t in range(cfg.video_frames):
            img = cover(frames[order[t % len(order)]], (w, h)).copy()
            objs = []
            for m in movers:
                if not m["t0"] <= t < m["t1"]:
                    continue
                dh, dw = m["alpha"].shape
                x = m["x"] + m["vx"] * (t - m["t0"])
                span = 2 * (w - dw)
                x = x % span
                x = span - x if x > w - dw else x  # bounce between 0 and w - dw
                y = m["y0"] + m["amp"] * np.sin(m["phase"] + t / 12)
                x, y = int(x), int(round(y))
                # ink that contrasts with what is under it in this frame, as in the training images: a fixed ink
                # on passing footage vanishes on backgrounds of its own tone (a dark digit on the dark bike)
                under = img[y:y + dh, x:x + dw][m["alpha"] > INK]
                colour = (25.0,) * 3 if under.size and under.mean() >= 128 else (235.0,) * 3
                box = paste(img, m["alpha"], x, y, rng, colour, m["opacity"])
                if box is not None:
                    objs.append({"id": m["id"], "digit": m["digit"], "box": box})
            writer.write(img)
            rows.append(json.dumps({"frame": t, "objects": objs}))
    finally:
        writer.release()
    (dest.parent / "digits.jsonl").write_text("\n".join(rows) + "\n")
    return {"file": dest.name, "ground_truth": "digits.jsonl", "frames": cfg.video_frames, "fps": fps,
            "size": [w, h], "codec": "mp4v", "box_format": "xyxy pixels, x2/y2 exclusive",
            "switch_frames": period,
            "digits": [{k: m[k] for k in ("id", "lane", "t0", "digit", "mnist_index")} for m in movers],
            "ink": VIDEO_INK,
            "background": "last 20% of bikes.mp4, forward then back"}
