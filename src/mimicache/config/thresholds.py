"""The clip scores' verdict thresholds: their names, documented defaults and checks (the
config's ``score.thresholds`` and ``--score_threshold NAME=VALUE``; ``quality.score`` judges
with them). Error thresholds are in shoulder widths of the reference; see ``quality.score``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mimicache.errors import ConfigError

__all__ = ["DEFAULT_THRESHOLDS", "PART_WORDS", "check_thresholds", "parse_thresholds"]

# the body parts a clip score measures, in their order, as messages and the report name them
PART_WORDS = {"body": "body", "left_hand": "left hand", "right_hand": "right hand", "face": "face"}

DEFAULT_THRESHOLDS: dict[str, float] = {
    "body": 0.30,
    "left_hand": 0.40,
    "right_hand": 0.40,
    "face": 0.30,
    "hand_recall": 0.50,
    "identity": 0.75,
    "flicker": 0.05,
}


def check_thresholds(thresholds: Mapping[str, float]) -> dict[str, float]:
    """``DEFAULT_THRESHOLDS`` with ``thresholds`` over them; ConfigError naming an unknown
    name or a value that is not a number >= 0."""
    out = dict(DEFAULT_THRESHOLDS)
    for name, value in thresholds.items():
        if name not in DEFAULT_THRESHOLDS:
            known = ", ".join(DEFAULT_THRESHOLDS)
            raise ConfigError(f"unknown score threshold {name!r}; the thresholds are: {known}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ConfigError(f"score threshold {name} must be a number >= 0, got {value!r}")
        out[name] = float(value)
    return out


def parse_thresholds(items: Iterable[str]) -> dict[str, float]:
    """``NAME=VALUE`` items (``--score_threshold right_hand=0.2``) as a mapping, checked."""
    given: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"score threshold {item!r}: write NAME=VALUE, e.g. right_hand=0.2")
        try:
            given[name.strip()] = float(text)
        except ValueError:
            given[name.strip()] = text
    check_thresholds(given)
    return {k: float(v) for k, v in given.items()}
