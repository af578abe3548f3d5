"""Looking at and tidying a cache: entries, stats, verify(fix), prune and clear plans.

``CacheAdmin`` is what the ``cache`` commands ask of any cache (a local ``FeatureStore``, an
object-storage ``RemoteCache``); the functions here are the local root's side of it.
``entries`` joins the files on disk (the truth) with the index; ``plan_prune``/``plan_clear``
return a ``removal.RemovalPlan`` (what would go, ``expected_freed_size``) whose ``execute()``
returns what really went and what could not; ``verify`` checks the index and every file.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Protocol

import mimicache.storage.files as fs
from mimicache.cache.digest_memo import DigestMemo
from mimicache.cache.entry import entry_damage, read_metadata
from mimicache.cache.index import Index, json_dict, number_or
from mimicache.cache.layout import Layout, Scan, check_stage
from mimicache.cache.removal import Removal, RemovalPlan, check_max_size, select_entries

logger = logging.getLogger(__name__)

__all__ = [
    "STALE_TEMP_SECONDS",
    "CacheAdmin",
    "EntryInfo",
    "Problem",
    "VerifyReport",
    "entries",
    "plan_clear",
    "plan_prune",
    "stats",
    "verify",
]

STALE_TEMP_SECONDS = 3600.0
"""Temp files and lock files older than this are debris from crashed writers; prune removes them."""


class Cache(Protocol):
    """What the admin functions need of a local store (FeatureStore has it)."""

    layout: Layout
    index: Index
    memo: DigestMemo | None

    @property
    def enabled(self) -> bool: ...


class CacheAdmin(Protocol):
    """What the ``cache`` commands ask of a cache, wherever it lives: ``FeatureStore`` for a
    local root, ``RemoteCache`` for an object-storage root."""

    @property
    def root(self) -> Any:
        """Where the cache is, as messages name it (a folder or a URL)."""

    def entries(self, stage: str | None = None) -> list[EntryInfo]: ...

    def stats(self) -> dict[str, tuple[int, int]]: ...

    def stage_names(self) -> list[str]: ...

    def verify(self, fix: bool = False) -> VerifyReport: ...

    def plan_prune(
        self, max_size: int | None = None, older_than_days: float | None = None
    ) -> RemovalPlan: ...

    def plan_clear(self, stage: str | None = None) -> RemovalPlan: ...

    def relative(self, path: PurePath) -> PurePath:
        """``path`` (an entry's or another file's) as messages show it: under the root."""


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
    path: PurePath

    def platform(self) -> dict[str, Any]:
        """The key's ``platform`` group, read from the entry's header ({} when it has none or
        the file cannot be read): where its floats were computed."""
        try:
            fields = json_dict(read_metadata(Path(self.path)).get("fields", "{}"))
        except (OSError, ValueError):
            return {}
        platform = fields.get("platform", {})
        return platform if isinstance(platform, dict) else {}


@dataclass(frozen=True)
class Problem:
    """A finding of ``verify()``; ``fixed`` says whether ``verify(fix=True)`` repaired it.

    ``kind``: "corrupt", "orphan", "missing file", "unindexed", "index", or "leftover temp
    file" (``leftover=True``: debris of an interrupted or running write, not an error).
    """

    kind: str
    path: PurePath
    detail: str
    stage: str | None = None
    key: str | None = None
    fixed: bool = False
    leftover: bool = False


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify()`` found: ``problems`` (leftovers included), entries that passed."""

    problems: list[Problem]
    good: int

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.leftover]

    @property
    def leftovers(self) -> list[Problem]:
        return [p for p in self.problems if p.leftover]


# --------------------------------------------------------------------------- listing


def relative_to(path: PurePath, base: PurePath) -> PurePath:
    """``path`` relative to ``base`` where it lies under it, else as it is (what messages
    show of a cache's files)."""
    try:
        return path.relative_to(base)
    except ValueError:
        return path


def entries(cache: Cache, stage: str | None = None) -> list[EntryInfo]:
    """Every entry on disk (of ``stage``), most recently used first within a stage.

    The files are the truth: entries missing from the index are re-indexed, index rows
    without a file are dropped (when the index can be written).
    """
    if not cache.enabled or not cache.layout.root.is_dir():
        return []
    if stage is not None:
        check_stage(stage)
    return _entries(cache, stage, cache.layout.scan(stage))


def stats(cache: Cache) -> dict[str, tuple[int, int]]:
    """``{stage: (entries, bytes)}`` over the entries on disk."""
    out: dict[str, tuple[int, int]] = {}
    for e in entries(cache):
        count, size = out.get(e.stage, (0, 0))
        out[e.stage] = (count + 1, size + e.size)
    return out


def _entries(cache: Cache, stage: str | None, scan: Scan) -> list[EntryInfo]:
    rows = cache.index.rows(stage)
    out = []
    for (st_name, key), (path, st) in scan.entries.items():
        row = rows.get((st_name, key))
        if row is None:
            out.append(_reindex(cache, st_name, key, path, st))
        else:
            times = (row.created, row.last_used)
            out.append(EntryInfo(st_name, key, row.subject, row.inputs, st.st_size, *times, path))
    layout = cache.layout
    cache.index.drop(
        [k for k in rows if k not in scan.entries and not layout.entry_path(*k).exists()]
    )
    out.sort(key=lambda e: (e.stage, -e.last_used, e.key))
    return out


def _reindex(cache: Cache, stage: str, key: str, path: Path, st: os.stat_result) -> EntryInfo:
    """Index row for an entry file the index does not know (header metadata, file mtime)."""
    meta = read_metadata(path)
    inputs = json_dict(meta.get("fields", "{}")).get("inputs", {})
    cache.index.add(stage, key, meta, st.st_size, st.st_mtime)
    created = number_or(meta.get("created"), st.st_mtime)
    subject = meta.get("subject") or None
    return EntryInfo(stage, key, subject, inputs, st.st_size, created, st.st_mtime, path)


# --------------------------------------------------------------------------- prune / clear


def plan_prune(
    cache: Cache, max_size: int | None = None, older_than_days: float | None = None
) -> RemovalPlan:
    """What shrinking the cache removes: stale temp files and orphans, entries unused for more
    than ``older_than_days``, then least recently used entries until the total is at most
    ``max_size`` bytes."""
    if not cache.enabled or not cache.layout.root.is_dir():
        return RemovalPlan([])
    check_max_size(max_size)
    now = time.time()
    scan = cache.layout.scan()
    removals = [
        Removal("temp", path, st.st_size, "stale temp file")
        for path, st in scan.temps
        if now - st.st_mtime > STALE_TEMP_SECONDS
    ]
    removals += [
        Removal("orphan", path, st.st_size, "not a cache entry") for path, st in scan.orphans
    ]
    found = sorted(_entries(cache, None, scan), key=lambda e: (e.last_used, e.created, e.key))
    removals += select_entries(
        [(e.last_used, Removal("entry", e.path, e.size, "", e.stage, e.key)) for e in found],
        now,
        max_size,
        older_than_days,
        aged="unused for > {days} days",
    )
    return RemovalPlan(removals, finish=lambda removed: _after_removal(cache, removed))


def plan_clear(cache: Cache, stage: str | None = None) -> RemovalPlan:
    """What clearing removes: every entry (of ``stage``), temp files and orphans, and with no
    stage the folders of other format versions; the tag stays."""
    if stage is not None:
        check_stage(stage)
    if not cache.enabled or not cache.layout.root.is_dir():
        return RemovalPlan([])
    scan = cache.layout.scan(stage)
    removals = [
        Removal("entry", path, st.st_size, "cleared", s, k)
        for (s, k), (path, st) in scan.entries.items()
    ]
    removals += [Removal("temp", p, st.st_size, "cleared") for p, st in scan.temps]
    removals += [Removal("orphan", p, st.st_size, "cleared") for p, st in scan.orphans]
    if stage is None:
        removals += [
            Removal("old", old, fs.tree_size(old), "other format version")
            for old in cache.layout.other_schema_dirs()
        ]
    return RemovalPlan(
        removals, finish=lambda removed: _after_removal(cache, removed, clearing=True, stage=stage)
    )


def _after_removal(
    cache: Cache, removed: list[Removal], *, clearing: bool = False, stage: str | None = None
) -> None:
    """The index in step with the files (rows of removed entries dropped; when clearing,
    rows whose file is gone, e.g. removed by hand, too), and unused lock files removed."""
    if not cache.layout.root.is_dir():
        return
    cache.index.drop([(r.stage, r.key) for r in removed if r.stage and r.key])
    if clearing:
        rows = cache.index.rows(stage)
        cache.index.drop([k for k in rows if not cache.layout.entry_path(*k).exists()])
    ahead = STALE_TEMP_SECONDS if clearing else 0.0
    _prune_locks(cache.layout, time.time() + ahead, stage)


def _prune_locks(layout: Layout, now: float, stage: str | None = None) -> None:
    """Remove lock files nobody has used for an hour (only while we hold them)."""
    for d in layout.lock_dirs(stage):
        if not d.is_dir():
            continue
        for path in d.glob("*.lock"):
            try:
                if now - path.stat().st_mtime < STALE_TEMP_SECONDS:
                    continue
                with fs.try_lock(path) as held:
                    if held:
                        path.unlink()
            except OSError:
                continue


# --------------------------------------------------------------------------- verify


def verify(cache: Cache, fix: bool = False) -> VerifyReport:
    """Check the index (SQLite's integrity check), every entry (checksum, metadata, place),
    temp files, orphans and index rows without files.

    With ``fix=True``: rebuild an unusable index, remove corrupt entries, orphans and the temp
    files of writers that are gone (their key's lock is free), re-index entries missing from
    the index, drop index rows without files.
    """
    if not cache.enabled or not cache.layout.root.is_dir():
        return VerifyReport([], 0)
    quiet, cache.index.quiet = cache.index.quiet, True  # reported here, not warned about
    try:
        return _verify(cache, fix)
    finally:
        cache.index.quiet = quiet


def _verify(cache: Cache, fix: bool) -> VerifyReport:
    layout, index = cache.layout, cache.index
    problems: list[Problem] = []
    trouble = index.integrity()
    if trouble is not None:
        problems.append(_rebuild(cache, trouble) if fix else _index_problem(layout, trouble))
    scan = layout.scan()
    rows = index.rows()
    indexed = not (index.broken or index.absent)
    # A per-machine index (a shared root) knows only this machine's writes: other machines'
    # entries are indexed on first use, not a problem.
    per_machine = layout.index_path.parent != layout.root
    good = 0
    for (stage, key), (path, st) in scan.entries.items():
        damage = entry_damage(path, stage, key)
        if damage is not None:
            fixed = fix and _unlink(path)
            if fixed:
                index.drop([(stage, key)])
            problems.append(Problem("corrupt", path, damage, stage, key, fixed))
            continue
        good += 1
        if indexed and not per_machine and (stage, key) not in rows:
            if fix:
                _reindex(cache, stage, key, path, st)
            fixed = fix and index.writable and not index.broken
            problems.append(
                Problem("unindexed", path, "entry missing from the index", stage, key, fixed)
            )
    problems += [_leftover(layout, path, st, fix) for path, st in scan.temps]
    for path, _ in scan.orphans:
        problems.append(Problem("orphan", path, "not a cache entry", fixed=fix and _unlink(path)))
    missing = [k for k in rows if k not in scan.entries and not layout.entry_path(*k).exists()]
    fixed = fix and index.drop(missing)
    problems += [
        Problem("missing file", layout.entry_path(*k), "indexed entry has no file", *k, fixed)
        for k in missing
    ]
    return VerifyReport(problems, good)


def _index_problem(layout: Layout, trouble: str) -> Problem:
    return Problem("index", layout.index_path, f"unusable ({trouble})")


def _rebuild(cache: Cache, trouble: str) -> Problem:
    """Move an unusable index aside and start a fresh one (entries are then re-indexed)."""
    if cache.memo is not None:
        cache.memo.close()
    try:
        aside = cache.index.rebuild()
    except OSError as exc:
        detail = f"unusable ({trouble}); cannot move it aside: {fs.errno_text(exc)}"
        return Problem("index", cache.layout.index_path, detail)
    if cache.memo is not None:
        cache.memo.reset()
    detail = f"unusable ({trouble}); moved to {aside.name}"
    return Problem("index", cache.layout.index_path, detail, fixed=True)


def _leftover(layout: Layout, path: Path, st: os.stat_result, fix: bool) -> Problem:
    """A temp file: debris of a killed writer, or a write in progress (not an error)."""
    owner = layout.temp_owner(path)
    stage, key = owner if owner is not None else (None, None)
    detail, fixed = "left by an interrupted write, or a write in progress", False
    writer = layout.root_temp_writer(path)
    if writer is not None and not _running_here(layout, writer):
        detail = f"left by an interrupted write (its process {writer} is gone)"
        fixed = fix and _unlink(path)
    elif fix and owner is not None:
        detail, fixed = _remove_if_abandoned(layout, path, *owner)
    elif fix and time.time() - st.st_mtime > STALE_TEMP_SECONDS:
        detail, fixed = "left by an interrupted write", _unlink(path)
    return Problem("leftover temp file", path, detail, stage, key, fixed, leftover=True)


def _running_here(layout: Layout, pid: int) -> bool:
    """Whether process ``pid`` may still be writing: it runs on this machine, or the root is
    shared with other machines (whose processes cannot be asked)."""
    if layout.index_path.parent != layout.root:  # a shared root: its index is per machine
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by another user
        return True
    return True


def _remove_if_abandoned(layout: Layout, path: Path, stage: str, key: str) -> tuple[str, bool]:
    """Remove the temp file of ``key`` when no writer holds the key's lock."""
    try:
        with fs.try_lock(layout.lock_path(stage, key)) as held:
            if not held:
                return "a write in progress (its key is locked)", False
            return "left by an interrupted write", _unlink(path)
    except OSError as exc:
        return f"its key's lock cannot be taken ({fs.errno_text(exc)})", False


def _unlink(path: Path) -> bool:
    error = fs.remove(path)
    if error is not None:
        logger.warning("Cannot remove %s (%s)", path, error)
    return error is None
