"""mimicache: MimicMotion batch inference with a persistent, content-addressed feature cache.

Public API: ``MimicMotion`` (models loaded once, ``generate(case)``), ``InferenceConfig`` /
``TestCase`` / ``load_config``, ``FeatureStore`` (the on-disk feature cache; ``FeatureCache`` is
its former name, kept as an alias), ``preprocess``
(the published pose preprocessing), ``MimicMotionPipeline`` and ``load_pipeline``.
Exports load on first use, so ``import mimicache`` (and its version) does not load torch.
"""

import importlib
from importlib.metadata import PackageNotFoundError, version

from mimicache.errors import (
    CacheError,
    ConfigError,
    InputError,
    MimicacheError,
    ModelLoadError,
    OutputError,
)

try:
    __version__ = version("mimicache")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

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


def __getattr__(name: str):
    if name in _LAZY:
        attr = "FeatureStore" if name == "FeatureCache" else name
        value = getattr(importlib.import_module(_LAZY[name]), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mimicache' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


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
