"""The one composition root: an ``EngineSpec`` in, a loaded engine (and its feature store)
out. Every command and every worker builds its engine here, so all of them load the same
models the same way; progress goes to the observer given here."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch

from mimicache.cache.store import CacheMode, FeatureStore
from mimicache.config.thresholds import check_thresholds
from mimicache.engine.devices import default_device
from mimicache.engine.engine import MimicMotion
from mimicache.engine.record import ProgressObserver
from mimicache.engine.settings import EngineSettings, ScoreOptions
from mimicache.engine.spec import VARIANT_CHOICES, EngineSpec
from mimicache.errors import MimicacheError, setting
from mimicache.pipeline.schedulers import build_scheduler

logger = logging.getLogger(__name__)


def open_cache(spec: EngineSpec, mode: CacheMode | None = None) -> FeatureStore | None:
    """The spec's feature store (None when it names no cache folder); ``mode`` instead of the
    one the spec's flags give (the cache benchmark's cold, warm and off runs)."""
    if spec.cache_dir is None:
        return None
    return FeatureStore(
        spec.cache_dir,
        mode=mode,
        enabled=spec.cache_enabled,
        force_refresh=spec.cache_force_refresh,
        any_platform=spec.cache_any_platform,
    )


def resolve(spec: EngineSpec) -> tuple[EngineSpec, FeatureStore | None]:
    """The spec with its device chosen (``pick_device``) and its feature store opened: what a
    process that loads the models itself starts from."""
    spec = spec.replace(device=str(pick_device(spec.device)))
    return spec, open_cache(spec)


def pick_device(device: str | None) -> torch.device:
    """The device asked for (default: CUDA when available); CUDA asked for but missing is
    the user's to fix."""
    chosen = torch.device(device) if device else default_device()
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise MimicacheError(
            f"{setting('device', str(chosen))} was asked for but CUDA is not available; "
            f"use {setting('device', 'cpu')}"
        )
    if chosen.type == "cpu":
        logger.info("running in float32 on the CPU (float16 is only used on CUDA)")
    return chosen


def engine_settings(spec: EngineSpec) -> EngineSettings:
    """The engine's settings from the spec (pose choices left None come from the config; the
    scores' frames and thresholds: flag > config > default)."""
    config = spec.config
    frames = spec.score_frames or config.score_frames or "auto"
    score = ScoreOptions(
        frames=None if frames == "all" else frames,
        thresholds=check_thresholds({**config.score_thresholds, **dict(spec.score_thresholds)}),
    )
    return EngineSettings.of(
        score=score if spec.score else None,
        scheduler=spec.scheduler,
        pose_retarget=spec.pose_retarget,
        person=spec.person,
        dwpose_device=spec.dwpose_device,
        speed=spec.speed,
        compile=spec.compile,
        decode_chunk_size=spec.decode_chunk_size,
        offload=spec.offload,
        cache_pipeline_features=spec.cache_pipeline_features,
    )


def build_engine(
    spec: EngineSpec,
    *,
    cache: FeatureStore | None = None,
    observer: ProgressObserver | None = None,
) -> MimicMotion:
    """The whole engine for ``spec``, with ``cache`` or a store of its own; ``observer``
    receives each job's progress events."""
    return _built(MimicMotion.from_config, spec, cache, dtype=_dtype(spec), observer=observer)


def build_pose_engine(spec: EngineSpec, *, cache: FeatureStore | None = None) -> MimicMotion:
    """DWPose only (``MimicMotion.for_pose``), DWPose where ``spec.dwpose_device`` says, else
    where the engine would run it."""
    return _built(MimicMotion.for_pose, spec, cache)


def build_scoring_engine(spec: EngineSpec, *, cache: FeatureStore | None = None) -> MimicMotion:
    """DWPose and CLIP (``MimicMotion.for_scoring``): what scoring written clips needs."""
    return _built(MimicMotion.for_scoring, spec, cache, dtype=_dtype(spec))


def _built(make: Any, spec: EngineSpec, cache: FeatureStore | None, **more: Any) -> MimicMotion:
    """``make`` (one of ``MimicMotion``'s constructors) for ``spec``, on ``cache`` or a
    store of the spec's own."""
    _set_threads(spec)
    return make(
        spec.engine_config(),
        device=spec.device,
        cache=cache if cache is not None else open_cache(spec),
        settings=engine_settings(spec),
        **more,
    )


def _dtype(spec: EngineSpec) -> torch.dtype | None:
    return None if spec.dtype is None else getattr(torch, spec.dtype)


def result_settings(spec: EngineSpec, engine: MimicMotion) -> dict[str, Any]:
    """What the frames depend on beyond the case and the model files (see batch.resume)."""
    return {
        "scheduler": spec.scheduler,
        "dtype": str(engine.dtype).removeprefix("torch."),
        "device": engine.device.type,
        "pose_retarget": engine.pose_retarget,
        "person": engine.person,
        "speed": spec.speed,
        "compile": spec.compile,
        "decode_chunk_size": spec.decode_chunk_size,
    }


def _set_threads(spec: EngineSpec) -> None:
    if spec.threads:
        torch.set_num_threads(spec.threads)


def engine_variant(
    engine: MimicMotion, *, observer: ProgressObserver | None = None, **changes: Any
) -> MimicMotion:
    """A new engine on the loaded models of ``engine`` (shared, not copied, and left as they
    are) with some of ``VARIANT_CHOICES`` changed: ``scheduler`` (a ``SchedulerOptions``),
    ``pose_retarget``, ``person``, ``speed``, ``decode_chunk_size``; its own batch planner.
    The models stay prepared for ``engine``'s speed options (no compile or channels-last is
    added here). For an app or a sweep that changes these between jobs.

    Raises:
        ValueError: a change that is not one of ``VARIANT_CHOICES``.
    """
    unknown = sorted(set(changes) - set(VARIANT_CHOICES))
    if unknown:
        raise ValueError(
            f"{', '.join(unknown)} cannot change on loaded models; the choices that can: "
            f"{', '.join(VARIANT_CHOICES)}"
        )
    models = engine.models
    settings = engine.settings
    scheduler = changes.get("scheduler")
    if scheduler is not None and scheduler != settings.scheduler:
        pipe = engine.pipeline
        pipeline = type(pipe)(
            **{
                **pipe.components,
                "scheduler": build_scheduler(scheduler, engine.base_files.scheduler_dir),
            }
        )
        pipeline.set_progress_bar_config(**getattr(pipe, "_progress_bar_config", {}))
        models = dataclasses.replace(models, pipeline=pipeline)
        settings = settings.replace(scheduler=scheduler)
    speed = {k: changes[k] for k in ("speed", "decode_chunk_size") if k in changes}
    if speed:
        settings = settings.replace(speed_options=dataclasses.replace(engine.speed, **speed))
    pose = {k: changes[k] for k in ("pose_retarget", "person") if changes.get(k) is not None}
    settings = settings.replace(**pose)
    return MimicMotion(models, settings, cache=engine.cache, observer=observer)
