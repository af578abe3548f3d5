"""The flags of ``mimicache run`` / ``bench`` and of the original scripts, in groups;
``ORIGINAL_SCRIPT_DEFAULTS`` / ``RUN_DEFAULTS`` are where the two kinds of command differ."""

from __future__ import annotations

import argparse

from mimicache.batch.planning.sweep import CASE_KEYS, ENGINE_KEYS, SWEEP_LIMIT
from mimicache.cli.engine_flags import add_engine_flags
from mimicache.cli.fmt import size_arg
from mimicache.cli.scale import add_scale_arguments
from mimicache.config.sampler import SchedulerOptions

ORIGINAL_SCRIPT_DEFAULTS = {
    "num_inference_steps": 4,
    "scheduler": "AnimateLCM_SVD",
    "pose_retarget": "graft",
}
RUN_DEFAULTS = {
    "num_inference_steps": None,
    "scheduler": SchedulerOptions().name,
    "pose_retarget": "published",
}


def add_run_arguments(
    parser: argparse.ArgumentParser, defaults: dict, *, benchmark_flag: bool = True
) -> None:
    """The flags of ``run`` / ``bench`` and of the original scripts."""
    parser.set_defaults(command_defaults=defaults)
    _add_io_arguments(parser)
    _add_generation_arguments(parser, defaults)
    _add_scheduler_arguments(parser, defaults)
    _add_speed_arguments(parser)
    _add_score_arguments(parser)
    _add_sweep_arguments(parser)
    _add_cache_arguments(parser, benchmark_flag=benchmark_flag)
    add_scale_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_io_arguments(parser: argparse.ArgumentParser) -> None:
    io = parser.add_argument_group("inputs and outputs")
    io.add_argument(
        "--inference_config", default="configs/test.yaml", help="YAML config (default: %(default)s)"
    )
    io.add_argument(
        "--batch_folder",
        help="drive each test case's reference image with every video in this folder",
    )
    io.add_argument(
        "--manifest",
        metavar="FILE",
        help="jobs from a CSV, JSONL or Parquet file instead: one row per job with ref_image "
        "and video, optional test-case values (seed, steps, guidance, resolution, fps, ...) "
        "over the config's first test case and the flags, and output_name",
    )
    io.add_argument(
        "--output_dir", default="outputs/", help="where videos go (default: %(default)s)"
    )
    io.add_argument("--log_file", help="log file (default: {output_dir}/{timestamp}.log)")


def _add_generation_arguments(parser: argparse.ArgumentParser, defaults: dict) -> None:
    gen = parser.add_argument_group("generation")
    gen.add_argument(
        "--num_inference_steps",
        type=int,
        default=defaults["num_inference_steps"],
        help="denoising steps, overrides the config (default: "
        + ("the config's" if defaults["num_inference_steps"] is None else "%(default)s")
        + ")",
    )
    gen.add_argument("--seed", type=int, help="override every test case's seed")
    gen.add_argument(
        "--guidance_scale", type=float, help="override every test case's guidance scale"
    )
    gen.add_argument(
        "--noise_aug_strength", type=float, help="override every test case's noise_aug_strength"
    )
    add_engine_flags(
        gen,
        ("float16", "device", "dwpose_backend", "pose_retarget", "person"),
        help_values={"pose_retarget": defaults["pose_retarget"]},
    )
    parser.set_defaults(default_pose_retarget=defaults["pose_retarget"])


def _add_scheduler_arguments(parser: argparse.ArgumentParser, defaults: dict) -> None:
    sch = parser.add_argument_group("scheduler")
    add_engine_flags(sch, ("scheduler",), defaults={"scheduler": defaults["scheduler"]})


def _add_score_arguments(parser: argparse.ArgumentParser) -> None:
    scores = parser.add_argument_group("clip scores")
    add_engine_flags(scores, ("score", "score_frames", "score_thresholds"))


def _add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument(
        "--sweep",
        nargs="+",
        metavar="KEY=V1,V2",
        help="run every combination of these values for every job (one model load): test-case "
        f"keys ({', '.join(CASE_KEYS)}) and engine choices ({', '.join(ENGINE_KEYS)}); "
        "whole numbers take ranges (seed=1:8, both ends). Each pair's variants are also "
        "drawn side by side ({name}_grid.mp4 and .png)",
    )
    sweep.add_argument(
        "--sweep_limit",
        type=int,
        default=SWEEP_LIMIT,
        metavar="N",
        help="refuse a sweep of more than N jobs (default: %(default)s)",
    )


def _add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    speed = parser.add_argument_group("speed and memory")
    add_engine_flags(speed, ("speed", "compile", "decode_chunk_size", "offload"))


def _add_cache_arguments(parser: argparse.ArgumentParser, *, benchmark_flag: bool) -> None:
    cache = parser.add_argument_group("feature cache")
    add_engine_flags(
        cache,
        ("cache_dir", "cache_enabled", "cache_force_refresh", "cache_platform"),
    )
    add_engine_flags(cache, ("cache_pipeline_features",))
    if benchmark_flag:
        cache.add_argument(
            "--benchmark_cache",
            action="store_true",
            help="run cold (forced refresh), then warm; compare",
        )
    cache.add_argument(
        "--feature_cache_max_size",
        type=size_arg,
        metavar="SIZE",
        help="after the run, prune least recently used entries down to SIZE (e.g. 20GB)",
    )
