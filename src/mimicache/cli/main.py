"""``mimicache``: the parser of every sub-command and ``main(argv) -> exit code``.

Exit codes: 0 every job succeeded, 1 some job failed (the others ran and were written),
2 a usage, config or model-setup error (nothing ran).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from mimicache.cli.cache import add_cache_commands
from mimicache.cli.console import call_command
from mimicache.cli.demo import add_demo_command
from mimicache.cli.doctor import add_doctor_command
from mimicache.cli.download import add_download_command
from mimicache.cli.grid import add_grid_command
from mimicache.cli.pose import add_pose_command
from mimicache.cli.run import RUN_DEFAULTS, add_run_arguments, run_command
from mimicache.cli.score import add_score_command
from mimicache.cli.ui import add_ui_command

BENCH_HELP = "run cold then warm and compare the timings per stage"
BENCH_DESCRIPTION = """\
Run the first job once with the cache off and untimed (a warm-up, so the cold run is not charged
the process's first-call costs), then the jobs twice, first with every cache entry recomputed
(cold), then reading the cache (warm); print the per-stage timings side by side, the cached
stages' and the whole job's speed-ups apart, and whether the outputs are bit-identical. Takes
the same flags as `run`.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mimicache",
        description="MimicMotion batch inference with a persistent, content-addressed feature cache.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = commands.add_parser(
        "run", help="generate videos for a config (and a folder of driving videos)"
    )
    add_run_arguments(run, RUN_DEFAULTS)
    run.set_defaults(func=run_command)
    bench = commands.add_parser("bench", help=BENCH_HELP, description=BENCH_DESCRIPTION)
    add_run_arguments(bench, RUN_DEFAULTS, benchmark_flag=False)
    bench.add_argument(
        "--plot",
        metavar="PNG",
        help="also draw the cold/warm comparison per stage into this PNG (needs matplotlib)",
    )
    bench.set_defaults(func=run_command, benchmark_cache=True)
    add_pose_command(commands)
    add_score_command(commands)
    add_grid_command(commands)
    add_cache_commands(commands)
    add_demo_command(commands)
    add_doctor_command(commands)
    add_download_command(commands)
    add_ui_command(commands)
    return parser


def main(
    argv: Sequence[str] | None = None, *, parser: argparse.ArgumentParser | None = None
) -> int:
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    return call_command(args.func, args)
