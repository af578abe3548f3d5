"""The MimicMotion pipeline (which owns the random-draw order), its loader and its samplers."""

from mimicache.pipeline.mimicmotion import (
    MimicMotionPipeline,
    MimicMotionPipelineOutput,
    tile_indices,
    tile_weights,
)
from mimicache.pipeline.schedulers import (
    SCHEDULER_NAMES,
    AnimateLCMSVDScheduler,
    SchedulerOptions,
    build_scheduler,
)
from mimicache.pipeline.timing import StageTimer
from mimicache.pipeline.weights import (
    BaseModelFiles,
    build_mimicmotion_modules,
    load_pipeline,
    read_checkpoint,
    resolve_base_model,
)

__all__ = [
    "SCHEDULER_NAMES",
    "AnimateLCMSVDScheduler",
    "BaseModelFiles",
    "MimicMotionPipeline",
    "MimicMotionPipelineOutput",
    "SchedulerOptions",
    "StageTimer",
    "build_mimicmotion_modules",
    "build_scheduler",
    "load_pipeline",
    "read_checkpoint",
    "resolve_base_model",
    "tile_indices",
    "tile_weights",
]
