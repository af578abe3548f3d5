"""Seed-compatible entry: raw batch inference with the feature cache on (see `mimicache run -h`)."""

import sys

from mimicache.cli import seed_script_main

if __name__ == "__main__":
    sys.exit(seed_script_main(cache=True))
