"""The feature cache: named tensors under content-addressed keys (knows nothing about poses).

``FeatureStore.get_or_compute(stage, StageKey(inputs, models, params), compute)`` returns the
tensors and a ``CacheEvent``; ``keys`` makes the key fields (file digests, fingerprints).
"""

from mimicache.cache.keys import (
    DigestMemo,
    canonical_json,
    file_digest,
    fingerprint_files,
    key_digest,
)
from mimicache.cache.store import (
    MISS_REASONS,
    SCHEMA,
    CacheEvent,
    EntryInfo,
    FeatureStore,
    Problem,
    Removal,
    StageKey,
    format_size,
    parse_size,
)

__all__ = [
    "MISS_REASONS",
    "SCHEMA",
    "CacheEvent",
    "DigestMemo",
    "EntryInfo",
    "FeatureStore",
    "Problem",
    "Removal",
    "StageKey",
    "canonical_json",
    "file_digest",
    "fingerprint_files",
    "format_size",
    "key_digest",
    "parse_size",
]
