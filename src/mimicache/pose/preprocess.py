"""From a reference image and a driving video to ``pose_pixels`` / ``image_pixels``.

Split into stages so each can be cached on its own:
``extract_image_pose`` (fitted image → PoseFrame), ``extract_video_poses`` (video → raw,
normalised, un-aligned poses; independent of the resolution), ``select_person`` (one person of
a multi-person video, see ``people``), ``render_pose_frames`` (align, retarget ("published" or
"graft", see ``retarget``), draw). ``pose_steps`` runs them in order, each through an optional
``run_step`` (the engine's cache); ``preprocess`` is the published ``preprocess`` over them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mimicache.errors import InputError
from mimicache.media import fit_image, fit_size, image_size, iter_frames, probe_video, read_image
from mimicache.pose.align import align_poses, no_reference_person, reference_ids
from mimicache.pose.draw import draw_poses
from mimicache.pose.keypoints import PoseFrame, PoseSequence
from mimicache.pose.people import AUTO, PeopleReport, choose_person
from mimicache.pose.retarget import (
    GRAFT,
    PUBLISHED,
    check_graft_reference,
    check_mode,
    retarget_poses,
)

if TYPE_CHECKING:
    from mimicache.pose.dwpose import DWPose

__all__ = [
    "IMAGE_KEYPOINTS",
    "POSE_FRAMES",
    "VIDEO_KEYPOINTS",
    "DrawnPose",
    "PreparedPose",
    "ReferenceImage",
    "VideoPoses",
    "extract_image_pose",
    "extract_video_poses",
    "log_people",
    "pose_steps",
    "preprocess",
    "render_pose_frames",
    "select_person",
    "target_poses",
]

logger = logging.getLogger(__name__)

# The steps whose results are worth keeping (the engine caches each under this name).
IMAGE_KEYPOINTS = "image_keypoints"
VIDEO_KEYPOINTS = "video_keypoints"
POSE_FRAMES = "pose_frames"


@dataclass
class VideoPoses:
    """Raw DWPose output of the sampled video frames (normalised coordinates) and frame size."""

    poses: list[PoseFrame]
    frame_height: int
    frame_width: int

    def to_tensors(self) -> dict[str, torch.Tensor]:
        out = PoseSequence(self.poses).to_tensors()
        out["frame_hw"] = torch.tensor([self.frame_height, self.frame_width], dtype=torch.int64)
        return out

    @classmethod
    def from_tensors(cls, tensors) -> VideoPoses:
        rest = {k: v for k, v in tensors.items() if k != "frame_hw"}
        fh, fw = (int(x) for x in tensors["frame_hw"].tolist())
        return cls(PoseSequence.from_tensors(rest).frames, fh, fw)


def extract_image_pose(
    image: np.ndarray, dwpose, *, image_path: str | Path | None = None
) -> PoseFrame:
    """DWPose on the fitted reference image (H, W, 3) uint8 → its pose.

    Raises :class:`InputError` when no usable person is found (no alignment keypoint of the
    first person above 0.3), where the published code would crash later.
    """
    pose = dwpose.detect(image)
    if not reference_ids(pose):
        raise no_reference_person(image_path)
    return pose


def extract_video_poses(
    video_path: str | Path,
    sample_stride: int,
    dwpose,
    *,
    progress: bool = True,
    desc: str = "DWPose",
) -> VideoPoses:
    """DWPose on frames 0, s, 2s, ... (effective stride) of the video, streamed; ``desc``
    labels the progress bar."""
    info = probe_video(video_path)
    stride_total = None
    if info.frame_count > 0:
        from mimicache.media import effective_stride

        stride = effective_stride(sample_stride, info.avg_fps)
        stride_total = (info.frame_count + stride - 1) // stride
    size: list[int] = []

    def frames():
        for frame in iter_frames(video_path, sample_stride):
            if not size:
                size.extend(frame.shape[:2])
            yield frame

    poses = dwpose.detect_many(frames(), progress=progress, total=stride_total, desc=desc)
    if not size:  # pragma: no cover - iter_frames raises first
        raise InputError(f"video {video_path} has no decodable frame.")
    return VideoPoses(poses, size[0], size[1])


def select_person(
    video: VideoPoses, choice: str = AUTO, *, video_path: str | Path | None = None
) -> tuple[VideoPoses, PeopleReport]:
    """The video poses with only the chosen person (``people.choose_person``), and who was seen.

    Logs one line when the video shows several people or a person was chosen (a warning when
    everyone is drawn), so every job says which dancer drives its pose.
    """
    poses, report = choose_person(
        video.poses, choice, (video.frame_height, video.frame_width), video_path=video_path
    )
    log_people(report, video_path)
    return VideoPoses(poses, video.frame_height, video.frame_width), report


def log_people(report: PeopleReport, video_path: str | Path | None = None) -> None:
    """The line a job logs when its video shows several people or a person was chosen (a
    warning when everyone is drawn); nothing otherwise."""
    if report.several or report.chosen is not None:
        level = logging.WARNING if report.chosen is None and report.several else logging.INFO
        where = f" {video_path}" if video_path else ""
        logger.log(level, "driving video%s: %s", where, report.summary())


def target_poses(
    ref_pose: PoseFrame,
    video: VideoPoses,
    height: int,
    width: int,
    *,
    video_path: str | Path | None = None,
    image_path: str | Path | None = None,
    retarget: str = PUBLISHED,
) -> PoseSequence:
    """The poses the pose frames show, 1+F of them in coordinates normalised to the output
    (``height`` x ``width``): the reference pose, then the aligned video poses.

    ``retarget="graft"`` grafts each aligned video pose onto the reference pose
    (:func:`mimicache.pose.retarget.graft_poses`); frame 0 is the reference pose either way.
    """
    check_mode(retarget)
    aligned = align_poses(
        ref_pose,
        video.poses,
        (video.frame_height, video.frame_width),
        (height, width),
        video_path=video_path,
        image_path=image_path,
    )
    aligned = retarget_poses(
        retarget, ref_pose, aligned, video_path=video_path, image_path=image_path
    )
    return PoseSequence([ref_pose, *aligned])


def render_pose_frames(
    ref_pose: PoseFrame, video: VideoPoses, height: int, width: int, **where: Any
) -> np.ndarray:
    """(1+F, height, width, 3) uint8: the ``target_poses`` drawn (the reference pose, then the
    aligned video poses); ``where``: ``target_poses``' keywords (paths, ``retarget``)."""
    return draw_poses(target_poses(ref_pose, video, height, width, **where), height, width)


def to_model_pixels(frames: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 → (N, 3, H, W) float32 in [-1, 1] (``x / 127.5 - 1``)."""
    tensor = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))
    return tensor / 127.5 - 1


@dataclass
class ReferenceImage:
    """The reference image fitted to ``resolution`` (``media.fit_image``), decoded only when
    its pixels are needed: a job whose every stage is a cache hit never reads them."""

    path: Path
    resolution: int

    @cached_property
    def size(self) -> tuple[int, int]:
        """(height, width) of the fitted image, from the file's header."""
        return fit_size(*image_size(self.path), self.resolution)[:2]

    @cached_property
    def pixels(self) -> np.ndarray:
        """(H, W, 3) uint8: the fitted image."""
        return fit_image(read_image(self.path), self.resolution)


@dataclass
class DrawnPose:
    """The pose frames step's value: the drawn frames (1+F,H,W,3) uint8, who was seen in the
    video and the poses drawn (``target_poses``, 1+F), kept together so a job whose drawn
    frames are cached needs no keypoints, and a clip can be scored against what it was asked
    for (``people``/``targets`` None: an entry without them)."""

    frames: np.ndarray
    people: PeopleReport | None
    targets: PoseSequence | None = None


@dataclass
class PreparedPose:
    """What the pose steps give one job: the drawn pose frames (1+F,H,W,3) uint8 (frame 0 the
    reference pose), the fitted reference image, who was seen in the video and the poses
    drawn (1+F, normalised to the output size)."""

    frames: np.ndarray
    image: ReferenceImage
    people: PeopleReport
    targets: PoseSequence | None = None


def _run_directly(step: str, compute: Callable, subject: Path):
    return compute()


def pose_steps(
    video_path: str | Path,
    image_path: str | Path,
    resolution: int,
    sample_stride: int,
    dwpose,
    *,
    retarget: str = PUBLISHED,
    person: str = AUTO,
    progress: bool = True,
    desc: str = "DWPose",
    run_step: Callable[[str, Callable, Path], object] = _run_directly,
) -> PreparedPose:
    """The pose steps in their one order: the fitted image's keypoints, the video's keypoints,
    one person chosen, aligned (and retargeted) and drawn. The image is read only by a step
    that computes (``ReferenceImage``).

    ``run_step(name, compute, subject)`` returns ``compute()``'s value for the step ``name``
    (IMAGE_KEYPOINTS, VIDEO_KEYPOINTS, POSE_FRAMES), for example from a cache keyed on
    ``subject``, the file the step reads.
    """
    check_mode(retarget)
    video_path, image_path = Path(video_path), Path(image_path)
    image = ReferenceImage(image_path, resolution)
    ref_pose: PoseFrame = run_step(
        IMAGE_KEYPOINTS,
        lambda: extract_image_pose(image.pixels, dwpose, image_path=image_path),
        image_path,
    )
    if retarget == GRAFT:  # before DWPose runs on the whole video
        check_graft_reference(ref_pose, image_path=image_path)
    video: VideoPoses = run_step(
        VIDEO_KEYPOINTS,
        lambda: extract_video_poses(
            video_path, sample_stride, dwpose, progress=progress, desc=desc
        ),
        video_path,
    )
    # Cheap, so it runs even when the drawn frames come from a cache: the report says who
    # drives the pose either way.
    video, people = select_person(video, person, video_path=video_path)

    def draw() -> DrawnPose:
        height, width = image.size
        poses = target_poses(
            ref_pose,
            video,
            height,
            width,
            video_path=video_path,
            image_path=image_path,
            retarget=retarget,
        )
        return DrawnPose(draw_poses(poses, height, width), people, poses)

    drawn: DrawnPose = run_step(POSE_FRAMES, draw, video_path)
    return PreparedPose(drawn.frames, image, people, drawn.targets)


def preprocess(
    video_path: str | Path,
    image_path: str | Path,
    resolution: int = 576,
    sample_stride: int = 2,
    dwpose: DWPose | None = None,
    *,
    progress: bool = True,
    retarget: str = PUBLISHED,
    person: str = AUTO,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The published preprocess: the pose frames and the reference image as the pipeline
    takes them.

    DWPose runs once on the fitted reference image (the published code runs it twice with the
    same result) and once per sampled video frame.

    Args:
        video_path: the driving video.
        image_path: the reference image.
        resolution: the fitted image's short side (576: 576x1024 or 1024x576).
        sample_stride: every n-th frame (times ``max(1, int(fps / 24))``).
        dwpose: a ``mimicache.pose.DWPose``.
        progress: a DWPose progress bar.
        retarget: "published", or "graft" for the original scripts' pose frames.
        person: who drives the pose: "auto" (everyone, as published), "largest", "center"
            or a number (see ``select_person``).

    Returns:
        ``(pose_pixels, image_pixels)``: (1+F,3,H,W) and (1,3,H,W) float32 in [-1, 1].

    Raises:
        InputError: no person in the reference image, no frame to align, an unreadable file.
        ValueError: ``dwpose`` is missing.
    """
    if dwpose is None:
        raise ValueError("preprocess needs a DWPose instance (mimicache.pose.DWPose)")
    pose = pose_steps(
        video_path,
        image_path,
        resolution,
        sample_stride,
        dwpose,
        retarget=retarget,
        person=person,
        progress=progress,
    )
    return to_model_pixels(pose.frames), to_model_pixels(pose.image.pixels[None])
