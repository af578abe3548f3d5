"""Keypoints as ``.pose`` files, the sign-language field's format (the ``pose-format`` library,
extra ``pose``), laid out as OpenPose's components so the field's tools read them as OpenPose:
``pose_keypoints_2d`` (BODY_25), ``face_keypoints_2d`` (70), ``hand_left_keypoints_2d`` and
``hand_right_keypoints_2d`` (21 each). One person; (F, 128, 3) float64 points in pixels
(``quality.metrics``) in, a point with confidence 0 is masked (not shown).

DWPose's body is OpenPose's 18-point COCO body: its points go to the BODY_25 points of the
same name (BODY_25's mid-hip and feet stay masked); its 68 face points are OpenPose's first 68
(the two pupils stay masked); both hands have OpenPose's 21-point order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mimicache.errors import MimicacheError
from mimicache.quality.metrics import NUM_POINTS, PARTS

__all__ = ["BODY_18", "POSE_INSTALL", "read_pose_points", "write_pose_file"]

POSE_INSTALL = 'pip install "mimicache[pose]"'

# DWPose's body points, in its order (OpenPose's COCO-18 body).
BODY_18 = (
    "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "RHip",
    "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar",
)  # fmt: skip

_COMPONENTS = (  # (OpenPose component, our part)
    ("pose_keypoints_2d", "body"),
    ("face_keypoints_2d", "face"),
    ("hand_left_keypoints_2d", "left_hand"),
    ("hand_right_keypoints_2d", "right_hand"),
)


def _openpose():
    try:
        from pose_format import Pose
        from pose_format.numpy.pose_body import NumPyPoseBody
        from pose_format.pose_header import PoseHeader, PoseHeaderDimensions
        from pose_format.utils.openpose import OpenPose_Components
    except ImportError as exc:
        raise MimicacheError(
            f".pose files need pose-format, which is not installed ({exc}): {POSE_INSTALL}"
        ) from None
    return Pose, NumPyPoseBody, PoseHeader, PoseHeaderDimensions, OpenPose_Components


def _slots(components) -> dict[str, np.ndarray]:
    """Our part -> the indices of its points among the file's points, in our order."""
    by_name = {c.name: c for c in components}
    out: dict[str, np.ndarray] = {}
    start = 0
    for component in components:
        names = list(component.points)
        part = dict(_COMPONENTS).get(component.name)
        if part == "body":
            out[part] = np.array([start + names.index(name) for name in BODY_18])
        elif part is not None:
            count = PARTS[part].stop - PARTS[part].start
            out[part] = np.arange(start, start + count)
        start += len(names)
    missing = [name for name, _ in _COMPONENTS if name not in by_name]
    if missing:  # pragma: no cover - a pose-format without OpenPose's components
        raise MimicacheError(f"pose-format has no OpenPose component {', '.join(missing)}")
    return out


def write_pose_file(
    points: np.ndarray, path: str | Path, *, fps: float, width: int, height: int
) -> Path:
    """Write one person's (F, 128, 3) points (pixels of a ``width`` x ``height`` frame) as a
    ``.pose`` file at ``fps``; returns its path."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 3 or points.shape[1:] != (NUM_POINTS, 3):
        raise ValueError(f"points must be (F, {NUM_POINTS}, 3), got {points.shape}")
    Pose, NumPyPoseBody, PoseHeader, PoseHeaderDimensions, components = _openpose()
    header = PoseHeader(
        version=0.2,
        dimensions=PoseHeaderDimensions(width=int(width), height=int(height), depth=0),
        components=components,
    )
    total = header.total_points()
    data = np.zeros((len(points), 1, total, 2), dtype=np.float32)
    confidence = np.zeros((len(points), 1, total), dtype=np.float32)
    for part, slots in _slots(components).items():
        ours = points[:, PARTS[part]]
        data[:, 0, slots] = ours[..., :2]
        confidence[:, 0, slots] = np.clip(ours[..., 2], 0.0, 1.0)
    mask = np.repeat((confidence == 0)[..., None], 2, axis=-1)
    body = NumPyPoseBody(fps=float(fps), data=np.ma.masked_array(data, mask), confidence=confidence)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        Pose(header, body).write(handle)
    return path


def read_pose_points(path: str | Path) -> tuple[np.ndarray, float]:
    """A ``.pose`` file written by ``write_pose_file`` (or any OpenPose-layout one) back as
    (F, 128, 3) points of its first person, and its frame rate."""
    Pose, *_ = _openpose()
    pose = Pose.read(Path(path).read_bytes())
    slots = _slots(pose.header.components)
    data = np.ma.getdata(pose.body.data)[:, 0]
    confidence = np.asarray(pose.body.confidence)[:, 0]
    out = np.zeros((len(data), NUM_POINTS, 3))
    for part, where in slots.items():
        out[:, PARTS[part], :2] = data[:, where, :2]
        out[:, PARTS[part], 2] = confidence[:, where]
    return out, float(pose.body.fps)
