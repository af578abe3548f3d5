"""Align video poses to the reference body: the published linear rescale, as pure functions.

Inputs are :class:`PoseFrame` values with normalised coordinates; outputs are new PoseFrames
whose body, face and hand points are ``p * (ax, ay) + (bx, by)`` (scores and subsets copied).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mimicache.errors import InputError, setting
from mimicache.pose.keypoints import PoseFrame

logger = logging.getLogger(__name__)

# OpenPose ids used for the fit: nose, neck, shoulders, hips, knees, ankles, eyes, ears.
ALIGN_IDS = [0, 1, 2, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]


def reference_ids(ref: PoseFrame) -> list[int]:
    """Alignment ids present (subset >= 0) on the reference's first person."""
    if ref.num_people == 0:
        return []
    return [i for i in ALIGN_IDS if ref.subset[0][i] >= 0.0]


def no_reference_person(image_path: str | Path | None) -> InputError:
    """The error for a reference image without a usable person (the published code crashes)."""
    where = f" {image_path}" if image_path else ""
    return InputError(
        f"no person found in the reference image{where}: none of the body keypoints used for "
        "alignment (nose, neck, shoulders, hips, knees, ankles, eyes, ears) was detected with "
        "confidence > 0.3. Use a reference image that shows one person clearly, full body."
    )


def align_params(
    ref: PoseFrame,
    video: Sequence[PoseFrame],
    frame_hw: tuple[int, int],
    target_hw: tuple[int, int],
    *,
    video_path: str | Path | None = None,
    image_path: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Scale ``a = (ax, ay)`` and offset ``b = (bx, by)`` (float64) of the published fit.

    y: least-squares line from the video y of the chosen ids (single-person frames only) to the
    reference y; x: ``ax = ay / (fh / fw / H * W)``, ``bx = mean(ref_x - ax * video_x)``.
    """
    ids = reference_ids(ref)
    if not ids:
        raise no_reference_person(image_path)
    ref_body = ref.candidate[ids]
    where = f" {video_path}" if video_path else ""
    _check_people(video, where)
    singles = [p.candidate for p in video if p.candidate.shape[0] == 18]
    if not singles:
        raise InputError(
            f"no frame of the driving video{where} shows exactly one person "
            f"({len(video)} sampled frames; the pose alignment needs at least one). "
            f"Pick one person with {setting('person', 'largest')}, center or N (pose.person "
            "in the config), "
            "or use a video with a single dancer."
        )
    bodies = np.stack(singles)[:, ids]
    n = len(bodies)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", np.exceptions.RankWarning)
        ay, by = np.polyfit(bodies[:, :, 1].flatten(), np.tile(ref_body[:, 1], n), 1)
    if any(issubclass(w.category, np.exceptions.RankWarning) for w in caught):
        logger.warning(
            "driving video%s: the pose alignment is poorly determined (the detected body "
            "points barely spread vertically), so the skeleton's scale may be off",
            where,
        )
    fh, fw = frame_hw
    height, width = target_hw
    ax = ay / (fh / fw / height * width)
    bx = np.mean(np.tile(ref_body[:, 0], n) - bodies[:, :, 0].flatten() * ax)
    return np.array([ax, ay]), np.array([bx, by])


def _check_people(video: Sequence[PoseFrame], where: str) -> None:
    """Error when no sampled frame shows a person, warning when only some do.

    DWPose falls back to the whole frame when its detector finds nobody, so an empty frame
    still yields keypoints; a person counts as seen when a body keypoint clears the threshold.
    """
    seen = sum(1 for p in video if (p.subset >= 0).any())
    if seen == 0:
        raise InputError(
            f"no person was detected in the driving video{where}: none of its {len(video)} "
            "sampled frames has a body keypoint with confidence > 0.3. Use a video that shows "
            "one person."
        )
    if seen < len(video):
        logger.warning(
            "driving video%s: a person was detected in %d of %d sampled frames (%.0f %%); "
            "the other frames carry only low-confidence points",
            where,
            seen,
            len(video),
            100.0 * seen / len(video),
        )


def apply_alignment(pose: PoseFrame, a: np.ndarray, b: np.ndarray) -> PoseFrame:
    """Rescale every point of ``pose`` by ``p * a + b``."""
    return PoseFrame(
        candidate=pose.candidate * a + b,
        subset=pose.subset.copy(),
        body_score=pose.body_score.copy(),
        faces=pose.faces * a + b,
        faces_score=pose.faces_score.copy(),
        hands=pose.hands * a + b,
        hands_score=pose.hands_score.copy(),
    )


def align_poses(
    ref: PoseFrame,
    video: Sequence[PoseFrame],
    frame_hw: tuple[int, int],
    target_hw: tuple[int, int],
    *,
    video_path: str | Path | None = None,
    image_path: str | Path | None = None,
) -> list[PoseFrame]:
    """Every video pose rescaled onto the reference body (see :func:`align_params`).

    ``frame_hw`` is the video frame (height, width); ``target_hw`` the output (H, W).
    Raises :class:`InputError` when the reference has no usable person or no video frame has
    exactly one person (the published code crashes there).
    """
    a, b = align_params(
        ref, video, frame_hw, target_hw, video_path=video_path, image_path=image_path
    )
    return [apply_alignment(p, a, b) for p in video]
