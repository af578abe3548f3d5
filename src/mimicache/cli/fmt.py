"""Text for the terminal: the one table layout, counted nouns, sizes (``format_size`` /
``parse_size`` are the cache's, re-exported) and argparse types built on them."""

from __future__ import annotations

import argparse

from mimicache.batch.reporting.report import text_table
from mimicache.errors import StorageError
from mimicache.storage.sizes import format_size, parse_size

__all__ = ["format_size", "parse_size", "plural", "size_arg", "text_table"]


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 problem"``, ``"3 problems"``; ``many`` for irregular plurals (``"entries"``)."""
    return f"{n} {word}" if n == 1 else f"{n} {many or word + 's'}"


def size_arg(text: str) -> int:
    """argparse type for sizes such as ``20GB``, ``500M``, ``1.5GiB`` (bytes)."""
    try:
        return parse_size(text)
    except StorageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
