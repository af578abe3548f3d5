"""Entry files this process has read or written, kept in memory: a repeated job opens none.

Holds the verified bytes and metadata of entry files by path, least recently used out first
past ``max_bytes``. A kept file is used while its stat identity (inode, size, mtime, ctime)
is unchanged, so a removed, replaced or refreshed entry is read from disk again; what it
saves is the read, the checksum and the header parse. Bytes, never tensors: every hit
decodes fresh tensors that no caller can change for the next. ``MIMICACHE_MEMORY_CACHE``
sets the size (e.g. ``256M``; ``0`` turns it off); default ``DEFAULT_MAX_BYTES``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

from mimicache.cache.sizes import parse_size
from mimicache.errors import CacheError

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
    """Verified entry files in memory (see the module docstring); thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._kept: OrderedDict[Path, tuple[tuple, bytes, dict[str, str]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path) -> tuple[bytes, dict[str, str]] | None:
        """The bytes and metadata of the entry file at ``path`` when kept and unchanged."""
        if not self._kept:
            return None
        try:
            identity = _identity(os.stat(path))
        except OSError:
            identity = None
        with self._lock:
            kept = self._kept.get(path)
            if kept is None:
                return None
            if kept[0] != identity:  # removed or replaced since: the disk decides again
                self._drop(path)
                return None
            self._kept.move_to_end(path)
            return kept[1], kept[2]

    def keep(self, path: Path, st: os.stat_result, data: bytes, meta: dict[str, str]) -> None:
        """Keep ``data`` (verified, with its ``meta``), the file at ``path`` as ``st`` says."""
        if len(data) > self.max_bytes:
            return
        with self._lock:
            self._drop(path)
            self._kept[path] = (_identity(st), data, meta)
            self.bytes += len(data)
            while self.bytes > self.max_bytes:
                self._drop(next(iter(self._kept)))

    def _drop(self, path: Path) -> None:
        kept = self._kept.pop(path, None)
        if kept is not None:
            self.bytes -= len(kept[1])
