"""Looking at and tidying a cache on object storage: entries, stats, verify(fix), prune, clear.

``RemoteCache(url)`` is the ``admin.CacheAdmin`` of an object-storage root: what a
FeatureStore offers the cache commands (``entries``, ``stats``, ``stage_names``, ``verify``,
``plan_prune``, ``plan_clear``), over the objects under ``url``. Nothing but the entry objects lives there: an entry's time is its object's
modification time (created = last used), its subject and key fields come from its header
(ranged reads). So prune goes by object age (``older_than_days``; ``max_size`` removes the
oldest first), from any one machine.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePath, PurePosixPath
from typing import Any

from mimicache.cache.admin import EntryInfo, Problem, VerifyReport, relative_to
from mimicache.cache.entry import ENTRY_SUFFIX, SCHEMA, data_damage, head_metadata, header_length
from mimicache.cache.index import json_dict
from mimicache.cache.layout import check_stage, is_key
from mimicache.cache.remote import RemoteTier
from mimicache.cache.removal import Removal, RemovalPlan, check_max_size, select_entries

logger = logging.getLogger(__name__)

__all__ = ["RemoteCache", "RemoteEntryInfo"]

_HEAD_BYTES = 64 << 10  # one ranged read holds a typical entry's whole header
_BATCH = 16  # objects read at once by verify (fsspec fetches a batch concurrently)


@dataclass(frozen=True)
class RemoteEntryInfo(EntryInfo):
    """An entry object; ``fields`` are its key fields, read from its header."""

    fields: dict[str, Any] = field(default_factory=dict)

    def platform(self) -> dict[str, Any]:
        platform = self.fields.get("platform", {})
        return platform if isinstance(platform, dict) else {}


@dataclass(frozen=True)
class _Object:
    path: str
    size: int
    mtime: float


def _mtime(info: dict[str, Any]) -> float:
    """An object's modification time in Unix seconds, whatever the backend calls it."""
    for name in ("LastModified", "last_modified", "mtime", "updated", "created"):
        value = info.get(name)
        if isinstance(value, dt.datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return 0.0


class RemoteCache:
    """The admin view of the entry objects under ``url`` (see the module docstring)."""

    def __init__(self, url: str) -> None:
        self.tier = RemoteTier(url)
        self.root = url
        self.base = PurePosixPath(self.tier.base)

    def __repr__(self) -> str:
        return f"RemoteCache({self.root!r})"

    def relative(self, path: PurePath) -> PurePath:
        """``path`` relative to the root's prefix where it lies under it."""
        return relative_to(path, self.base)

    # ------------------------------------------------------------------ listing

    def _scan(
        self, stage: str | None = None
    ) -> tuple[dict[tuple[str, str], _Object], list[_Object]]:
        """Entry objects by (stage, key), and the other objects under the entry prefix."""
        fs = self.tier.fs
        top = f"{self.tier.base}/v{SCHEMA}"
        prefix = top if stage is None else f"{top}/{stage}"
        fs.invalidate_cache()  # other machines write here: never trust a cached listing
        try:
            found = fs.find(prefix, detail=True)
        except FileNotFoundError:
            found = {}
        entries: dict[tuple[str, str], _Object] = {}
        others: list[_Object] = []
        for path, info in sorted(found.items()):
            obj = _Object(path, int(info.get("size") or 0), _mtime(info))
            parts = path[len(top) + 1 :].split("/")
            name = parts[-1]
            key = name[: -len(ENTRY_SUFFIX)] if name.endswith(ENTRY_SUFFIX) else ""
            if len(parts) == 3 and path == self.tier.entry_path(parts[0], key) and is_key(key):
                entries[(parts[0], key)] = obj
            else:
                others.append(obj)
        return entries, others

    def _headers(self, paths: list[str]) -> list[dict[str, str]]:
        """The metadata of each entry object ({} where unreadable), by ranged reads."""
        if not paths:
            return []
        fs = self.tier.fs
        heads = fs.cat_ranges(
            paths, [0] * len(paths), [_HEAD_BYTES] * len(paths), on_error="return"
        )
        out = []
        for path, head in zip(paths, heads):
            meta = head_metadata(head) if isinstance(head, bytes) else {}
            if meta is None:  # a longer header than one read holds
                try:
                    meta = head_metadata(fs.cat_file(path, start=0, end=header_length(head))) or {}
                except Exception:
                    meta = {}
            out.append(meta)
        return out

    def entries(self, stage: str | None = None) -> list[RemoteEntryInfo]:
        """Every entry object (of ``stage``), newest first within a stage."""
        if stage is not None:
            check_stage(stage)
        found, _ = self._scan(stage)
        items = sorted(found.items())
        metas = self._headers([obj.path for _, obj in items])
        out = []
        for ((st, key), obj), meta in zip(items, metas):
            fields = json_dict(meta.get("fields", "{}"))
            inputs = fields.get("inputs", {})
            out.append(
                RemoteEntryInfo(
                    st,
                    key,
                    meta.get("subject") or None,
                    inputs if isinstance(inputs, dict) else {},
                    obj.size,
                    obj.mtime,
                    obj.mtime,
                    PurePosixPath(obj.path),
                    fields,
                )
            )
        out.sort(key=lambda e: (e.stage, -e.last_used, e.key))
        return out

    def stats(self) -> dict[str, tuple[int, int]]:
        """``{stage: (entries, bytes)}`` over the entry objects (no header reads)."""
        out: dict[str, tuple[int, int]] = {}
        for (stage, _), obj in self._scan()[0].items():
            count, size = out.get(stage, (0, 0))
            out[stage] = (count + 1, size + obj.size)
        return out

    def stage_names(self) -> list[str]:
        return sorted({stage for stage, _ in self._scan()[0]})

    # ------------------------------------------------------------------ verify

    def _contents(self, paths: list[str]) -> Iterator[tuple[str, bytes | Exception]]:
        for start in range(0, len(paths), _BATCH):
            batch = paths[start : start + _BATCH]
            got = self.tier.fs.cat(batch, on_error="return")
            for path in batch:
                yield path, got.get(path, FileNotFoundError(path))

    def verify(self, fix: bool = False) -> VerifyReport:
        """Download and verify every entry object; ``fix``: remove damaged and stray ones."""
        found, others = self._scan()
        where = {obj.path: sk for sk, obj in found.items()}
        problems: list[Problem] = []
        good = 0
        for path, data in self._contents(sorted(where)):
            stage, key = where[path]
            damage = data_damage(data, stage, key) if isinstance(data, bytes) else str(data)
            if damage is None:
                good += 1
                continue
            fixed = fix and self._remove_path(path) is None
            problems.append(Problem("corrupt", PurePosixPath(path), damage, stage, key, fixed))
        for obj in others:
            fixed = fix and self._remove_path(obj.path) is None
            problems.append(
                Problem("orphan", PurePosixPath(obj.path), "not a cache entry", fixed=fixed)
            )
        return VerifyReport(problems, good)

    # ------------------------------------------------------------------ prune / clear

    def _remove_path(self, path: str) -> str | None:
        try:
            self.tier.fs.rm_file(path)
        except FileNotFoundError:
            return None  # removed meanwhile (another machine pruning): the goal is met
        except Exception as exc:
            logger.debug("Cannot remove %s (%s)", path, exc)
            return f"{type(exc).__name__}: {exc}"
        return None

    def _remove(self, removal: Removal) -> str | None:
        return self._remove_path(str(removal.path))

    def plan_prune(
        self, max_size: int | None = None, older_than_days: float | None = None
    ) -> RemovalPlan:
        """Stray objects, entries older than ``older_than_days``, then the oldest entries
        until the total is at most ``max_size`` bytes."""
        check_max_size(max_size)
        found, others = self._scan()
        removals = [
            Removal("orphan", PurePosixPath(o.path), o.size, "not a cache entry") for o in others
        ]
        entries = [
            (obj.mtime, Removal("entry", PurePosixPath(obj.path), obj.size, "", stage, key))
            for (stage, key), obj in sorted(found.items(), key=lambda item: item[1].mtime)
        ]  # an object's last use is its upload: the oldest go first
        removals += select_entries(
            entries, time.time(), max_size, older_than_days, aged="older than {days} days"
        )
        return RemovalPlan(removals, remover=self._remove)

    def plan_clear(self, stage: str | None = None) -> RemovalPlan:
        """Every entry object (of ``stage``) and the stray objects beside them."""
        if stage is not None:
            check_stage(stage)
        found, others = self._scan(stage)
        removals = [
            Removal("entry", PurePosixPath(obj.path), obj.size, "cleared", st, key)
            for (st, key), obj in sorted(found.items())
        ]
        removals += [Removal("orphan", PurePosixPath(o.path), o.size, "cleared") for o in others]
        return RemovalPlan(removals, remover=self._remove)
