"""The command line: ``mimicache run | bench | cache ... | demo`` and the seed-compatible
scripts. ``main(argv)`` returns the exit code (0 ok, 1 some job failed, 2 usage, config or
model-setup error)."""

from mimicache.cli.main import build_parser, main
from mimicache.cli.run import seed_script_main

__all__ = ["build_parser", "main", "seed_script_main"]
