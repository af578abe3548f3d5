"""Where things live under a cache root, and what a walk over the entry folders finds.

    CACHEDIR.TAG                      standard cache-directory tag (backup tools skip the tree)
    .CACHEDIR.TAG.<pid>.<random>.tmp  the tag's write in progress (or debris of a killed one)
    index.sqlite                      entries, last key per subject, file digest memo (WAL);
                                      per machine elsewhere for a shared root (``sharing``)
    locks/<stage>/<key>.lock          per-key file locks: concurrent processes compute once
    v<SCHEMA>/<stage>/<key[:2]>/<key>.safetensors
    v<SCHEMA>/<stage>/<key[:2]>/.<key>.<pid>.<random>.tmp   a write in progress (or debris)

Stage names are 1-64 letters, digits, '_' or '-'; keys are 64 lowercase hex digits.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from mimicache.cache.entry import ENTRY_SUFFIX, SCHEMA
from mimicache.errors import CacheError
from mimicache.storage.files import atomic_write

__all__ = ["CACHEDIR_TAG", "Layout", "Scan", "check_stage", "is_key", "write_cachedir_tag"]

_STAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
_TEMP_RE = re.compile(r"^\.([0-9a-f]{64})\.\d+\.[0-9a-f]+\.tmp$")
_ROOT_TEMP_RE = re.compile(r"^\..+\.(\d+)\.[0-9a-f]+\.tmp$")  # fs.atomic_write's temp names


CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by mimicache (feature cache).\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)


def write_cachedir_tag(root: Path) -> None:
    """Tag ``root`` as a cache directory (once; backup tools then skip it)."""
    tag = root / "CACHEDIR.TAG"
    if not tag.exists():
        atomic_write(tag, CACHEDIR_TAG.encode("ascii"))


def is_key(text: str) -> bool:
    """Whether ``text`` spells an entry key (64 lowercase hex digits)."""
    return _KEY_RE.match(text) is not None


def check_stage(stage: str) -> None:
    """Raise CacheError unless ``stage`` is a valid stage name."""
    if not isinstance(stage, str) or not _STAGE_RE.match(stage):
        raise CacheError(
            f"invalid cache stage name {stage!r}: use letters, digits, '_' or '-' (max 64)"
        )


@dataclass
class Scan:
    """What is in the entry folders: entries by (stage, key), temp files, anything else."""

    entries: dict[tuple[str, str], tuple[Path, os.stat_result]] = field(default_factory=dict)
    temps: list[tuple[Path, os.stat_result]] = field(default_factory=list)
    orphans: list[tuple[Path, os.stat_result]] = field(default_factory=list)


@dataclass(frozen=True)
class Layout:
    """The paths of a cache rooted at ``root`` (absolute); the index is in ``index_dir``
    (default: the root)."""

    root: Path
    index_dir: Path | None = None

    @property
    def index_path(self) -> Path:
        return (self.index_dir or self.root) / "index.sqlite"

    @property
    def tag_path(self) -> Path:
        return self.root / "CACHEDIR.TAG"

    @property
    def entries_dir(self) -> Path:
        return self.root / f"v{SCHEMA}"

    def entry_path(self, stage: str, key: str) -> Path:
        return self.entries_dir / stage / key[:2] / f"{key}{ENTRY_SUFFIX}"

    def lock_path(self, stage: str, key: str) -> Path:
        return self.root / "locks" / stage / f"{key}.lock"

    def lock_dirs(self, stage: str | None = None) -> list[Path]:
        base = self.root / "locks"
        if stage is not None:
            return [base / stage]
        return sorted(base.iterdir()) if base.is_dir() else []

    @staticmethod
    def temp_owner(path: Path) -> tuple[str, str] | None:
        """(stage, key) of an entry's temp file, or None for any other name."""
        match = _TEMP_RE.match(path.name)
        return (path.parent.parent.name, match.group(1)) if match else None

    def root_temp_writer(self, path: Path) -> int | None:
        """The process id that wrote the temp file ``path`` at the root (the tag's), or None
        for any other file."""
        match = _ROOT_TEMP_RE.match(path.name)
        return int(match.group(1)) if match and path.parent == self.root else None

    def stage_names(self) -> list[str]:
        """The stages that have a folder (whether or not it holds entries)."""
        base = self.entries_dir
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir() and _STAGE_RE.match(p.name))

    def other_schema_dirs(self) -> list[Path]:
        """Entry folders of other format versions (``v<N>``, N != SCHEMA)."""
        return [
            p
            for p in sorted(self.root.glob("v*"))
            if p.is_dir() and p.name[1:].isdigit() and p.name != self.entries_dir.name
        ]

    def scan(self, stage: str | None = None) -> Scan:
        """Walk the entry folders (of ``stage``); files that vanish meanwhile are skipped."""
        scan = Scan()
        if stage is None and self.root.is_dir():
            for path in sorted(self.root.iterdir()):
                if self.root_temp_writer(path) is not None:
                    _classify(scan, "", "", path)
        base = self.entries_dir
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
                    _classify(scan, stage_dir.name, prefix_dir.name, path)
        return scan


def _classify(scan: Scan, stage: str, prefix: str, path: Path) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    name = path.name
    key = name[: -len(ENTRY_SUFFIX)] if name.endswith(ENTRY_SUFFIX) else ""
    if is_key(key) and key[:2] == prefix and _STAGE_RE.match(stage) and path.is_file():
        scan.entries[(stage, key)] = (path, st)
    elif name.endswith(".tmp") and name.startswith("."):
        scan.temps.append((path, st))
    else:
        scan.orphans.append((path, st))
