"""The original scripts, ``inference_raw_batch_cache.py`` and ``inference_raw_batch_turbo.py``:
``mimicache run`` with their defaults (4 AnimateLCM steps, the graft pose frames) and, for the
turbo script, the feature cache off. The compatibility layer, kept apart from the commands."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from mimicache.cli.console import call_command
from mimicache.cli.flags import ORIGINAL_SCRIPT_DEFAULTS, add_run_arguments
from mimicache.cli.run import run_command

__all__ = ["original_script_main"]


def original_script_main(argv: Sequence[str] | None = None, *, cache: bool) -> int:
    """The original ``inference_raw_batch_{cache,turbo}.py``: the run flags, their defaults."""
    name = "inference_raw_batch_cache.py" if cache else "inference_raw_batch_turbo.py"
    parser = argparse.ArgumentParser(
        prog=name,
        description="MimicMotion raw batch inference"
        + (" with the feature cache." if cache else " (feature cache off).")
        + " The original scripts' defaults: 4 steps, AnimateLCM_SVD, and the graft pose retargeting (unless the "
        "config sets pose.retarget); `mimicache run` defaults to the published pose frames.",
    )
    add_run_arguments(parser, ORIGINAL_SCRIPT_DEFAULTS)
    # their users read every "Cache miss..." / "Loaded cached features..." line on the console
    parser.set_defaults(cache_detail=True)
    if not cache:
        parser.set_defaults(disable_feature_cache=True)
    return call_command(run_command, parser.parse_args(argv))
