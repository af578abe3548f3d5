"""``mimicache run | bench | cache … | demo``; one flag set shared with the seed scripts.

Exit codes: 0 every job succeeded, 1 some job failed (the others ran and were written),
2 a usage, config or model-setup error (nothing ran).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from mimicache.cache.commands import DEFAULT_CACHE_DIR, add_cache_commands
from mimicache.cache.store import parse_size
from mimicache.errors import CacheError, MimicacheError
from mimicache.schedulers import SCHEDULER_NAMES

logger = logging.getLogger("mimicache")

# The seed scripts default to the 4-step AnimateLCM "turbo" set-up; `mimicache run` to the
# published behaviour (config steps, SVD's Euler).
SEED_DEFAULTS = {"num_inference_steps": 4, "scheduler": "AnimateLCM_SVD"}
RUN_DEFAULTS = {"num_inference_steps": None, "scheduler": "EulerDiscreteScheduler"}


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except CacheError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_run_arguments(parser: argparse.ArgumentParser, defaults: dict) -> None:
    """The flags of ``run`` / ``bench`` and of the seed-compatible scripts."""
    io = parser.add_argument_group("inputs and outputs")
    io.add_argument(
        "--inference_config", default="configs/test.yaml", help="YAML config (default: %(default)s)"
    )
    io.add_argument(
        "--batch_folder",
        help="drive each test case's reference image with every video in this folder",
    )
    io.add_argument(
        "--output_dir", default="outputs/", help="where videos go (default: %(default)s)"
    )
    io.add_argument("--log_file", help="log file (default: {output_dir}/{timestamp}.log)")

    gen = parser.add_argument_group("generation")
    gen.add_argument(
        "--num_inference_steps",
        type=int,
        default=defaults["num_inference_steps"],
        help="denoising steps, overrides the config (default: %(default)s)",
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
    gen.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    gen.add_argument(
        "--dwpose_backend",
        choices=("auto", "onnxruntime", "torch"),
        help="DWPose runtime (default: the config's dwpose.backend, else auto: ONNX Runtime "
        "when it has the device's provider, otherwise PyTorch)",
    )

    sch = parser.add_argument_group("scheduler")
    sch.add_argument(
        "--scheduler",
        choices=SCHEDULER_NAMES,
        default=defaults["scheduler"],
        help="(default: %(default)s)",
    )
    sch.add_argument("--scheduler_sigma_min", type=float, default=0.002)
    sch.add_argument("--scheduler_sigma_max", type=float, default=700.0)
    sch.add_argument("--scheduler_sigma_data", type=float, default=1.0)
    sch.add_argument("--scheduler_s_noise", type=float, default=1.0)
    sch.add_argument("--scheduler_rho", type=float, default=7.0)
    sch.add_argument("--scheduler_clip_denoised", action="store_true")
    sch.add_argument("--lcm_num_train_timesteps", type=int, default=40)

    cache = parser.add_argument_group("feature cache")
    cache.add_argument(
        "--feature_cache_dir", default=DEFAULT_CACHE_DIR, help="(default: %(default)s)"
    )
    cache.add_argument(
        "--disable_feature_cache", action="store_true", help="no cache reads, no cache writes"
    )
    cache.add_argument(
        "--feature_cache_force_refresh",
        action="store_true",
        help="recompute every entry and overwrite it",
    )
    cache.add_argument(
        "--disable_pipeline_feature_cache",
        action="store_true",
        help="cache only the pose stages, not the CLIP/VAE features",
    )
    cache.add_argument(
        "--benchmark_cache",
        action="store_true",
        help="run cold (forced refresh), then warm; compare",
    )
    cache.add_argument(
        "--feature_cache_max_size",
        type=_size,
        metavar="SIZE",
        help="after the run, prune least recently used entries down to SIZE (e.g. 20GB)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


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
    bench = commands.add_parser(
        "bench", help="run cold then warm and compare the timings per stage"
    )
    add_run_arguments(bench, RUN_DEFAULTS)
    bench.set_defaults(func=run_command, benchmark_cache=True)
    add_cache_commands(commands)
    demo = commands.add_parser(
        "demo", help="tiny models + generated media: the whole flow, offline, in seconds"
    )
    demo.add_argument("--workdir", default="mimicache-demo", help="(default: %(default)s)")
    demo.add_argument("-v", "--verbose", action="store_true")
    demo.set_defaults(func=demo_command)
    return parser


def setup_logging(verbose: bool, log_file: Path | None = None) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_mimicache", False):
            root.removeHandler(handler)
            handler.close()
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    console.setLevel(logging.DEBUG if verbose else logging.INFO)
    handlers: list[logging.Handler] = [console]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        to_file.setLevel(logging.DEBUG)
        handlers.append(to_file)
    for handler in handlers:
        handler._mimicache = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    # Libraries' own chatter stays at warnings; diffusers warns on every deliberate VAE upcast.
    for name in ("transformers", "httpx", "huggingface_hub", "filelock"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("diffusers").setLevel(logging.ERROR)


def run_command(args: argparse.Namespace) -> int:
    """``mimicache run`` / ``bench`` and the seed scripts."""
    import torch

    from mimicache.batch import exit_code, format_summary, make_timestamp, plan_jobs, run_jobs
    from mimicache.bench import run_benchmark
    from mimicache.cache.store import FeatureStore
    from mimicache.config import load_config
    from mimicache.engine import MimicMotion, default_device
    from mimicache.schedulers import SchedulerOptions

    timestamp = make_timestamp()
    output_dir = Path(args.output_dir)
    log_file = Path(args.log_file) if args.log_file else output_dir / f"{timestamp}.log"
    setup_logging(args.verbose, log_file)
    logger.info("log file: %s", log_file)

    config = load_config(args.inference_config)
    overrides = {
        "num_inference_steps": args.num_inference_steps,
        "seed": args.seed,
        "guidance_scale": args.guidance_scale,
        "noise_aug_strength": args.noise_aug_strength,
    }
    config = config.replace(test_case=[case.replace(**overrides) for case in config.test_case])
    if args.dwpose_backend:
        config = config.replace(dwpose_backend=args.dwpose_backend)
    batch_folder = Path(args.batch_folder) if args.batch_folder else config.batch_video_folder

    def plan(stamp: str):
        return plan_jobs(config, batch_folder=batch_folder, output_dir=output_dir, timestamp=stamp)

    jobs = plan(timestamp)

    device = torch.device(args.device) if args.device else default_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MimicacheError(
            "--device cuda was asked for but CUDA is not available; use --device cpu"
        )
    if device.type == "cuda" and not args.no_use_float16:
        dtype = torch.float16
    else:
        dtype = torch.float32
        if device.type == "cpu":
            logger.info("running in float32 on the CPU (float16 is only used on CUDA)")

    use_cache = not args.disable_feature_cache
    if args.benchmark_cache and not use_cache:
        logger.warning(
            "--benchmark_cache needs the feature cache: ignoring --disable_feature_cache"
        )
        use_cache = True
    cache = FeatureStore(
        args.feature_cache_dir,
        enabled=use_cache,
        force_refresh=args.feature_cache_force_refresh,
    )
    scheduler = SchedulerOptions(
        name=args.scheduler,
        num_train_timesteps=args.lcm_num_train_timesteps,
        **{
            name: getattr(args, f"scheduler_{name}")
            for name in ("sigma_min", "sigma_max", "sigma_data", "s_noise", "rho", "clip_denoised")
        },
    )
    logger.info(
        "%d job(s); device %s, %s; scheduler %s; feature cache %s",
        len(jobs),
        device,
        str(dtype).removeprefix("torch."),
        args.scheduler,
        cache.root if use_cache else "off",
    )
    engine = MimicMotion.from_config(
        config,
        device=device,
        dtype=dtype,
        cache=cache,
        cache_pipeline_features=not args.disable_pipeline_feature_cache,
        scheduler=scheduler,
    )
    progress = not args.quiet
    if args.benchmark_cache:
        report = run_benchmark(engine, config, plan, timestamp, progress=progress)
        results = report.cold + report.warm
        print(report.table)
    else:
        results = run_jobs(engine, jobs, config=config, progress=progress)
    summary = format_summary(results)
    print(summary)
    logger.debug("summary\n%s", summary)
    if args.feature_cache_max_size is not None and use_cache:
        removed = cache.prune(max_size=args.feature_cache_max_size, older_than_days=None)
        logger.info(
            "pruned %d cache entries to fit %d bytes", len(removed), args.feature_cache_max_size
        )
    return exit_code(results)


def demo_command(args: argparse.Namespace) -> int:
    from mimicache.demo import run_demo

    setup_logging(args.verbose)
    return run_demo(Path(args.workdir))


def main(
    argv: Sequence[str] | None = None, *, parser: argparse.ArgumentParser | None = None
) -> int:
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except MimicacheError as exc:
        logger.debug("traceback", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


def seed_script_main(argv: Sequence[str] | None = None, *, cache: bool) -> int:
    """The seed's ``inference_raw_batch_{cache,turbo}.py``: the run flags, seed defaults."""
    name = "inference_raw_batch_cache.py" if cache else "inference_raw_batch_turbo.py"
    parser = argparse.ArgumentParser(
        prog=name,
        description="MimicMotion raw batch inference"
        + (" with the feature cache." if cache else " (feature cache off)."),
    )
    add_run_arguments(parser, SEED_DEFAULTS)
    parser.set_defaults(func=run_command)
    if not cache:
        parser.set_defaults(disable_feature_cache=True)
    return main(argv, parser=parser)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
