"""Confidence-aware pose renderer, reproducing the published MimicMotion drawing exactly.

``draw_pose(pose, H, W)`` → (H, W, 3) uint8 RGB. Drawing happens on a black canvas whose
short side is 2160 pixels, then ``cv2.resize`` (bilinear) to H x W and BGR→RGB, so the palette
below (written in the canvas' channel order) comes out channel-swapped.

Speed without changing a pixel: the canvas buffer is reused between calls (only the area drawn
on is cleared afterwards), and the published ``canvas * 0.6`` pass after the limbs is folded
into the limb colours (limbs are filled without anti-aliasing, so every pixel holds exactly one
limb colour or 0, and ``int(0.6 * c)`` per pixel equals drawing with the dimmed colour).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable

import cv2
import numpy as np

from mimicache.pose.keypoints import PoseFrame

REF_SHORT_SIDE = 2160
STICK_WIDTH = 4
EPS = 0.01
LIMB_SEQ = [
    [2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10], [10, 11], [2, 12],
    [12, 13], [13, 14], [2, 1], [1, 15], [15, 17], [1, 16], [16, 18], [3, 17], [6, 18],
]  # fmt: skip
LIMB_INDEX = [np.array(pair) - 1 for pair in LIMB_SEQ]
COLORS = [
    [255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0], [85, 255, 0],
    [0, 255, 0], [0, 255, 85], [0, 255, 170], [0, 255, 255], [0, 170, 255], [0, 85, 255],
    [0, 0, 255], [85, 0, 255], [170, 0, 255], [255, 0, 255], [255, 0, 170], [255, 0, 85],
]  # fmt: skip
HAND_EDGES = [
    [0, 1], [1, 2], [2, 3], [3, 4], [0, 5], [5, 6], [6, 7], [7, 8], [0, 9], [9, 10],
    [10, 11], [11, 12], [0, 13], [13, 14], [14, 15], [15, 16], [0, 17], [17, 18], [18, 19], [19, 20],
]  # fmt: skip
DIM_LUT = (np.arange(256, dtype=np.float64) * 0.6).astype(np.uint8)


def hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """HSV in [0, 1] → RGB float64 (3,), same arithmetic as ``matplotlib.colors.hsv_to_rgb``."""
    if s == 0:
        return np.array([v, v, v], dtype=np.float64)
    i = int(h * 6.0)
    f = (h * 6.0) - i
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i % 6]
    return np.array(rgb, dtype=np.float64)


HAND_COLORS = [hsv_to_rgb(ie / float(len(HAND_EDGES)), 1.0, 1.0) for ie in range(len(HAND_EDGES))]


def _blend(color: list[int], alpha) -> list[int]:
    return [int(c * alpha) for c in color]


class _Extent:
    """Running bounding box of what was drawn (to clear/dim only that area)."""

    __slots__ = ("x0", "x1", "y0", "y1")

    def __init__(self) -> None:
        self.x0 = self.y0 = 1 << 30
        self.x1 = self.y1 = -(1 << 30)

    def add(self, x0: int, y0: int, x1: int, y1: int) -> None:
        self.x0 = min(self.x0, x0)
        self.y0 = min(self.y0, y0)
        self.x1 = max(self.x1, x1)
        self.y1 = max(self.y1, y1)

    def slices(self, h: int, w: int) -> tuple[slice, slice] | None:
        y0, y1 = max(self.y0, 0), min(self.y1 + 1, h)
        x0, x1 = max(self.x0, 0), min(self.x1 + 1, w)
        if y0 >= y1 or x0 >= x1:
            return None
        return slice(y0, y1), slice(x0, x1)


def _draw_body(canvas: np.ndarray, pose: PoseFrame, extent: _Extent) -> None:
    H, W, _ = canvas.shape
    candidate, subset, score = pose.candidate, pose.subset, pose.body_score
    for i in range(17):
        for n in range(len(subset)):
            index = subset[n][LIMB_INDEX[i]]
            conf = score[n][LIMB_INDEX[i]]
            if conf[0] < 0.3 or conf[1] < 0.3:
                continue
            Y = candidate[index.astype(int), 0] * float(W)
            X = candidate[index.astype(int), 1] * float(H)
            mX = np.mean(X)
            mY = np.mean(Y)
            length = ((X[0] - X[1]) ** 2 + (Y[0] - Y[1]) ** 2) ** 0.5
            angle = math.degrees(math.atan2(X[0] - X[1], Y[0] - Y[1]))
            polygon = cv2.ellipse2Poly(
                (int(mY), int(mX)), (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1
            )
            # Limbs are filled without anti-aliasing, so each pixel holds the colour of the
            # last limb covering it: dimming the colour equals the published canvas * 0.6 pass
            # (cv2 saturates colour values to 0..255 first, so do we).
            color = _blend(COLORS[i], conf[0] * conf[1])
            cv2.fillConvexPoly(canvas, polygon, [int(DIM_LUT[min(max(v, 0), 255)]) for v in color])
            lo, hi = polygon.min(axis=0), polygon.max(axis=0)
            extent.add(int(lo[0]) - 1, int(lo[1]) - 1, int(hi[0]) + 1, int(hi[1]) + 1)

    for i in range(18):
        for n in range(len(subset)):
            index = int(subset[n][i])
            if index == -1:
                continue
            x, y = candidate[index][0:2]
            conf = score[n][i]
            x = int(x * W)
            y = int(y * H)
            cv2.circle(canvas, (int(x), int(y)), 4, _blend(COLORS[i], conf), thickness=-1)
            extent.add(x - 6, y - 6, x + 6, y + 6)


def _draw_hands(
    canvas: np.ndarray, hands: np.ndarray, hand_scores: np.ndarray, extent: _Extent
) -> None:
    H, W, _ = canvas.shape
    for peaks, scores in zip(hands, hand_scores):
        for ie, e in enumerate(HAND_EDGES):
            x1, y1 = peaks[e[0]]
            x2, y2 = peaks[e[1]]
            x1 = int(x1 * W)
            y1 = int(y1 * H)
            x2 = int(x2 * W)
            y2 = int(y2 * H)
            score = int(scores[e[0]] * scores[e[1]] * 255)
            if x1 > EPS and y1 > EPS and x2 > EPS and y2 > EPS:
                cv2.line(canvas, (x1, y1), (x2, y2), HAND_COLORS[ie] * score, thickness=2)
                extent.add(min(x1, x2) - 3, min(y1, y2) - 3, max(x1, x2) + 3, max(y1, y2) + 3)
        for point, score in zip(peaks, scores):
            level = int(score * 255)
            _dot(canvas, point, 4, (0, 0, level), extent)


def _draw_faces(
    canvas: np.ndarray, faces: np.ndarray, face_scores: np.ndarray, extent: _Extent
) -> None:
    for lmks, scores in zip(faces, face_scores):
        for lmk, score in zip(lmks, scores):
            conf = int(score * 255)
            _dot(canvas, lmk, 3, (conf, conf, conf), extent)


def _dot(canvas: np.ndarray, point: np.ndarray, radius: int, color: tuple, extent: _Extent) -> None:
    """A hand or face point (normalised), skipped at x or y <= ~0 as published."""
    H, W, _ = canvas.shape
    x, y = int(point[0] * W), int(point[1] * H)
    if x > EPS and y > EPS:
        cv2.circle(canvas, (x, y), radius, color, thickness=-1)
        extent.add(x - radius - 2, y - radius - 2, x + radius + 2, y + radius + 2)


_local = threading.local()


def _canvas(h: int, w: int) -> np.ndarray:
    buf = getattr(_local, "canvas", None)
    if buf is None or buf.shape != (h, w, 3):
        buf = np.zeros((h, w, 3), dtype=np.uint8)
        _local.canvas = buf
    return buf


def canvas_size(height: int, width: int) -> tuple[int, int]:
    """Size (h, w) of the drawing canvas: short side 2160, as published."""
    sz = min(height, width)
    sr = (REF_SHORT_SIDE / sz) if sz != REF_SHORT_SIDE else 1
    return int(height * sr), int(width * sr)


def draw_pose(pose: PoseFrame, height: int, width: int) -> np.ndarray:
    """One pose (normalised coordinates) → (height, width, 3) uint8 RGB image."""
    ch, cw = canvas_size(height, width)
    canvas = _canvas(ch, cw)
    extent = _Extent()
    try:
        _draw_body(canvas, pose, extent)
        _draw_hands(canvas, pose.hands, pose.hands_score, extent)
        _draw_faces(canvas, pose.faces, pose.faces_score, extent)
        out = cv2.cvtColor(cv2.resize(canvas, (width, height)), cv2.COLOR_BGR2RGB)
    except BaseException:
        _local.canvas = None  # drawn area unknown: start from a fresh canvas next time
        raise
    region = extent.slices(ch, cw)
    if region is not None:
        canvas[region] = 0
    return out


def draw_poses(frames: Iterable[PoseFrame], height: int, width: int) -> np.ndarray:
    """Poses → (F, height, width, 3) uint8 RGB."""
    drawn = [draw_pose(p, height, width) for p in frames]
    if not drawn:
        return np.zeros((0, height, width, 3), dtype=np.uint8)
    return np.stack(drawn)
