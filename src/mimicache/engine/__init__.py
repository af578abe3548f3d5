"""MimicMotion: the models loaded once, each job's cached stages and pipeline call.

``MimicMotion.from_config(config, device=, dtype=, cache=).generate(case)`` -> frames
(F,H,W,3) uint8, timings, cache events. Stages are declared in ``engine.stages``.
"""

from mimicache.engine.devices import default_device
from mimicache.engine.engine import PIPELINE_FPS, MimicMotion
from mimicache.engine.fingerprints import ModelFingerprints
from mimicache.engine.record import GenerationResult, JobRecord, published_reference_image
from mimicache.engine.speed import DECODE_CHUNK_SIZE, BatchPlanner, SpeedOptions
from mimicache.engine.stages import JobKeys, Stage, pack_frames, unpack_frames

__all__ = [
    "DECODE_CHUNK_SIZE",
    "PIPELINE_FPS",
    "BatchPlanner",
    "GenerationResult",
    "JobKeys",
    "JobRecord",
    "MimicMotion",
    "ModelFingerprints",
    "SpeedOptions",
    "Stage",
    "default_device",
    "pack_frames",
    "published_reference_image",
    "unpack_frames",
]
