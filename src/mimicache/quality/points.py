"""DWPose's poses as the metrics' arrays: one person's 128 points, (x, y) in output pixels and a
confidence (see ``metrics``); ``PoseFrame``s in, (F, 128, 3) float64 out."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from mimicache.pose import PoseFrame
from mimicache.quality.metrics import NUM_POINTS, PARTS, VISIBLE

__all__ = ["matching_points", "person_points", "points_pose", "sequence_points"]


def person_points(frame: PoseFrame, person: int, height: int, width: int) -> np.ndarray:
    """(128, 3): person ``person`` of ``frame`` (coordinates normalised to the frame) in
    pixels of a ``height`` x ``width`` frame; all confidences 0 when there is no such person."""
    out = np.zeros((NUM_POINTS, 3))
    n = frame.num_people
    if not 0 <= person < n:
        return out
    size = np.array([width, height], dtype=np.float64)
    parts = (
        ("body", frame.candidate[18 * person : 18 * person + 18], frame.body_score[person]),
        ("left_hand", frame.hands[person], frame.hands_score[person]),
        ("right_hand", frame.hands[n + person], frame.hands_score[n + person]),
        ("face", frame.faces[person], frame.faces_score[person]),
    )
    for part, points, scores in parts:
        out[PARTS[part], :2] = points * size
        out[PARTS[part], 2] = scores
    return out


def points_pose(points: np.ndarray, height: int, width: int) -> PoseFrame:
    """One person's (128, 3) points in pixels as a ``PoseFrame`` (normalised; ``subset``
    from the body points shown), e.g. to draw it."""
    size = np.array([width, height], dtype=np.float64)
    pts = np.asarray(points, dtype=np.float64)

    def part(name: str) -> tuple[np.ndarray, np.ndarray]:
        chosen = pts[PARTS[name]]
        return chosen[:, :2] / size, chosen[:, 2]

    body, body_score = part("body")
    left, left_score = part("left_hand")
    right, right_score = part("right_hand")
    face, face_score = part("face")
    subset = np.where(body_score >= VISIBLE, np.arange(18, dtype=np.float64), -1.0)
    return PoseFrame(
        candidate=body,
        subset=subset[None],
        body_score=body_score[None],
        faces=face[None],
        faces_score=face_score[None],
        hands=np.stack([left, right]),
        hands_score=np.stack([left_score, right_score]),
    )


def matching_points(frame: PoseFrame, near: np.ndarray, height: int, width: int) -> np.ndarray:
    """(128, 3): the person of ``frame`` whose body is closest to ``near`` (128, 3), by the
    mean distance over the body points both show (the first person when none shares one;
    all confidences 0 when ``frame`` shows nobody). An output clip may show a second figure:
    the one that took the target's place is scored."""
    people = [person_points(frame, p, height, width) for p in range(frame.num_people)]
    if not people:
        return np.zeros((NUM_POINTS, 3))
    return min(people, key=lambda points: _body_distance(points, near))


def _body_distance(points: np.ndarray, near: np.ndarray) -> float:
    body, want = points[PARTS["body"]], near[PARTS["body"]]
    both = (body[:, 2] >= VISIBLE) & (want[:, 2] >= VISIBLE)
    if not both.any():
        return np.inf
    return float(np.hypot(*(body[both, :2] - want[both, :2]).T).mean())


def sequence_points(
    poses: Iterable[PoseFrame], height: int, width: int, person: int = 0
) -> np.ndarray:
    """(F, 128, 3): person ``person`` of each pose (zero confidence where absent)."""
    frames = [person_points(pose, person, height, width) for pose in poses]
    return np.stack(frames) if frames else np.zeros((0, NUM_POINTS, 3))
