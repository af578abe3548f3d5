"""How well a clip follows the pose it was asked for, on plain arrays (no models, no files).

Keypoints are ``(F, K, 3)`` float arrays: per frame and point ``x, y`` (output pixels) and a
confidence in [0, 1]; K = 128 points per person in ``PARTS`` order (body 18 in OpenPose order,
left hand 21, right hand 21, face 68: DWPose's whole body without the feet). A point is
*shown* when its confidence is at least ``VISIBLE`` (0.3, the threshold the pose drawing uses).

Distances are in units of a body ``scale`` (``body_scale``: the reference's shoulder width),
so 0.25 means a quarter of a shoulder width. A target point that the output does not show
costs ``MISSING_DISTANCE`` (one scale unit): a hand that vanished is a failure, not a gap.
Points the target does not show are not scored (an extra hand in the output costs nothing).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "MISSING_DISTANCE",
    "NUM_POINTS",
    "PARTS",
    "VISIBLE",
    "body_scale",
    "dtw_error",
    "flicker",
    "identity",
    "mean_or_nan",
    "part_errors",
    "part_recall",
    "point_distances",
]

PARTS = {
    "body": slice(0, 18),
    "left_hand": slice(18, 39),
    "right_hand": slice(39, 60),
    "face": slice(60, 128),
}
NUM_POINTS = 128
VISIBLE = 0.3
MISSING_DISTANCE = 1.0
_SHOULDERS = (2, 5)  # OpenPose right and left shoulder


def _check(points: np.ndarray, name: str) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 3 or points.shape[2] != 3:
        raise ValueError(f"{name}: expected (frames, points, 3) keypoints, got {points.shape}")
    return points


def body_scale(reference: np.ndarray, fallback: float | None = None) -> float:
    """The reference pose's shoulder width in pixels (``reference``: (K, 3)); ``fallback``
    when a shoulder is not shown (the scorer passes a quarter of the output height)."""
    ref = np.asarray(reference, dtype=np.float64)
    right, left = ref[_SHOULDERS[0]], ref[_SHOULDERS[1]]
    if right[2] >= VISIBLE and left[2] >= VISIBLE:
        width = float(np.hypot(*(right[:2] - left[:2])))
        if width > 0:
            return width
    if fallback is None or not fallback > 0:
        raise ValueError("body_scale: the reference shows no shoulders; give a fallback scale")
    return float(fallback)


def point_distances(target: np.ndarray, output: np.ndarray, scale: float) -> np.ndarray:
    """(F, K) distance of each output point from its target point, in ``scale`` units:
    ``MISSING_DISTANCE`` where the target shows the point and the output does not, NaN where
    the target does not show it."""
    target, output = _check(target, "target"), _check(output, "output")
    if target.shape != output.shape:
        raise ValueError(f"target {target.shape} and output {output.shape} differ in shape")
    return _distances(target[:, None], output[:, None], scale)[:, 0]


def _distances(target: np.ndarray, output: np.ndarray, scale: float) -> np.ndarray:
    """Broadcast ``point_distances``: (..., K, 3) pairs to (..., K)."""
    shown_t = target[..., 2] >= VISIBLE
    shown_o = output[..., 2] >= VISIBLE
    apart = np.hypot(*np.moveaxis(target[..., :2] - output[..., :2], -1, 0)) / scale
    out = np.where(shown_o, apart, MISSING_DISTANCE)
    return np.where(shown_t, out, np.nan)


def mean_or_nan(values: np.ndarray, axis: int) -> np.ndarray:
    """The mean along ``axis`` of the values that are not NaN; NaN where there are none."""
    counted = np.sum(~np.isnan(values), axis=axis)
    total = np.nansum(values, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counted > 0, total / np.maximum(counted, 1), np.nan)


def part_errors(target: np.ndarray, output: np.ndarray, scale: float) -> dict[str, np.ndarray]:
    """Per part, the (F,) mean point distance per frame (NaN in a frame whose target shows
    none of the part's points)."""
    d = point_distances(target, output, scale)
    return {part: mean_or_nan(d[:, sl], axis=1) for part, sl in PARTS.items()}


def part_recall(target: np.ndarray, output: np.ndarray) -> dict[str, np.ndarray]:
    """Per part, the (F,) share of the target's shown points that the output shows too (NaN
    in a frame whose target shows none)."""
    target, output = _check(target, "target"), _check(output, "output")
    shown_t = target[..., 2] >= VISIBLE
    both = shown_t & (output[..., 2] >= VISIBLE)
    out = {}
    for part, sl in PARTS.items():
        asked = shown_t[:, sl].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[part] = np.where(asked > 0, both[:, sl].sum(axis=1) / np.maximum(asked, 1), np.nan)
    return out


def dtw_error(target: np.ndarray, output: np.ndarray, scale: float, part: str) -> float:
    """nDTW-MJE of one part: the mean point distance along the cheapest monotone alignment of
    the output's frames to the target's (dynamic time warping; steps (1,0), (0,1), (1,1)),
    so a clip that is right but a few frames late scores about 0 where the frame-by-frame
    error does not. Cells where the target shows none of the part cost nothing and are not
    counted; NaN when no cell counts."""
    target, output = _check(target, "target"), _check(output, "output")
    sl = PARTS[part]
    n, m = len(target), len(output)
    if n == 0 or m == 0:
        return math.nan
    # one target frame against every output frame at a time: (Fo, k), never (Ft, Fo, k)
    cost = np.stack(
        [
            mean_or_nan(_distances(target[i, None, sl], output[:, sl], scale), axis=1)
            for i in range(n)
        ]
    )
    defined = ~np.isnan(cost)
    costs, counts = np.where(defined, cost, 0.0).tolist(), defined.tolist()
    # the table a row at a time, in Python floats (numpy scalars per cell cost more than the
    # arithmetic); among equal totals the diagonal first, as nDTW takes the shortest path
    above, above_n = [0.0] + [math.inf] * m, [0] * (m + 1)
    for i in range(n):
        row, row_n = [math.inf] * (m + 1), [0] * (m + 1)
        step, counted = costs[i], counts[i]
        for j in range(1, m + 1):
            diagonal, up, left = above[j - 1], above[j], row[j - 1]
            if diagonal <= up and diagonal <= left:
                best, best_n = diagonal, above_n[j - 1]
            elif up <= left:
                best, best_n = up, above_n[j]
            else:
                best, best_n = left, row_n[j - 1]
            row[j] = best + step[j - 1]
            row_n[j] = best_n + counted[j - 1]
        above, above_n = row, row_n
    return above[m] / above_n[m] if above_n[m] else math.nan


def identity(reference: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """(F,) cosine similarity of each frame's image embedding (``frames``: (F, D)) with the
    reference's (``reference``: (D,) or (1, D)); 1 for the reference itself."""
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    emb = np.asarray(frames, dtype=np.float64).reshape(len(frames), -1)
    norms = np.linalg.norm(emb, axis=1) * np.linalg.norm(ref)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, emb @ ref / np.maximum(norms, 1e-30), 0.0)


def flicker(frames: np.ndarray) -> float:
    """Temporal flicker of (F, H, W, C) uint8 frames in [0, 1]: the mean absolute second
    difference over time, |x[t+1] - 2 x[t] + x[t-1]| / 510, averaged over pixels and frames.
    0 for a still sequence and for a steady fade or motion at constant speed; 1 for pixels
    that swing between black and white every frame. (VBench's temporal flickering uses the
    first difference, which also counts motion itself.) 0 for fewer than 3 frames."""
    frames = np.asarray(frames)
    if frames.ndim != 4:
        raise ValueError(f"flicker: expected (frames, height, width, channels), got {frames.shape}")
    if len(frames) < 3:
        return 0.0
    total = 0.0
    for t in range(1, len(frames) - 1):  # a frame triple at a time: no (F,H,W,C) float copy
        a, b, c = (frames[t + k].astype(np.int16) for k in (-1, 0, 1))
        total += float(np.abs(c - 2 * b + a).mean())
    return total / (len(frames) - 2) / 510.0
