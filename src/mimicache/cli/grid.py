"""``mimicache grid PATH_OR_URL``: a sweep's variants side by side, drawn after the fact from the
clips an output folder, its ``results.jsonl`` or an object-storage root holds: per (reference,
video) pair of a sweep, ``{name}_grid.mp4`` and ``{name}_grid.png`` beside the variants, laid
out by the keys ``--rows`` and ``--cols`` name (the scores from ``scores.jsonl`` where
``mimicache score`` wrote newer ones than the sidecars)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from mimicache.cli.console import setup_logging
from mimicache.errors import InputError

logger = logging.getLogger(__name__)


HELP = "draw a sweep's variants side by side (an output folder, results.jsonl or s3:// root)"
DESCRIPTION = """\
Draw each sweep pair's variants side by side from their written clips: {name}_grid.mp4 (every
variant a labelled tile, in step) and {name}_grid.png (a few frames per variant), beside the
variants. `run --sweep` draws them itself; this draws them again with another layout, or for an
earlier run.
"""


def add_grid_command(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("grid", help=HELP, description=DESCRIPTION)
    parser.add_argument(
        "source",
        metavar="PATH_OR_URL",
        help="an output folder (searched with its sub-folders), its results.jsonl, or an "
        "object-storage output root (s3://bucket/prefix)",
    )
    parser.add_argument("--rows", metavar="KEY", help="the swept key down the grid")
    parser.add_argument(
        "--cols", metavar="KEY", help="the swept key across (default: the last one swept)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    parser.set_defaults(func=grid_command)
    return parser


def grid_command(args: argparse.Namespace) -> int:
    """0 when every sweep pair got its grid, 1 when one could not be drawn."""
    from mimicache.batch.outputs.clips import find_clips
    from mimicache.batch.outputs.root import open_output_root
    from mimicache.batch.reporting.grid import (
        GridClip,
        folder_of,
        grid_layout,
        groups_of,
        write_grid,
    )
    from mimicache.batch.reporting.results import read_results
    from mimicache.batch.scoring.scores import SCORES_FILE, current_scores

    setup_logging(args.verbose, None)
    found = find_clips(args.source)
    # the newest scores: mimicache score's over the sidecars'
    root = open_output_root(found.root, name="PATH_OR_URL")
    scores = current_scores(found.clips, read_results(root.download(SCORES_FILE)))
    items = []
    for clip in found.clips:
        sweep = clip.record.get("sweep")
        if not sweep:
            continue
        parameters = clip.record.get("parameters") or {}
        timings = clip.record.get("timings") or {}
        grid_clip = GridClip(
            clip.video,
            sweep.get("values") or {},
            scores.get(clip.key),
            float(parameters.get("fps") or 7),
            clip.name,
            timings.get("total"),
        )
        items.append((sweep, grid_clip, folder_of(clip.video)))
    groups = groups_of(items)
    if not groups:
        raise InputError(
            f"{args.source}: no sweep with two or more finished variants found; run one with "
            "`mimicache run --sweep KEY=V1,V2`"
        )
    for group in groups:  # a --rows or --cols that no sweep has: before any clip is read
        grid_layout(group, rows=args.rows, cols=args.cols)
    failed = 0
    for group in groups:
        files = write_grid(group, rows=args.rows, cols=args.cols)
        if files.video is None:
            failed += 1
            print(f"{group.base}: no grid ({files.error})")
        else:
            print(f"{group.base}: {len(group.clips)} variants -> {files.video}, {files.sheet}")
    return 1 if failed else 0
