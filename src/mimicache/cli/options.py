"""Flags shared by several commands (``run``/``bench``/seed scripts and ``pose``)."""

from __future__ import annotations

import argparse

from mimicache.cli.cache import DEFAULT_CACHE_DIR
from mimicache.config import DWPOSE_BACKENDS, person_choice


def person_arg(value: str) -> str:
    """``--person``'s value, canonical ("auto", "largest", "center", "N")."""
    try:
        return person_choice(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_person_argument(group) -> None:
    group.add_argument(
        "--person",
        type=person_arg,
        metavar="auto|largest|center|N",
        help="which person of the driving video drives the pose: 'auto' (published: everyone "
        "drawn), 'largest', 'center' (nearest the frame centre), or N (0 = the first to "
        "appear, left to right within a frame); people are tracked across frames. Overrides "
        "the config's pose.person (default: the config's value, else auto)",
    )


def add_device_arguments(group) -> None:
    """``--device`` and ``--dwpose_backend`` (the backend is part of the pose entries' keys)."""
    group.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    group.add_argument(
        "--dwpose_backend",
        choices=DWPOSE_BACKENDS,
        help="DWPose runtime (default: the config's dwpose.backend, else auto: ONNX Runtime "
        "when it has the device's provider, otherwise PyTorch)",
    )


def add_cache_location_arguments(group) -> None:
    """Where the feature cache is and whether it is read and written."""
    group.add_argument(
        "--feature_cache_dir", default=DEFAULT_CACHE_DIR, help="(default: %(default)s)"
    )
    group.add_argument(
        "--disable_feature_cache", action="store_true", help="no cache reads, no cache writes"
    )
    group.add_argument(
        "--feature_cache_force_refresh",
        action="store_true",
        help="recompute every entry and overwrite it",
    )
    group.add_argument(
        "--cache_platform",
        choices=("strict", "any"),
        default="strict",
        help="strict (default): entries are keyed by the numeric platform that computed them "
        "(device model, dtype, library versions, CPU threads), so a warm run equals an uncached "
        "one bit for bit; any: keys leave the platform out, so every run with 'any' (on any "
        "machine, device or thread count) shares its entries, accepting drift in the last bits",
    )
