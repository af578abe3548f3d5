"""The original script's entry: the same flags with the feature cache off (the original behaviour)."""

import sys

from mimicache.cli import original_script_main

if __name__ == "__main__":
    sys.exit(original_script_main(cache=False))
