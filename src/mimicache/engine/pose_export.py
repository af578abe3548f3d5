"""A job's keypoints as ``.pose`` files (``quality.pose_files``), for the sign-language field's
evaluation and data tools: ``{stem}.driving.pose`` (the driving video's sampled frames, the
chosen person, in the video's pixels, at the sampled rate), ``{stem}.target.pose`` (the poses
the pose frames show, reference frame dropped, in the output's pixels, at the clip's rate) and,
for a scored clip, ``{stem}.output.pose`` (the poses DWPose found in its scored frames)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mimicache.config import TestCase
from mimicache.engine.record import JobRecord
from mimicache.engine.scoring import ClipPoints, driving_points
from mimicache.media import effective_stride, probe_video
from mimicache.pose import PoseSequence
from mimicache.quality.points import sequence_points
from mimicache.quality.pose_files import write_pose_file

if TYPE_CHECKING:
    from mimicache.engine.engine import MimicMotion

__all__ = ["export_poses"]


def export_poses(
    engine: MimicMotion,
    case: TestCase,
    targets: PoseSequence,
    folder: str | Path,
    stem: str,
    *,
    size: tuple[int, int],
    output: ClipPoints | None = None,
    record: JobRecord | None = None,
) -> list[Path]:
    """Write the job's ``.pose`` files into ``folder``: ``targets`` the 1+F poses its pose
    frames show (``prepare_pose``), ``size`` the output's (height, width), ``output`` what a
    score found; ``record`` gets the driving keypoints' stage. Returns the files written."""
    folder = Path(folder)
    height, width = size
    record = record if record is not None else JobRecord(engine.device)
    info = probe_video(case.ref_video_path)
    sampled_fps = info.avg_fps / effective_stride(case.sample_stride, info.avg_fps)
    written = [
        write_pose_file(
            driving_points(engine, case, record),
            folder / f"{stem}.driving.pose",
            fps=sampled_fps or case.fps,
            width=info.width,
            height=info.height,
        ),
        write_pose_file(
            sequence_points(list(targets)[1:], height, width),
            folder / f"{stem}.target.pose",
            fps=case.fps,
            width=width,
            height=height,
        ),
    ]
    if output is not None:
        written.append(
            write_pose_file(
                output.found,
                folder / f"{stem}.output.pose",
                fps=case.fps * len(output.frames) / max(len(targets) - 1, 1),
                width=output.width,
                height=output.height,
            )
        )
    return written
