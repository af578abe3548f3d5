"""Two tiers: this machine's folder (index, locks, a size cap) in front of a remote tier.

``Tiers.fetch`` reads an entry from the remote tier (verified; a damaged object is a miss
with a warning, never served), ``Tiers.stored`` publishes a computed entry there and keeps the
local folder under its cap (least recently used entries go first, down to 90% of it, so
eviction does not run on every write).
"""

from __future__ import annotations

import contextlib
import logging

import mimicache.cache.admin as admin
from mimicache.cache.entry import Lookup
from mimicache.cache.keys import StageKey
from mimicache.cache.remote import DamagedRemote, RemoteTier, local_tier_size
from mimicache.storage.files import atomic_write

logger = logging.getLogger(__name__)

__all__ = ["Tiers"]


class Tiers:
    """The remote tier of a store (``cache``: its local folder) and the local folder's cap."""

    def __init__(self, cache: admin.Cache, remote: RemoteTier, cap: int) -> None:
        self.cache = cache
        self.remote = remote
        self.cap = cap
        self._local_bytes: int | None = None  # counted from the index on first need
        # Damaged objects seen, until replaced: a job looks an entry up more than once
        # (the hit alone, then the steps), and one warning and one download are enough.
        self._damaged: set[tuple[str, str]] = set()

    @classmethod
    def open(cls, cache: admin.Cache, url: str, cap: int | str | None = None) -> Tiers:
        """The tiers of a store whose root is ``url``; ``cap``: ``remote.local_tier_size``.
        The local folder is made even for a store that writes no entries: it is this
        machine's, and without it a read-only store could not reach the remote tier."""
        tiers = cls(cache, RemoteTier(url), local_tier_size(cap))
        with contextlib.suppress(OSError):  # the store reports a folder it cannot use
            cache.layout.root.mkdir(parents=True, exist_ok=True)
        return tiers

    def fetch(self, stage: str, key: StageKey, *, keep: bool = True) -> Lookup:
        """The remote tier's entry of ``stage``/``key``; ``keep``: copy it into the local
        folder as well (so the next read is local)."""
        if (stage, key.digest) in self._damaged:
            return Lookup(corrupt=True)
        try:
            found = self.remote.get(stage, key)
        except DamagedRemote as exc:
            logger.warning("Remote feature cache entry %s is damaged: treating it as a miss", exc)
            self._damaged.add((stage, key.digest))
            return Lookup(corrupt=True)
        if found is None:
            return Lookup()
        entry, data = found
        logger.debug("Fetched %s entry %s from %s", stage, key.digest[:12], self.remote.url)
        if keep:
            with contextlib.suppress(OSError):  # a local copy only saves the next download
                path = self.cache.layout.entry_path(stage, key.digest)
                path.parent.mkdir(parents=True, exist_ok=True)
                if atomic_write(path, data, temp_stem=key.digest, overwrite=False):
                    self.stored(stage, key.digest, data, publish=False, replace=False)
        return Lookup(entry)

    def stored(self, stage: str, digest: str, data: bytes, *, publish: bool, replace: bool) -> None:
        """An entry file of ``len(data)`` bytes was added to the local folder; ``publish``:
        it was computed here, so it goes to the remote tier too (``replace``: over a damaged
        or refreshed object there)."""
        if publish:
            self.remote.publish(stage, digest, data, replace=replace)
            self._damaged.discard((stage, digest))
        if self._local_bytes is None:
            self._local_bytes = sum(row.size for row in self.cache.index.rows().values())
        self._local_bytes += len(data)
        if self._local_bytes > self.cap:
            self.shrink()

    def shrink(self) -> None:
        """Evict least recently used local entries down to 90% of the cap."""
        result = admin.plan_prune(self.cache, max_size=int(self.cap * 0.9)).execute()
        freed = result.freed_size
        logger.info(
            "Local feature cache tier %s over its cap (%d bytes): evicted %d entries (%d bytes)",
            self.cache.layout.root,
            self.cap,
            len(result.removed),
            freed,
        )
        self._local_bytes = None
