"""Sizes for people: ``parse_size("10GB")`` -> bytes, ``format_size(n)`` -> ``"1.2 MB"``."""

from __future__ import annotations

import re

from mimicache.errors import StorageError

__all__ = ["format_size", "parse_size"]

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgtp]?)(i?)(b?)\s*$", re.IGNORECASE)
_SIZE_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_size(text: str | int) -> int:
    """Bytes from ``"123"``, ``"500M"``, ``"10GB"`` (powers of 1000) or ``"1.5GiB"`` (1024).

    Case-insensitive; the ``B`` is optional. Raises StorageError for anything else.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise StorageError(f"invalid size {text!r}: must not be negative")
        return text
    match = _SIZE_RE.match(str(text))
    if not match:
        raise StorageError(
            f"invalid size {text!r}: use a number of bytes with an optional unit, "
            "e.g. 123, 500M, 10GB or 1.5GiB"
        )
    number, unit, binary, _ = match.groups()
    if binary and not unit:
        raise StorageError(f"invalid size {text!r}: 'i' needs a unit letter, e.g. 1.5GiB")
    base = 1024 if binary else 1000
    return round(float(number) * base ** _SIZE_POWERS[unit.lower()])


def format_size(n: int) -> str:
    """``n`` bytes for people: ``"812 B"``, ``"1.2 MB"``, ``"3.4 GB"`` (powers of 1000)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError  # pragma: no cover
