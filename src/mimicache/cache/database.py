"""SQLite connections shared by processes, and what a SQLite failure means for the cache.

A database is opened read-write (WAL where ``sharing.wal_usable`` says it works, else the
rollback journal; busy timeout, autocommit) or read-only (``mode=ro``; ``immutable`` where a
read-only file system cannot hold the WAL's shared-memory file).
Failures are classified by SQLite result code or errno, never by message text.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import sqlite3
import threading
import time
import weakref
from pathlib import Path

from mimicache.cache.sharing import wal_allowed, wal_known, wal_usable, wal_works

__all__ = [
    "cannot_write",
    "close_sqlite",
    "connect_sqlite",
    "journal_mode",
    "move_aside",
    "sqlite_error_code",
]

_SQLITE_TIMEOUT_S = 30.0
_CHECKPOINT_WAIT_MS = 100  # how long a closing connection's checkpoint waits for others
_CREATING = threading.Lock()  # one thread at a time creates a database file

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

    Only SQLite opens or closes a descriptor of a database file that exists (see
    ``_create``): a process's POSIX locks on a file go with *any* of its descriptors closed,
    and a connection of this process that lost them lets another process believe it is the
    last user, checkpoint and delete the WAL under it ("How To Corrupt An SQLite Database
    File", 2.2). SQLite's own descriptors of one file are shared within a process and never
    closed while a lock is held.
    """
    path = Path(db_path)
    if read_only:
        return _connect_read_only(path)
    _create(path)
    conn = _open(path)
    in_wal = wal = False
    try:
        in_wal = journal_mode(conn) == "wal"  # the header, read through SQLite
        if in_wal and not wal_known(path.parent) and wal_allowed(path) and _reads(conn):
            wal_works(path.parent)  # opened and read in WAL: no trial database needed
        wal = wal_usable(path)
        _configure(conn, wal)
        return conn
    except sqlite3.Error as exc:
        conn.close()
        # A database left in WAL mode where WAL no longer works cannot even be switched back:
        # it only holds rebuildable data, so it is moved aside and started afresh.
        if wal or not in_wal or sqlite_error_code(exc) != sqlite3.SQLITE_READONLY:
            raise
    move_aside(path, "wal-unusable", ("", "-wal"))  # the fresh one journals without -shm
    _create(path)
    conn = _open(path)
    try:
        _configure(conn, False)
    except BaseException:
        conn.close()
        raise
    return conn


def move_aside(path: Path, why: str, suffixes: tuple[str, ...] = ("", "-wal", "-shm")) -> Path:
    """Move the database at ``path`` and its files of ``suffixes`` (those there) to
    ``{path}.{why}-{time}`` so that a fresh one is made; returns that name. Raises OSError."""
    aside = Path(f"{path}.{why}-{int(time.time())}")
    for suffix in suffixes:
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    return aside


def _create(path: Path) -> None:
    """Create the database file with the usual mode of the umask (SQLite creates it 0o644
    whatever the umask, and its -wal/-shm copy that mode), like every file the cache writes.

    Only a file that does not exist yet is opened (``O_EXCL``): no connection of this process
    can hold a lock on it, so closing the descriptor drops none. Every connect passes here
    first, so under the lock another thread's connection opens the file only after the close.
    """
    with _CREATING:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except OSError:  # there already (or not creatable: SQLite then says why)
            return
        os.close(fd)


class _Connection(sqlite3.Connection):
    """A read-write connection of ``connect_sqlite``: the process that opened it closes it
    at exit, if nobody did before (``close_sqlite``)."""

    opener = 0


_OPEN: weakref.WeakSet[_Connection] = weakref.WeakSet()


def _open(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(
        os.fspath(path),
        timeout=_SQLITE_TIMEOUT_S,
        isolation_level=None,
        check_same_thread=False,
        factory=_Connection,
    )
    try:
        conn.execute(f"PRAGMA busy_timeout={int(_SQLITE_TIMEOUT_S * 1000)}")
    except BaseException:
        conn.close()
        raise
    conn.opener = os.getpid()
    _OPEN.add(conn)
    return conn


def close_sqlite(conn: sqlite3.Connection) -> None:
    """Close ``conn``, first truncating the WAL to nothing where it is in WAL mode (best
    effort: a checkpoint needs every other process's readers to be done). So the -wal file
    never outlives a run, even where this is not the database's last connection or where a
    full disk would fail the checkpoint that SQLite's last close makes."""
    if isinstance(conn, _Connection):
        _OPEN.discard(conn)
    with contextlib.suppress(sqlite3.Error):
        if journal_mode(conn) == "wal":
            # a checkpoint waits for other processes' readers and writers through the busy
            # handler: briefly, so that a long reader elsewhere never holds up this exit
            conn.execute(f"PRAGMA busy_timeout={_CHECKPOINT_WAIT_MS}")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


@atexit.register
def _close_at_exit() -> None:
    # Runs after the index's own exit hook (registered later) has written its held hits.
    # A forked child leaves its parent's connections alone: it holds none of their locks.
    for conn in list(_OPEN):
        if conn.opener == os.getpid():
            close_sqlite(conn)


def _reads(conn: sqlite3.Connection) -> bool:
    """Whether ``conn`` can read its database (in the journal mode it is in)."""
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error:
        return False
    return True


WAL_SIZE_LIMIT = 64 << 10  # bytes the -wal file keeps after a checkpoint
WAL_CHECKPOINT_PAGES = 16  # pages the -wal file collects before they go to the database


def _configure(conn: sqlite3.Connection, wal: bool) -> None:
    if wal:
        with contextlib.suppress(sqlite3.OperationalError):
            conn.execute("PRAGMA journal_mode=WAL")
        # The index's transactions are small and many: checkpoints every 16 pages (64 kB,
        # not SQLite's 1000) make the database grow while there is room, and truncate the
        # -wal file to 64 kB, so a disk that fills up holds little in the -wal that a last
        # checkpoint would need room for (``close_sqlite``).
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
    else:
        conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("PRAGMA synchronous=NORMAL" if wal else "PRAGMA synchronous=FULL")


def journal_mode(conn: sqlite3.Connection) -> str:
    """The connection's journal mode ("wal", "delete", ...)."""
    return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()


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
