"""A job's record (seconds per stage and the cache events, filled in as the job runs), its
result, and the reference image as the published script hands it to the pipeline."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import PIL.Image
import torch

from mimicache.cache import CacheEvent
from mimicache.pipeline.timing import StageTimer
from mimicache.pose import PeopleReport, PoseSequence

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressEvent:
    """Where a job is: ``stage`` "preprocess" (pose and reference features) as it starts,
    then "denoise" with ``done`` of ``total`` (steps x tiles) passes, then "done"."""

    label: str
    stage: str
    done: int = 0
    total: int = 0


ProgressObserver = Callable[[ProgressEvent], None]


@dataclass
class JobRecord:
    """``timings`` in seconds by stage name (insertion order = run order); ``events`` the
    cache events (hits and misses with reasons); ``people`` who was seen in the driving video
    and who drives the pose (a ``pose.PeopleReport``); ``targets`` the poses drawn (a
    ``pose.PoseSequence``, 1+F). ``device`` is waited for before a stage's clock stops, so GPU
    work is counted where it happens."""

    device: torch.device | None = None
    timings: dict[str, float] = field(default_factory=dict)
    events: list[Any] = field(default_factory=list)
    people: Any = None
    targets: Any = None

    def time(self, stage: str, *, wait: bool = True) -> StageTimer:
        """A context that adds its block's seconds to ``timings[stage]``."""
        return StageTimer(self.timings, stage, self.device if wait else None)

    def log_stages(self, label: str) -> None:
        """The stages' seconds in one log line: what a terminal without bars gets instead."""
        shown = ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in self.timings.items())
        logger.info("%s: %s", label, shown)

    def log_cache(self, label: str) -> None:
        """The job's cache events in one line ("5 of 5 cached stages from the cache"); each
        event's own line is in the log file and, with ``-v``, on the console."""
        if self.events:
            logger.info("%s: %s", label, cache_summary(self.events))


def cache_summary(events: list[Any]) -> str:
    """``"2 of 5 cached stages from the cache; computed video_keypoints, pose_frames
    (absent), clip_embeddings (forced)"``: the hits counted, the misses by reason."""
    hits = sum(bool(getattr(e, "hit", False)) for e in events)
    text = f"{hits} of {len(events)} cached stages from the cache"
    reasons: dict[str, list[str]] = {}
    for event in events:
        if not getattr(event, "hit", False):
            reasons.setdefault(str(getattr(event, "reason", "?")), []).append(str(event.stage))
    if reasons:
        text += "; computed " + ", ".join(
            f"{', '.join(stages)} ({reason})" for reason, stages in reasons.items()
        )
    return text


@dataclass
class GenerationResult:
    frames: np.ndarray  # (F,H,W,3) uint8 RGB, reference frame dropped
    fps: int
    timings: dict[str, float]
    cache_events: list[CacheEvent] = field(default_factory=list)
    people: PeopleReport | None = None  # who was seen in the driving video, who was used
    platform: dict = field(default_factory=dict)  # where it was computed (engine.platform)
    # the poses the pose frames show (1+F, normalised to the output; frame 0 the reference)
    targets: PoseSequence | None = None
    score: Any = None  # quality.score.ClipScore of the clip; None: not scored


def published_reference_image(image_pixels: torch.Tensor) -> PIL.Image.Image:
    """(1,3,H,W) in [-1,1] -> the PIL image the published script hands to the pipeline.

    It converts back with ``((x + 1) * 127.5).to(uint8)``, which truncates and so lowers about a
    quarter of the 256 levels by one; CLIP and the VAE see that image, so we do the same.
    """
    restored = ((image_pixels[0] + 1.0) * 127.5).to(torch.uint8)
    return PIL.Image.fromarray(restored.permute(1, 2, 0).numpy())
