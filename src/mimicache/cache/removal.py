"""What tidying a cache removes, the same for a local root and an object-storage root: the
plan (``RemovalPlan``, nothing happens until ``execute()``), what it did, and which entries a
prune selects (unused for too long, then the least recently used down to a size)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePath

from mimicache.errors import CacheError, setting
from mimicache.storage.files import remove

logger = logging.getLogger(__name__)

__all__ = [
    "Removal",
    "RemovalFailure",
    "RemovalPlan",
    "RemovalResult",
    "check_max_size",
    "select_entries",
]


@dataclass(frozen=True)
class Removal:
    """A file (or folder) a plan removes. ``kind``: "entry", "temp", "orphan", "old" (another
    format version's folder); ``reason`` says why."""

    kind: str
    path: PurePath
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
    """Files a prune or clear would remove; nothing happens until ``execute()``.

    ``remover`` removes one elsewhere than on a local disk (an object store), returning the
    error or None; ``finish(removed)`` keeps what describes the files (an index) in step."""

    removals: list[Removal]
    remover: Callable[[Removal], str | None] | None = field(default=None, repr=False)
    finish: Callable[[list[Removal]], None] | None = field(default=None, repr=False)

    @property
    def expected_freed_size(self) -> int:
        return sum(r.size for r in self.removals)

    def execute(self, *, warn: bool = False) -> RemovalResult:
        """Remove the files; returns what was removed and what could not be (``warn``: one
        warning for the latter, else the caller tells the user)."""
        removed: list[Removal] = []
        failed: list[RemovalFailure] = []
        for r in self.removals:
            error = remove(r.path) if self.remover is None else self.remover(r)
            if error is None:
                removed.append(r)
            else:
                logger.debug("Cannot remove %s (%s)", r.path, error)
                failed.append(RemovalFailure(r, error))
        if self.finish is not None:
            self.finish(removed)
        if warn and failed:
            logger.warning(
                "Cannot remove %d file(s) from the feature cache (%s; first: %s)",
                len(failed),
                failed[0].error,
                failed[0].removal.path,
            )
        return RemovalResult(removed, failed)


def check_max_size(max_size: int | None) -> None:
    """A prune's size limit: CacheError when negative."""
    if max_size is not None and max_size < 0:
        raise CacheError(f"{setting('max_size', max_size)} must not be negative")


def select_entries(
    entries: list[tuple[float, Removal]],
    now: float,
    max_size: int | None,
    older_than_days: float | None,
    *,
    aged: str,
) -> list[Removal]:
    """What a prune removes of ``entries`` ((last use, its removal), least recently used
    first): those unused for more than ``older_than_days`` (``aged`` says so, with ``{days}``),
    then the least recently used until the rest is at most ``max_size`` bytes."""
    removals, keep = [], []
    for used, removal in entries:
        if older_than_days is not None and now - used > older_than_days * 86400:
            reason = aged.format(days=f"{older_than_days:g}")
            removals.append(dataclasses.replace(removal, reason=reason))
        else:
            keep.append(removal)
    total = sum(r.size for r in keep)
    for removal in keep:
        if max_size is None or total <= max_size:
            break
        removals.append(dataclasses.replace(removal, reason="over the size limit"))
        total -= removal.size
    return removals
