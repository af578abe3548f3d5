"""``mimicache run`` / ``bench`` and the seed scripts: the run flags, and the composition
root that turns them into a config, a plan, an engine and a feature store, then runs."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mimicache.batch import (
    Job,
    JobResult,
    check_log_file,
    check_output_folder,
    exit_code,
    format_summary,
    make_timestamp,
    override_tag,
    plan_jobs,
    reserve_log,
    run_jobs,
)
from mimicache.batch.html_report import write_run_report
from mimicache.cli.cache import DEFAULT_CACHE_DIR
from mimicache.cli.console import call_command, setup_logging
from mimicache.cli.fmt import size_arg
from mimicache.cli.options import add_person_argument
from mimicache.config import DWPOSE_BACKENDS, RETARGET_MODES, InferenceConfig, load_config
from mimicache.errors import MimicacheError
from mimicache.pipeline.schedulers import SCHEDULER_NAMES, SchedulerOptions

if TYPE_CHECKING:
    import torch

    from mimicache.batch.cold_warm import BenchReport
    from mimicache.cache.store import FeatureStore
    from mimicache.engine import MimicMotion

logger = logging.getLogger(__name__)

# The seed scripts default to the 4-step AnimateLCM "turbo" set-up and the graft pose
# retargeting; `mimicache run` to the published behaviour (config steps, SVD's Euler, published
# poses). The pose retargeting default applies only when the config has no pose.retarget.
SEED_DEFAULTS = {"num_inference_steps": 4, "scheduler": "AnimateLCM_SVD", "pose_retarget": "graft"}
RUN_DEFAULTS = {
    "num_inference_steps": None,
    "scheduler": "EulerDiscreteScheduler",
    "pose_retarget": "published",
}
# --scheduler_{name}: (name, default, what it is); all feed SchedulerOptions(name=...).
_LCM_FLOAT_FLAGS = (
    ("sigma_min", 0.002, "smallest noise level of the sigma table"),
    ("sigma_max", 700.0, "largest noise level, where sampling starts"),
    ("sigma_data", 1.0, "data standard deviation in the consistency scalings"),
    ("s_noise", 1.0, "scale of the fresh noise added between steps"),
    ("rho", 7.0, "Karras schedule exponent"),
)
_SCHEDULER_FLAGS = (*(name for name, _, _ in _LCM_FLOAT_FLAGS), "clip_denoised")


def add_run_arguments(
    parser: argparse.ArgumentParser, defaults: dict, *, benchmark_flag: bool = True
) -> None:
    """The flags of ``run`` / ``bench`` and of the seed-compatible scripts."""
    parser.set_defaults(command_defaults=defaults)
    _add_io_arguments(parser)
    _add_generation_arguments(parser, defaults)
    _add_scheduler_arguments(parser, defaults)
    _add_cache_arguments(parser, benchmark_flag=benchmark_flag)
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
    gen.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    gen.add_argument(
        "--dwpose_backend",
        choices=DWPOSE_BACKENDS,
        help="DWPose runtime (default: the config's dwpose.backend, else auto: ONNX Runtime "
        "when it has the device's provider, otherwise PyTorch)",
    )
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
    for name, default, text in _LCM_FLOAT_FLAGS:
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


def _add_cache_arguments(parser: argparse.ArgumentParser, *, benchmark_flag: bool) -> None:
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


# --------------------------------------------------------------------------- the run itself


def run_command(args: argparse.Namespace) -> int:
    """``mimicache run`` / ``bench`` and the seed scripts: check every path we write, load the
    config with the flags' overrides, plan, load the engine once, run (or cold + warm), print
    the summary, prune the cache if asked; the exit code of the jobs."""
    timestamp = make_timestamp()
    output_dir, log_file = _check_paths_and_log(args, timestamp)
    config, overrides = _load_config(args)
    # flag > config > the command's default
    pose_retarget = args.pose_retarget or config.pose_retarget or args.default_pose_retarget
    plan = _planner(args, config, overrides, output_dir, timestamp)
    jobs = plan()
    for folder in sorted({job.output_path.parent for job in jobs}):
        check_output_folder(folder)
    device = _pick_device(args)
    cache = _open_cache(args)
    engine = _load_engine(args, config, device, cache, pose_retarget, len(jobs))
    results, bench = _run(args, engine, config, jobs, plan)
    summary = format_summary(results)
    print(summary)
    logger.debug("summary\n%s", summary)
    _write_report(args, log_file, engine, results, bench)
    _prune_cache(args, cache)
    return exit_code(results)


def _check_paths_and_log(args: argparse.Namespace, timestamp: str) -> tuple[Path, Path]:
    """Every path we write is checked before the config, the plan or a model is loaded; then
    logging goes to the console and the run's log file. Returns the output folder and the
    log file."""
    output_dir = check_output_folder(args.output_dir)
    log_file = (
        check_log_file(args.log_file) if args.log_file else reserve_log(output_dir, timestamp)
    )
    bars = not args.quiet and sys.stderr.isatty()
    setup_logging(args.verbose, log_file, bars=bars)
    logger.info("log file: %s", log_file)
    return output_dir, log_file


def _load_config(args: argparse.Namespace) -> tuple[InferenceConfig, dict[str, Any]]:
    """The config with the flags' per-case overrides applied, and those overrides."""
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
    return config, overrides


def _overridden(args: argparse.Namespace, overrides: dict) -> dict:
    """The generation values this command line sets away from the command's defaults: they go
    into the output names so the runs of a sweep can be told apart."""
    defaults = args.command_defaults
    out = dict(overrides)
    if args.num_inference_steps == defaults["num_inference_steps"]:
        out["num_inference_steps"] = None
    out["scheduler"] = args.scheduler if args.scheduler != defaults["scheduler"] else None
    return out


def _planner(
    args: argparse.Namespace,
    config: InferenceConfig,
    overrides: dict[str, Any],
    output_dir: Path,
    timestamp: str,
) -> Callable[..., list[Job]]:
    """``plan(label="")``: the run's jobs, ``label`` (``cold``/``warm``) ending the names."""
    batch_folder = Path(args.batch_folder) if args.batch_folder else config.batch_video_folder
    tag = override_tag(_overridden(args, overrides))

    def plan(label: str = "") -> list[Job]:
        return plan_jobs(
            config,
            batch_folder=batch_folder,
            output_dir=output_dir,
            timestamp=timestamp,
            tag="_".join(part for part in (tag, label) if part),
        )

    return plan


def _pick_device(args: argparse.Namespace) -> torch.device:
    import torch

    from mimicache.engine import default_device

    device = torch.device(args.device) if args.device else default_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MimicacheError(
            "--device cuda was asked for but CUDA is not available; use --device cpu"
        )
    if device.type == "cpu":
        logger.info("running in float32 on the CPU (float16 is only used on CUDA)")
    return device


def _open_cache(args: argparse.Namespace) -> FeatureStore:
    """The feature store of the flags (disabled with ``--disable_feature_cache``, unless the
    benchmark needs it)."""
    from mimicache.cache.store import FeatureStore

    use_cache = not args.disable_feature_cache
    if args.benchmark_cache and not use_cache:
        logger.warning(
            "--benchmark_cache needs the feature cache: ignoring --disable_feature_cache"
        )
        use_cache = True
    return FeatureStore(
        args.feature_cache_dir,
        enabled=use_cache,
        force_refresh=args.feature_cache_force_refresh,
    )


def _load_engine(
    args: argparse.Namespace,
    config: InferenceConfig,
    device: torch.device,
    cache: FeatureStore,
    pose_retarget: str,
    job_count: int,
) -> MimicMotion:
    """The models, loaded once. The dtype is the engine's default (float16 on CUDA, float32
    elsewhere) unless ``--no_use_float16`` asks for float32."""
    import torch

    from mimicache.engine import MimicMotion

    scheduler = SchedulerOptions(
        name=args.scheduler,
        num_train_timesteps=args.lcm_num_train_timesteps,
        **{name: getattr(args, f"scheduler_{name}") for name in _SCHEDULER_FLAGS},
    )
    engine = MimicMotion.from_config(
        config,
        device=device,
        dtype=torch.float32 if args.no_use_float16 else None,
        cache=cache,
        cache_pipeline_features=not args.disable_pipeline_feature_cache,
        scheduler=scheduler,
        pose_retarget=pose_retarget,
        person=args.person,
    )
    logger.info(
        "%d job(s); device %s, %s; scheduler %s; pose retarget %s; person %s; feature cache %s",
        job_count,
        engine.device,
        str(engine.dtype).removeprefix("torch."),
        args.scheduler,
        pose_retarget,
        engine.person,
        cache.root if cache.enabled else "off",
    )
    return engine


def _run(
    args: argparse.Namespace,
    engine: MimicMotion,
    config: InferenceConfig,
    jobs: list[Job],
    plan: Callable[..., list[Job]],
) -> tuple[list[JobResult], BenchReport | None]:
    """The jobs once, or cold then warm with the comparison table (``--benchmark_cache``);
    ``bench --plot`` draws the comparison."""
    progress = not args.quiet
    if not args.benchmark_cache:
        return run_jobs(engine, jobs, config=config, progress=progress), None
    from mimicache.batch.cold_warm import run_benchmark

    report = run_benchmark(engine, config, plan, progress=progress)
    print(report.table)
    if getattr(args, "plot", None):
        from mimicache.batch.bench_plot import plot_cold_warm

        try:
            logger.info("plot: %s", plot_cold_warm(report.cold, report.warm, args.plot))
        except (MimicacheError, OSError) as exc:  # the runs are done: a plot never fails them
            logger.error("no plot: %s", exc)
    return report.cold + report.warm, report


def _write_report(
    args: argparse.Namespace,
    log_file: Path,
    engine: MimicMotion,
    results: list[JobResult],
    bench: BenchReport | None,
) -> None:
    """``report.html`` beside the log: the run's parameters, then its jobs."""
    parameters = {
        "command": "bench" if bench is not None else "run",
        "config": args.inference_config,
        "batch folder": args.batch_folder,
        "output folder": args.output_dir,
        "log file": log_file,
        "device": engine.device,
        "dtype": str(engine.dtype).removeprefix("torch."),
        "scheduler": args.scheduler,
        "pose retarget": engine.pose_retarget,
        "person": engine.person,
        "feature cache": engine.cache.root if engine.cache and engine.cache.enabled else "off",
    }
    write_run_report(
        log_file, results, parameters=parameters, bench=bench, plot=getattr(args, "plot", None)
    )


def _prune_cache(args: argparse.Namespace, cache: FeatureStore) -> None:
    """``--feature_cache_max_size``: least recently used entries go until the cache fits."""
    if args.feature_cache_max_size is None or not cache.enabled:
        return
    removed = cache.prune(max_size=args.feature_cache_max_size, older_than_days=None)
    logger.info(
        "pruned %d cache entries to fit %d bytes", len(removed), args.feature_cache_max_size
    )


# --------------------------------------------------------------------------- entry points


def run_main(argv: Sequence[str], *, prog: str = "mimicache run") -> int:
    """``mimicache run ARGV`` without the other sub-commands (for callers inside the CLI)."""
    parser = argparse.ArgumentParser(prog=prog)
    add_run_arguments(parser, RUN_DEFAULTS)
    return call_command(run_command, parser.parse_args(argv))


def seed_script_main(argv: Sequence[str] | None = None, *, cache: bool) -> int:
    """The seed's ``inference_raw_batch_{cache,turbo}.py``: the run flags, seed defaults."""
    name = "inference_raw_batch_cache.py" if cache else "inference_raw_batch_turbo.py"
    parser = argparse.ArgumentParser(
        prog=name,
        description="MimicMotion raw batch inference"
        + (" with the feature cache." if cache else " (feature cache off).")
        + " Seed defaults: 4 steps, AnimateLCM_SVD, and the graft pose retargeting (unless the "
        "config sets pose.retarget); `mimicache run` defaults to the published pose frames.",
    )
    add_run_arguments(parser, SEED_DEFAULTS)
    if not cache:
        parser.set_defaults(disable_feature_cache=True)
    return call_command(run_command, parser.parse_args(argv))
