"""``EngineSettings``: how a loaded engine computes, beside its models. One value, so an engine
is built from it the same way everywhere (``MimicMotion.from_config``, the composition root
``engine.build``, a variant on loaded models for the web UI)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mimicache.config.thresholds import DEFAULT_THRESHOLDS
from mimicache.engine.speed import SpeedOptions
from mimicache.pipeline.schedulers import SchedulerOptions

__all__ = ["CPU_SCORE_FRAMES", "EngineSettings", "ScoreOptions"]

_SPEED_FIELDS = frozenset(f.name for f in dataclasses.fields(SpeedOptions))


CPU_SCORE_FRAMES = 16
"""Frames scored where DWPose runs on the CPU (about 4 s a frame with the real models), evenly
spaced with the first and last; a GPU (about 30 frames/s) scores every frame."""


@dataclass(frozen=True)
class ScoreOptions:
    """``frames``: how many evenly spaced frames to score (None: every frame; "auto":
    ``CPU_SCORE_FRAMES`` where DWPose runs on the CPU, every frame elsewhere); ``thresholds``
    of the verdict (``quality.score``)."""

    frames: int | str | None = "auto"
    thresholds: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))


@dataclass(frozen=True)
class EngineSettings:
    """Everything about an engine but its models and its cache.

    Attributes:
        scheduler: the sampler (None: the base model's Euler scheduler).
        pose_retarget: "published" or "graft" (None: the config's ``pose.retarget``, else
            "published").
        person: who drives the pose: "auto", "largest", "center" or a number (None: the
            config's ``pose.person``, else "auto").
        dwpose_device: where DWPose runs (None: where the models run).
        speed_options: speed mode, compilation, decode chunk size, offload (``SpeedOptions``).
        cache_pipeline_features: whether the CLIP and VAE stages use the feature cache.
        score: how each clip is scored (``ScoreOptions``); None: not scored.
    """

    scheduler: SchedulerOptions | None = None
    pose_retarget: str | None = None
    person: str | None = None
    dwpose_device: str | None = None
    speed_options: SpeedOptions = field(default_factory=SpeedOptions)
    cache_pipeline_features: bool = True
    score: ScoreOptions | None = None

    @classmethod
    def of(cls, **options: Any) -> EngineSettings:
        """Settings from flat keywords: this class's fields and ``SpeedOptions``' (``speed``,
        ``compile``, ``decode_chunk_size``, ``offload``, ``compile_backend``,
        ``compile_mode``), e.g. ``EngineSettings.of(speed="fast", pose_retarget="graft")``.

        Raises:
            TypeError: for a keyword that is neither.
            ConfigError: for a speed option ``SpeedOptions`` refuses.
        """
        speed = {name: options.pop(name) for name in list(options) if name in _SPEED_FIELDS}
        return cls(speed_options=SpeedOptions(**speed), **options)

    def replace(self, **changes: Any) -> EngineSettings:
        return dataclasses.replace(self, **changes)
