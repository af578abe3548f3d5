"""The one text-table layout and the counted nouns the commands print."""

from __future__ import annotations

import argparse

import pytest

from mimicache.cli.fmt import plural, size_arg, text_table


def test_text_table_aligns_columns_and_trims_line_ends():
    rows = [("name", "n", "note"), ("a", "10", ""), ("longer", "7", "x")]
    assert text_table(rows, right=(1,)).splitlines() == [
        "name     n  note",
        "a       10",
        "longer   7  x",
    ]


def test_text_table_minimum_widths_and_separator():
    rows = [("stage", "s"), ("pose", "1.5")]
    assert text_table(rows, right=(1,), sep=" ", min_widths=(8, 5)).splitlines() == [
        "stage        s",
        "pose       1.5",
    ]


def test_plural_and_sizes():
    assert [plural(1, "problem"), plural(2, "problem"), plural(0, "entry", "entries")] == [
        "1 problem",
        "2 problems",
        "0 entries",
    ]
    assert size_arg("2KiB") == 2048
    with pytest.raises(argparse.ArgumentTypeError):
        size_arg("lots")
