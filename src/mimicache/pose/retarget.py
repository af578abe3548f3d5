"""Pose retargeting after the published rescale: "published" (none) or the original scripts' "graft".

Graft (made for sign language): the reference person keeps its own body; only the arms, the
hands and the face follow the driving pose. PoseFrames in (normalised float64 coordinates, the
video pose already rescaled by ``align.apply_alignment``), PoseFrames out; pure functions.
Body indices are the 18-point OpenPose order (1 neck, 2/3/4 right shoulder/elbow/wrist, 5/6/7
left shoulder/elbow/wrist, 0 nose, 14-17 eyes and ears).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mimicache.config import RETARGET_MODES
from mimicache.errors import InputError, setting
from mimicache.pose.keypoints import PoseFrame

logger = logging.getLogger(__name__)

PUBLISHED, GRAFT = RETARGET_MODES

NECK, R_SHOULDER, R_ELBOW, R_WRIST, L_SHOULDER, L_ELBOW, L_WRIST = 1, 2, 3, 4, 5, 6, 7
FACE_BODY_IDS = [0, 14, 15, 16, 17]
SCALE_POINTS = {NECK: "neck", R_SHOULDER: "right shoulder", L_SHOULDER: "left shoulder"}
EPS_SCALE = 1e-6  # added to the driving shoulder width (no division by zero)
MIN_BOX = 1e-6  # floor of a box side in the face mapping
SHOWN_FRAMES = 10

__all__ = [
    "GRAFT",
    "PUBLISHED",
    "RETARGET_MODES",
    "check_graft_reference",
    "check_mode",
    "graft_pose",
    "graft_poses",
    "retarget_poses",
]


def check_mode(mode: str) -> str:
    """``mode`` itself when it is a retarget mode, else ``ValueError`` naming the choices."""
    if mode not in RETARGET_MODES:
        raise ValueError(f"unknown pose retarget mode {mode!r}; choose one of: published, graft")
    return mode


def _box_map(points: np.ndarray, ref_points: np.ndarray) -> np.ndarray:
    """Map ``points`` (K, 2) from their bounding box onto the box of ``ref_points``, per axis."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    ref_lo, ref_hi = ref_points.min(axis=0), ref_points.max(axis=0)
    size = hi - lo
    ref_size = ref_hi - ref_lo
    size[size < MIN_BOX] = MIN_BOX
    ref_size[ref_size < MIN_BOX] = MIN_BOX
    return (points - (lo + hi) / 2.0) * (ref_size / size) + (ref_lo + ref_hi) / 2.0


def _person_rows(
    ref_scores: np.ndarray, video_scores: np.ndarray, nr: int, nv: int, blocks: int
) -> np.ndarray:
    """Score rows per person: reference person i takes driving person i's rows where it exists.

    Arrays hold ``blocks`` blocks of one row per person (hands: all left, then all right; faces:
    one block). With as many people on both sides this is the driving pose's whole array.
    """
    out = ref_scores.copy()
    shared = min(nr, nv)
    for block in range(blocks):
        out[block * nr : block * nr + shared] = video_scores[block * nv : block * nv + shared]
    return out


def graft_pose(ref: PoseFrame, video: PoseFrame) -> PoseFrame:
    """The reference pose with the driving pose's arms, hands and face grafted on.

    With several people the first person of each is used; every other reference person, the
    subset and the body scores stay the reference's. Arms and hands are scaled by the
    shoulder-to-neck distance ratio of their side; face points are mapped box to box.

    Args:
        ref: the reference image's pose (already fitted to the output).
        video: one aligned driving pose.

    Returns:
        The grafted pose (a new ``PoseFrame``; the inputs are not changed).

    Raises:
        ValueError: either pose has no person.
    """
    if ref.num_people == 0 or video.num_people == 0:
        raise ValueError("graft_pose needs a person in both the reference and the driving pose")
    nr, nv = ref.num_people, video.num_people
    rb, vb = ref.candidate, video.candidate  # first person: rows 0..17
    body = rb.copy()

    def scale(shoulder: int) -> float:
        ref_width = np.linalg.norm(rb[shoulder] - rb[NECK])
        return ref_width / (np.linalg.norm(vb[shoulder] - vb[NECK]) + EPS_SCALE)

    scale_left, scale_right = scale(L_SHOULDER), scale(R_SHOULDER)
    for shoulder, elbow, wrist, s in (
        (L_SHOULDER, L_ELBOW, L_WRIST, scale_left),
        (R_SHOULDER, R_ELBOW, R_WRIST, scale_right),
    ):
        body[elbow] = rb[shoulder] + (vb[elbow] - vb[shoulder]) * s
        body[wrist] = body[elbow] + (vb[wrist] - vb[elbow]) * s

    hands, hands_score = ref.hands.copy(), ref.hands_score.copy()
    # "Any hand point" = any non-zero hand score. Coordinates cannot tell: undetected points
    # still get (rescaled) coordinates. So coordinates and scores always come from one pose,
    # and a video whose hands are all undetected keeps the reference's hands as they are.
    if np.any(video.hands_score != 0):
        hands[0] = body[L_WRIST] + (video.hands[0] - vb[L_WRIST]) * scale_left
        hands[nr] = body[R_WRIST] + (video.hands[nv] - vb[R_WRIST]) * scale_right
        hands_score = _person_rows(ref.hands_score, video.hands_score, nr, nv, 2)

    faces, faces_score = ref.faces.copy(), ref.faces_score.copy()
    faces[0] = _box_map(video.faces[0], ref.faces[0])
    body[FACE_BODY_IDS] = _box_map(vb[FACE_BODY_IDS], rb[FACE_BODY_IDS])
    if np.any(video.faces_score != 0):
        faces_score = _person_rows(ref.faces_score, video.faces_score, nr, nv, 1)

    return PoseFrame(
        candidate=body,
        subset=ref.subset.copy(),
        body_score=ref.body_score.copy(),
        faces=faces,
        faces_score=faces_score,
        hands=hands,
        hands_score=hands_score,
    )


def _missing_scale_points(pose: PoseFrame) -> list[str]:
    """Names of the neck/shoulders not detected (subset -1) on the first person."""
    return [name for i, name in SCALE_POINTS.items() if pose.subset[0][i] < 0]


def _has_person(pose: PoseFrame) -> bool:
    """A first person with at least one body point detected (confidence > 0.3)."""
    return pose.num_people > 0 and bool(np.any(pose.subset[0] >= 0))


def _frame_list(frames: list[int]) -> str:
    shown = ", ".join(str(i) for i in frames[:SHOWN_FRAMES])
    more = len(frames) - SHOWN_FRAMES
    return shown + (f" and {more} more" if more > 0 else "")


def check_graft_reference(ref: PoseFrame, *, image_path: str | Path | None = None) -> None:
    """:class:`InputError` unless the reference's first person has the neck and both shoulders
    (confidence > 0.3): graft hangs the driving arms on them and scales by their distance."""
    missing = _missing_scale_points(ref) if ref.num_people else list(SCALE_POINTS.values())
    if missing:
        where = f" {image_path}" if image_path else ""
        raise InputError(
            f"neck or shoulders not found in the reference image{where} (missing: "
            f"{', '.join(missing)}): the graft pose retargeting needs the neck and both "
            "shoulders of the reference person detected with confidence > 0.3. Use a reference "
            "image that "
            "shows the upper body clearly, or the published retargeting "
            f"({setting('pose_retarget', PUBLISHED)}, or pose.retarget: published in the config)."
        )


def graft_poses(
    ref: PoseFrame,
    video: Sequence[PoseFrame],
    *,
    video_path: str | Path | None = None,
    image_path: str | Path | None = None,
) -> list[PoseFrame]:
    """Graft every (rescaled) driving pose onto ``ref``.

    A driving frame with nobody in it (no body point detected) shows the reference pose, with
    one warning naming those frames. Raises :class:`InputError` when the reference, or a driving
    frame that shows a person, lacks the neck or a shoulder (they set the arm scales).
    """
    check_graft_reference(ref, image_path=image_path)
    empty = [i for i, pose in enumerate(video) if not _has_person(pose)]
    partial = [
        i for i, pose in enumerate(video) if _has_person(pose) and _missing_scale_points(pose)
    ]
    where = f" {video_path}" if video_path else ""
    if partial:
        raise InputError(
            f"neck or shoulders not found in frame(s) {_frame_list(partial)} of the driving "
            f"video{where} (counted from 0 among its {len(video)} sampled frames, as in the "
            "output video): the graft pose retargeting scales the arms at the shoulders and "
            "needs the neck and both shoulders detected with confidence > 0.3. Use a video "
            "that shows the upper body in every frame (trim or crop it), or the published "
            f"retargeting ({setting('pose_retarget', PUBLISHED)})."
        )
    if empty:
        logger.warning(
            "no person in frame(s) %s of the driving video%s (counted from 0 among its %d "
            "sampled frames): graft draws the reference pose there",
            _frame_list(empty),
            where,
            len(video),
        )
    skip = set(empty)
    return [
        PoseFrame.from_dict(ref.to_dict()) if i in skip else graft_pose(ref, pose)
        for i, pose in enumerate(video)
    ]


def retarget_poses(
    mode: str,
    ref: PoseFrame,
    aligned: Sequence[PoseFrame],
    *,
    video_path: str | Path | None = None,
    image_path: str | Path | None = None,
) -> list[PoseFrame]:
    """The rescaled driving poses as ``mode`` draws them ("published": unchanged)."""
    if check_mode(mode) == PUBLISHED:
        return list(aligned)
    return graft_poses(ref, aligned, video_path=video_path, image_path=image_path)
