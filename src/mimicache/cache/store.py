"""FeatureStore: named CPU tensors under content-addressed keys, in safetensors files.

Layout under the root (``--feature_cache_dir``)::

    CACHEDIR.TAG                      standard cache-directory tag (backup tools skip the tree)
    index.sqlite                      entries, last key per subject, file digest memo (WAL)
    locks/<stage>/<key>.lock          per-key file locks: concurrent processes compute once
    v<SCHEMA>/<stage>/<key[:2]>/<key>.safetensors

An entry holds the tensors plus metadata (stage, key, key fields as canonical JSON, subject,
versions, created, BLAKE3 checksum of the tensor bytes). Reads verify it; a bad entry is logged,
removed and recomputed. Writes are atomic (temp file in the same folder, fsync, ``os.replace``).
A cache that cannot be written (read-only, full disk) warns once and the run goes on uncached.
The store knows nothing about what the tensors mean.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import blake3
import filelock
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from mimicache.cache.keys import (
    DigestMemo,
    canonical_json,
    connect_sqlite,
    key_digest,
    sqlite_error_code,
)
from mimicache.errors import CacheError

logger = logging.getLogger(__name__)

__all__ = [
    "MISS_REASONS",
    "SCHEMA",
    "CacheEvent",
    "EntryInfo",
    "FeatureStore",
    "Problem",
    "Removal",
    "RemovalFailure",
    "RemovalPlan",
    "RemovalResult",
    "StageKey",
    "VerifyReport",
    "format_size",
    "parse_size",
]

SCHEMA = 1
"""On-disk format version; entries live under ``v<SCHEMA>/`` and other versions are ignored."""

CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by mimicache (feature cache).\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)
STALE_TEMP_SECONDS = 3600.0
"""Temp files and lock files older than this are debris from crashed writers; prune removes them."""

MISS_REASONS = (
    "absent",
    "input changed",
    "model changed",
    "parameters changed",
    "corrupt",
    "forced",
    "disabled",
)
HIT_REASON = "hit"

_STAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
_TEMP_RE = re.compile(r"^\.([0-9a-f]{64})\.\d+\.[0-9a-f]+\.tmp$")
_ENTRY_SUFFIX = ".safetensors"
_RESERVED_META = frozenset(
    {"format", "stage", "key", "fields", "subject", "mimicache_version", "schema", "created"}
    | {"checksum"}
)
_MAX_HEADER = 100 << 20

_INDEX_SCHEMA = (
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


def _version() -> str:
    try:
        from mimicache import __version__

        return str(__version__)
    except Exception:  # pragma: no cover - partial installs
        return "unknown"


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class StageKey:
    """What a stage's output depends on, grouped so a miss can be explained.

    ``inputs``: content digests of input files (and how they are read); ``models``: model
    fingerprints; ``params``: every other setting that changes the output. All JSON-able.
    """

    inputs: dict[str, Any]
    models: dict[str, Any]
    params: dict[str, Any]

    def fields(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "models": self.models, "params": self.params}

    @cached_property
    def canonical(self) -> str:
        """Canonical JSON of the three groups (what is stored in the entry's metadata)."""
        return canonical_json(self.fields())

    @cached_property
    def digest(self) -> str:
        """The entry key: hex BLAKE3 (64 chars) of the canonical JSON of the three groups."""
        return key_digest(self.fields())

    def changed_group(self, previous: Mapping[str, Any]) -> str | None:
        """The miss reason relative to ``previous`` fields (inputs, then models, then params)."""
        for group, reason in (
            ("inputs", "input changed"),
            ("models", "model changed"),
            ("params", "parameters changed"),
        ):
            if canonical_json(getattr(self, group)) != canonical_json(previous.get(group, {})):
                return reason
        return None


@dataclass
class CacheEvent:
    """What one ``get_or_compute`` did.

    ``reason`` is ``"hit"`` on a hit, else one of MISS_REASONS. ``seconds`` is the whole call
    (load on a hit; compute + write on a miss). ``bytes`` is the entry file's size when it was
    read or written, 0 when nothing touched the disk.
    """

    stage: str
    hit: bool
    reason: str
    seconds: float
    bytes: int
    key: str
    subject: str | None = None


@dataclass(frozen=True)
class EntryInfo:
    """One cache entry as ``entries()`` lists it (times are Unix seconds)."""

    stage: str
    key: str
    subject: str | None
    inputs: dict[str, Any]
    size: int
    created: float
    last_used: float
    path: Path


@dataclass(frozen=True)
class Problem:
    """A finding of ``verify()``; ``fixed`` says whether ``verify(fix=True)`` repaired it.

    ``kind``: "corrupt", "orphan", "missing file", "unindexed", "index", or "leftover temp
    file" (``leftover=True``: debris of an interrupted or running write, not an error).
    """

    kind: str
    path: Path
    detail: str
    stage: str | None = None
    key: str | None = None
    fixed: bool = False
    leftover: bool = False


@dataclass(frozen=True)
class VerifyReport:
    """What ``check()`` found: ``problems`` (leftovers included), entries that passed (``good``)."""

    problems: list[Problem]
    good: int

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.leftover]

    @property
    def leftovers(self) -> list[Problem]:
        return [p for p in self.problems if p.leftover]


@dataclass(frozen=True)
class Removal:
    """A file ``prune()``/``clear()`` removed (or would remove, on a dry run).

    ``kind``: "entry", "temp", "orphan"; ``reason`` says why.
    """

    kind: str
    path: Path
    size: int
    reason: str
    stage: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class RemovalFailure:
    """A planned removal that did not happen; ``error`` says why (e.g. "EROFS: ...")."""

    removal: Removal
    error: str


@dataclass(frozen=True)
class RemovalResult:
    """What ``RemovalPlan.execute()`` really did."""

    removed: list[Removal]
    failed: list[RemovalFailure]

    @property
    def freed_size(self) -> int:
        return sum(r.size for r in self.removed)


@dataclass
class RemovalPlan:
    """Files ``prune``/``clear`` would remove; nothing happens until ``execute()``."""

    removals: list[Removal]
    _execute: Callable[[list[Removal]], RemovalResult] = field(repr=False)

    @property
    def expected_freed_size(self) -> int:
        return sum(r.size for r in self.removals)

    def execute(self) -> RemovalResult:
        """Remove the files; returns what was removed and what could not be."""
        return self._execute(self.removals)


@dataclass
class _Scan:
    entries: dict[tuple[str, str], tuple[Path, os.stat_result]] = field(default_factory=dict)
    temps: list[tuple[Path, os.stat_result]] = field(default_factory=list)
    orphans: list[tuple[Path, os.stat_result]] = field(default_factory=list)


class _Corrupt(Exception):
    pass


# --------------------------------------------------------------------------- sizes

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgtp]?)(i?)(b?)\s*$", re.IGNORECASE)
_SIZE_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_size(text: str | int) -> int:
    """Bytes from ``"123"``, ``"500M"``, ``"10GB"`` (powers of 1000) or ``"1.5GiB"`` (1024).

    Case-insensitive; the ``B`` is optional. Raises CacheError for anything else.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise CacheError(f"invalid size {text!r}: must not be negative")
        return text
    match = _SIZE_RE.match(str(text))
    if not match:
        raise CacheError(
            f"invalid size {text!r}: use a number of bytes with an optional unit, "
            "e.g. 123, 500M, 10GB or 1.5GiB"
        )
    number, unit, binary, _ = match.groups()
    if binary and not unit:
        raise CacheError(f"invalid size {text!r}: 'i' needs a unit letter, e.g. 1.5GiB")
    base = 1024 if binary else 1000
    return round(float(number) * base ** _SIZE_POWERS[unit.lower()])


def format_size(n: int) -> str:
    """``n`` bytes for people: ``"812 B"``, ``"1.2 MB"``, ``"3.4 GB"`` (powers of 1000)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError  # pragma: no cover


# --------------------------------------------------------------------------- tensors


def _check_stage(stage: str) -> None:
    if not isinstance(stage, str) or not _STAGE_RE.match(stage):
        raise CacheError(
            f"invalid cache stage name {stage!r}: use letters, digits, '_' or '-' (max 64)"
        )


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    flat = t.reshape(-1)
    if flat.dtype != torch.uint8:
        flat = flat.view(torch.uint8)
    return memoryview(flat.numpy())


def tensor_checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    """BLAKE3 over the names, dtypes, shapes and bytes of ``tensors`` (CPU, contiguous)."""
    hasher = blake3.blake3()
    layout = {name: [str(t.dtype), list(t.shape)] for name, t in tensors.items()}
    hasher.update(canonical_json(layout).encode("utf-8"))
    for name in sorted(tensors):
        hasher.update(_tensor_bytes(tensors[name]))
    return hasher.hexdigest()


def _prepare(result: Any) -> dict[str, torch.Tensor]:
    """CPU, contiguous, detached tensors that own their storage (safetensors needs that)."""
    if not isinstance(result, Mapping):
        raise TypeError(
            f"cache compute function must return a dict of tensors, got {type(result).__name__}"
        )
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in result.items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor):
            raise TypeError(f"cache compute function returned {name!r}: {type(t).__name__}")
        t = t.detach().to("cpu").resolve_conj().resolve_neg().contiguous()
        if t.numel():
            storage = t.untyped_storage()
            if (
                storage.data_ptr() in seen
                or storage.nbytes() != t.numel() * t.element_size()
                or t.storage_offset()
            ):
                t = t.clone()
            seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    meta: dict[str, str] = {}
    for k, v in (metadata or {}).items():
        if k in _RESERVED_META or not isinstance(k, str) or not isinstance(v, str):
            raise CacheError(
                f"cache metadata {k!r}: keys must be strings other than "
                f"{sorted(_RESERVED_META)} and values strings"
            )
        meta[k] = v
    return meta


def _read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (cheap: reads only the header)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise _Corrupt("file shorter than a safetensors header")
        n = int.from_bytes(head, "little")
        if not 2 <= n <= _MAX_HEADER:
            raise _Corrupt(f"implausible header length {n}")
        raw = f.read(n)
    if len(raw) != n:
        raise _Corrupt("truncated header")
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise _Corrupt(f"unreadable header: {exc}") from None
    if not isinstance(header, dict):
        raise _Corrupt("header is not a JSON object")
    return header


def _parse_entry(data: bytes) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Metadata and tensors of an entry file's bytes; raises _Corrupt on any inconsistency."""
    if len(data) < 8:
        raise _Corrupt(f"file too short ({len(data)} bytes)")
    n = int.from_bytes(data[:8], "little")
    if not 2 <= n <= min(_MAX_HEADER, len(data) - 8):
        raise _Corrupt(f"bad header length {n} for a {len(data)}-byte file")
    try:
        header = json.loads(data[8 : 8 + n])
    except ValueError as exc:
        raise _Corrupt(f"unreadable header: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
        raise _Corrupt("header without mimicache metadata")
    meta = header["__metadata__"]
    ends = [
        v["data_offsets"][1]
        for k, v in header.items()
        if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v
    ]
    if max(ends, default=0) != len(data) - 8 - n:
        raise _Corrupt(
            f"data section is {len(data) - 8 - n} bytes, header says {max(ends, default=0)}"
        )
    try:
        tensors = st_load(data)
    except Exception as exc:
        raise _Corrupt(f"safetensors cannot read it: {exc}") from None
    if meta.get("format") != "mimicache" or meta.get("schema") != str(SCHEMA):
        raise _Corrupt("not a mimicache entry of this schema")
    if tensor_checksum(tensors) != meta.get("checksum"):
        raise _Corrupt("checksum mismatch")
    return meta, tensors


_CANNOT_WRITE_CODES = frozenset(
    {sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_FULL}
)


def _cannot_write(exc: BaseException) -> bool:
    """Whether ``exc`` means the index cannot be written (not that it is broken)."""
    return isinstance(exc, OSError) or sqlite_error_code(exc) in _CANNOT_WRITE_CODES


def _write_blocker(root: Path) -> OSError | None:
    """Why nothing can be written under the existing folder ``root`` (read-only file system,
    no permission), or None when writes may work."""
    try:
        read_only = bool(os.statvfs(root).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows): the first write will tell
        read_only = False
    if read_only:
        return OSError(errno.EROFS, os.strerror(errno.EROFS), str(root))
    if not os.access(root, os.W_OK):
        return OSError(errno.EACCES, os.strerror(errno.EACCES), str(root))
    return None


def _errno_text(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return f"{name}: {exc.strerror or os.strerror(exc.errno)}"
    return str(exc) or type(exc).__name__


# --------------------------------------------------------------------------- the store


class FeatureStore:
    """A persistent, content-addressed store of named tensors (see the module docstring).

    ``enabled=False``: never touch the disk, always compute (reason "disabled").
    ``read=False``: ignore existing entries, recompute and write ("write-only").
    ``write=False``: use existing entries, never write new ones ("read-only").
    ``force_refresh=True``: recompute every entry and overwrite it (reason "forced").
    Problems with the disk never fail a run: they are logged once and the run goes on uncached.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        enabled: bool = True,
        read: bool = True,
        write: bool = True,
        force_refresh: bool = False,
    ) -> None:
        self.root = Path(root).expanduser().absolute()
        self.enabled = enabled
        self.read = read
        self.write = write
        self.force_refresh = force_refresh
        self.memo: DigestMemo | None = None
        self._usable = False  # the root exists and can be read
        self._can_write = write
        self._warned_write = False
        self._index_broken = False  # corrupt or failing: no index until verify --fix rebuilds it
        self._index_error = ""
        self._warned_index = False
        self._index_writable = False
        self._no_index = False  # read-only root without a readable index
        self._db_lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._conn_pid: int | None = None
        if enabled:
            self._open()

    def __repr__(self) -> str:
        mode = "disabled" if not self.enabled else f"read={self.read} write={self.write}"
        return f"FeatureStore({str(self.root)!r}, {mode}, force_refresh={self.force_refresh})"

    # ------------------------------------------------------------------ setup

    def _open(self) -> None:
        failure: OSError | None = None
        if self.write:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                failure = _write_blocker(self.root)
                tag = self.root / "CACHEDIR.TAG"
                if failure is None and not tag.exists():
                    self._atomic_write(tag, CACHEDIR_TAG.encode("ascii"))
            except OSError as exc:
                failure = exc
        self._usable = self.root.is_dir() and os.access(self.root, os.R_OK | os.X_OK)
        if failure is not None:
            self._write_failed(failure)
        if not self._usable:
            if self.write:
                self._can_write = False
            else:
                logger.warning(
                    "feature cache at %s does not exist: running without caching", self.root
                )
            return
        if self._can_write:
            self.memo = DigestMemo(self.index_path, on_error=self._index_failed)
        else:  # digests are still looked up; failures only mean they are computed
            self.memo = DigestMemo(self.index_path, on_error=lambda exc: None, read_only=True)

    @property
    def index_path(self) -> Path:
        return self.root / "index.sqlite"

    @property
    def active(self) -> bool:
        """Whether entries can be read or written at all."""
        return self.enabled and self._usable and (self.read or self._can_write)

    def entry_path(self, stage: str, key: str | StageKey) -> Path:
        digest = key.digest if isinstance(key, StageKey) else key
        return self.root / f"v{SCHEMA}" / stage / digest[:2] / f"{digest}{_ENTRY_SUFFIX}"

    def _lock_path(self, stage: str, digest: str) -> Path:
        return self.root / "locks" / stage / f"{digest}.lock"

    def close(self) -> None:
        with self._db_lock:
            if self._conn is not None and self._conn_pid == os.getpid():
                self._conn.close()
            self._conn = None
        if self.memo is not None:
            self.memo.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ warnings

    def _write_failed(self, exc: BaseException) -> None:
        self._can_write = False
        if not self._warned_write:
            self._warned_write = True
            reads = self._usable and self.read and not self.force_refresh
            logger.warning(
                "feature cache at %s is not writable (%s): %s",
                self.root,
                _errno_text(exc),
                "read-only: entries are read, nothing new is written"
                if reads
                else "running without caching",
            )

    # ------------------------------------------------------------------ index

    @contextlib.contextmanager
    def _index(self, write: bool = False) -> Iterator[sqlite3.Connection | None]:
        """The index connection (None when unusable, or read-only and ``write`` is asked);
        SQLite errors inside the block are handled by ``_index_failed``."""
        with self._db_lock:
            conn = self._connection()
            if write and not self._index_writable:
                conn = None
            try:
                yield conn
            except sqlite3.Error as exc:
                self._index_failed(exc)

    def _connection(self) -> sqlite3.Connection | None:
        if self._index_broken or self._no_index or not self._usable:
            return None
        if self._conn is not None and self._conn_pid == os.getpid():
            return self._conn
        conn = None
        if self._can_write:
            try:
                conn = connect_sqlite(self.index_path)
                for statement in _INDEX_SCHEMA:
                    conn.execute(statement)
            except (sqlite3.Error, OSError) as exc:
                if conn is not None:
                    conn.close()
                conn = None
                self._index_failed(exc)
                if self._index_broken:
                    return None
        self._index_writable = conn is not None
        if conn is None:  # a read-only root: read the index as it is (it may not exist)
            try:
                conn = connect_sqlite(self.index_path, read_only=True)
            except (sqlite3.Error, OSError) as exc:
                if _cannot_write(exc):  # absent, or cannot be opened at all
                    self._no_index = True
                else:
                    self._index_failed(exc)
                return None
        self._conn, self._conn_pid = conn, os.getpid()
        return conn

    def _index_failed(self, exc: BaseException) -> None:
        """Index (or digest memo) failed. Not being able to write it is the one "not writable"
        warning of this store (reads go on); anything else disables the index with a warning."""
        if _cannot_write(exc):
            if self._can_write:
                self._write_failed(exc)
            self._index_writable = False
            return
        self._index_broken = True
        self._index_error = str(exc)
        if not self._warned_index and not self._warned_write:
            logger.warning(
                "feature cache index %s is unusable (%s): entries still work, but last use "
                "is not recorded; `mimicache cache verify --fix` rebuilds it",
                self.index_path,
                exc,
            )
        self._warned_index = True

    def _record(
        self,
        stage: str,
        digest: str,
        meta: Mapping[str, str],
        size: int,
        subject: str | None,
        *,
        hit: bool,
    ) -> None:
        now = time.time()
        with self._index(write=True) as conn:
            if conn is None:
                return
            fields_json = meta.get("fields", "{}")
            try:
                inputs_json = canonical_json(json.loads(fields_json).get("inputs", {}))
            except (ValueError, AttributeError):
                inputs_json = "{}"
            conn.execute("BEGIN IMMEDIATE")
            try:
                updated = 0
                if hit:
                    updated = conn.execute(
                        "UPDATE entries SET last_used=? WHERE stage=? AND key=?",
                        (now, stage, digest),
                    ).rowcount
                if not updated:
                    created = _float(meta.get("created"), now)
                    conn.execute(
                        "INSERT OR REPLACE INTO entries "
                        "(stage, key, subject, size, created, last_used, inputs, fields) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            stage,
                            digest,
                            meta.get("subject") or None,
                            size,
                            created,
                            now,
                            inputs_json,
                            fields_json,
                        ),
                    )
                if subject is not None:
                    conn.execute(
                        "INSERT OR REPLACE INTO subjects (stage, subject, key, fields, updated) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (stage, subject, digest, fields_json, now),
                    )
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise

    def _miss_reason(self, stage: str, key: StageKey, subject: str | None) -> str:
        if subject is None:
            return "absent"
        row = None
        with self._index() as conn:
            if conn is None:
                return "absent"
            row = conn.execute(
                "SELECT fields FROM subjects WHERE stage=? AND subject=?", (stage, subject)
            ).fetchone()
        if row is None:
            return "absent"
        try:
            previous = json.loads(row[0])
        except ValueError:
            return "absent"
        return key.changed_group(previous) or "absent"

    # ------------------------------------------------------------------ entry files

    def _load(
        self, stage: str, key: StageKey, path: Path
    ) -> tuple[dict[str, torch.Tensor], dict[str, str], int] | str | None:
        """(tensors, metadata, size) on a hit, "corrupt" for a bad entry, None when absent."""
        try:
            with open(path, "rb") as f:
                before = os.fstat(f.fileno())
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning("Cannot read feature cache entry %s (%s)", path, _errno_text(exc))
            return None
        try:
            meta, tensors = _parse_entry(data)
            if meta.get("stage") != stage or meta.get("key") != key.digest:
                raise _Corrupt("entry belongs to another stage or key")
            if meta.get("fields") != key.canonical:
                raise _Corrupt("key fields differ from the entry's")
        except _Corrupt as exc:
            logger.warning(
                "Feature cache entry %s is corrupt (%s): removing it and recomputing", path, exc
            )
            if self._can_write:
                with contextlib.suppress(OSError):
                    now = os.stat(path)
                    if (now.st_ino, now.st_mtime_ns) == (before.st_ino, before.st_mtime_ns):
                        os.unlink(path)
                with self._index(write=True) as conn:
                    if conn is not None:
                        conn.execute(
                            "DELETE FROM entries WHERE stage=? AND key=?", (stage, key.digest)
                        )
            return "corrupt"
        return tensors, meta, len(data)

    def _atomic_write(self, path: Path, data: bytes) -> None:
        """Write ``data`` to ``path`` via a fsynced temp file in the same folder + os.replace."""
        name = path.stem if path.suffix == _ENTRY_SUFFIX else path.name
        tmp = path.parent / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileNotFoundError:  # the folder was pruned away meanwhile: once more
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, flags, 0o644)
        try:
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # make the rename durable too (best effort)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _write_entry(
        self,
        stage: str,
        key: StageKey,
        tensors: dict[str, torch.Tensor],
        subject: str | None,
        metadata: Mapping[str, str] | None,
    ) -> tuple[dict[str, str], int] | None:
        meta = _check_metadata(metadata)
        meta.update(
            format="mimicache",
            schema=str(SCHEMA),
            stage=stage,
            key=key.digest,
            fields=key.canonical,
            subject=subject or "",
            mimicache_version=_version(),
            created=f"{time.time():.6f}",
            checksum=tensor_checksum(tensors),
        )
        data = st_save(tensors, metadata=meta)
        path = self.entry_path(stage, key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._atomic_write(path, data)
        except OSError as exc:
            self._write_failed(exc)
            return None
        return meta, len(data)

    @contextlib.contextmanager
    def _key_lock(self, stage: str, digest: str, label: str) -> Iterator[bool]:
        """Hold the per-key file lock; yields False (no lock) when it cannot be created."""
        path = self._lock_path(stage, digest)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = filelock.FileLock(str(path))
            try:
                lock.acquire(timeout=0)
            except filelock.Timeout:
                logger.info("Waiting for another process computing %s (%s)", stage, label)
                lock.acquire()
        except OSError as exc:
            self._write_failed(exc)
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    # ------------------------------------------------------------------ the main call

    def get_or_compute(
        self,
        stage: str,
        key: StageKey,
        compute: Callable[[], Mapping[str, torch.Tensor]],
        *,
        subject: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> tuple[dict[str, torch.Tensor], CacheEvent]:
        """The tensors of ``stage`` under ``key`` (CPU, contiguous), from the cache or ``compute``.

        ``subject`` (e.g. the input file's absolute path) names the entry in logs and listings
        and lets a miss be explained ("input changed" etc.); ``metadata`` adds string fields to
        the entry file. Never fails because of the cache: only ``compute``'s errors propagate.
        """
        _check_stage(stage)
        _check_metadata(metadata)  # before computing anything
        start = time.perf_counter()
        digest = key.digest
        label = subject if subject is not None else digest[:12]

        def event(hit: bool, reason: str, size: int) -> CacheEvent:
            return CacheEvent(
                stage, hit, reason, time.perf_counter() - start, size, digest, subject
            )

        if not self.active:
            logger.debug("Feature cache off for %s (%s); computing", stage, label)
            return _prepare(compute()), event(False, "disabled", 0)

        reading = self.read and not self.force_refresh
        corrupt = False
        if reading:
            found = self._load(stage, key, self.entry_path(stage, key))
            if isinstance(found, tuple):
                return self._hit(stage, digest, found, subject, label, event)
            corrupt = found == "corrupt"

        if not self._can_write:
            reason = self._reason(stage, key, subject, corrupt)
            logger.info("Cache miss for %s (%s): %s; computing", stage, label, reason)
            return _prepare(compute()), event(False, reason, 0)

        with self._key_lock(stage, digest, label) as locked:
            if reading and locked:  # another process may have written it while we waited
                found = self._load(stage, key, self.entry_path(stage, key))
                if isinstance(found, tuple):
                    return self._hit(stage, digest, found, subject, label, event)
                corrupt = corrupt or found == "corrupt"
            reason = self._reason(stage, key, subject, corrupt)
            logger.info("Cache miss for %s (%s): %s; computing", stage, label, reason)
            tensors = _prepare(compute())
            written = self._write_entry(stage, key, tensors, subject, metadata) if locked else None
        if written is None:
            return tensors, event(False, reason, 0)
        meta, size = written
        self._record(stage, digest, meta, size, subject, hit=False)
        return tensors, event(False, reason, size)

    def _reason(self, stage: str, key: StageKey, subject: str | None, corrupt: bool) -> str:
        if corrupt:
            return "corrupt"
        if self.force_refresh or not self.read:
            return "forced"
        return self._miss_reason(stage, key, subject)

    def _hit(
        self,
        stage: str,
        digest: str,
        found: tuple[dict[str, torch.Tensor], dict[str, str], int],
        subject: str | None,
        label: str,
        event: Callable[[bool, str, int], CacheEvent],
    ) -> tuple[dict[str, torch.Tensor], CacheEvent]:
        tensors, meta, size = found
        self._record(stage, digest, meta, size, subject, hit=True)
        ev = event(True, HIT_REASON, size)
        logger.info(
            "Loaded cached features for %s (%s) in %.1f ms", stage, label, ev.seconds * 1000
        )
        return tensors, ev

    # ------------------------------------------------------------------ admin: scanning

    def _scan(self, stage: str | None = None) -> _Scan:
        scan = _Scan()
        base = self.root / f"v{SCHEMA}"
        if not base.is_dir():
            return scan
        stage_dirs = [base / stage] if stage is not None else sorted(base.iterdir())
        for stage_dir in stage_dirs:
            if not stage_dir.is_dir():
                if stage is None and stage_dir.exists():
                    scan.orphans.append((stage_dir, stage_dir.stat()))
                continue
            for prefix_dir in sorted(stage_dir.iterdir()):
                if not prefix_dir.is_dir():
                    scan.orphans.append((prefix_dir, prefix_dir.stat()))
                    continue
                for path in sorted(prefix_dir.iterdir()):
                    try:
                        st = path.lstat()
                    except FileNotFoundError:
                        continue
                    name = path.name
                    key = name[: -len(_ENTRY_SUFFIX)] if name.endswith(_ENTRY_SUFFIX) else ""
                    if (
                        _KEY_RE.match(key)
                        and key[:2] == prefix_dir.name
                        and _STAGE_RE.match(stage_dir.name)
                        and path.is_file()
                    ):
                        scan.entries[(stage_dir.name, key)] = (path, st)
                    elif name.endswith(".tmp") and name.startswith("."):
                        scan.temps.append((path, st))
                    else:
                        scan.orphans.append((path, st))
        return scan

    def _index_rows(self, stage: str | None = None) -> dict[tuple[str, str], tuple[Any, ...]]:
        with self._index() as conn:
            if conn is None:
                return {}
            query = "SELECT stage, key, subject, size, created, last_used, inputs FROM entries"
            rows = (
                conn.execute(query + " WHERE stage=?", (stage,)).fetchall()
                if stage is not None
                else conn.execute(query).fetchall()
            )
            return {(r[0], r[1]): r for r in rows}
        return {}  # pragma: no cover - reached only when the index failed mid-query

    def _reindex(self, stage: str, key: str, path: Path, st: os.stat_result) -> EntryInfo:
        """Index row for an entry file the index does not know (header metadata, file mtime)."""
        try:
            meta = _read_header(path).get("__metadata__") or {}
        except (_Corrupt, OSError):
            meta = {}
        subject = meta.get("subject") or None
        try:
            inputs = json.loads(meta.get("fields", "{}")).get("inputs", {})
        except (ValueError, AttributeError):
            inputs = {}
        created = _float(meta.get("created"), st.st_mtime)
        with self._index(write=True) as conn:
            if conn is not None and meta:
                conn.execute(
                    "INSERT OR IGNORE INTO entries "
                    "(stage, key, subject, size, created, last_used, inputs, fields) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        stage,
                        key,
                        subject,
                        st.st_size,
                        created,
                        st.st_mtime,
                        canonical_json(inputs),
                        meta.get("fields", "{}"),
                    ),
                )
        return EntryInfo(stage, key, subject, inputs, st.st_size, created, st.st_mtime, path)

    def _drop_rows(self, keys: list[tuple[str, str]]) -> None:
        if not keys:
            return
        with self._index(write=True) as conn:
            if conn is not None:
                conn.executemany("DELETE FROM entries WHERE stage=? AND key=?", keys)

    def _entries(self, stage: str | None, scan: _Scan) -> list[EntryInfo]:
        rows = self._index_rows(stage)
        out = []
        for (st_name, key), (path, st) in scan.entries.items():
            row = rows.get((st_name, key))
            if row is None:
                out.append(self._reindex(st_name, key, path, st))
                continue
            try:
                inputs = json.loads(row[6])
            except ValueError:
                inputs = {}
            out.append(EntryInfo(st_name, key, row[2], inputs, st.st_size, row[4], row[5], path))
        stale = [k for k in rows if k not in scan.entries and not self.entry_path(*k).exists()]
        self._drop_rows(stale)
        out.sort(key=lambda e: (e.stage, -e.last_used, e.key))
        return out

    def entries(self, stage: str | None = None) -> list[EntryInfo]:
        """Every entry on disk (of ``stage``), most recently used first within a stage.

        The files are the truth: entries missing from the index are re-indexed, index rows
        without a file are dropped.
        """
        if not self.enabled or not self._usable:
            return []
        if stage is not None:
            _check_stage(stage)
        return self._entries(stage, self._scan(stage))

    def stats(self) -> dict[str, tuple[int, int]]:
        """``{stage: (entries, bytes)}`` over the entries on disk."""
        out: dict[str, tuple[int, int]] = {}
        for e in self.entries():
            count, size = out.get(e.stage, (0, 0))
            out[e.stage] = (count + 1, size + e.size)
        return out

    def stage_names(self) -> list[str]:
        """The stages that have a folder in this store (whether or not it holds entries)."""
        base = self.root / f"v{SCHEMA}"
        if not self.enabled or not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir() and _STAGE_RE.match(p.name))

    # ------------------------------------------------------------------ admin: verify

    def verify(self, fix: bool = False) -> list[Problem]:
        """``check(fix).problems``: the problems found, leftovers included."""
        return self.check(fix).problems

    def check(self, fix: bool = False) -> VerifyReport:
        """Check the index (SQLite's integrity check), every entry (checksum, metadata, place),
        temp files, orphans and index rows without files.

        With ``fix=True``: rebuild an unusable index, remove corrupt entries, orphans and the
        temp files of writers that are gone (their key's lock is free), re-index entries
        missing from the index, drop index rows without files.
        """
        if not self.enabled or not self.root.is_dir():
            return VerifyReport([], 0)
        self._warned_index = True  # index trouble is reported here, not warned about
        problems: list[Problem] = []
        trouble = self._index_trouble()
        if trouble is not None:
            problems.append(
                self._rebuild_index(trouble)
                if fix
                else Problem("index", self.index_path, f"unusable ({trouble})")
            )
        scan = self._scan()
        indexed = self._connection() is not None
        rows = self._index_rows() if indexed else {}
        good = 0
        for (stage, key), (path, st) in scan.entries.items():
            damage = _entry_damage(stage, key, path)
            if damage is not None:
                fixed = fix and self._unlink(path)
                if fixed:
                    self._drop_rows([(stage, key)])
                problems.append(Problem("corrupt", path, damage, stage, key, fixed))
                continue
            good += 1
            if indexed and (stage, key) not in rows:
                fixed = False
                if fix:
                    self._reindex(stage, key, path, st)
                    fixed = self._index_writable and not self._index_broken
                problems.append(
                    Problem("unindexed", path, "entry missing from the index", stage, key, fixed)
                )
        problems += [self._leftover(path, st, fix) for path, st in scan.temps]
        for path, _ in scan.orphans:
            fixed = fix and self._unlink(path)
            problems.append(Problem("orphan", path, "not a cache entry", fixed=fixed))
        missing = [k for k in rows if k not in scan.entries and not self.entry_path(*k).exists()]
        if fix:
            self._drop_rows(missing)
        fixed = fix and self._index_writable
        problems += [
            Problem("missing file", self.entry_path(*k), "indexed entry has no file", *k, fixed)
            for k in missing
        ]
        return VerifyReport(problems, good)

    def _index_trouble(self) -> str | None:
        """What is wrong with the index (SQLite's integrity check), or None when it is sound."""
        with self._db_lock:
            conn = self._connection()
            if conn is None:
                return self._index_error or "unusable" if self._index_broken else None
            try:
                rows = conn.execute("PRAGMA integrity_check").fetchall()
            except sqlite3.Error as exc:
                rows = [(str(exc),)]
            if rows == [("ok",)]:
                return None
            self._index_broken = True
            self._index_error = "; ".join(str(r[0]) for r in rows[:3])
            return self._index_error

    def _rebuild_index(self, trouble: str) -> Problem:
        """Move an unusable index aside and start a fresh one (entries are re-indexed)."""
        self.close()
        aside = self.index_path.with_name(f"index.sqlite.broken-{int(time.time())}")
        try:
            for suffix in ("", "-wal", "-shm"):
                p = Path(str(self.index_path) + suffix)
                if p.exists():
                    os.replace(p, Path(str(aside) + suffix))
        except OSError as exc:
            detail = f"unusable ({trouble}); cannot move it aside: {_errno_text(exc)}"
            return Problem("index", self.index_path, detail)
        self._index_broken, self._index_error, self._no_index = False, "", False
        self.memo = DigestMemo(self.index_path, on_error=self._index_failed)
        detail = f"unusable ({trouble}); moved to {aside.name}"
        return Problem("index", self.index_path, detail, fixed=True)

    def _leftover(self, path: Path, st: os.stat_result, fix: bool) -> Problem:
        """A temp file: debris of a killed writer, or a write in progress (not an error)."""
        match = _TEMP_RE.match(path.name)
        stage, key = (path.parent.parent.name, match.group(1)) if match else (None, None)
        detail, fixed = "left by an interrupted write, or a write in progress", False
        if fix and stage is not None and key is not None:
            detail, fixed = self._remove_if_abandoned(path, stage, key)
        elif fix and time.time() - st.st_mtime > STALE_TEMP_SECONDS:
            detail, fixed = "left by an interrupted write", self._unlink(path)
        return Problem("leftover temp file", path, detail, stage, key, fixed, leftover=True)

    def _remove_if_abandoned(self, path: Path, stage: str, key: str) -> tuple[str, bool]:
        """Remove the temp file of ``key`` when no writer holds the key's lock."""
        lock_path = self._lock_path(stage, key)
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            lock = filelock.FileLock(str(lock_path))
            lock.acquire(timeout=0)
        except filelock.Timeout:
            return "a write in progress (its key is locked)", False
        except OSError as exc:
            return f"its key's lock cannot be taken ({_errno_text(exc)})", False
        try:
            return "left by an interrupted write", self._unlink(path)
        finally:
            lock.release()

    def _unlink(self, path: Path) -> bool:
        error = _remove(path)
        if error is not None:
            logger.warning("Cannot remove %s (%s)", path, error)
        return error is None

    # ------------------------------------------------------------------ admin: prune / clear

    def prune(
        self,
        max_size: int | None = None,
        older_than_days: float | None = None,
        dry_run: bool = False,
    ) -> list[Removal]:
        """Run ``plan_prune``: what was removed (on a dry run: what would be); files that
        could not be removed are left out, with one warning."""
        plan = self.plan_prune(max_size, older_than_days)
        return plan.removals if dry_run else self._removed(plan.execute())

    def clear(self, stage: str | None = None) -> list[Removal]:
        """Run ``plan_clear``: what was removed (failures: one warning)."""
        return self._removed(self.plan_clear(stage).execute())

    def _removed(self, result: RemovalResult) -> list[Removal]:
        if result.failed:
            logger.warning(
                "Cannot remove %d file(s) from the feature cache at %s (%s)",
                len(result.failed),
                self.root,
                result.failed[0].error,
            )
        return result.removed

    def plan_prune(
        self, max_size: int | None = None, older_than_days: float | None = None
    ) -> RemovalPlan:
        """What shrinking the cache removes: stale temp files and orphans, entries unused for
        more than ``older_than_days``, then least recently used entries until the total is at
        most ``max_size`` bytes. Index and files stay consistent when it is executed."""
        if not self.enabled or not self.root.is_dir():
            return self._plan([])
        if max_size is not None and max_size < 0:
            raise CacheError(f"--max-size must not be negative (got {max_size})")
        now = time.time()
        scan = self._scan()
        removals = [
            Removal("temp", path, st.st_size, "stale temp file")
            for path, st in scan.temps
            if now - st.st_mtime > STALE_TEMP_SECONDS
        ]
        removals += [
            Removal("orphan", path, st.st_size, "not a cache entry") for path, st in scan.orphans
        ]
        entries = sorted(self._entries(None, scan), key=lambda e: (e.last_used, e.created, e.key))
        keep: list[EntryInfo] = []
        for e in entries:
            if older_than_days is not None and now - e.last_used > older_than_days * 86400:
                reason = f"unused for > {older_than_days:g} days"
                removals.append(Removal("entry", e.path, e.size, reason, e.stage, e.key))
            else:
                keep.append(e)
        if max_size is not None:
            total = sum(e.size for e in keep)
            for e in keep:  # least recently used first
                if total <= max_size:
                    break
                removals.append(
                    Removal("entry", e.path, e.size, "over the size limit", e.stage, e.key)
                )
                total -= e.size
        return self._plan(removals)

    def plan_clear(self, stage: str | None = None) -> RemovalPlan:
        """What clearing removes: every entry (of ``stage``), temp files and orphans, and with
        no stage the folders of other format versions; the tag stays."""
        if not self.enabled or not self.root.is_dir():
            return self._plan([], clear=True, stage=stage)
        if stage is not None:
            _check_stage(stage)
        scan = self._scan(stage)
        removals = [
            Removal("entry", path, st.st_size, "cleared", s, k)
            for (s, k), (path, st) in scan.entries.items()
        ]
        removals += [Removal("temp", p, st.st_size, "cleared") for p, st in scan.temps]
        removals += [Removal("orphan", p, st.st_size, "cleared") for p, st in scan.orphans]
        if stage is None:  # entries of other schema versions too
            for old in sorted(self.root.glob("v*")):
                if old.is_dir() and old.name != f"v{SCHEMA}" and old.name[1:].isdigit():
                    removals.append(Removal("old", old, _tree_size(old), "other format version"))
        return self._plan(removals, clear=True, stage=stage)

    def _plan(
        self, removals: list[Removal], clear: bool = False, stage: str | None = None
    ) -> RemovalPlan:
        return RemovalPlan(removals, lambda rs: self._execute(rs, clear, stage))

    def _execute(self, removals: list[Removal], clear: bool, stage: str | None) -> RemovalResult:
        removed: list[Removal] = []
        failed: list[RemovalFailure] = []
        for r in removals:
            error = _remove(r.path)
            if error is None:
                removed.append(r)
            else:
                logger.debug("Cannot remove %s (%s)", r.path, error)
                failed.append(RemovalFailure(r, error))
        self._drop_rows([(r.stage, r.key) for r in removed if r.stage and r.key])
        if not self.root.is_dir():
            return RemovalResult(removed, failed)
        if clear:  # rows whose file is gone, e.g. removed by hand
            rows = self._index_rows(stage)
            self._drop_rows([k for k in rows if not self.entry_path(*k).exists()])
        self._prune_locks(time.time() + (STALE_TEMP_SECONDS if clear else 0.0), stage)
        return RemovalResult(removed, failed)

    def _prune_locks(self, now: float, stage: str | None = None) -> None:
        """Remove lock files nobody has used for an hour (only while we hold them)."""
        base = self.root / "locks"
        dirs = [base / stage] if stage else ([d for d in base.iterdir()] if base.is_dir() else [])
        for d in dirs:
            if not d.is_dir():
                continue
            for path in d.glob("*.lock"):
                with contextlib.suppress(OSError):
                    if now - path.stat().st_mtime < STALE_TEMP_SECONDS:
                        continue
                    lock = filelock.FileLock(str(path))
                    try:
                        lock.acquire(timeout=0)
                    except filelock.Timeout:
                        continue
                    try:
                        path.unlink()
                    finally:
                        lock.release()


def _remove(path: Path) -> str | None:
    """Remove a file or folder; None when it is gone, else why it is not."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return _errno_text(exc)
    return None


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _entry_damage(stage: str, key: str, path: Path) -> str | None:
    """What is wrong with the entry file at ``path`` of ``stage``/``key``, or None."""
    try:
        meta, _ = _parse_entry(path.read_bytes())
        if meta.get("stage") != stage or meta.get("key") != key:
            return f"metadata says stage {meta.get('stage')!r} key {meta.get('key')!r}"
        if key_digest(json.loads(meta.get("fields", "null")) or {}) != key:
            return "key fields do not hash to the key"
    except (_Corrupt, OSError, ValueError, AttributeError, TypeError) as exc:
        return str(exc)
    return None


def _float(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default
