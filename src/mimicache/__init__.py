"""mimicache: MimicMotion batch inference with a persistent, content-addressed feature cache."""

from mimicache.errors import (
    CacheError,
    ConfigError,
    InputError,
    MimicacheError,
    ModelLoadError,
)

__version__ = "0.1.0"

__all__ = [
    "CacheError",
    "ConfigError",
    "InputError",
    "MimicacheError",
    "ModelLoadError",
    "__version__",
]
