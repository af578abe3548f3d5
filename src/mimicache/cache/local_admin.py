"""The ``admin.CacheAdmin`` face of a local root, as methods of its ``FeatureStore``."""

from __future__ import annotations

from pathlib import PurePath

import mimicache.cache.admin as admin
from mimicache.cache.admin import EntryInfo, VerifyReport
from mimicache.cache.digest_memo import DigestMemo
from mimicache.cache.index import Index
from mimicache.cache.layout import Layout
from mimicache.cache.removal import Removal, RemovalPlan

__all__ = ["LocalAdmin"]


class LocalAdmin:
    """Listing, verifying, pruning and clearing a local root (``admin``'s functions over the
    store's ``layout``, ``index`` and ``memo``)."""

    root: PurePath
    layout: Layout
    index: Index
    memo: DigestMemo | None
    enabled: bool

    def entries(self, stage: str | None = None) -> list[EntryInfo]:
        """``admin.entries``: every entry on disk (of ``stage``), most recently used first."""
        return admin.entries(self, stage)

    def stats(self) -> dict[str, tuple[int, int]]:
        """``{stage: (entries, bytes)}`` over the entries on disk."""
        return admin.stats(self)

    def stage_names(self) -> list[str]:
        """The stages that have a folder in this store (whether or not it holds entries)."""
        return self.layout.stage_names() if self.enabled else []

    def verify(self, fix: bool = False) -> VerifyReport:
        """``admin.verify``: problems found (and fixed, with ``fix``) and the good entries."""
        return admin.verify(self, fix)

    def relative(self, path: PurePath) -> PurePath:
        """``path`` relative to the root where it lies under it (as messages show it)."""
        return admin.relative_to(path, self.root)

    def plan_prune(
        self, max_size: int | None = None, older_than_days: float | None = None
    ) -> RemovalPlan:
        """``admin.plan_prune``: what pruning to ``max_size`` / ``older_than_days`` removes."""
        return admin.plan_prune(self, max_size, older_than_days)

    def plan_clear(self, stage: str | None = None) -> RemovalPlan:
        """``admin.plan_clear``: what clearing (one stage, or all) removes."""
        return admin.plan_clear(self, stage)

    def prune(
        self,
        max_size: int | None = None,
        older_than_days: float | None = None,
        dry_run: bool = False,
    ) -> list[Removal]:
        """Execute ``plan_prune``: what was removed (dry run: what would be); files that could
        not be removed are left out, with one warning."""
        plan = self.plan_prune(max_size, older_than_days)
        return plan.removals if dry_run else plan.execute(warn=True).removed

    def clear(self, stage: str | None = None) -> list[Removal]:
        """Execute ``plan_clear``: what was removed (failures: one warning)."""
        return self.plan_clear(stage).execute(warn=True).removed
