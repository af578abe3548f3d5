"""How an engine computes: the speed mode, compilation, decode chunk size and offload mode, the
one-time model preparation they need, and fast's batch sizes per job shape (pose frames
(1+F,3,H,W)). Nothing here enters a cache key: no cached stage depends on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from mimicache.config import TestCase
from mimicache.engine.spec import EngineSpec
from mimicache.errors import ConfigError, setting
from mimicache.pipeline import MimicMotionPipeline, tile_indices
from mimicache.pipeline.fast import (
    EXACT,
    FAST,
    BatchPlan,
    check_speed,
    compile_models,
    plan_batches,
    use_channels_last,
)
from mimicache.pipeline.offload import OFFLOAD_NONE, check_offload

logger = logging.getLogger(__name__)

# declared with its flag in the spec; the published script decodes 8 frames at a time
DECODE_CHUNK_SIZE: int = EngineSpec.decode_chunk_size


@dataclass(frozen=True)
class SpeedOptions:
    """How the pipeline computes; none of it enters a cache key (no cached stage depends on it).

    ``speed``: "exact" (the published computation) or "fast" (the same mathematics, float
    rounding aside); ``compile``: torch.compile of the UNet and VAE decoder (fast only);
    ``decode_chunk_size``: frames per VAE decode (the temporal decoder's window: it changes the
    result, and lower values need less memory); ``offload``: "none", "model", "sequential".
    """

    speed: str = EXACT
    compile: bool = False
    decode_chunk_size: int = DECODE_CHUNK_SIZE
    offload: str = OFFLOAD_NONE
    compile_backend: str = "inductor"
    compile_mode: str | None = None

    def __post_init__(self):
        try:
            check_speed(self.speed)
            check_offload(self.offload)
        except ValueError as error:
            raise ConfigError(
                f"{error} (speed: exact or fast; offload: none, model or sequential)"
            ) from None
        if self.compile and self.speed != FAST:
            raise ConfigError(
                f"{setting('compile', True)} changes float rounding, so it needs "
                f"{setting('speed', FAST)} (exact stays the published computation)"
            )
        if self.decode_chunk_size < 1:
            raise ConfigError(
                f"{setting('decode_chunk_size', self.decode_chunk_size)} must be at least 1"
            )


class BatchPlanner:
    """fast's batch sizes, planned on the first job of each shape and kept, so every later job
    of that shape (cold or warm, cached or not) runs exactly the same computation."""

    def __init__(
        self,
        pipeline: MimicMotionPipeline,
        options: SpeedOptions,
        device: torch.device,
        dtype: torch.dtype,
    ):
        self.pipeline = pipeline
        self.options = options
        self.device = device
        self.dtype = dtype
        self.plans: dict[tuple, BatchPlan] = {}

    def plan(self, case: TestCase, pose_shape: tuple[int, ...]) -> BatchPlan:
        """The batch sizes of a job whose pose frames have ``pose_shape``; exact: all 1."""
        if self.options.speed != FAST:
            return BatchPlan()
        frames, _, height, width = pose_shape
        key = (frames, height, width, case.tile_size, case.frames_overlap, case.guidance_scale)
        if key not in self.plans:
            pipe = self.pipeline
            tile = min(case.tile_size, frames)
            tiles = tile_indices(frames, tile, case.frames_overlap)
            scale = pipe.vae_scale_factor
            latents_shape = (1, frames, 4, height // scale, width // scale)
            self.plans[key] = plan_batches(
                FAST,
                self.device,
                self.dtype,
                tiles,
                latents_shape,
                scale,
                self.options.decode_chunk_size,
                case.guidance_scale > 1.0,
            )
            logger.info("fast mode batches for %s: %s", key, self.plans[key])
        return self.plans[key]


def prepare_models(pipeline: MimicMotionPipeline, options: SpeedOptions, device) -> None:
    """The one-time model preparation a speed choice needs. ``exact`` changes nothing;
    ``fast`` on CUDA stores the VAE decoder's 2-D convolutions channels-last (its convolutions
    dominate decoding; the UNet's many reshapes would undo the layout); ``compile`` compiles."""
    device = torch.device(device)
    if options.speed == FAST and device.type == "cuda":
        use_channels_last(pipeline.vae.decoder)
    if options.compile:
        compile_models(pipeline, device, backend=options.compile_backend, mode=options.compile_mode)
