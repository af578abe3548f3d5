"""Cache keys: canonical JSON, BLAKE3 key digests, StageKey, model fingerprints.

Everything here is about *identity*: a key is the BLAKE3 hex digest (64 chars) of the canonical
JSON of a stage's fields (``StageKey``: inputs, models, params); a model is fingerprinted by the
content digests of its files (``digests.file_digest``) plus the settings that change its output.
``canonical_json`` is the project's one JSON normaliser.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import blake3

from mimicache.cache.digests import RACY_WINDOW_NS, DigestMemo, file_digest

__all__ = [
    "GROUPS",
    "RACY_WINDOW_NS",
    "DigestMemo",
    "StageKey",
    "canonical_json",
    "file_digest",
    "fingerprint_files",
    "key_digest",
]

GROUPS = ("inputs", "models", "platform", "params")
"""The groups of a StageKey, in the order a miss is explained by."""


# --------------------------------------------------------------------------- canonical JSON


def to_json_value(obj: Any, *, canonical: bool = True) -> Any:
    """``obj`` as plain JSON types with string keys: paths as strings, tuples and sets as
    lists (sets sorted), enums and numpy/torch scalars as their values, dataclasses as dicts.

    ``canonical`` (what keys are hashed from): integral floats become ints and NaN/inf
    strings, so one value has one spelling, and an unknown type is an error. Otherwise (what
    people read, e.g. sidecars): floats stay as they are and unknown objects become ``str``.
    """
    kind = type(obj)
    # The plain JSON types first, by exact type: a key is mostly these, and made every job.
    if kind is str or kind is int or kind is bool or obj is None:
        return obj
    if kind is dict and all(type(k) is str for k in obj):
        return {k: to_json_value(v, canonical=canonical) for k, v in obj.items()}
    if kind is list or kind is tuple:
        return [to_json_value(v, canonical=canonical) for v in obj]
    again = lambda v: to_json_value(v, canonical=canonical)  # noqa: E731
    if isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if not canonical:
            return obj
        if math.isnan(obj):
            return "NaN"
        if math.isinf(obj):
            return "Infinity" if obj > 0 else "-Infinity"
        if obj.is_integer() and abs(obj) < 2**53:
            return int(obj)  # 1.0 and 1 (and -0.0 and 0) name the same value
        return obj  # repr() is the shortest round-trip spelling: stable everywhere
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, enum.Enum):
        return again(obj.value)
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            key = k if isinstance(k, str) else canonical_json(k) if canonical else str(k)
            if key in out and canonical:
                raise ValueError(f"canonical_json: two keys spell {key!r}")
            out[key] = again(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [again(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((again(v) for v in obj), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).hex()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return again(dataclasses.asdict(obj))
    item = getattr(obj, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(obj, "shape", None) == ():
        return again(item())
    if not canonical or (
        type(obj).__module__ == "torch" and type(obj).__name__ in {"dtype", "device"}
    ):
        return str(obj)
    raise TypeError(f"canonical_json: cannot encode {type(obj).__name__} {obj!r}")


def canonical_json(obj: Any) -> str:
    """The one spelling of ``obj`` as JSON: sorted keys, no whitespace, stable numbers.

    Paths become strings, tuples and sets lists (sets sorted), integral floats ints, NaN/inf
    strings; numpy/torch scalars their Python value; ``torch.dtype``/``device`` their name.
    """
    return json.dumps(
        to_json_value(obj),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


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
