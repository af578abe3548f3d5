"""The original script's entry: raw batch inference with the feature cache on (see `mimicache run -h`)."""

import sys

from mimicache.cli import original_script_main

if __name__ == "__main__":
    sys.exit(original_script_main(cache=True))
