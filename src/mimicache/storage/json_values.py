"""Values as JSON: ``to_json_value`` (paths, enums, numpy/torch scalars, dataclasses as plain
JSON types) and ``canonical_json``, the project's one spelling of a value (sorted keys, no
whitespace, stable numbers), which keys are hashed from."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["canonical_json", "to_json_value"]


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
