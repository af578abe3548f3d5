"""The remote tier: cache entries on object storage (``s3://``, ``gs://``, ``az://``) via fsspec.

A store whose root is such a URL keeps a local disk tier on each machine in front of it (the
way sccache and Bazel's remote cache do): read local, then remote, then compute; a computed
entry goes to both. Remote objects are the same immutable, self-verifying entry files under
the same ``v<SCHEMA>/<stage>/<key[:2]>/<key>.safetensors`` names; they are published
create-only (a conditional put, ``If-None-Match: *``, where the store has one; elsewhere the
identical bytes of two writers make the race harmless). No SQLite and no locks live remotely.

fsspec and the protocol's library (s3fs, gcsfs, adlfs) are imported only when a URL is used;
credentials and endpoints come from each library's usual environment (for S3:
``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ...).

Environment: ``MIMICACHE_LOCAL_CACHE_DIR`` holds the local tiers (default
``$XDG_CACHE_HOME/mimicache/tiers``, one folder per remote URL); ``MIMICACHE_LOCAL_CACHE_SIZE``
caps each local tier (default 10GiB; least recently used entries go first).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import blake3

from mimicache.cache.entry import ENTRY_SUFFIX, SCHEMA, CorruptEntry, Entry, decode_entry
from mimicache.cache.keys import StageKey
from mimicache.errors import CacheError, StorageError
from mimicache.storage.objects import local_cache_base, open_filesystem, put_new
from mimicache.storage.sizes import parse_size

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_LOCAL_SIZE", "DamagedRemote", "RemoteTier", "local_tier_dir", "local_tier_size"]

DEFAULT_LOCAL_SIZE = 10 * 1024**3
"""Default cap of a local tier in bytes (sccache's default, too)."""


class DamagedRemote(Exception):
    """A remote object that is not a sound entry of its stage and key; says why."""


def local_tier_dir(url: str) -> Path:
    """This machine's local tier for the remote ``url``: one folder per URL."""
    return local_cache_base() / blake3.blake3(url.encode()).hexdigest()[:24]


def local_tier_size(size: int | str | None = None) -> int:
    """The local tier's cap in bytes: ``size``, else ``MIMICACHE_LOCAL_CACHE_SIZE``, else
    DEFAULT_LOCAL_SIZE. A bad value raises CacheError carrying it."""
    if size is None:
        size = os.environ.get("MIMICACHE_LOCAL_CACHE_SIZE") or DEFAULT_LOCAL_SIZE
    try:
        return parse_size(size)
    except StorageError as exc:
        raise CacheError(f"the local tier's cap: {exc}") from None


class RemoteTier:
    """Entry objects under ``url``: ``get`` (verified), ``publish`` (create-only).

    Errors other than a missing object (network, permissions) are logged once and switch the
    tier off for the rest of the process: the run goes on with the local tier.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.base = open_filesystem(url)
        self.base = self.base.rstrip("/")
        self.usable = True
        self._create_only = True  # until the store says it has no conditional put

    def __repr__(self) -> str:
        return f"RemoteTier({self.url!r})"

    def entry_path(self, stage: str, key: str) -> str:
        return f"{self.base}/v{SCHEMA}/{stage}/{key[:2]}/{key}{ENTRY_SUFFIX}"

    def _failed(self, action: str, exc: BaseException) -> None:
        if self.usable:
            logger.warning(
                "remote feature cache %s cannot be %s (%s: %s): going on with the local tier",
                self.url,
                action,
                type(exc).__name__,
                exc,
            )
        self.usable = False

    def get(self, stage: str, key: StageKey) -> tuple[Entry, bytes] | None:
        """The entry of ``stage``/``key`` and its bytes, or None when there is none (or the
        tier is off). Raises DamagedRemote for an object that fails verification."""
        if not self.usable:
            return None
        path = self.entry_path(stage, key.digest)
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            return None
        except Exception as exc:  # every backend has its own errors: none may fail a run
            self._failed("read", exc)
            return None
        try:
            return decode_entry(data, stage, key), data
        except CorruptEntry as exc:
            raise DamagedRemote(f"{self.fs.unstrip_protocol(path)}: {exc}") from None

    def publish(self, stage: str, key: str, data: bytes, *, replace: bool = False) -> bool:
        """Put the entry object unless one is there (``replace``: put it in any case, e.g.
        over a damaged one). True when this call wrote it."""
        if not self.usable:
            return False
        path = self.entry_path(stage, key)
        try:
            if replace:
                self.fs.pipe_file(path, data)
                return True
            # Without a conditional put two writers may both write: their bytes are equal.
            wrote, self._create_only = put_new(self.fs, path, data, conditional=self._create_only)
            return wrote
        except FileExistsError:
            return False
        except Exception as exc:
            self._failed("written", exc)
            return False
