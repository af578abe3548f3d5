"""The flags of ``mimicache run`` / ``bench`` and of the seed-compatible scripts, in groups;
``SEED_DEFAULTS`` / ``RUN_DEFAULTS`` are where the two kinds of command differ."""

from __future__ import annotations

import argparse

from mimicache.cli.fmt import size_arg
from mimicache.cli.options import (
    add_cache_location_arguments,
    add_device_arguments,
    add_person_argument,
)
from mimicache.cli.scale import add_scale_arguments
from mimicache.config import RETARGET_MODES
from mimicache.pipeline.memory import OFFLOADS
from mimicache.pipeline.schedulers import SCHEDULER_NAMES
from mimicache.pipeline.speed import SPEEDS

SEED_DEFAULTS = {"num_inference_steps": 4, "scheduler": "AnimateLCM_SVD", "pose_retarget": "graft"}
RUN_DEFAULTS = {
    "num_inference_steps": None,
    "scheduler": "EulerDiscreteScheduler",
    "pose_retarget": "published",
}
# --scheduler_{name}: (name, default, what it is); all feed SchedulerOptions(name=...).
LCM_FLOAT_FLAGS = (
    ("sigma_min", 0.002, "smallest noise level of the sigma table"),
    ("sigma_max", 700.0, "largest noise level, where sampling starts"),
    ("sigma_data", 1.0, "data standard deviation in the consistency scalings"),
    ("s_noise", 1.0, "scale of the fresh noise added between steps"),
    ("rho", 7.0, "Karras schedule exponent"),
)
SCHEDULER_FLAGS = (*(name for name, _, _ in LCM_FLOAT_FLAGS), "clip_denoised")


def add_run_arguments(
    parser: argparse.ArgumentParser, defaults: dict, *, benchmark_flag: bool = True
) -> None:
    """The flags of ``run`` / ``bench`` and of the seed-compatible scripts."""
    parser.set_defaults(command_defaults=defaults)
    _add_io_arguments(parser)
    _add_generation_arguments(parser, defaults)
    _add_scheduler_arguments(parser, defaults)
    _add_speed_arguments(parser)
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
    gen.add_argument(
        "--no_use_float16",
        action="store_true",
        help="run in float32 on CUDA too (CPU always runs float32)",
    )
    add_device_arguments(gen)
    gen.add_argument(
        "--pose_retarget",
        choices=RETARGET_MODES,
        help="pose frames after the published rescale: 'published' as is, or 'graft' (the seed "
        "scripts' step: the reference keeps its body, arms, hands and face follow the video); "
        "overrides the config's pose.retarget (default: the config's value, else "
        f"{defaults['pose_retarget']})",
    )
    parser.set_defaults(default_pose_retarget=defaults["pose_retarget"])
    add_person_argument(gen)


def _add_scheduler_arguments(parser: argparse.ArgumentParser, defaults: dict) -> None:
    sch = parser.add_argument_group("scheduler")
    sch.add_argument(
        "--scheduler",
        choices=SCHEDULER_NAMES,
        default=defaults["scheduler"],
        help="(default: %(default)s)",
    )
    lcm = "AnimateLCM_SVD only"
    for name, default, text in LCM_FLOAT_FLAGS:
        sch.add_argument(
            f"--scheduler_{name}",
            type=float,
            default=default,
            help=f"{text} ({lcm}; default: %(default)s)",
        )
    sch.add_argument(
        "--scheduler_clip_denoised",
        action="store_true",
        help=f"clamp each step's denoised latent to [-1, 1] ({lcm}; default: off)",
    )
    sch.add_argument(
        "--lcm_num_train_timesteps",
        type=int,
        default=40,
        help="length of the sigma table the inference steps are picked from "
        f"({lcm}; default: %(default)s)",
    )


def _add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    speed = parser.add_argument_group("speed and memory")
    speed.add_argument(
        "--speed",
        choices=SPEEDS,
        default="exact",
        help="exact: the published computation; fast: batched UNet and decode calls and the "
        "fastest kernels, equal up to float rounding (default: %(default)s)",
    )
    speed.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the UNet and VAE decoder once per run (needs --speed fast; the first "
        "job of each shape pays the compile time)",
    )
    speed.add_argument(
        "--decode_chunk_size",
        type=int,
        default=8,
        help="frames per VAE decode: the temporal decoder's window, so it changes the frames; "
        "lower needs less GPU memory (default: %(default)s, as published)",
    )
    speed.add_argument(
        "--offload",
        choices=OFFLOADS,
        default="none",
        help="keep models on the CPU until used: model (each whole model, modest slow-down) or "
        "sequential (layer by layer, least memory, slow); needs accelerate (default: %(default)s)",
    )


def _add_cache_arguments(parser: argparse.ArgumentParser, *, benchmark_flag: bool) -> None:
    cache = parser.add_argument_group("feature cache")
    add_cache_location_arguments(cache)
    cache.add_argument(
        "--disable_pipeline_feature_cache",
        action="store_true",
        help="cache only the pose stages, not the CLIP/VAE features",
    )
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
