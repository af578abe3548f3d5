"""Flags shared by several commands (``run``/``bench``/seed scripts and ``pose``)."""

from __future__ import annotations

import argparse

from mimicache.config import person_choice


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
