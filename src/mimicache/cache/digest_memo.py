"""The digest memo of a cache: files' content digests (``storage.digests.file_digest``) kept
in a SQLite table keyed by ``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)``, so
unchanged files are not re-read and replaced files are always noticed. Beside it,
``content_fact`` memoises small values that a file's bytes determine (a video's frame rate),
keyed by the digest, so a key that needs one does not open the file again.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from mimicache.cache.database import close_sqlite, connect_sqlite
from mimicache.storage.digests import file_state
from mimicache.storage.files import printable

logger = logging.getLogger(__name__)

__all__ = ["DigestMemo", "content_fact"]

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
        state = file_state(st)
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
        self._remember(file_state(st), digest)
        self._run(
            "INSERT OR REPLACE INTO file_digests "
            "(dev, ino, size, mtime_ns, ctime_ns, digest, path, checked) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                *file_state(st),
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
