"""Cache keys: canonical JSON, BLAKE3 key digests, StageKey, model fingerprints.

Everything here is about *identity*: a key is the BLAKE3 hex digest (64 chars) of the canonical
JSON of a stage's fields (``StageKey``: inputs, models, params); a model is fingerprinted by the
content digests of its files (``storage.digests.file_digest``) plus the settings that change
its output; the JSON is ``storage.json_values.canonical_json``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import blake3

from mimicache.cache.digest_memo import DigestMemo
from mimicache.storage.digests import file_digest
from mimicache.storage.json_values import canonical_json

__all__ = ["GROUPS", "StageKey", "fingerprint_files", "key_digest"]

GROUPS = ("inputs", "models", "platform", "params")
"""The groups of a StageKey, in the order a miss is explained by."""


def key_digest(fields: Mapping[str, Any]) -> str:
    """Hex BLAKE3 (64 chars) of ``canonical_json(fields)``."""
    return blake3.blake3(canonical_json(fields).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- stage keys


@dataclass(frozen=True)
class StageKey:
    """What a stage's output depends on, grouped so a miss can be explained.

    ``inputs``: content digests of input files (and how they are read); ``models``: model
    fingerprints; ``params``: every other setting that changes the output; ``platform``: where
    the floats were computed, for outputs that depend on it (opaque here). All JSON-able.
    """

    inputs: dict[str, Any]
    models: dict[str, Any]
    params: dict[str, Any]
    platform: dict[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        fields = {"inputs": self.inputs, "models": self.models, "params": self.params}
        if self.platform:  # keys without a platform keep the digests they always had
            fields["platform"] = self.platform
        return fields

    @cached_property
    def canonical(self) -> str:
        """Canonical JSON of the three groups (what is stored in the entry's metadata)."""
        return canonical_json(self.fields())

    @cached_property
    def digest(self) -> str:
        """The entry key: hex BLAKE3 (64 chars) of the canonical JSON of the three groups
        (``key_digest`` of them, from the one spelling already made)."""
        return blake3.blake3(self.canonical.encode("utf-8")).hexdigest()

    def changed_group(self, previous: Mapping[str, Any]) -> str | None:
        """The first of "inputs", "models", "platform", "params" whose value differs from ``previous``
        (the fields of an earlier key), or None when all three are the same."""
        for group in GROUPS:
            if canonical_json(getattr(self, group)) != canonical_json(previous.get(group, {})):
                return group
        return None


# --------------------------------------------------------------------------- fingerprints


def _expand(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    return [path]


def fingerprint_files(
    paths: Iterable[str | os.PathLike[str]] | Mapping[str, str | os.PathLike[str]],
    extra: Mapping[str, Any] | None = None,
    memo: DigestMemo | None = None,
) -> str:
    """A model fingerprint: key digest of the weight/config files' content digests + ``extra``.

    ``paths`` is a list of files or folders (folders are walked; hidden files skipped), named in
    the fingerprint by their path relative to the deepest common folder (so the same model in
    another place has the same fingerprint), or a mapping ``{role: path}`` naming them
    explicitly. ``extra`` holds settings that change the output (thresholds, dtype, provider).
    Raises OSError when a file cannot be read.
    """
    named: dict[str, Path] = {}
    if isinstance(paths, Mapping):
        for role, p in paths.items():
            files = _expand(Path(p))
            if Path(p).is_dir():
                for f in files:
                    named[f"{role}/{f.relative_to(p).as_posix()}"] = f
            else:
                named[str(role)] = files[0]
    else:
        files = [f for p in paths for f in _expand(Path(p))]
        if not files and not extra:
            raise ValueError("fingerprint_files: no files to fingerprint")
        if files:
            absolute = [f.absolute() for f in files]
            base = (
                Path(os.path.commonpath([str(f.parent) for f in absolute]))
                if len(absolute) > 1
                else absolute[0].parent
            )
            for f, a in zip(files, absolute):
                named[a.relative_to(base).as_posix()] = f
    digests = {name: file_digest(named[name], memo) for name in sorted(named)}
    return key_digest({"files": digests, "extra": dict(extra or {})})
