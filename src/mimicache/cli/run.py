"""``mimicache run`` / ``bench`` and the original scripts: the run flags, and the composition
root that turns them into a config, a plan, an engine and a feature store, then runs."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Collection, Sequence
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
)
from mimicache.batch.executing.executor import Executor, Resume
from mimicache.batch.executing.job_loop import INTERRUPTED_EXIT
from mimicache.batch.outputs.root import UPLOAD_EVERY_S, OutputRoot, open_output_root
from mimicache.batch.planning.manifest import plan_manifest, read_manifest
from mimicache.batch.planning.plan import shard_jobs
from mimicache.batch.planning.sweep import (
    Sweep,
    check_engine_choices,
    parse_sweep,
    sweep_jobs,
)
from mimicache.batch.reporting.html import report_path, write_run_report
from mimicache.batch.reporting.results import RESULTS_FILE, ResultsLog, read_results
from mimicache.cli.console import call_command, flag_words, setup_logging
from mimicache.cli.engine_flags import engine_spec
from mimicache.cli.extras import check_run_extras
from mimicache.cli.flags import RUN_DEFAULTS, add_run_arguments
from mimicache.cli.scale import check_executor_flags, executor_settings, select_shard
from mimicache.config import InferenceConfig, load_config
from mimicache.engine.spec import EngineSpec
from mimicache.errors import MimicacheError

if TYPE_CHECKING:
    from mimicache.batch.bench.cold_warm import BenchReport
    from mimicache.batch.reporting.grid import GridFiles
    from mimicache.cache.store import FeatureStore
    from mimicache.engine import MimicMotion

logger = logging.getLogger(__name__)

# The original scripts default to the 4-step AnimateLCM "turbo" set-up and the graft pose
# retargeting; `mimicache run` to the published behaviour (config steps, SVD's Euler, published
# poses). The pose retargeting default applies only when the config has no pose.retarget.
# --------------------------------------------------------------------------- the run itself


def run_command(args: argparse.Namespace) -> int:
    """``mimicache run`` / ``bench`` and the original scripts: check every path we write, load the
    config with the flags' overrides, plan (this shard's jobs), run them here (models loaded
    once) or on Ray workers, or cold + warm; print the summary, prune the cache if asked; the
    exit code of the jobs."""
    check_executor_flags(args)  # before the log file, the output folder and the models
    check_run_extras(args)
    sweep = parse_sweep(args.sweep) if args.sweep else None  # a bad key or value: now
    timestamp = make_timestamp()
    root, log_file = _check_paths_and_log(args, timestamp)
    output_dir = root.folder
    config, overrides = _load_config(args)
    # flag > config > the command's default
    pose_retarget = args.pose_retarget or config.pose_retarget or args.default_pose_retarget
    swept = sweep.keys if sweep is not None else ()
    plan, rejected = _planner(args, config, overrides, output_dir, timestamp, swept)
    if sweep is not None:  # every job times every variant, counted before any model loads
        plan = _swept(plan, sweep, args.sweep_limit)
    jobs = select_shard(plan(), args.shard)
    if args.shard:
        kept = {job.index for job in shard_jobs([r.job for r in rejected], *args.shard)}
        rejected = [r for r in rejected if r.job.index in kept]
    # a URL root: results.jsonl kept in the staging folder, uploaded as jobs finish
    log = ResultsLog(
        root.download(RESULTS_FILE),
        run=timestamp,
        after_write=lambda path: root.upload(path, every=UPLOAD_EVERY_S),
    )
    spec = _engine_spec(args, config, pose_retarget)
    if sweep is not None:  # a variant's engine choices that clash with the other settings
        check_engine_choices(spec, jobs)
    executor = _executor(args, spec, log)
    if args.benchmark_cache and (not executor.in_process or args.resume or args.shard):
        raise MimicacheError(
            "--benchmark_cache runs locally and whole: drop --executor "
            f"{args.executor}, --resume and --shard"
        )
    for folder in sorted({job.output_path.parent for job in jobs} if not root.remote else ()):
        check_output_folder(folder)
    bench = None
    if args.benchmark_cache:
        results, bench = _benchmark(args, executor, config, plan)
    else:
        resume = Resume(read_results(log.path)) if args.resume else None
        results = executor.run(jobs, config=config, resume=resume)
    results = sorted([*rejected, *results], key=lambda r: r.job.index)  # bad manifest rows
    log.finish(results)
    summary = flag_words(format_summary(results))
    print(summary)
    logger.debug("summary\n%s", summary)
    grids = _grids(results) if sweep is not None and bench is None else []
    report = _write_report(args, log_file, executor.spec, executor.engine, results, bench, grids)
    own_log = log_file if log_file.parent == root.staging else None  # not a --log_file
    # a URL root: the driver's files go up; each one that cannot stays here, named
    left = [p for p in (log.path, report, own_log) if p is not None and not root.upload(p)]
    if left:
        print(f"not uploaded to {root.url}; on this machine: {', '.join(map(str, left))}")
    code = exit_code(results)
    if executor.cache is not None and code != INTERRUPTED_EXIT:  # Ctrl-C: stop now
        _prune_cache(args, executor.cache)
    return code


def _check_paths_and_log(args: argparse.Namespace, timestamp: str) -> tuple[OutputRoot, Path]:
    """Every path we write is checked before the config, the plan or a model is loaded; then
    logging goes to the console and the run's log file. Returns the output root (a URL root
    has a local staging folder for the log, the report and results.jsonl) and the log file."""
    root = open_output_root(args.output_dir)
    if not root.remote:
        check_output_folder(root.folder)
    log_file = (
        check_log_file(args.log_file) if args.log_file else reserve_log(root.staging, timestamp)
    )
    bars = not args.quiet and sys.stderr.isatty()
    detail = getattr(args, "cache_detail", False)  # the original scripts show each entry
    setup_logging(args.verbose, log_file, bars=bars, cache_detail=detail)
    logger.info("log file: %s", log_file)
    return root, log_file


def _load_config(args: argparse.Namespace) -> tuple[InferenceConfig, dict[str, Any]]:
    """The config with the flags' per-case overrides applied, and the overrides that change
    a value of the config (each logged once: a command's own default, such as the original
    scripts' 4 steps, changes the config without a flag in sight)."""
    config = load_config(args.inference_config)
    overrides = {
        "num_inference_steps": args.num_inference_steps,
        "seed": args.seed,
        "guidance_scale": args.guidance_scale,
        "noise_aug_strength": args.noise_aug_strength,
    }
    changed = {}
    for key, value in overrides.items():
        before = sorted({getattr(case, key) for case in config.test_case})
        if value is not None and before != [value]:
            changed[key] = value
            logger.info(
                "%s %s over the config's %s%s",
                key,
                value,
                ", ".join(map(str, before)),
                " (this command's default)" if value == args.command_defaults.get(key) else "",
            )
    config = config.replace(test_case=[case.replace(**overrides) for case in config.test_case])
    return config, changed


def _overridden(args: argparse.Namespace, overrides: dict, swept: Collection[str]) -> dict:
    """The generation values this command line sets away from the config (and the sampler
    away from the command's default): they go into the output names, so the runs of a sweep
    and a run with another value than its config are told apart (``_steps4``). A key that
    ``--sweep`` sets (``swept``) is named by each variant instead."""
    defaults = args.command_defaults
    out = dict(overrides)
    out["scheduler"] = args.scheduler if args.scheduler != defaults["scheduler"] else None
    return {k: v for k, v in out.items() if k not in swept}


def _planner(
    args: argparse.Namespace,
    config: InferenceConfig,
    overrides: dict[str, Any],
    output_dir: Path,
    timestamp: str,
    swept: Collection[str] = (),
) -> tuple[Callable[..., list[Job]], list[JobResult]]:
    """``plan(label="")``: the run's jobs, ``label`` (``cold``/``warm``) ending the names; and
    the manifest's bad rows as failed results."""
    batch_folder = Path(args.batch_folder) if args.batch_folder else config.batch_video_folder
    tag = override_tag(_overridden(args, overrides, swept))
    if args.manifest:
        return _manifest_planner(args, config, output_dir, timestamp, tag)

    def plan(label: str = "") -> list[Job]:
        return plan_jobs(
            config,
            batch_folder=batch_folder,
            output_dir=output_dir,
            timestamp=timestamp,
            tag="_".join(part for part in (tag, label) if part),
        )

    return plan, []


def _manifest_planner(
    args: argparse.Namespace, config: InferenceConfig, output_dir: Path, timestamp: str, tag: str
) -> tuple[Callable[..., list[Job]], list[JobResult]]:
    """``--manifest``: rows over the config's first test case (with the flags' overrides)."""
    if args.batch_folder:
        raise MimicacheError("--manifest and --batch_folder both name the jobs; give one of them")
    manifest = read_manifest(args.manifest, config.test_case[0])

    first = plan_manifest(manifest, output_dir=output_dir, timestamp=timestamp, tag=tag)

    def plan(label: str = "") -> list[Job]:
        if not label:  # the plan just made: its output names checked once per row
            return first.jobs
        tags = "_".join(part for part in (tag, label) if part)
        return plan_manifest(manifest, output_dir=output_dir, timestamp=timestamp, tag=tags).jobs

    for result in first.rejected:
        logger.error("%s", result.error)
    return plan, first.rejected


def _swept(plan: Callable[..., list[Job]], sweep: Sweep, limit: int) -> Callable[..., list[Job]]:
    """The plan with every job times every variant of ``sweep`` (checked once, now)."""
    first = sweep_jobs(plan(), sweep, limit=limit)
    logger.info(
        "sweep %s: %d variant(s) of %s, %d job(s)",
        sweep.id,
        sweep.size,
        ", ".join(sweep.keys),
        len(first),
    )

    def swept(label: str = "") -> list[Job]:
        return first if not label else sweep_jobs(plan(label), sweep, limit=limit)

    return swept


def _grids(results: list[JobResult]) -> list[GridFiles]:
    """Each sweep pair's variants side by side (printed where they went)."""
    from mimicache.batch.reporting.grid import grids_of_results

    grids = grids_of_results(results)
    for grid in grids:
        if grid.video is not None:
            print(f"grid of {len(grid.group.clips)} variants: {grid.video} (and {grid.sheet})")
    return grids


def _engine_spec(
    args: argparse.Namespace, config: InferenceConfig, pose_retarget: str
) -> EngineSpec:
    """Everything that says which models are loaded and how: one value for every executor.
    The cache is off with ``--disable_feature_cache`` unless the benchmark needs it."""
    use_cache = not args.disable_feature_cache
    if args.benchmark_cache and not use_cache:
        logger.warning(
            "--benchmark_cache needs the feature cache: ignoring --disable_feature_cache"
        )
        use_cache = True
    return engine_spec(
        args, config, cache_enabled=use_cache, pose_retarget=pose_retarget, verbose=args.verbose
    )


def _executor(args: argparse.Namespace, spec: EngineSpec, log: ResultsLog) -> Executor:
    """The executor ``--executor`` names (``batch.executors``), with the scale-out flags; each
    result it writes goes to ``results.jsonl`` (``log``)."""
    from mimicache.batch.executing.registry import EXECUTORS

    settings = executor_settings(args)
    return EXECUTORS[args.executor](
        spec, settings, progress=not args.quiet, on_result=lambda result, _: log.add(result)
    )


def _benchmark(
    args: argparse.Namespace,
    executor: Executor,
    config: InferenceConfig,
    plan: Callable[..., list[Job]],
) -> tuple[list[JobResult], BenchReport]:
    """Cold then warm with the comparison table (``--benchmark_cache``) on the executor's
    engine; ``bench --plot`` draws the comparison."""
    from mimicache.batch.bench.cold_warm import run_benchmark
    from mimicache.engine.build import open_cache

    report = run_benchmark(
        executor.load(len(plan())),
        config,
        plan,
        open_store=lambda mode: open_cache(executor.spec, mode),
        progress=not args.quiet,
    )
    print(report.table)
    if getattr(args, "plot", None):
        from mimicache.batch.bench.plot import plot_cold_warm

        try:
            figures = (report.cached, report.whole)
            plotted = plot_cold_warm(report.cold, report.warm, args.plot, figures=figures)
            logger.info("plot: %s", plotted)
        except (MimicacheError, OSError) as exc:  # the runs are done: a plot never fails them
            logger.error("no plot: %s", exc)
    return report.cold + report.warm, report


def _write_report(
    args: argparse.Namespace,
    log_file: Path,
    spec: EngineSpec,
    engine: MimicMotion | None,
    results: list[JobResult],
    bench: BenchReport | None,
    grids: list[GridFiles],
) -> Path | None:
    """``report.html`` beside the log: the run's parameters, then its jobs (``engine`` None:
    the jobs ran on Ray workers)."""
    parameters = {
        "command": "bench" if bench is not None else "run",
        "config": args.inference_config,
        "batch folder": args.batch_folder,
        "output folder": args.output_dir,
        "log file": log_file,
        "executor": args.executor,
        "device": engine.device if engine is not None else spec.device or "the workers'",
        "dtype": str(engine.dtype).removeprefix("torch.") if engine is not None else spec.dtype,
        "scheduler": args.scheduler,
        "speed": spec.speed + (" + compile" if spec.compile else ""),
        "pose retarget": spec.pose_retarget,
        "person": engine.person if engine is not None else spec.person or "auto",
        "feature cache": spec.cache_dir if spec.cache_enabled else "off",
    }
    if args.sweep:
        parameters["sweep"] = " ".join(args.sweep)
    # a resumed batch: this report lists every job; the earlier runs' reports are linked
    earlier = sorted(p.name for p in log_file.parent.glob("*.report.html"))
    return write_run_report(
        log_file,
        results,
        parameters=parameters,
        bench=bench,
        plot=getattr(args, "plot", None),
        grids=grids,
        earlier=[name for name in earlier if name != report_path(log_file).name],
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
