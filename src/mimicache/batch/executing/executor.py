"""The executor seam: a plan's jobs in, their results out (in plan order), each result
announced as it is written. Every executor builds its engines from one ``EngineSpec`` and
writes outputs with ``run.finish_job``, so all of them leave the same files behind.

``executors.EXECUTORS`` names the implementations; a new executor is one class here beside
``local_executor`` and ``ray_executor``, and one line in that registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mimicache.batch.job import Job, JobResult
from mimicache.config import InferenceConfig
from mimicache.engine.spec import EngineSpec

# on_result(result, executor): called in the driver after each job's files are written
ResultListener = Callable[[JobResult, Any], None]


@dataclass(frozen=True)
class ExecutorSettings:
    """How many workers and where (executors that run in one process ignore them):
    ``workers`` None: the GPUs the cluster has / ``gpus_per_worker`` (1 without GPUs);
    ``gpus_per_worker`` None: 1 when the cluster has GPUs and the device is not the CPU;
    ``pose_workers`` None: 1 when the workers use GPUs, else 0; ``address`` None: start a
    local cluster (``"auto"`` joins a running one); ``max_retries``: times a job is retried
    when its worker dies."""

    workers: int | None = None
    address: str | None = None
    gpus_per_worker: float | None = None
    pose_workers: int | None = None
    max_retries: int = 1


@dataclass(frozen=True)
class Resume:
    """``--resume``: a job whose result exists is "skipped"; it is found by its sidecar or by
    one of ``records``, the rows of the output root's ``results.jsonl``."""

    records: Sequence[Mapping[str, Any]] = ()


class Executor(Protocol):
    """Runs a plan. ``in_process``: the engine runs in this process, so ``load`` gives it
    (for the cold/warm benchmark); ``engine`` / ``cache``: the engine and feature store loaded
    in this process once ``run`` or ``load`` has loaded them (None where workers hold them);
    ``spec``: the spec the engines were built from (its device resolved once loaded)."""

    in_process: bool
    extra: str | None
    reads: tuple[str, ...]
    spec: EngineSpec
    engine: Any
    cache: Any

    def __init__(
        self,
        spec: EngineSpec,
        settings: ExecutorSettings,
        *,
        progress: bool = True,
        on_result: ResultListener | None = None,
    ) -> None: ...

    def run(
        self, jobs: Sequence[Job], *, config: InferenceConfig, resume: Resume | None = None
    ) -> list[JobResult]:
        """Every job, in plan order; with ``resume``, jobs whose result exists are "skipped"."""
        ...

    def load(self, job_count: int = 0) -> Any:
        """The engine in this process (``in_process`` executors)."""
        ...


class ExecutorBase:
    """What every executor keeps: the spec its engines are built from, its settings, whether
    it shows progress, and who hears of each written result. ``extra``: the package extra it
    needs installed (``mimicache[...]``); ``reads``: the ``ExecutorSettings`` fields it uses
    (a setting given to an executor that ignores it is an error, not a silent no-op)."""

    in_process = False
    extra: str | None = None
    reads: tuple[str, ...] = ()
    engine: Any = None
    cache: Any = None

    def __init__(
        self,
        spec: EngineSpec,
        settings: ExecutorSettings | None = None,
        *,
        progress: bool = True,
        on_result: ResultListener | None = None,
    ):
        self.spec = spec
        self.settings = settings or ExecutorSettings()
        self.progress = progress
        self.on_result = on_result
