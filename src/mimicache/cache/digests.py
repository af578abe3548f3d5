"""File content digests: BLAKE3 of a file's bytes, memoised by the file's stat identity.

A file is identified by the hex BLAKE3 digest (64 chars) of its bytes, never by its path or
mtime. The memo is a SQLite table keyed by ``(st_dev, st_ino, st_size, st_mtime_ns,
st_ctime_ns)``, so unchanged files are not re-read and replaced files are always noticed.
Beside it, ``content_fact`` memoises small values that a file's bytes determine (a video's
frame rate), keyed by the digest, so a key that needs one does not open the file again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import blake3

from mimicache.cache.database import close_sqlite, connect_sqlite
from mimicache.cache.fs import printable

logger = logging.getLogger(__name__)

__all__ = ["RACY_WINDOW_NS", "DigestMemo", "content_fact", "file_digest"]

# A file whose ctime/mtime is this close to "now" may still change within the same timestamp
# tick (coarse kernel clocks tick every 1-10 ms), so its digest is not memoised ("racy" files,
# as in git's index). Tests may set it to 0.
RACY_WINDOW_NS = 50_000_000

_CHUNK = 16 << 20  # read size for hashing
_THREADED_MIN = 64 << 20  # files at least this large overlap reading and hashing


# --------------------------------------------------------------------------- digest memo

_MEMO_SCHEMA = """
CREATE TABLE IF NOT EXISTS file_digests (
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    digest TEXT NOT NULL,
    path TEXT,
    checked REAL,
    PRIMARY KEY (dev, ino)
)
"""
_FACTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS content_facts (
    digest TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (digest, name)
)
"""


class DigestMemo:
    """Memo of file content digests keyed by (dev, inode, size, mtime_ns, ctime_ns).

    Lives in a SQLite table (``file_digests``) of ``db_path``; usually the feature cache's
    ``index.sqlite``. Any database problem (unwritable folder, locked, corrupt) only disables
    the memo, with one warning (or one call of ``on_error``): digests are then always computed.
    ``read_only``: look digests up but never write (a cache on a read-only file system).
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        on_error: Callable[[BaseException], None] | None = None,
        read_only: bool = False,
    ) -> None:
        self.db_path = Path(db_path)
        self.read_only = read_only
        self._on_error = on_error
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._broken = False
        # What this process looked up or stored: a warm job's keys then run no SQL at all.
        self._seen: dict[tuple, str] = {}

    def _connection(self) -> sqlite3.Connection | None:
        if self._broken:
            return None
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:  # first use, or first use after a fork: never share a connection across processes
            conn = connect_sqlite(self.db_path, read_only=self.read_only)
            if not self.read_only:
                conn.execute(_MEMO_SCHEMA)
                conn.execute(_FACTS_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            self._disable(exc)
            return None
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _disable(self, exc: BaseException) -> None:
        if not self._broken and self._on_error is not None:
            self._on_error(exc)
        elif not self._broken:
            logger.warning(
                "File digest memo %s is unusable (%s): file digests will be recomputed",
                self.db_path,
                exc,
            )
        self._broken = True

    def _run(self, sql: str, args: tuple, *, write: bool, facts: bool = False) -> list | None:
        """``sql`` on the memo's database: its rows, or None when the memo is unusable (or
        read-only, for a ``write``) or the statement fails. A failure disables the memo,
        except one on the facts table (e.g. a read-only index from before it existed): the
        digests stay memoised."""
        if write and self.read_only:
            return None
        with self._lock:
            conn = self._connection()
            if conn is None:
                return None
            try:
                return conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                if not facts:
                    self._disable(exc)
                return None

    def lookup(self, st: os.stat_result) -> str | None:
        """The memoised digest of the file ``st`` describes, or None."""
        state = _file_state(st)
        if (seen := self._seen.get(state)) is not None:
            return seen
        rows = self._run(
            "SELECT digest FROM file_digests WHERE dev=? AND ino=? AND size=? "
            "AND mtime_ns=? AND ctime_ns=?",
            state,
            write=False,
        )
        if not rows:
            return None
        self._remember(state, rows[0][0])
        return rows[0][0]

    def _remember(self, seen: tuple, value: str) -> None:
        if len(self._seen) >= 4096:  # a long batch of inputs: start again
            self._seen.clear()
        self._seen[seen] = value

    def store(self, st: os.stat_result, digest: str, path: str | os.PathLike[str] = "") -> None:
        """Remember ``digest`` for the file ``st`` describes (best effort)."""
        self._remember(_file_state(st), digest)
        self._run(
            "INSERT OR REPLACE INTO file_digests "
            "(dev, ino, size, mtime_ns, ctime_ns, digest, path, checked) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                *_file_state(st),
                digest,
                # a name that is not UTF-8 would make sqlite refuse the row; it is only shown
                printable(os.fspath(path)),
                time.time(),
            ),
            write=True,
        )

    def fact(self, digest: str, name: str) -> str | None:
        """The memoised fact ``name`` (JSON text) of the bytes ``digest`` names, or None."""
        if (seen := self._seen.get((digest, name))) is not None:
            return seen
        rows = self._run(
            "SELECT value FROM content_facts WHERE digest=? AND name=?",
            (digest, name),
            write=False,
            facts=True,
        )
        if not rows:
            return None
        self._remember((digest, name), rows[0][0])
        return rows[0][0]

    def store_fact(self, digest: str, name: str, value: str) -> None:
        """Remember the fact ``name`` of the bytes ``digest`` names (best effort)."""
        self._remember((digest, name), value)
        self._run(
            "INSERT OR REPLACE INTO content_facts (digest, name, value) VALUES (?, ?, ?)",
            (digest, name, value),
            write=True,
            facts=True,
        )

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                close_sqlite(self._conn)
            self._conn = None

    def reset(self) -> None:
        """Close, and use the database again even after a failure (e.g. once it is rebuilt)."""
        self.close()
        self._seen.clear()
        self._broken = False


# --------------------------------------------------------------------------- file digests


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


def _file_state(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What identifies a file's bytes without reading them (the memo's key)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _same_file_state(a: os.stat_result, b: os.stat_result) -> bool:
    return _file_state(a) == _file_state(b)


def bytes_digest(data: bytes | bytearray | memoryview) -> str:
    """BLAKE3 hex digest of ``data``: equal to ``file_digest`` of a file holding it."""
    return blake3.blake3(data, max_threads=blake3.blake3.AUTO).hexdigest()


def file_digest(path: str | os.PathLike[str], memo: DigestMemo | None = None) -> str:
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
    if memo is not None and _same_file_state(before, after):
        newest = max(after.st_mtime_ns, after.st_ctime_ns)
        if time.time_ns() - newest >= RACY_WINDOW_NS:
            memo.store(after, digest, os.path.abspath(path))
    return digest


def content_fact(
    digest: str, name: str, compute: Callable[[], object], memo: DigestMemo | None = None
) -> object:
    """``compute()``, a JSON value that the bytes ``digest`` names determine (``name`` says
    which, e.g. a video's average frame rate), memoised under ``(digest, name)`` in ``memo``."""
    if memo is not None and (text := memo.fact(digest, name)) is not None:
        return json.loads(text)
    value = compute()
    if memo is not None:
        memo.store_fact(digest, name, json.dumps(value))
    return value
