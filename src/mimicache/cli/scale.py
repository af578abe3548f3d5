"""Flags for running one plan on many machines: ``--executor ray`` (with ``--workers``,
``--ray_address``, ``--gpus_per_worker``, ``--pose_workers``, ``--max_retries``),
``--shard K/N`` for job arrays without Ray, and ``--resume``."""

from __future__ import annotations

import argparse
import logging
import math

from mimicache.batch import Job
from mimicache.batch.executing.executor import ExecutorSettings
from mimicache.batch.executing.registry import DEFAULT_EXECUTOR, EXECUTORS
from mimicache.batch.planning.plan import shard_jobs
from mimicache.cli.engine_flags import add_engine_flags
from mimicache.errors import ConfigError

logger = logging.getLogger(__name__)

MAX_RETRIES = ExecutorSettings().max_retries
# ExecutorSettings' fields by the flag that sets each
SETTING_FLAGS = {
    "workers": "workers",
    "address": "ray_address",
    "gpus_per_worker": "gpus_per_worker",
    "pose_workers": "pose_workers",
    "max_retries": "max_retries",
}


def executor_settings(args: argparse.Namespace) -> ExecutorSettings:
    """The scale-out flags as the executor's settings."""
    given = {
        field: getattr(args, flag) for field, flag in SETTING_FLAGS.items() if hasattr(args, flag)
    }
    return ExecutorSettings(**given)


def add_scale_arguments(parser: argparse.ArgumentParser, *, jobs: bool = True) -> None:
    """The scale-out flags; ``jobs`` False: only the executor and its workers (a command
    that generates nothing: no pose workers, retries, shards or resume)."""
    scale = parser.add_argument_group("scale-out")
    scale.add_argument(
        "--executor",
        choices=tuple(EXECUTORS),
        default=DEFAULT_EXECUTOR,
        help="local: one process; ray: Ray workers that each load the models once "
        "(default: %(default)s)",
    )
    scale.add_argument(
        "--workers",
        type=_positive_int,
        help=f"{'generation ' if jobs else ''}workers (ray; default: the GPUs Ray sees, 1 on a "
        "CPU-only machine)",
    )
    scale.add_argument(
        "--ray_address",
        help="join this Ray cluster ('auto': the running one; default: start a local one)",
    )
    scale.add_argument(
        "--gpus_per_worker",
        type=_non_negative_float,
        help="GPUs per worker, may be fractional (ray; default: 1 when the cluster has GPUs, "
        "else 0)",
    )
    add_engine_flags(scale, ("threads",))
    if not jobs:
        return
    scale.add_argument(
        "--pose_workers",
        type=_non_negative_int,
        help="CPU workers running DWPose ahead of the generation (ray; default: 1 when the "
        "workers use GPUs, else 0)",
    )
    scale.add_argument(
        "--max_retries",
        type=_non_negative_int,
        default=MAX_RETRIES,
        help="times a job is retried when its worker dies (ray; an input error is never "
        "retried; default: %(default)s)",
    )
    scale.add_argument(
        "--shard",
        type=shard_arg,
        metavar="K/N",
        help="run only shard K of N of the plan (1 <= K <= N; e.g. Slurm's "
        "$((SLURM_ARRAY_TASK_ID + 1))/N): every job is in exactly one shard",
    )
    scale.add_argument(
        "--resume",
        action="store_true",
        help="skip jobs whose result (same inputs, parameters, models, code) is already in "
        "the output folder",
    )


def check_executor_flags(args: argparse.Namespace) -> None:
    """A flag the chosen executor does not read is an error before any work (the registry
    says which settings each reads): a run that quietly ignored ``--workers 8`` would take
    hours on one process where minutes were meant."""
    chosen = EXECUTORS[args.executor]
    defaults = ExecutorSettings()
    given = [
        field
        for field, flag in SETTING_FLAGS.items()
        if field not in chosen.reads
        and getattr(args, flag, getattr(defaults, field)) != getattr(defaults, field)
    ]
    if not given:
        return
    flags = ", ".join(f"--{SETTING_FLAGS[f]} {getattr(args, SETTING_FLAGS[f])}" for f in given)
    readers = sorted({name for name, cls in EXECUTORS.items() if set(given) <= set(cls.reads)})
    use = " or ".join(f"--executor {name}" for name in readers) or "another executor"
    raise ConfigError(
        f"{flags}: only {use} {'reads' if len(readers) < 2 else 'read'} "
        f"{'this flag' if len(given) == 1 else 'these flags'}; add {use} or drop "
        f"{'it' if len(given) == 1 else 'them'} (--executor {args.executor})"
    )


def shard_arg(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 1 <= K <= N."""
    head, sep, tail = text.partition("/")
    try:
        shard, shards = int(head), int(tail)
    except ValueError:
        shard = shards = 0
    if not sep or not 1 <= shard <= shards:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not K/N with 1 <= K <= N (e.g. 2/8 for the second of eight shards)"
        )
    return shard, shards


def select_shard(jobs: list[Job], shard: tuple[int, int] | None) -> list[Job]:
    if shard is None:
        return jobs
    mine = shard_jobs(jobs, *shard)
    logger.info("shard %d/%d: %d of %d job(s)", *shard, len(mine), len(jobs))
    return mine


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative(kind: type, noun: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        # float() accepts "nan" and "inf", which would slip past the sign check and then
        # reach Ray as a resource request it cannot meet
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
        if value < 0:
            raise argparse.ArgumentTypeError("must not be negative")
        return value

    return parse


_non_negative_int = _non_negative(int, "a whole number")
_non_negative_float = _non_negative(float, "a number")
