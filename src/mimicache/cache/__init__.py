"""The feature cache: named tensors under content-addressed keys (knows nothing about poses).

``FeatureStore.get_or_compute(stage, StageKey(inputs, models, params), compute)`` returns the
tensors and a ``CacheEvent``; ``keys`` makes the key fields (``fingerprint_files``, content
digests memoised in ``digests``); ``admin`` lists, verifies, prunes and clears (``CacheAdmin``,
``open_admin``); a root may be an object-storage URL (``remote``, ``tiers``, ``remote_admin``).
Files, URLs, digests and sizes are ``mimicache.storage``'s.
"""

from mimicache.cache.admin import CacheAdmin, EntryInfo, Problem, VerifyReport
from mimicache.cache.digest_memo import DigestMemo, content_fact
from mimicache.cache.entry import SCHEMA
from mimicache.cache.keys import StageKey, fingerprint_files, key_digest
from mimicache.cache.modes import MISS_REASONS, MissReason
from mimicache.cache.removal import Removal, RemovalFailure, RemovalPlan, RemovalResult
from mimicache.cache.roots import open_admin
from mimicache.cache.store import CacheEvent, CacheMode, FeatureStore

__all__ = [
    "MISS_REASONS",
    "SCHEMA",
    "CacheAdmin",
    "CacheEvent",
    "CacheMode",
    "DigestMemo",
    "EntryInfo",
    "FeatureStore",
    "MissReason",
    "Problem",
    "Removal",
    "RemovalFailure",
    "RemovalPlan",
    "RemovalResult",
    "StageKey",
    "VerifyReport",
    "content_fact",
    "fingerprint_files",
    "key_digest",
    "open_admin",
]
