"""The SQLite index beside the entries: size, times and inputs per entry, last key per subject.

The entry files are the truth; the index makes listing, LRU pruning and miss reasons cheap
and can always be rebuilt from the entries. A read-only root reads it read-only. Failures are
classified by SQLite result code / errno: "cannot write here" (the store goes read-only) or
"broken" (the index is off until ``verify --fix`` rebuilds it); neither ever fails a run.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimicache.cache.database import cannot_write, close_sqlite, connect_sqlite, move_aside
from mimicache.cache.keys import StageKey
from mimicache.cache.modes import MissReason
from mimicache.storage.json_values import canonical_json

__all__ = ["Index", "IndexRow"]


_GROUP_REASONS = {
    "inputs": MissReason.INPUT_CHANGED,
    "models": MissReason.MODEL_CHANGED,
    "params": MissReason.PARAMS_CHANGED,
    "platform": MissReason.PLATFORM_CHANGED,
}

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS entries (
        stage TEXT NOT NULL,
        key TEXT NOT NULL,
        subject TEXT,
        size INTEGER NOT NULL,
        created REAL NOT NULL,
        last_used REAL NOT NULL,
        inputs TEXT NOT NULL,
        fields TEXT NOT NULL,
        PRIMARY KEY (stage, key)
    )""",
    "CREATE INDEX IF NOT EXISTS entries_last_used ON entries (last_used)",
    """CREATE TABLE IF NOT EXISTS subjects (
        stage TEXT NOT NULL,
        subject TEXT NOT NULL,
        key TEXT NOT NULL,
        fields TEXT NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (stage, subject)
    )""",
)


LAST_USE_RESOLUTION_S = 60.0
"""A hit's last use is written at most once a minute per entry and process (unless its
subject's latest key changed): pruning by age or size needs no finer clock, and repeated
jobs then write nothing (as ``relatime`` spares a file system repeated access times)."""

HIT_WRITE_DELAY_S = 1.0
"""Hits are written together, in one transaction: by ``flush`` (the engine's at the end of a
job), by the next use of the index, by a hit this long after the first one held, on closing,
or at the process's exit. So a warm job's preprocessing does not wait for the index; a
process killed meanwhile loses those last uses only."""

_UNWRITTEN: weakref.WeakSet[Index] = weakref.WeakSet()  # indexes holding hits at exit


@atexit.register
def _write_hits_at_exit() -> None:
    for index in list(_UNWRITTEN):
        index.flush()


@dataclass(frozen=True)
class _Use:
    """A hit or a new entry, to be written."""

    stage: str
    key: str
    meta: Mapping[str, str]
    size: int
    subject: str | None
    hit: bool
    when: float


@dataclass(frozen=True)
class IndexRow:
    """One row of the entries table (times are Unix seconds)."""

    stage: str
    key: str
    subject: str | None
    size: int
    created: float
    last_used: float
    inputs: dict[str, Any]


class Index:
    """Connection and queries of ``index.sqlite``; thread-safe, reconnects after a fork.

    ``writable``: open it read-write (else read-only). ``on_cannot_write(exc)`` is called when
    it cannot be written, ``on_broken(exc)`` when it is damaged or failing (unless ``quiet``).
    """

    def __init__(
        self,
        path: Path,
        *,
        writable: bool,
        on_cannot_write: Callable[[BaseException], None],
        on_broken: Callable[[BaseException], None],
    ) -> None:
        self.path = path
        self.broken = False  # off until rebuilt
        self.error = ""  # why it is broken
        self.absent = False  # read-only and not there (or not openable)
        self.writable = False  # the open connection may write
        self.quiet = False  # report trouble to the caller only (verify)
        self._want_write = writable
        self._on_cannot_write = on_cannot_write
        self._on_broken = on_broken
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        # What this process last wrote: each entry's last use, each subject's latest key.
        self._noted: dict[tuple[str, str], float] = {}
        self._subjects: dict[tuple[str, str], str] = {}
        self._pending: list[_Use] = []  # hits not yet written

    # ------------------------------------------------------------------ connection

    def _connection(self) -> sqlite3.Connection | None:
        if self.broken or self.absent:
            return None
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        conn = self._open_read_write() if self._want_write else None
        if self.broken:
            return None
        self.writable = conn is not None
        if conn is None:  # a read-only root: read the index as it is (it may not exist)
            try:
                conn = connect_sqlite(self.path, read_only=True)
            except (sqlite3.Error, OSError) as exc:
                if cannot_write(exc):
                    self.absent = True
                else:
                    self.failed(exc)
                return None
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _open_read_write(self) -> sqlite3.Connection | None:
        conn = None
        try:
            conn = connect_sqlite(self.path)
            for statement in _SCHEMA:
                conn.execute(statement)
            return conn
        except (sqlite3.Error, OSError) as exc:
            if conn is not None:
                close_sqlite(conn)
            self.failed(exc)
            return None

    @contextlib.contextmanager
    def use(self, write: bool = False) -> Iterator[sqlite3.Connection | None]:
        """The connection (None when unusable, or read-only and ``write`` is asked); SQLite
        errors inside the block are handled by ``failed``."""
        with self._lock:
            conn = self._connection()
            if self._pending:  # what is read or written next sees every hit so far
                conn = self._write_pending(conn)
            if write and not self.writable:
                conn = None
            try:
                yield conn
            except sqlite3.Error as exc:
                self.failed(exc)

    def failed(self, exc: BaseException) -> None:
        """Classify a failure of the index (or of the digest memo in the same database)."""
        if cannot_write(exc):
            self.writable = self._want_write = False
            self._on_cannot_write(exc)
            return
        self.broken = True
        self.error = str(exc)
        if not self.quiet:
            self._on_broken(exc)

    def close(self) -> None:
        with self._lock:
            self.flush()
            if self._conn is not None and self._pid == os.getpid():
                close_sqlite(self._conn)
            self._conn = None

    # ------------------------------------------------------------------ runs

    def record(
        self,
        stage: str,
        key: str,
        meta: Mapping[str, str],
        size: int,
        subject: str | None,
        *,
        hit: bool,
    ) -> None:
        """Note a hit (last use) or a new entry, and ``subject``'s latest key for ``stage``.

        A new entry is written now; a hit later (``HIT_WRITE_DELAY_S``), or not at all when
        this process wrote it within ``LAST_USE_RESOLUTION_S`` (as its subject's latest key)."""
        now = time.time()
        with self._lock:
            if hit and self._noted_lately(stage, key, subject, now):
                return
            self._pending.append(_Use(stage, key, meta, size, subject, hit, now))
            self._note(stage, key, subject, now)
            _UNWRITTEN.add(self)
            if not hit or now - self._pending[0].when >= HIT_WRITE_DELAY_S:
                self.flush()

    def flush(self) -> None:
        """Write the hits held so far, in one transaction."""
        with self._lock:
            if self._pending:
                with self.use(write=True):
                    pass

    def _write_pending(self, conn: sqlite3.Connection | None) -> sqlite3.Connection | None:
        """Write the pending uses in one transaction (dropped where the index cannot be
        written); ``conn``, or None once the index is broken."""
        pending, self._pending = self._pending, []
        if conn is None or not self.writable:
            return conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for use in pending:
                    self._write_use(conn, use)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            self.failed(exc)
        return None if self.broken else conn

    def _write_use(self, conn: sqlite3.Connection, use: _Use) -> None:
        fields_json = use.meta.get("fields", "{}")
        updated = 0
        if use.hit:
            updated = conn.execute(
                "UPDATE entries SET last_used=? WHERE stage=? AND key=?",
                (use.when, use.stage, use.key),
            ).rowcount
        if not updated:
            created = number_or(use.meta.get("created"), use.when)
            self._put(
                conn,
                "REPLACE",
                use.stage,
                use.key,
                use.meta.get("subject") or None,
                use.size,
                created,
                use.when,
                fields_json,
            )
        if use.subject is not None:
            conn.execute(
                "INSERT OR REPLACE INTO subjects (stage, subject, key, fields, updated) "
                "VALUES (?, ?, ?, ?, ?)",
                (use.stage, use.subject, use.key, fields_json, use.when),
            )

    def _noted_lately(self, stage: str, key: str, subject: str | None, now: float) -> bool:
        latest = subject is None or self._subjects.get((stage, subject)) == key
        return latest and now - self._noted.get((stage, key), 0.0) < LAST_USE_RESOLUTION_S

    def _note(self, stage: str, key: str, subject: str | None, now: float) -> None:
        if len(self._noted) >= 4096:  # a long batch: forget what is past the resolution
            self._noted = {k: t for k, t in self._noted.items() if now - t < LAST_USE_RESOLUTION_S}
            self._subjects.clear()
        self._noted[(stage, key)] = now
        if subject is not None:
            self._subjects[(stage, subject)] = key

    def miss_reason(self, stage: str, key: StageKey, subject: str | None) -> MissReason:
        """Why ``key`` is not there: which group changed since ``subject``'s last key."""
        row = None
        if subject is not None:
            with self.use() as conn:
                if conn is not None:
                    row = conn.execute(
                        "SELECT fields FROM subjects WHERE stage=? AND subject=?",
                        (stage, subject),
                    ).fetchone()
        try:
            previous = json.loads(row[0]) if row is not None else None
        except ValueError:
            previous = None
        if not isinstance(previous, dict):
            return MissReason.ABSENT
        group = key.changed_group(previous)
        if group == "platform" and bool(key.platform) != bool(previous.get("platform")):
            return MissReason.SHARED_ONLY if key.platform else MissReason.STRICT_ONLY
        return _GROUP_REASONS[group] if group is not None else MissReason.ABSENT

    # ------------------------------------------------------------------ admin

    def rows(self, stage: str | None = None) -> dict[tuple[str, str], IndexRow]:
        """The entries table (of ``stage``) by (stage, key); {} without an index."""
        query = "SELECT stage, key, subject, size, created, last_used, inputs FROM entries"
        found: list[tuple[Any, ...]] = []
        with self.use() as conn:
            if conn is not None:
                if stage is None:
                    found = conn.execute(query).fetchall()
                else:
                    found = conn.execute(query + " WHERE stage=?", (stage,)).fetchall()
        return {(r[0], r[1]): IndexRow(*r[:6], json_dict(r[6])) for r in found}

    def add(self, stage: str, key: str, meta: Mapping[str, str], size: int, mtime: float) -> None:
        """Index an entry file found on disk (``meta`` from its header), unless indexed."""
        if not meta:
            return
        created = number_or(meta.get("created"), mtime)
        with self.use(write=True) as conn:
            if conn is not None:
                self._put(
                    conn,
                    "IGNORE",
                    stage,
                    key,
                    meta.get("subject") or None,
                    size,
                    created,
                    mtime,
                    meta.get("fields", "{}"),
                )

    @staticmethod
    def _put(
        conn: sqlite3.Connection,
        conflict: str,
        stage: str,
        key: str,
        subject: str | None,
        size: int,
        created: float,
        last_used: float,
        fields_json: str,
    ) -> None:
        inputs = json_dict(fields_json).get("inputs", {})
        conn.execute(
            f"INSERT OR {conflict} INTO entries "
            "(stage, key, subject, size, created, last_used, inputs, fields) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (stage, key, subject, size, created, last_used, canonical_json(inputs), fields_json),
        )

    def drop(self, keys: list[tuple[str, str]]) -> bool:
        """Forget these (stage, key) entries; whether the index could be changed."""
        if not keys:
            return True
        self._noted.clear()
        self._subjects.clear()
        with self.use(write=True) as conn:
            if conn is not None:
                conn.executemany("DELETE FROM entries WHERE stage=? AND key=?", keys)
                return True
        return False

    def integrity(self) -> str | None:
        """What SQLite's integrity check finds wrong (the index is then broken), or None."""
        with self._lock:
            conn = self._connection()
            if conn is None:
                return (self.error or "unusable") if self.broken else None
            try:
                found = conn.execute("PRAGMA integrity_check").fetchall()
            except sqlite3.Error as exc:
                found = [(str(exc),)]
            if found == [("ok",)]:
                return None
            self.broken = True
            self.error = "; ".join(str(r[0]) for r in found[:3])
            return self.error

    def rebuild(self) -> Path:
        """Move the index aside (returns where) so a fresh one is made. Raises OSError."""
        self.close()
        self._noted.clear()
        self._subjects.clear()
        aside = move_aside(self.path, "broken")
        self.broken, self.error, self.absent = False, "", False
        return aside


def json_dict(text: str) -> dict[str, Any]:
    """The JSON object in ``text``; {} when it is not one (metadata written by others)."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def number_or(value: Any, default: float) -> float:
    """``float(value)``, or ``default`` when it is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return default
