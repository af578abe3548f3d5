"""What a prune selects, the same for a local cache and an object-storage root: entries unused
for too long, then the least recently used until the rest fits a size."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from mimicache.errors import CacheError, setting

if TYPE_CHECKING:
    from mimicache.cache.admin import Removal

__all__ = ["check_max_size", "select_entries"]


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
