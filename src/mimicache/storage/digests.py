"""File content digests: BLAKE3 of a file's bytes, optionally memoised by its stat identity.

A file is identified by the hex BLAKE3 digest (64 chars) of its bytes, never by its path or
mtime. ``file_digest(path, memo)`` asks ``memo`` (the feature cache's ``DigestMemo``, keyed by
``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)``) first, so unchanged files are not
re-read and replaced files are always noticed.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from typing import Protocol

import blake3

__all__ = ["RACY_WINDOW_NS", "DigestStore", "bytes_digest", "file_digest", "file_state"]

# A file whose ctime/mtime is this close to "now" may still change within the same timestamp
# tick (coarse kernel clocks tick every 1-10 ms), so its digest is not memoised ("racy" files,
# as in git's index). Tests may set it to 0.
RACY_WINDOW_NS = 50_000_000

_CHUNK = 16 << 20  # read size for hashing
_THREADED_MIN = 64 << 20  # files at least this large overlap reading and hashing


class DigestStore(Protocol):
    """Where ``file_digest`` remembers digests by a file's stat identity."""

    def lookup(self, st: os.stat_result) -> str | None: ...

    def store(self, st: os.stat_result, digest: str, path: str | os.PathLike[str] = "") -> None: ...


def _hash_fd(fd: int, size_hint: int) -> str:
    """BLAKE3 of everything readable from ``fd`` (read, never mmap: a file truncated while we
    hash it must give an error, not SIGBUS)."""
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    if size_hint < _THREADED_MIN:
        buf = bytearray(min(_CHUNK, max(size_hint, 1 << 16)))
        view = memoryview(buf)
        while n := os.readv(fd, [buf]):
            hasher.update(view[:n])
        return hasher.hexdigest()

    # Large file: one thread reads while blake3 (which drops the GIL) hashes the previous chunk;
    # a sequential-access hint doubles the kernel's readahead on a cold read.
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    free: queue.Queue[bytearray] = queue.Queue()
    for _ in range(3):
        free.put(bytearray(_CHUNK))
    full: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
    errors: list[BaseException] = []

    def hash_worker() -> None:
        while (item := full.get()) is not None:
            chunk, n = item
            try:
                if not errors:
                    hasher.update(memoryview(chunk)[:n])
            except BaseException as exc:  # pragma: no cover - blake3 does not fail on bytes
                errors.append(exc)
            free.put(chunk)

    worker = threading.Thread(target=hash_worker, name="mimicache-digest", daemon=True)
    worker.start()
    try:
        while not errors:
            chunk = free.get()
            n = os.readv(fd, [chunk])
            if not n:
                break
            full.put((chunk, n))
    finally:
        full.put(None)
        worker.join()
    if errors:  # pragma: no cover
        raise errors[0]
    return hasher.hexdigest()


def file_state(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What identifies a file's bytes without reading them (the memo's key)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _samefile_state(a: os.stat_result, b: os.stat_result) -> bool:
    return file_state(a) == file_state(b)


def bytes_digest(data: bytes | bytearray | memoryview) -> str:
    """BLAKE3 hex digest of ``data``: equal to ``file_digest`` of a file holding it."""
    return blake3.blake3(data, max_threads=blake3.blake3.AUTO).hexdigest()


def file_digest(path: str | os.PathLike[str], memo: DigestStore | None = None) -> str:
    """Hex BLAKE3 (64 chars) of the bytes of ``path``; memoised by stat identity in ``memo``.

    The same bytes give the same digest under any path. A memo hit costs one ``stat`` and one
    SQLite lookup; a miss reads the file in 16 MiB chunks with multithreaded BLAKE3. Raises
    OSError when the file cannot be read.
    """
    if memo is not None:
        hit = memo.lookup(os.stat(path))
        if hit is not None:
            return hit
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        before = os.fstat(fd)
        if memo is not None and (hit := memo.lookup(before)) is not None:
            return hit
        digest = _hash_fd(fd, before.st_size)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if memo is not None and _samefile_state(before, after):
        newest = max(after.st_mtime_ns, after.st_ctime_ns)
        if time.time_ns() - newest >= RACY_WINDOW_NS:
            memo.store(after, digest, os.path.abspath(path))
    return digest
