"""mimicache: MimicMotion batch inference with a persistent, content-addressed feature cache.

Public API: ``MimicMotion`` (models loaded once, ``generate(case)``), ``InferenceConfig`` /
``TestCase`` / ``load_config``, ``FeatureCache`` (the on-disk feature store), ``preprocess``
(the published pose preprocessing), ``MimicMotionPipeline`` and ``load_pipeline``.
"""

from mimicache.cache.store import FeatureStore
from mimicache.config import InferenceConfig, TestCase, load_config
from mimicache.engine import GenerationResult, MimicMotion
from mimicache.errors import (
    CacheError,
    ConfigError,
    InputError,
    MimicacheError,
    ModelLoadError,
)
from mimicache.models import load_pipeline
from mimicache.pipeline import MimicMotionPipeline
from mimicache.pose import preprocess

__version__ = "0.1.0"

FeatureCache = FeatureStore

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
    "TestCase",
    "__version__",
    "load_config",
    "load_pipeline",
    "preprocess",
]
