"""Cache keys: canonical JSON, BLAKE3 key digests, memoised file content digests, fingerprints.

Everything here is about *identity*: a key is the BLAKE3 hex digest (64 chars) of the canonical
JSON of a stage's fields; a file is identified by the BLAKE3 digest of its bytes (never by its
path or mtime), memoised in a small SQLite table by ``(st_dev, st_ino, st_size, st_mtime_ns,
st_ctime_ns)`` so unchanged files are not re-read and replaced files are always noticed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import json
import logging
import math
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import blake3

logger = logging.getLogger(__name__)

__all__ = [
    "DigestMemo",
    "canonical_json",
    "file_digest",
    "fingerprint_files",
    "key_digest",
]

# A file whose ctime/mtime is this close to "now" may still change within the same timestamp
# tick (coarse kernel clocks tick every 1-10 ms), so its digest is not memoised ("racy" files,
# as in git's index). Tests may set it to 0.
RACY_WINDOW_NS = 50_000_000

_CHUNK = 16 << 20  # read size for hashing
_THREADED_MIN = 64 << 20  # files at least this large overlap reading and hashing
_SQLITE_TIMEOUT_S = 30.0


# --------------------------------------------------------------------------- canonical JSON


def _normalise(obj: Any) -> Any:
    """Turn ``obj`` into plain JSON types with string keys and stable number spellings."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if math.isnan(obj):
            return "NaN"
        if math.isinf(obj):
            return "Infinity" if obj > 0 else "-Infinity"
        if obj.is_integer() and abs(obj) < 2**53:
            return int(obj)  # 1.0 and 1 (and -0.0 and 0) name the same value
        return obj  # repr() is the shortest round-trip spelling: stable everywhere
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, enum.Enum):
        return _normalise(obj.value)
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            key = k if isinstance(k, str) else canonical_json(k)
            if key in out:
                raise ValueError(f"canonical_json: two keys spell {key!r}")
            out[key] = _normalise(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [_normalise(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        items = [_normalise(v) for v in obj]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).hex()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _normalise(dataclasses.asdict(obj))
    item = getattr(obj, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(obj, "shape", None) == ():
        return _normalise(item())
    if type(obj).__module__ == "torch" and type(obj).__name__ in {"dtype", "device"}:
        return str(obj)
    raise TypeError(f"canonical_json: cannot encode {type(obj).__name__} {obj!r}")


def canonical_json(obj: Any) -> str:
    """The one spelling of ``obj`` as JSON: sorted keys, no whitespace, stable numbers.

    Paths become strings, tuples and sets lists (sets sorted), integral floats ints, NaN/inf
    strings; numpy/torch scalars their Python value; ``torch.dtype``/``device`` their name.
    """
    return json.dumps(
        _normalise(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def key_digest(fields: Mapping[str, Any]) -> str:
    """Hex BLAKE3 (64 chars) of ``canonical_json(fields)``."""
    return blake3.blake3(canonical_json(fields).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- SQLite helper


def connect_sqlite(db_path: str | os.PathLike[str], read_only: bool = False) -> sqlite3.Connection:
    """Open ``db_path`` for sharing between processes: WAL, busy timeout, autocommit.

    ``read_only``: open it without ever writing (``mode=ro``; on a read-only file system where
    the WAL's shared-memory file cannot be created, as ``immutable``); raises when it is absent.
    """
    if read_only:
        return _connect_read_only(Path(db_path))
    conn = sqlite3.connect(
        os.fspath(db_path), timeout=_SQLITE_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA busy_timeout={int(_SQLITE_TIMEOUT_S * 1000)}")
        with contextlib.suppress(sqlite3.OperationalError):  # e.g. no shared memory (NFS)
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


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


# Python < 3.11 exceptions carry no SQLite error code; their text is SQLite's fixed errstr.
_ERRSTR_CODES = {
    "attempt to write a readonly database": sqlite3.SQLITE_READONLY,
    "unable to open database file": sqlite3.SQLITE_CANTOPEN,
    "database disk image is malformed": sqlite3.SQLITE_CORRUPT,
    "file is not a database": sqlite3.SQLITE_NOTADB,
    "database or disk is full": sqlite3.SQLITE_FULL,
    "access permission denied": sqlite3.SQLITE_PERM,
    "database is locked": sqlite3.SQLITE_BUSY,
}


def sqlite_error_code(exc: BaseException) -> int | None:
    """The primary SQLite result code of ``exc`` (e.g. ``sqlite3.SQLITE_CORRUPT``), or None."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None and isinstance(exc, sqlite3.Error):
        code = _ERRSTR_CODES.get(str(exc))
    return None if code is None else int(code) & 0xFF


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

    def _connection(self) -> sqlite3.Connection | None:
        if self._broken:
            return None
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:  # first use, or first use after a fork: never share a connection across processes
            conn = connect_sqlite(self.db_path, read_only=self.read_only)
            if not self.read_only:
                conn.execute(_MEMO_SCHEMA)
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

    def lookup(self, st: os.stat_result) -> str | None:
        """The memoised digest of the file ``st`` describes, or None."""
        with self._lock:
            conn = self._connection()
            if conn is None:
                return None
            try:
                row = conn.execute(
                    "SELECT digest FROM file_digests WHERE dev=? AND ino=? AND size=? "
                    "AND mtime_ns=? AND ctime_ns=?",
                    (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns),
                ).fetchone()
            except sqlite3.Error as exc:
                self._disable(exc)
                return None
        return row[0] if row else None

    def store(self, st: os.stat_result, digest: str, path: str | os.PathLike[str] = "") -> None:
        """Remember ``digest`` for the file ``st`` describes (best effort)."""
        if self.read_only:
            return
        with self._lock:
            conn = self._connection()
            if conn is None:
                return
            try:
                conn.execute(
                    "INSERT OR REPLACE INTO file_digests "
                    "(dev, ino, size, mtime_ns, ctime_ns, digest, path, checked) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        st.st_dev,
                        st.st_ino,
                        st.st_size,
                        st.st_mtime_ns,
                        st.st_ctime_ns,
                        digest,
                        os.fspath(path),
                        time.time(),
                    ),
                )
            except sqlite3.Error as exc:
                self._disable(exc)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


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


def _same_file_state(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns, a.st_ctime_ns) == (
        b.st_dev,
        b.st_ino,
        b.st_size,
        b.st_mtime_ns,
        b.st_ctime_ns,
    )


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


# --------------------------------------------------------------------------- fingerprints


def _expand(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    return [path]


def fingerprint_files(
    paths: Iterable[str | os.PathLike[str]] | Mapping[str, str | os.PathLike[str]],
    extra: Mapping[str, Any] | None = None,
    memo: DigestMemo | None = None,
) -> str:
    """A model fingerprint: key digest of the weight/config files' content digests + ``extra``.

    ``paths`` is a list of files or folders (folders are walked; hidden files skipped), named in
    the fingerprint by their path relative to the deepest common folder (so the same model in
    another place has the same fingerprint), or a mapping ``{role: path}`` naming them
    explicitly. ``extra`` holds settings that change the output (thresholds, dtype, provider).
    Raises OSError when a file cannot be read.
    """
    named: dict[str, Path] = {}
    if isinstance(paths, Mapping):
        for role, p in paths.items():
            files = _expand(Path(p))
            if Path(p).is_dir():
                for f in files:
                    named[f"{role}/{f.relative_to(p).as_posix()}"] = f
            else:
                named[str(role)] = files[0]
    else:
        files = [f for p in paths for f in _expand(Path(p))]
        if not files and not extra:
            raise ValueError("fingerprint_files: no files to fingerprint")
        if files:
            absolute = [f.absolute() for f in files]
            base = (
                Path(os.path.commonpath([str(f.parent) for f in absolute]))
                if len(absolute) > 1
                else absolute[0].parent
            )
            for f, a in zip(files, absolute):
                named[a.relative_to(base).as_posix()] = f
    digests = {name: file_digest(named[name], memo) for name in sorted(named)}
    return key_digest({"files": digests, "extra": dict(extra or {})})
