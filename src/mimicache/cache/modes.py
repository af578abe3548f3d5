"""What a store may do (``CacheMode``), what one call did (``CacheEvent``) and why it missed
(``MissReason``), the code version.

A CacheEvent's ``reason`` is "hit" or a MissReason; ``seconds`` float, ``bytes`` int >= 0.
"""

from __future__ import annotations

import enum
import functools
import importlib.metadata
from dataclasses import dataclass

__all__ = ["HIT_REASON", "MISS_REASONS", "CacheEvent", "CacheMode", "MissReason", "package_version"]


@functools.lru_cache(maxsize=1)
def package_version() -> str:
    """The installed mimicache version (recorded in every entry), or "unknown"."""
    try:
        return importlib.metadata.version("mimicache")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class MissReason(str, enum.Enum):
    """Why ``get_or_compute`` computed; the values are the words the logs use."""

    ABSENT = "absent"
    INPUT_CHANGED = "input changed"
    MODEL_CHANGED = "model changed"
    PARAMS_CHANGED = "parameters changed"
    PLATFORM_CHANGED = "computed on another platform"
    # The same inputs under the other platform rule: not another platform's entry.
    STRICT_ONLY = (
        "only a strict entry (keyed by its platform), which cache_platform='any' never uses"
    )
    SHARED_ONLY = "only an entry of cache_platform='any', which strict runs never use"
    CORRUPT = "corrupt"
    FORCED = "forced"
    DISABLED = "disabled"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


MISS_REASONS = tuple(r.value for r in MissReason)
HIT_REASON = "hit"


class CacheMode(enum.Enum):
    """What a store may do: OFF (never touch the disk), READ_ONLY (use entries, write none),
    READ_WRITE (the default), REFRESH (recompute every entry and overwrite it)."""

    OFF = "off"
    READ_ONLY = "read-only"
    READ_WRITE = "read-write"
    REFRESH = "refresh"

    @property
    def reads(self) -> bool:
        return self in (CacheMode.READ_ONLY, CacheMode.READ_WRITE)

    @property
    def writes(self) -> bool:
        return self in (CacheMode.READ_WRITE, CacheMode.REFRESH)

    @classmethod
    def from_flags(
        cls,
        enabled: bool = True,
        read: bool = True,
        write: bool = True,
        force_refresh: bool = False,
    ) -> CacheMode:
        """The mode the old keyword flags describe (``read=False`` is a refresh)."""
        reads = read and not force_refresh
        if not enabled or not (reads or write):
            return cls.OFF
        if not write:
            return cls.READ_ONLY
        return cls.READ_WRITE if reads else cls.REFRESH


@dataclass
class CacheEvent:
    """What one ``get_or_compute`` did.

    ``reason`` is ``"hit"`` on a hit, else a MissReason (a str: "absent", "corrupt", ...).
    ``seconds`` is the whole call (load on a hit; compute + write on a miss). ``bytes`` is the
    entry file's size when it was read or written, 0 when nothing touched the disk.
    """

    stage: str
    hit: bool
    reason: str
    seconds: float
    bytes: int
    key: str
    subject: str | None = None
