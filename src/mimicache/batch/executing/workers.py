"""What an executor's worker process holds, built from an ``EngineSpec`` (everything needed to
load the same engine as a local run, picklable) by ``engine.build``: a generation
worker (the whole engine, loaded once, runs jobs) and a pose worker (DWPose only, fills the
cache's pose entries ahead of the generation).

A generation worker writes its own results: ``run_job`` fetches the job's URL inputs to this
machine, generates, encodes the mp4 and publishes it with its sidecar (``run.finish_job``,
exactly as a local run does, to a local folder or an object-storage URL), and hands the
driver the small ``JobResult`` (a few kB, no frames) and the job's log records; its progress
lines go to the driver's ``ProgressRelay`` as they are logged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mimicache.batch.executing.job_loop import RunInfo, finish_job
from mimicache.batch.executing.resume import ResultKey
from mimicache.batch.executing.variants import EngineVariants
from mimicache.batch.job import Job, JobResult, Outcome, error_text
from mimicache.batch.planning.inputs import fetched
from mimicache.engine.progress import ProgressLog
from mimicache.engine.spec import EngineSpec
from mimicache.errors import MimicacheError

logger = logging.getLogger(__name__)

LogLine = tuple[str, int, str]  # logger name, level, message


@contextmanager
def captured_logs(level: int) -> Iterator[list[LogLine]]:
    """The records logged meanwhile (at ``level`` or above), for the driver to log again."""
    lines: list[LogLine] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            lines.append((record.name, record.levelno, text))

    handler = Collect(level)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(min(previous or logging.WARNING, level))
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def replay_logs(lines: list[LogLine], prefix: str = "") -> None:
    """Log a worker's records again in this process (console and the run's log file)."""
    for name, level, text in lines:
        logging.getLogger(name).log(level, "%s%s", prefix, text)


class ProgressRelay:
    """A Ray actor on the driver's side: workers ``put`` their progress lines as they log
    them, the driver ``drain``s and logs them while the jobs run."""

    def __init__(self) -> None:
        self.lines: list[LogLine] = []

    def put(self, line: LogLine) -> None:
        self.lines.append(line)

    def drain(self) -> list[LogLine]:
        lines, self.lines = self.lines, []
        return lines


class _ToRelay(logging.Handler):
    """Sends each record to a ``ProgressRelay`` (not awaited; ``flush`` waits for the last)."""

    def __init__(self, relay: Any):
        super().__init__()
        self.relay = relay
        self.last: Any = None

    def emit(self, record: logging.LogRecord) -> None:
        # under the progress module's logger name, as a local run logs these lines
        line = (ProgressLog.__module__, record.levelno, record.getMessage())
        self.last = self.relay.put.remote(line)

    def flush(self) -> None:
        if self.last is not None:
            import ray

            # a line lost with a closing cluster is no reason to fail the job (or an exit)
            with contextlib.suppress(Exception):
                ray.wait([self.last], timeout=10)
            self.last = None


def _live_log(relay: Any) -> logging.Logger:
    """A logger whose records go to ``relay`` only (the driver logs them as they come), not to
    the records a job hands back at its end."""
    log = logging.getLogger(f"mimicache.progress.relay.{os.getpid()}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.handlers = [_ToRelay(relay)]
    return log


class GenerationWorker:
    """The whole engine, loaded once; ``run`` generates one job. A model that cannot be loaded
    is reported by ``info`` (a load error is the user's to fix, never retried)."""

    def __init__(self, spec: EngineSpec, relay: Any = None):
        """``relay``: a ``ProgressRelay`` that gets the jobs' progress lines as they happen
        (None: they come back with each job's records)."""
        self.spec = spec
        self.live = _live_log(relay) if relay is not None else None
        self.engine: Any = None
        self.load_error: str | None = None
        level = logging.DEBUG if spec.verbose else logging.INFO
        with captured_logs(level) as self.load_logs:
            try:
                from mimicache.engine.build import build_engine

                self.engine = build_engine(spec)
                self.variants = EngineVariants(self.engine, spec)
            except MimicacheError as exc:
                self.load_error = str(exc)
            except Exception as exc:
                logger.debug("model load failed", exc_info=True)
                self.load_error = error_text(exc)

    def info(self) -> dict[str, Any]:
        """pid, the load error (or None), the model files and pose mode, the load's logs."""
        engine = self.engine
        return {
            "pid": os.getpid(),
            "error": self.load_error,
            "model_files": engine.model_files if engine is not None else {},
            "pose_retarget": engine.pose_retarget if engine is not None else None,
            "logs": self.load_logs,
        }

    def pid(self) -> int:
        return os.getpid()

    def result_key(self, job: Job) -> ResultKey | None:
        return self.variants.result_key(job)

    def run_job(
        self,
        job: Job,
        info: RunInfo,
        ahead: tuple[list[Any], float] | list[Any] | None = None,
    ) -> tuple[JobResult, list[LogLine]]:
        """One job run and published here: its result (no frames) and the records logged.
        ``ahead``: the cache events and seconds of its pose stage, run by a pose worker, or
        ``[object ref]`` of that pose job when it was still running."""
        outcome, lines = self.run(job)
        if isinstance(ahead, list):
            ahead = _pose_ahead(ahead[0])
        if ahead is not None and outcome.error is None:
            events, seconds = ahead
            generated = outcome.generated
            generated.cache_events = [*events, *generated.cache_events]
            generated.timings = {"pose_ahead": seconds, **generated.timings}
        if self.live is not None:  # its progress reaches the driver before its result
            self.live.handlers[0].flush()
        level = logging.DEBUG if self.spec.verbose else logging.INFO
        with captured_logs(level) as published:
            result = finish_job(job, outcome, info)
        return result, [*lines, *published]

    def run(self, job: Job) -> tuple[Outcome, list[LogLine]]:
        """One job (a sweep variant on its engine variant): its outcome (frames or the error
        text) and the records it logged."""
        level = logging.DEBUG if self.spec.verbose else logging.INFO
        label = job.name
        with captured_logs(level) as lines:
            try:
                case = fetched(job.case)
                engine = self.variants.engine(job)
                # progress as log lines the driver logs (live through the relay, else
                # with the job's records), never as a bar in its log
                live = ProgressLog(log=self.live) if self.live is not None else ProgressLog()
                generated = engine.generate(case, progress=False, label=label, observer=live)
            except MimicacheError as exc:
                logger.error("%s failed: %s", label, exc)
                return Outcome(error=error_text(exc)), lines
            except Exception as exc:  # a bug or out of memory: the job fails, the worker lives
                logger.exception("%s failed unexpectedly", label)
                return Outcome(error=error_text(exc)), lines
            outcome = Outcome(generated, result_key=self.variants.result_key(job))
        return outcome, lines


def _pose_ahead(ref: Any) -> tuple[list[Any], float] | None:
    """A pose job's events and seconds: it is done or nearly so, since the generation has
    just used its entries; None when it was lost (the generation computed them itself)."""
    import ray

    try:
        events, seconds, _ = ray.get(ref, timeout=30)
    except Exception:  # lost or late: the sidecar goes without the pose stage's record
        return None
    return events, seconds


class PoseWorker:
    """DWPose only: ``prepare`` runs a job's pose stages so their entries are in the cache
    when a generation worker asks (errors are left for the generation to report)."""

    def __init__(self, spec: EngineSpec):
        from mimicache.engine.build import build_pose_engine

        self.level = logging.DEBUG if spec.verbose else logging.INFO
        # on the CPU unless told otherwise, so the entries are keyed as the generation keys them
        self.engine = build_pose_engine(
            spec.replace(device="cpu", dwpose_device=spec.dwpose_device or "cpu")
        )

    def pid(self) -> int:
        return os.getpid()

    def prepare(self, job: Job) -> tuple[list[Any], float, list[LogLine]]:
        """The cache events of the job's pose stages (with a sweep variant's pose choices),
        the seconds spent, the records logged."""
        from mimicache.engine import JobRecord
        from mimicache.engine.build import engine_variant

        start = time.perf_counter()
        record = JobRecord()
        case = job.case
        pose = {k: job.engine[k] for k in ("pose_retarget", "person") if k in job.engine}
        engine = engine_variant(self.engine, **pose) if pose else self.engine
        with captured_logs(self.level) as lines:
            try:
                engine.prepare_pose(fetched(case), record, progress=False)
            except Exception as exc:  # the generation stage meets it again and reports it
                logger.debug("pose ahead of %s failed: %s", case.ref_video_path, exc)
        return record.events, time.perf_counter() - start, lines
