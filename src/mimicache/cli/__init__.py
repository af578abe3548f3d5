"""The command line: ``mimicache run | bench | cache ... | demo`` and the original scripts
(``compat``). ``main(argv)`` returns the exit code (0 ok, 1 some job failed, 2 usage, config or
model-setup error)."""

from mimicache.cli.compat import original_script_main
from mimicache.cli.main import build_parser, main

__all__ = ["build_parser", "main", "original_script_main"]
