"""FeatureStore: named CPU tensors under content-addressed keys, computed once, kept on disk.

``get_or_compute(stage, key, compute)`` returns the tensors of ``stage`` under ``key`` (a
StageKey) from the entry file, or from ``compute()`` (then writes them). One ``CacheMode`` says
what the store may do. Layout: ``layout.py``; entry files: ``entry.py``; index: ``index.py``.
A first read verifies the checksum (``kept.py`` keeps the file while unchanged); a bad entry
is logged, removed and recomputed. Writes are atomic, made once per key across processes (a
per-key file lock). A cache that cannot be written (read-only, full disk) warns once and goes
on: reading what it has, or computing everything. It knows nothing of what the tensors mean.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import mimicache.storage.files as cache_fs
from mimicache.cache.digest_memo import DigestMemo
from mimicache.cache.entry import (
    CorruptEntry,
    Entry,
    Lookup,
    check_metadata,
    decode_entry,
    encode_entry,
    prepare_tensors,
)
from mimicache.cache.index import Index
from mimicache.cache.kept import KeptEntries, memory_max_bytes
from mimicache.cache.keys import StageKey, fingerprint_files
from mimicache.cache.layout import Layout, check_stage, write_cachedir_tag
from mimicache.cache.local_admin import LocalAdmin
from mimicache.cache.modes import HIT_REASON, CacheEvent, CacheMode, MissReason, package_version
from mimicache.cache.remote import local_tier_dir
from mimicache.cache.sharing import index_folder
from mimicache.cache.tiers import Tiers
from mimicache.storage.digests import file_digest
from mimicache.storage.files import atomic_write, errno_text, key_lock, write_blocker
from mimicache.storage.objects import local_file_root, remote_url

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

_NO_LOCKS = frozenset(
    getattr(errno, name)
    for name in ("ENOLCK", "EOPNOTSUPP", "ENOTSUP", "ENOSYS")
    if hasattr(errno, name)
)

__all__ = [
    "CacheEvent",
    "CacheMode",
    "FeatureStore",
    "StageKey",
    "package_version",
]


class FeatureStore(LocalAdmin):
    """A persistent, content-addressed store of named tensors; ``LocalAdmin`` lists,
    verifies, prunes and clears it. Problems with the disk never fail a run: they are logged
    once and the run goes on.

    Args:
        root: the cache folder, or an object-storage URL (``s3://bucket/prefix``), which puts
            this machine's local tier (``local_dir``, default ``remote.local_tier_dir``; cap
            ``local_max_size``) in front of it.
        mode: what the store may do (``CacheMode``); or the older flags: ``enabled=False``
            is OFF, ``write=False`` READ_ONLY, ``read=False`` or ``force_refresh=True``
            REFRESH.
        version: recorded in new entries (default: the installed package's).
        any_platform: keys leave the numeric platform out (entries shared across platforms).

    Raises:
        CacheError: a URL root this build cannot open, or a bad local tier cap.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        mode: CacheMode | None = None,
        enabled: bool = True,
        read: bool = True,
        write: bool = True,
        force_refresh: bool = False,
        version: str | None = None,
        any_platform: bool = False,
        local_dir: str | os.PathLike[str] | None = None,
        local_max_size: int | str | None = None,
    ) -> None:
        self.mode = (
            mode if mode is not None else CacheMode.from_flags(enabled, read, write, force_refresh)
        )
        self.url = remote_url(root)
        if self.url is not None:
            root = local_dir if local_dir is not None else local_tier_dir(self.url)
        self.root = Path(local_file_root(root) or root).expanduser().absolute()
        self.layout = Layout(self.root, index_folder(self.root))
        self.kept = KeptEntries(memory_max_bytes())  # entry files read or written here
        self.memo: DigestMemo | None = None
        self.index = Index(
            self.layout.index_path,
            writable=self.mode.writes,
            on_cannot_write=self._write_failed,
            on_broken=self._index_broken,
        )
        self._version = version
        # Read by whoever makes the keys: True leaves the numeric platform out of them, so
        # entries are shared across platforms (and never mix with the platform-keyed ones).
        self.any_platform = any_platform
        if any_platform and self.mode is not CacheMode.OFF:
            logger.warning(
                "feature cache at %s: entries are shared across numeric platforms (devices, "
                "thread counts, library versions); a warm result may differ in the last bits "
                "from this machine's uncached one",
                self.root,
            )
        self._usable = False  # the root exists and can be read
        self._can_write = self.mode.writes
        self._warned_write = self._warned_index = self._warned_locks = False
        on = self.mode is not CacheMode.OFF
        self.tiers = Tiers.open(self, self.url, local_max_size) if on and self.url else None
        if on:
            self._open()

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.url or self.root)!r}, mode={self.mode.value})"

    # The old flags, read from the mode.
    enabled = property(lambda self: self.mode is not CacheMode.OFF)
    read = property(lambda self: self.mode.reads)
    write = property(lambda self: self.mode.writes)
    force_refresh = property(lambda self: self.mode is CacheMode.REFRESH)

    @property
    def index_path(self) -> Path:
        return self.layout.index_path

    @property
    def active(self) -> bool:
        """Whether entries can be read or written at all."""
        return self.enabled and self._usable and (self.mode.reads or self._can_write)

    def entry_path(self, stage: str, key: str | StageKey) -> Path:
        return self.layout.entry_path(stage, key.digest if isinstance(key, StageKey) else key)

    def flush(self) -> None:
        """Write the hits the index holds (``index.HIT_WRITE_DELAY_S``): a job's end."""
        self.index.flush()

    def close(self) -> None:
        self.index.close()
        if self.memo is not None:
            self.memo.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ setup and warnings

    def _open(self) -> None:
        failure: OSError | None = None
        if self.mode.writes:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                failure = write_blocker(self.root)
                if failure is None:
                    write_cachedir_tag(self.root)
            except OSError as exc:
                failure = exc
        self._usable = self.root.is_dir() and os.access(self.root, os.R_OK | os.X_OK)
        index_dir = self.layout.index_path.parent
        if failure is None and self.mode.writes and index_dir != self.root:
            with contextlib.suppress(OSError):  # the index reports it if it cannot be made
                index_dir.mkdir(parents=True, exist_ok=True)
        if failure is not None:
            self._write_failed(failure)
        if not self._usable:
            self._can_write = False
            if not self.mode.writes:
                logger.warning(
                    "feature cache at %s does not exist: running without caching", self.root
                )
            return
        if self._can_write:
            self.memo = DigestMemo(self.index_path, on_error=self.index.failed)
        else:  # digests are still looked up; a failure only means they are computed
            self.memo = DigestMemo(self.index_path, on_error=lambda exc: None, read_only=True)

    def _write_failed(self, exc: BaseException) -> None:
        """Nothing more is written (one warning); reads go on where the mode reads."""
        self._can_write = False
        if not self._warned_write:
            self._warned_write = True
            reads = self._usable and self.mode.reads
            then = "read-only: entries are read, nothing new is written" if reads else None
            logger.warning(
                "feature cache at %s is not writable (%s): %s",
                self.root,
                errno_text(exc),
                then or "running without caching",
            )

    def _index_broken(self, exc: BaseException) -> None:
        if not self._warned_index and not self._warned_write:
            logger.warning(
                "feature cache index %s is unusable (%s): entries still work, but last use "
                "is not recorded; `mimicache cache verify --fix` rebuilds it",
                self.index_path,
                exc,
            )
        self._warned_index = True

    # ------------------------------------------------------------------ the main call

    def file_digest(self, path: str | os.PathLike[str]) -> str:
        """The content digest of ``path``, memoised in this store's index when it has one."""
        return file_digest(path, memo=self.memo)

    def fingerprint(
        self,
        paths: Mapping[str, str | os.PathLike[str]],
        extra: Mapping[str, object] | None = None,
    ) -> str:
        """A model fingerprint (``keys.fingerprint_files``) using this store's digest memo."""
        return fingerprint_files(paths, extra=extra, memo=self.memo)

    def get_or_compute(
        self,
        stage: str,
        key: StageKey,
        compute: Callable[[], Mapping[str, torch.Tensor]],
        *,
        subject: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> tuple[dict[str, torch.Tensor], CacheEvent]:
        """The tensors of ``stage`` under ``key``, from the cache or from ``compute``. A cache
        that cannot be read or written costs a warning, never a failed call: only
        ``compute``'s own errors propagate.

        Args:
            stage: the stage's name (letters, digits, ``_``, ``-``; at most 64).
            key: what the tensors depend on (a ``StageKey``: inputs, models, params,
                platform); its digest names the entry.
            compute: makes the named tensors on a miss (they are then written).
            subject: what the entry is about (e.g. the input file's absolute path): names it
                in logs and listings, and lets a miss be explained ("input changed", ...).
            metadata: string fields added to the entry file.

        Returns:
            ``(tensors, event)``: the tensors (CPU, contiguous) and a ``CacheEvent`` (hit or
            the miss's reason, seconds, bytes).

        Raises:
            CacheError: an invalid stage name or metadata (checked before computing).
        """
        check_stage(stage)
        check_metadata(metadata)  # before computing anything
        subject, label, event = self._call(stage, key, subject)
        if not self.active:
            logger.debug("Feature cache off for %s (%s); computing", stage, label)
            return prepare_tensors(compute()), event(False, MissReason.DISABLED, 0)
        corrupt = False
        if self.mode.reads:
            found = self._load(stage, key)
            if found.entry is not None:
                return self._hit(stage, key, found.entry, subject, label, event)
            corrupt = found.corrupt
        if not self._can_write:
            reason = self._reason(stage, key, subject, corrupt)
            _detail("Cache miss for %s (%s): %s; computing", stage, label, reason)
            return prepare_tensors(compute()), event(False, reason, 0)

        with self._key_lock(stage, key.digest, label) as locked:
            if self.mode.reads and locked:  # another process may have written it meanwhile
                # (one of this machine's: the remote tier was read a moment ago)
                found = self._load(stage, key, remote=False)
                if found.entry is not None:
                    return self._hit(stage, key, found.entry, subject, label, event)
                corrupt = corrupt or found.corrupt
            reason = self._reason(stage, key, subject, corrupt)
            _detail("Cache miss for %s (%s): %s; computing", stage, label, reason)
            tensors = prepare_tensors(compute())
            replace = corrupt or self.mode is CacheMode.REFRESH
            written = (
                self._write_entry(stage, key, tensors, subject, metadata, replace=replace)
                if locked
                else None
            )
        if written is None:
            return tensors, event(False, reason, 0)
        meta, size = written
        self.index.record(stage, key.digest, meta, size, subject, hit=False)
        return tensors, event(False, reason, size)

    def get(
        self,
        stage: str,
        key: StageKey,
        *,
        subject: str | None = None,
    ) -> tuple[dict[str, torch.Tensor], CacheEvent] | None:
        """``get_or_compute``'s hit alone: the tensors and the hit when the cache holds the
        entry (recorded and logged as a hit), else None: nothing computed, nothing logged."""
        subject, label, event = self._call(stage, key, subject)
        found = self._load(stage, key) if self.active and self.mode.reads else Lookup()
        if found.entry is None:
            return None
        return self._hit(stage, key, found.entry, subject, label, event)

    @staticmethod
    def _call(
        stage: str, key: StageKey, subject: str | None
    ) -> tuple[str | None, str, Callable[[bool, str, int], CacheEvent]]:
        """The subject as SQLite takes it (``printable``), the logs' label, the timed event."""
        start = time.perf_counter()
        subject = cache_fs.printable(subject) if subject is not None else None

        def event(hit: bool, reason: str, size: int) -> CacheEvent:
            seconds = time.perf_counter() - start
            return CacheEvent(stage, hit, reason, seconds, size, key.digest, subject)

        return subject, subject if subject is not None else key.digest[:12], event

    def _reason(self, stage: str, key: StageKey, subject: str | None, corrupt: bool) -> MissReason:
        if corrupt:
            return MissReason.CORRUPT
        if not self.mode.reads:
            return MissReason.FORCED
        return self.index.miss_reason(stage, key, subject)

    def _hit(
        self,
        stage: str,
        key: StageKey,
        entry: Entry,
        subject: str | None,
        label: str,
        event: Callable[[bool, str, int], CacheEvent],
    ) -> tuple[dict[str, torch.Tensor], CacheEvent]:
        self.index.record(stage, key.digest, entry.metadata, entry.size, subject, hit=True)
        ev = event(True, HIT_REASON, entry.size)
        _detail("Loaded cached features for %s (%s) in %.1f ms", stage, label, ev.seconds * 1e3)
        return entry.tensors, ev

    # ------------------------------------------------------------------ entry files

    def _load(self, stage: str, key: StageKey, *, remote: bool = True) -> Lookup:
        """The entry file of ``stage``/``key``, else (``remote``) the remote tier's."""
        if (kept := self.kept.get(stage, key.digest)) is not None:  # checked before, unchanged
            return Lookup(decode_entry(kept[0], stage, key, checked=kept[1]))
        path = self.entry_path(stage, key)
        try:
            with open(path, "rb") as f:
                before = os.fstat(f.fileno())
                data = f.read()
        except FileNotFoundError:
            if self.tiers is None or not remote:
                return Lookup()
            return self.tiers.fetch(stage, key, keep=self._can_write)
        except OSError as exc:
            logger.warning("Cannot read feature cache entry %s (%s)", path, errno_text(exc))
            return Lookup()
        try:
            entry = decode_entry(data, stage, key)
            self.kept.keep(stage, key.digest, path, before, data, entry.metadata)
            return Lookup(entry)
        except CorruptEntry as exc:
            logger.warning(
                "Feature cache entry %s is corrupt (%s): removing it and recomputing", path, exc
            )
        if self._can_write:
            with contextlib.suppress(OSError):
                now = os.stat(path)
                if (now.st_ino, now.st_mtime_ns) == (before.st_ino, before.st_mtime_ns):
                    os.unlink(path)
            self.index.drop([(stage, key.digest)])
        return Lookup(corrupt=True)

    def _write_entry(
        self,
        stage: str,
        key: StageKey,
        tensors: dict[str, torch.Tensor],
        subject: str | None,
        metadata: Mapping[str, str] | None,
        *,
        replace: bool = False,
    ) -> tuple[dict[str, str], int] | None:
        """Publish the entry file. An entry is never replaced once there (another machine
        may be reading it), unless it is being refreshed or was corrupt."""
        version = self._version or package_version()
        data, meta = encode_entry(stage, key, tensors, subject, metadata, version)
        path = self.entry_path(stage, key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if atomic_write(path, data, temp_stem=key.digest, overwrite=replace):
                self.kept.keep_written(stage, key.digest, path, data)
        except OSError as exc:
            self._write_failed(exc)
            return None
        if self.tiers is not None:
            self.tiers.stored(stage, key.digest, data, publish=True, replace=replace)
        return meta, len(data)

    @contextlib.contextmanager
    def _key_lock(self, stage: str, digest: str, label: str) -> Iterator[bool]:
        """Hold the per-key file lock; yields False (no lock) when it cannot be created."""

        def waiting() -> None:
            logger.info("Waiting for another process computing %s (%s)", stage, label)

        stack = contextlib.ExitStack()
        try:
            stack.enter_context(key_lock(self.layout.lock_path(stage, digest), on_wait=waiting))
            locked = True
        except OSError as exc:
            # Without file locks (some FUSE mounts) entries are still written: a lock only
            # saves duplicate work, publication is atomic and never replaces an entry.
            locked = exc.errno in _NO_LOCKS
            if locked and not self._warned_locks:
                self._warned_locks = True
                logger.warning(
                    "feature cache at %s: file locks are not supported (%s); processes may "
                    "compute an entry twice, results stay correct",
                    self.root,
                    errno_text(exc),
                )
            elif not locked:
                self._write_failed(exc)
        with stack:
            yield locked


def _detail(message: str, *args: object) -> None:
    """A per-entry line: always in a run's log file, on the console with -v (a job's summary
    line stands for them there: ``cli.console``)."""
    logger.info(message, *args, extra={"cache_detail": True})
