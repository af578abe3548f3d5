"""The run loop: every job of a plan through one already-loaded engine, each job's failure
isolated, each job's mp4 (frames (F,H,W,3) uint8 at the engine's fps) and JSON sidecar
published under a free name; the exit code of a run. Nothing here loads models.

``finish_job`` is the one place a job's outcome becomes files and a ``JobResult``: the local
loop and the Ray executor's driver both call it, so both write the same outputs.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mimicache.batch.executing.resume import ResultKey
from mimicache.batch.job import Job, JobResult, Outcome, error_text
from mimicache.batch.outputs.publish import publish_output
from mimicache.batch.outputs.root import location
from mimicache.batch.outputs.unpublished import keep, kept_message
from mimicache.batch.planning.inputs import fetched
from mimicache.batch.reporting.report import sidecar_bytes
from mimicache.config import InferenceConfig, TestCase
from mimicache.errors import MimicacheError, OutputError
from mimicache.media import encode_video
from mimicache.storage.digests import bytes_digest
from mimicache.storage.faults import StoreError

logger = logging.getLogger(__name__)

INTERRUPTED_EXIT = 130  # what a shell reports for a command stopped by SIGINT (Ctrl-C)


class Generated(Protocol):
    """One job's result as an engine returns it (``mimicache.engine.GenerationResult``; a
    stand-in may leave out its ``people``, ``platform`` and ``targets``)."""

    frames: Any  # (F,H,W,3) uint8 RGB
    fps: int
    timings: dict[str, float]  # seconds per stage, plus preprocess / pipeline / total
    cache_events: list[Any]


class Engine(Protocol):
    """What ``run_jobs`` drives: ``mimicache.engine.MimicMotion`` or a stand-in."""

    @property
    def model_files(self) -> dict[str, Any]: ...

    # The sidecar's pose retarget mode; read with getattr, so stand-ins may leave it out.
    pose_retarget: str | None

    def generate(self, case: TestCase, *, progress: bool, label: str | None) -> Generated: ...


def exit_code(results: Iterable[JobResult]) -> int:
    """0 when every job succeeded or was already done, 130 when the run was interrupted
    (Ctrl-C), else 1 (a job failed)."""
    results = list(results)
    if any(r.status == "interrupted" for r in results):
        return INTERRUPTED_EXIT
    return 0 if all(r.done for r in results) else 1


@dataclass(frozen=True)
class RunInfo:
    """What every sidecar of a run records about the models."""

    config: InferenceConfig
    model_files: dict[str, Any]
    pose_retarget: str | None = None
    # Names this run in its sidecars, so a retried job knows its own earlier publication.
    run: str = field(default_factory=lambda: uuid.uuid4().hex)


def finish_job(job: Job, outcome: Outcome, info: RunInfo) -> JobResult:
    """Publish the job's mp4 and its sidecar under a free name; the job's result.

    Each file appears whole or not at all (``publish_output``): a video that cannot be written
    (the folder became unwritable, the disk is full) fails the job with one line naming the
    folder, and a failed job's sidecar that cannot be written is a warning. An object store
    that still refuses the files after the retries fails the job too, but its mp4 and sidecar
    are kept on this machine (``unpublished.keep``), named in the error, for ``--resume``.
    """
    if outcome.error is not None:
        return _publish_failure(job, JobResult.failure(job, outcome.error, outcome.timings), info)
    generated = outcome.generated
    folder = job.output_path.parent
    start = time.perf_counter()
    published: list[JobResult] = []  # the result its sidecar records, once one is written

    def result_at(output: Path) -> JobResult:
        write = time.perf_counter() - start
        timings = dict(outcome.timings, write=write)
        timings["total"] = timings.get("total", 0.0) + write  # the whole job, written
        return JobResult.from_outcome(
            job,
            outcome,
            "ok",
            output=output,
            timings=timings,
            output_bytes=len(video),
            output_blake3=digest,
        )

    def sidecar(output: Path) -> bytes:
        result = result_at(output)
        published.append(result)
        key = outcome.result_key
        extra = {
            "result_key": None if key is None else key.digest,
            "result_fields": None if key is None else key.fields,
            "output_bytes": result.output_bytes,
            "output_blake3": result.output_blake3,
        }
        return _sidecar(job, result, info, extra)

    try:
        video = encode_video(generated.frames, generated.fps, job.name)
        digest = bytes_digest(video)
        output = publish_output(folder, job.base_stem, video, sidecar, _ours(job, info, "ok"))
    except StoreError as exc:  # the output store refused it even after the retries
        return _kept(job, outcome, exc, video, sidecar)
    except OSError as exc:
        error = OutputError(
            f"cannot write the video of {job.name} to {location(folder)} "
            f"({exc.strerror or exc}). "
            "Check that the folder is writable and has free space."
        )
        logger.error("[#%d] %s failed: %s", job.index + 1, job.name, error)
        return _publish_failure(job, JobResult.failure(job, error, outcome.timings), info)
    except (MimicacheError, ValueError) as exc:
        logger.error("[#%d] %s failed: %s", job.index + 1, job.name, exc)
        return _publish_failure(job, JobResult.failure(job, exc, outcome.timings), info)
    # none written: an earlier attempt of this job (its worker died after publishing) had
    # published these very files, and they stand
    result = published[-1] if published else result_at(output)
    logger.info(
        "[#%d] %s done: preprocess %.2fs, pipeline %.2fs, total %.2fs -> %s",
        job.index + 1,
        job.name,
        result.timings.get("preprocess", 0.0),
        result.timings.get("pipeline", 0.0),
        result.timings.get("total", 0.0),
        location(output),
    )
    return result


def run_jobs(
    engine: Engine,
    jobs: Sequence[Job],
    *,
    config: InferenceConfig,
    progress: bool = True,
    on_frames: Callable[[Job, Any], None] | None = None,
    result_key: Callable[[Job], ResultKey | None] | None = None,
    on_result: Callable[[JobResult], None] | None = None,
    engine_for: Callable[[Job], Engine] | None = None,
) -> list[JobResult]:
    """Run every job with the one loaded ``engine`` (``engine_for(job)``: a sweep variant's
    engine on the same models); a failing job is recorded and the rest run.

    Each job publishes its mp4 and a JSON sidecar (a failed job: the sidecar), then
    ``on_result(result)`` hears of it (``results.jsonl``). ``result_key(job)`` (``--resume``)
    is recorded in the sidecars. Ctrl-C stops the run: the job under way and those after it
    come back "interrupted" (no files, so ``--resume`` redoes them), so the caller can still
    write the summary and the report.
    """
    info = RunInfo(config, engine.model_files, getattr(engine, "pose_retarget", None))
    results: list[JobResult] = []
    try:
        for number, job in enumerate(jobs, start=1):
            log_start(job, number, len(jobs))
            outcome = generate_outcome(
                engine_for or (lambda _: engine), job, progress=progress, result_key=result_key
            )
            result = finish_job(job, outcome, info)
            if on_frames is not None and result.ok:
                on_frames(job, outcome.generated.frames)
            results.append(result)
            if on_result is not None:
                on_result(result)
    except KeyboardInterrupt:
        return interrupted(jobs, results)
    return results


def interrupted(jobs: Sequence[Job], results: list[JobResult]) -> list[JobResult]:
    """``results`` (the jobs finished before Ctrl-C) and every other job of ``jobs`` as
    "interrupted", in plan order; logs it."""
    finished = {id(r.job) for r in results}
    rest = [
        JobResult(job, "interrupted", error="interrupted before it finished")
        for job in jobs
        if id(job) not in finished
    ]
    logger.warning(
        "interrupted: %d job(s) finished, %d not (marked interrupted)", len(results), len(rest)
    )
    return [*results, *rest]  # the finished jobs are the first of ``jobs``


def log_start(job: Job, number: int, total: int) -> None:
    logger.info(
        "[#%d] %s (%d of %d to run): image %s, video %s",
        job.index + 1,
        job.name,
        number,
        total,
        location(job.case.ref_image_path),
        location(job.video_path),
    )


def generate_outcome(
    engine_for: Callable[[Job], Engine],
    job: Job,
    *,
    progress: bool,
    result_key: Callable[[Job], ResultKey | None] | None = None,
) -> Outcome:
    """``engine_for(job).generate`` for one job (its URL inputs fetched once), with its
    ``result_key(job)`` when given; its error (logged) instead of raising, a variant's engine
    that cannot be made included."""
    try:
        case = fetched(job.case)
        generated = engine_for(job).generate(case, progress=progress, label=job.name)
    except MimicacheError as exc:
        logger.error("[#%d] %s failed: %s", job.index + 1, job.name, exc)
        logger.debug("traceback", exc_info=True)
        return Outcome(error=error_text(exc))
    except Exception as exc:  # a bug or a runtime fault (out of memory...): isolate the job
        logger.exception("[#%d] %s failed unexpectedly", job.index + 1, job.name)
        return Outcome(error=error_text(exc))
    return Outcome(generated, result_key=result_key(job) if result_key is not None else None)


def _sidecar(job: Job, result: JobResult, info: RunInfo, extra: dict[str, Any]) -> bytes:
    return sidecar_bytes(
        job,
        result,
        config=info.config,
        model_files=info.model_files,
        pose_retarget=job.engine.get("pose_retarget") or info.pose_retarget,
        extra={"run": info.run, **extra},
    )


def _ours(job: Job, info: RunInfo, status: str) -> Callable[[bytes], bool]:
    """Whether a sidecar is this job's own, from this run (an earlier attempt of it)."""

    def check(data: bytes) -> bool:
        try:
            found = json.loads(data)
        except ValueError:
            return False
        return (
            isinstance(found, dict)
            and found.get("run") == info.run
            and found.get("status") == status
            and (found.get("job") or {}).get("index") == job.index
        )

    return check


def _kept(
    job: Job,
    outcome: Outcome,
    error: StoreError,
    video: bytes,
    sidecar: Callable[[Path], bytes],
) -> JobResult:
    """A finished job whose files the output store refused: kept on this machine, failed
    with the store's reason and where they are (no failure sidecar: the store refuses)."""
    try:
        kept = keep(job.output_path.parent, job.base_stem, video, sidecar, error)
    except OSError as exc:
        message = f"{error}; nor can it be kept on this machine ({exc.strerror or exc})"
        logger.error("[#%d] %s failed: %s", job.index + 1, job.name, message)
        return JobResult.failure(job, message, outcome.timings)
    message = kept_message(error, kept)
    logger.error("[#%d] %s failed: %s", job.index + 1, job.name, message)
    return JobResult.from_outcome(
        job,
        outcome,
        "failed",
        error=message,
        output_bytes=len(video),
        output_blake3=bytes_digest(video),
        kept=kept,
    )


def _publish_failure(job: Job, result: JobResult, info: RunInfo) -> JobResult:
    """A failed job's sidecar under a free name (the mp4 name stays free); one that cannot be
    written is a warning, not a second failure."""
    try:
        publish_output(
            job.output_path.parent,
            job.base_stem,
            None,
            lambda _: _sidecar(job, result, info, {}),
            _ours(job, info, "failed"),
        )
    except OSError as exc:
        logger.warning("could not write the sidecar of %s: %s", job.name, exc.strerror or exc)
    except StoreError as exc:
        logger.warning("the sidecar of %s is not written: %s", job.name, exc)
    return result
