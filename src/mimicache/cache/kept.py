"""Entry files this process has read or written, kept in memory: a repeated job opens none.

Holds the verified bytes and metadata of entry files by stage and key, least recently used
out first past ``max_bytes``. A kept file is used while its stat identity (inode, size, mtime, ctime)
is unchanged, so a removed, replaced or refreshed entry is read from disk again; what it
saves is the read, the checksum and the header parse. Bytes, never tensors: every hit
decodes fresh tensors that no caller can change for the next. ``MIMICACHE_MEMORY_CACHE``
sets the size (e.g. ``256M``; ``0`` turns it off); default ``DEFAULT_MAX_BYTES``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

from mimicache.cache.entry import head_metadata
from mimicache.errors import CacheError
from mimicache.storage.sizes import parse_size

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_BYTES", "KeptEntries", "memory_max_bytes"]

DEFAULT_MAX_BYTES = 64 << 20  # a published-size job's five entries are about 1 MB


def memory_max_bytes() -> int:
    """The size ``MIMICACHE_MEMORY_CACHE`` asks for, else the default (a bad value: warned)."""
    text = os.environ.get("MIMICACHE_MEMORY_CACHE")
    if text is None or not text.strip():
        return DEFAULT_MAX_BYTES
    try:
        return parse_size(text)
    except CacheError as exc:
        logger.warning("MIMICACHE_MEMORY_CACHE: %s; using %d bytes", exc, DEFAULT_MAX_BYTES)
        return DEFAULT_MAX_BYTES


def _identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class KeptEntries:
    """Verified entry files in memory by (stage, key) (see the module docstring); thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        # (stage, key) -> (path, stat identity, bytes, metadata); no Path objects: a hit
        # costs tens of microseconds, and building and hashing paths was a third of it
        self._kept: OrderedDict[tuple[str, str], tuple[str, tuple, bytes, dict[str, str]]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def get(self, stage: str, key: str) -> tuple[bytes, dict[str, str]] | None:
        """The bytes and metadata of the entry file of ``stage``/``key`` when kept and its
        file is unchanged."""
        kept = self._kept.get((stage, key))
        if kept is None:
            return None
        try:
            identity = _identity(os.stat(kept[0]))
        except OSError:
            identity = None
        with self._lock:
            if identity != kept[1]:  # removed or replaced since: the disk decides again
                self._drop((stage, key))
                return None
            with contextlib.suppress(KeyError):  # dropped by another thread meanwhile
                self._kept.move_to_end((stage, key))
            return kept[2], kept[3]

    def keep(
        self,
        stage: str,
        key: str,
        path: Path,
        st: os.stat_result,
        data: bytes,
        meta: dict[str, str],
    ) -> None:
        """Keep ``data`` (verified, with its ``meta``), the file at ``path`` as ``st`` says."""
        with self._lock:
            self._drop((stage, key))
            if len(data) > self.max_bytes:
                return
            self._kept[(stage, key)] = (os.fspath(path), _identity(st), data, meta)
            self.bytes += len(data)
            while self.bytes > self.max_bytes:
                self._drop(next(iter(self._kept)))

    def keep_written(self, stage: str, key: str, path: Path, data: bytes) -> None:
        """Keep the entry file this process has just written at ``path`` with ``data``."""
        self.keep(stage, key, path, os.stat(path), data, head_metadata(data) or {})

    def _drop(self, name: tuple[str, str]) -> None:
        kept = self._kept.pop(name, None)
        if kept is not None:
            self.bytes -= len(kept[2])
