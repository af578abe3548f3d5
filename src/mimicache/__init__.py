"""mimicache: MimicMotion batch inference with a persistent, content-addressed feature cache.

Public API: ``MimicMotion`` (models loaded once, ``generate(case)``), ``InferenceConfig`` /
``TestCase`` / ``load_config``, ``FeatureStore`` (the on-disk feature cache; ``FeatureCache`` is
its former name, kept as an alias), ``preprocess``
(the published pose preprocessing), ``MimicMotionPipeline`` and ``load_pipeline``.
Exports load on first use, so ``import mimicache`` (and its version) does not load torch.
"""

import importlib

from mimicache.errors import (
    CacheError,
    ConfigError,
    InputError,
    MimicacheError,
    ModelLoadError,
    OutputError,
)

# name -> module (the name there is the same, except FeatureCache: the store's former name)
_LAZY = {
    "FeatureCache": "mimicache.cache",
    "FeatureStore": "mimicache.cache",
    "InferenceConfig": "mimicache.config",
    "TestCase": "mimicache.config",
    "load_config": "mimicache.config",
    "GenerationResult": "mimicache.engine",
    "MimicMotion": "mimicache.engine",
    "load_pipeline": "mimicache.pipeline",
    "MimicMotionPipeline": "mimicache.pipeline",
    "preprocess": "mimicache.pose",
}


def _version() -> str:
    # importlib.metadata scans the installed distributions: read on first use, not at start-up
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mimicache")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str):
    if name == "__version__":
        globals()[name] = value = _version()
        return value
    if name in _LAZY:
        attr = "FeatureStore" if name == "FeatureCache" else name
        value = getattr(importlib.import_module(_LAZY[name]), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mimicache' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY, "__version__"])


__all__ = [
    "CacheError",
    "ConfigError",
    "FeatureCache",
    "FeatureStore",
    "GenerationResult",
    "InferenceConfig",
    "InputError",
    "MimicMotion",
    "MimicMotionPipeline",
    "MimicacheError",
    "ModelLoadError",
    "OutputError",
    "TestCase",
    "__version__",
    "load_config",
    "load_pipeline",
    "preprocess",
]
