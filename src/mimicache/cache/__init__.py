"""The feature cache: named tensors under content-addressed keys (knows nothing about poses).

``FeatureStore.get_or_compute(stage, StageKey(inputs, models, params), compute)`` returns the
tensors and a ``CacheEvent``; ``keys`` makes the key fields (``file_digest`` from ``digests``,
``fingerprint_files``); ``admin`` lists, verifies, prunes and clears; ``fs.atomic_write``
writes any file atomically; a root may be an object-storage URL (``remote``, ``tiers``,
``remote_admin``); ``fetch.fetch(url)`` brings a remote input file to this machine.
"""

from mimicache.cache.admin import CacheAdmin, EntryInfo, Problem, VerifyReport
from mimicache.cache.digests import DigestMemo, bytes_digest, content_fact, file_digest
from mimicache.cache.entry import SCHEMA
from mimicache.cache.fetch import fetch
from mimicache.cache.fs import atomic_write
from mimicache.cache.index import MISS_REASONS, MissReason
from mimicache.cache.keys import (
    StageKey,
    canonical_json,
    fingerprint_files,
    key_digest,
    to_json_value,
)
from mimicache.cache.removal import Removal, RemovalFailure, RemovalPlan, RemovalResult
from mimicache.cache.roots import open_admin
from mimicache.cache.sizes import format_size, parse_size
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
    "atomic_write",
    "bytes_digest",
    "canonical_json",
    "content_fact",
    "fetch",
    "file_digest",
    "fingerprint_files",
    "format_size",
    "key_digest",
    "open_admin",
    "parse_size",
    "to_json_value",
]
