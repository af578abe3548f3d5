"""A finished clip's scores (``quality``), measured with the engine's own DWPose and CLIP.

The poses found in the scored frames (``output_keypoints``) and their CLIP embeddings
(``output_embeddings``) are cached stages keyed by those frames' bytes and the models, so
scoring a clip again costs nothing; the reference's embedding is the ``clip_embeddings``
entry the job used. The targets are the poses its pose frames show (``GenerationResult
.targets``, or for a clip made before, the drawn frames' entry). Frames: (F,H,W,3) uint8.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from mimicache.config import TestCase
from mimicache.engine.record import JobRecord
from mimicache.engine.settings import CPU_SCORE_FRAMES, ScoreOptions
from mimicache.engine.stages import (
    OUTPUT_EMBEDDINGS_STAGE,
    OUTPUT_KEYPOINTS_STAGE,
    VIDEO_KEYPOINTS_STAGE,
    clip_frames,
    output_embeddings_key,
    output_keypoints_key,
)
from mimicache.errors import InputError
from mimicache.pose import PoseSequence
from mimicache.pose.people import choose_person
from mimicache.pose.preprocess import ReferenceImage, extract_video_poses
from mimicache.quality.metrics import body_scale
from mimicache.quality.points import matching_points, person_points, sequence_points
from mimicache.quality.score import ClipScore, score_clip, scored_frames

logger = logging.getLogger(__name__)

__all__ = [
    "CPU_SCORE_FRAMES",
    "ClipPoints",
    "ScoreOptions",
    "driving_points",
    "score_frames",
    "score_job",
    "score_result",
    "score_written",
]


class ScoringEngine(Protocol):
    """What scoring uses of an engine (``engine.MimicMotion``): its DWPose and CLIP, where
    they run, its settings and model fingerprints, and its cached stages."""

    dwpose: Any
    device: torch.device
    dtype: torch.dtype
    fingerprints: Any
    settings: Any
    person: str
    image_encoder: Any

    def keys(self, case: TestCase) -> Any: ...

    def key_platform(self, part: str) -> dict: ...

    def run_stage(self, stage: Any, key: Any, compute: Any, subject: Any, record: Any) -> Any: ...

    def prepare_pose(self, case: TestCase, record: JobRecord, **options: Any) -> Any: ...

    def reference_embedding(self, case: TestCase, image: Any, record: JobRecord) -> Any: ...


def score_frames(engine: ScoringEngine, options: ScoreOptions) -> int | None:
    """The number of frames ``options`` scores with this engine (None: all)."""
    if options.frames == "auto":
        return CPU_SCORE_FRAMES if str(engine.dwpose.device).startswith("cpu") else None
    return options.frames  # type: ignore[return-value]


@dataclass(frozen=True)
class ClipPoints:
    """The points a score compared, (n, 128, 3) float64 in the clip's pixels (``quality
    .metrics``): what the scored ``frames`` were asked for (``targets``) and what DWPose found
    in them (``found``); ``height`` x ``width`` the clip's frame size."""

    frames: list[int]
    targets: np.ndarray
    found: np.ndarray
    height: int
    width: int


def score_result(
    engine: ScoringEngine,
    case: TestCase,
    frames: np.ndarray,
    targets: PoseSequence | None,
    record: JobRecord,
    *,
    options: ScoreOptions | None = None,
    subject: str,
    reference_embedding: torch.Tensor | None = None,
) -> ClipScore:
    """The scores of a clip (``frames``, the reference frame dropped) made for ``case``.

    Args:
        engine: DWPose (and CLIP, for the identity score) and the feature cache.
        case: the job (its reference image gives the identity's reference embedding).
        frames: (F, H, W, 3) uint8, the written clip.
        targets: the 1+F poses its pose frames show (frame 0 the reference pose).
        record: the job's record: stage timings (``output_keypoints``,
            ``output_embeddings``, "score") and cache events.
        options: the frames to score and the thresholds.
        subject: what the cache entries are listed under (the clip's path).
        reference_embedding: the reference image's CLIP embedding (1,D) when the caller has
            it (a job just generated); else its ``clip_embeddings`` entry is read.

    Returns:
        The judged ``ClipScore``.

    Raises:
        InputError: the targets do not match the clip (a clip not made from these poses).
    """
    options = options or ScoreOptions()
    measured = _measure(
        engine, case, frames, targets, record, options, subject, reference_embedding
    )
    return measured[0]


def _measure(
    engine: ScoringEngine,
    case: TestCase,
    frames: np.ndarray,
    targets: PoseSequence | None,
    record: JobRecord,
    options: ScoreOptions,
    subject: str,
    reference_embedding: torch.Tensor | None,
) -> tuple[ClipScore, ClipPoints]:
    """``score_result``, and the points it compared."""
    if targets is None or len(targets) != 1 + len(frames):
        count = max(len(targets) - 1, 0) if targets is not None else 0
        raise InputError(
            f"{subject}: the clip has {len(frames)} frames but its pose frames show {count}; "
            "it was not made from these inputs and settings"
        )
    picked = scored_frames(len(frames), score_frames(engine, options))
    chosen = np.ascontiguousarray(frames[picked])
    height, width = frames.shape[1:3]
    inputs = functools.cache(lambda: clip_frames(chosen))  # both stages' key, digested once
    found: PoseSequence = engine.run_stage(
        OUTPUT_KEYPOINTS_STAGE,
        lambda: output_keypoints_key(
            inputs(), engine.fingerprints.dwpose, engine.key_platform("dwpose")
        ),
        lambda: PoseSequence(engine.dwpose.detect_many(list(chosen), progress=False)),
        subject,
        record,
    )
    reference_embedding, frame_embeddings = _embeddings(
        engine, case, chosen, inputs, record, subject, reference_embedding
    )
    with record.time("score"):
        wanted = sequence_points([targets[i + 1] for i in picked], height, width)
        outputs = np.stack(
            [matching_points(pose, want, height, width) for pose, want in zip(found, wanted)]
        )
        reference = person_points(targets[0], 0, height, width)
        score = score_clip(
            targets=wanted,
            outputs=outputs,
            scale=body_scale(reference, fallback=height / 4),
            frames=picked,
            clip=frames,
            reference_embedding=reference_embedding,
            frame_embeddings=frame_embeddings,
            thresholds=options.thresholds,
        )
    return score, ClipPoints(picked, wanted, outputs, height, width)


def score_written(
    engine: ScoringEngine,
    case: TestCase,
    frames: np.ndarray,
    *,
    subject: str,
    options: ScoreOptions | None = None,
) -> tuple[ClipScore, ClipPoints, JobRecord]:
    """The scores of a clip written before (``frames`` (F, H, W, 3) uint8, decoded from its
    mp4) made for ``case`` with ``engine``'s pose settings: the poses it was asked for come
    from the pose stages (cache hits where the run left them), then ``score_result``.

    Returns:
        The judged score, the points compared, and the record (timings, cache events).

    Raises:
        InputError: an input of ``case`` cannot be read, or the clip does not match its poses.
    """
    record = JobRecord(engine.device)
    start = time.perf_counter()
    with record.time("preprocess"):
        engine.prepare_pose(case, record, progress=False)
    score, points = _measure(
        engine, case, frames, record.targets, record, options or ScoreOptions(), subject, None
    )
    record.timings["total"] = time.perf_counter() - start
    return score, points, record


def driving_points(engine: ScoringEngine, case: TestCase, record: JobRecord) -> np.ndarray:
    """(F, 128, 3) float64: the driving video's sampled frames' keypoints (the chosen person,
    in the video's pixels) [video_keypoints], e.g. to export beside the clip's."""
    keys = engine.keys(case)
    video = engine.run_stage(
        VIDEO_KEYPOINTS_STAGE,
        lambda: keys.video_keypoints,
        lambda: extract_video_poses(case.ref_video_path, case.sample_stride, engine.dwpose),
        Path(case.ref_video_path),
        record,
    )
    size = (video.frame_height, video.frame_width)
    # the person the job's own pose step chose, which said so already: no second log line
    poses, _ = choose_person(video.poses, engine.person, size, video_path=case.ref_video_path)
    return sequence_points(poses, *size)


def _embeddings(
    engine: ScoringEngine,
    case: TestCase,
    chosen: np.ndarray,
    inputs: Callable[[], dict],
    record: JobRecord,
    subject: str,
    reference: torch.Tensor | None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The reference's and the chosen frames' CLIP embeddings (float64), or (None, None) for
    an engine without CLIP."""
    encoder = engine.image_encoder
    if encoder is None:
        return None, None
    dtype = str(engine.dtype).removeprefix("torch.")
    if reference is None:
        image = ReferenceImage(case.ref_image_path, case.resolution)
        reference = engine.reference_embedding(case, image, record)
    embeds: torch.Tensor = engine.run_stage(
        OUTPUT_EMBEDDINGS_STAGE,
        lambda: output_embeddings_key(
            inputs(),
            engine.fingerprints.image_encoder,
            dtype,
            engine.device.type,
            engine.key_platform("models"),
        ),
        lambda: encoder.encode_frames(chosen, engine.device).cpu(),
        subject,
        record,
    )
    return _float64(reference)[0], _float64(embeds)


def _float64(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy().astype(np.float64)


def score_job(
    engine: ScoringEngine,
    case: TestCase,
    frames: np.ndarray,
    record: JobRecord,
    label: str,
    reference_embedding: torch.Tensor,
) -> ClipScore | None:
    """A job's clip scored as ``engine``'s settings ask (None: not asked for); a score that
    cannot be computed is a warning, never a failed job."""
    if engine.settings.score is None:
        return None
    try:
        return score_result(
            engine,
            case,
            frames,
            record.targets,
            record,
            options=engine.settings.score,
            subject=f"{case.ref_video_path} ({label})",
            reference_embedding=reference_embedding,
        )
    except Exception as exc:  # a score is never worth a failed job
        logger.warning("%s: no clip score (%s: %s)", label, type(exc).__name__, exc)
        logger.debug("traceback", exc_info=True)
        return None
