"""SQLite connections shared by processes, and what a SQLite failure means for the cache.

A database is opened read-write (WAL where ``sharing.wal_usable`` says it works, else the
rollback journal; busy timeout, autocommit) or read-only (``mode=ro``; ``immutable`` where a
read-only file system cannot hold the WAL's shared-memory file).
Failures are classified by SQLite result code or errno, never by message text.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import time
from pathlib import Path

from mimicache.cache.sharing import wal_allowed, wal_known, wal_usable, wal_works

__all__ = ["cannot_write", "connect_sqlite", "journal_mode", "sqlite_error_code"]

_SQLITE_TIMEOUT_S = 30.0

# Python < 3.11 exceptions carry no result code; their text is then SQLite's fixed errstr().
_ERRSTR_CODES = {
    "attempt to write a readonly database": sqlite3.SQLITE_READONLY,
    "unable to open database file": sqlite3.SQLITE_CANTOPEN,
    "database disk image is malformed": sqlite3.SQLITE_CORRUPT,
    "file is not a database": sqlite3.SQLITE_NOTADB,
    "database or disk is full": sqlite3.SQLITE_FULL,
    "access permission denied": sqlite3.SQLITE_PERM,
    "database is locked": sqlite3.SQLITE_BUSY,
}

# Result codes that say "this database cannot be written here", not "it is broken".
_CANNOT_WRITE = frozenset(
    {sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_FULL}
)


def sqlite_error_code(exc: BaseException) -> int | None:
    """The primary SQLite result code of ``exc`` (e.g. ``sqlite3.SQLITE_CORRUPT``), or None."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None and isinstance(exc, sqlite3.Error):
        code = _ERRSTR_CODES.get(str(exc))
    return None if code is None else int(code) & 0xFF


def cannot_write(exc: BaseException) -> bool:
    """Whether ``exc`` means the database (or its folder) cannot be written, as opposed to
    being damaged or busy: any OSError, or SQLITE_READONLY / CANTOPEN / PERM / FULL."""
    return isinstance(exc, OSError) or sqlite_error_code(exc) in _CANNOT_WRITE


def connect_sqlite(db_path: str | os.PathLike[str], read_only: bool = False) -> sqlite3.Connection:
    """Open ``db_path`` for sharing between processes: WAL (or the rollback journal where WAL
    cannot work), busy timeout, autocommit.

    ``read_only``: open it without ever writing; raises FileNotFoundError when it is absent.
    """
    path = Path(db_path)
    if read_only:
        return _connect_read_only(path)
    if _in_wal_mode(path) and not wal_known(path.parent) and wal_allowed(path):
        conn = _open_in_wal(path)
        if conn is not None:
            return conn
    wal = wal_usable(path)
    try:
        return _connect(path, wal)
    except sqlite3.Error as exc:
        # A database left in WAL mode where WAL no longer works cannot even be switched back:
        # it only holds rebuildable data, so it is moved aside and started afresh.
        if wal or sqlite_error_code(exc) != sqlite3.SQLITE_READONLY or not _in_wal_mode(path):
            raise
        aside = f"{path}.wal-unusable-{int(time.time())}"
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{path}{suffix}", f"{aside}{suffix}")
        return _connect(path, wal)


def _open_in_wal(path: Path) -> sqlite3.Connection | None:
    """The connection to a database already in WAL mode, opened and read in it, which proves
    that WAL works in its folder without the trial database (a millisecond); None on any
    failure, which then goes the trial's way."""
    try:
        conn = _connect(path, True)
    except sqlite3.Error:
        return None
    try:
        if journal_mode(conn) == "wal":
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            wal_works(path.parent)
            return conn
    except sqlite3.Error:
        pass
    conn.close()
    return None


WAL_SIZE_LIMIT = 1 << 20  # bytes the -wal file keeps after a checkpoint


def _connect(path: Path, wal: bool) -> sqlite3.Connection:
    # SQLite creates its file 0o644 whatever the umask (and its -wal/-shm copy that mode), so
    # the file is created first, like every other file the cache writes.
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o666))
    conn = sqlite3.connect(
        os.fspath(path), timeout=_SQLITE_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA busy_timeout={int(_SQLITE_TIMEOUT_S * 1000)}")
        if wal:
            with contextlib.suppress(sqlite3.OperationalError):
                conn.execute("PRAGMA journal_mode=WAL")
            # A checkpoint truncates the -wal file to this size, so it never stays large (on a
            # nearly full disk too); checkpoints come every 256 pages (1 MiB) instead of 1000.
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            conn.execute("PRAGMA wal_autocheckpoint=256")
        else:
            conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA synchronous=NORMAL" if wal else "PRAGMA synchronous=FULL")
    except BaseException:
        conn.close()
        raise
    return conn


def journal_mode(conn: sqlite3.Connection) -> str:
    """The connection's journal mode ("wal", "delete", ...)."""
    return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()


def _in_wal_mode(path: Path) -> bool:
    """Whether the database file's header says WAL (bytes 18-19 are 2)."""
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except OSError:
        return False
    return len(header) == 20 and header[18:20] == b"\x02\x02"


def _connect_read_only(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
    uri = path.absolute().as_uri() + "?mode=ro"
    last: sqlite3.Error | None = None
    for suffix in ("", "&immutable=1"):
        conn = sqlite3.connect(
            uri + suffix,
            uri=True,
            timeout=_SQLITE_TIMEOUT_S,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens the file
            return conn
        except sqlite3.Error as exc:
            conn.close()
            if sqlite_error_code(exc) != sqlite3.SQLITE_CANTOPEN:
                raise
            last = exc
    assert last is not None
    raise last
