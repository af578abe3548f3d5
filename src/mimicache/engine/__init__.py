"""MimicMotion: the models loaded once, each job's cached stages and pipeline call.

``build_engine(EngineSpec(config, ...))`` (or ``MimicMotion.from_config``) ->
``.generate(case)`` -> frames (F,H,W,3) uint8, timings, cache events. Stages are declared in
``engine.stages``, the engine's options in ``engine.spec``. Exports load on first use, so
``mimicache.engine.spec`` is read without loading torch.
"""

from mimicache.lazy import lazy_exports

# name -> the module of this package that defines it
_LAZY = {
    "DECODE_CHUNK_SIZE": "speed",
    "BatchPlanner": "speed",
    "SpeedOptions": "speed",
    "EngineSettings": "settings",
    "LoadedModels": "loaded",
    "PIPELINE_FPS": "engine",
    "MimicMotion": "engine",
    "ModelFingerprints": "fingerprints",
    "GenerationResult": "record",
    "JobRecord": "record",
    "ProgressEvent": "record",
    "ProgressObserver": "record",
    "published_reference_image": "record",
    "JobKeys": "stages",
    "Stage": "stages",
    "pack_frames": "stages",
    "unpack_frames": "stages",
    "default_device": "devices",
    "EngineSpec": "spec",
    "build_engine": "build",
    "build_pose_engine": "build",
    "engine_settings": "build",
    "engine_variant": "build",
    "open_cache": "build",
    "pick_device": "build",
    "resolve": "build",
    "result_settings": "build",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


__all__ = sorted(_LAZY)
