"""The run loop: every job of a plan through one already-loaded engine, each job's failure
isolated, each job's mp4 (frames (F,H,W,3) uint8 at the engine's fps) and JSON sidecar
written under a claimed name; the exit code of a run. Nothing here loads models."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from mimicache.batch.outputs import release_output, reserve_output
from mimicache.batch.plan import Job
from mimicache.batch.report import write_sidecar
from mimicache.config import InferenceConfig, TestCase
from mimicache.errors import MimicacheError
from mimicache.media import write_video

logger = logging.getLogger(__name__)


class Generated(Protocol):
    """One job's result as an engine returns it (``mimicache.engine.GenerationResult``)."""

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


@dataclass
class JobResult:
    """What happened to one job. ``timings`` in seconds (``preprocess``, ``pipeline``,
    ``total`` and per-stage keys); ``error`` a one-line message for failed jobs; ``people``
    who was seen in the driving video and who drove the pose (``pose.PeopleReport``)."""

    job: Job
    status: Literal["ok", "failed"]
    output: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    cache_events: list[Any] = field(default_factory=list)
    people: Any = None

    def __post_init__(self) -> None:
        if self.status not in ("ok", "failed"):
            raise ValueError(f"status must be 'ok' or 'failed', got {self.status!r}")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def failure(
        cls, job: Job, error: BaseException | str, timings: dict[str, float] | None = None
    ) -> JobResult:
        """A failed result; an exception becomes ``"TypeName: message"``."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        return cls(job, "failed", None, dict(timings or {}), text)


def exit_code(results: Iterable[JobResult]) -> int:
    """0 when every job succeeded, 1 when any failed."""
    return 0 if all(r.ok for r in results) else 1


def run_jobs(
    engine: Engine,
    jobs: Sequence[Job],
    *,
    config: InferenceConfig,
    progress: bool = True,
    on_frames: Callable[[Job, Any], None] | None = None,
) -> list[JobResult]:
    """Run every job with the one loaded ``engine``; a failing job is recorded and the rest run.

    Each job writes its mp4 (atomically) and a JSON sidecar, also when it failed.
    """
    results: list[JobResult] = []
    for number, job in enumerate(jobs, start=1):
        logger.info(
            "[%d/%d] %s: image %s, video %s",
            number,
            len(jobs),
            job.name,
            job.case.ref_image_path,
            job.video_path,
        )
        output = None
        try:
            generated = engine.generate(job.case, progress=progress, label=job.name)
            start = time.perf_counter()
            output = reserve_output(job.output_path.parent, job.base_stem, video=True)
            output = write_video(output, generated.frames, fps=generated.fps)
            timings = dict(generated.timings, write=time.perf_counter() - start)
            result = JobResult(
                job,
                "ok",
                output,
                timings,
                cache_events=generated.cache_events,
                people=getattr(generated, "people", None),
            )
            if on_frames is not None:
                on_frames(job, generated.frames)
            logger.info(
                "[%d/%d] %s done: preprocess %.2fs, pipeline %.2fs, total %.2fs -> %s",
                number,
                len(jobs),
                job.name,
                timings.get("preprocess", 0.0),
                timings.get("pipeline", 0.0),
                timings.get("total", 0.0),
                output,
            )
        except MimicacheError as exc:
            logger.error("[%d/%d] %s failed: %s", number, len(jobs), job.name, exc)
            logger.debug("traceback", exc_info=True)
            result = JobResult.failure(job, exc)
        except Exception as exc:  # a bug or a runtime fault (out of memory...): isolate the job
            logger.exception("[%d/%d] %s failed unexpectedly", number, len(jobs), job.name)
            result = JobResult.failure(job, exc)
        except BaseException:  # interrupted: no empty claimed names are left behind
            if output is not None:
                release_output(output)
            raise
        _write_job_sidecar(engine, job, result, output, config)
        results.append(result)
    return results


def _write_job_sidecar(
    engine: Engine, job: Job, result: JobResult, output: Path | None, config: InferenceConfig
) -> None:
    """The sidecar under the job's claimed name (a failed job claims one now); a sidecar that
    cannot be written is a warning, not a failed job."""
    try:
        if not result.ok:
            if output is not None:  # claimed, then the write failed
                release_output(output)
            output = reserve_output(job.output_path.parent, job.base_stem, video=False)
        assert output is not None
        write_sidecar(
            job,
            result,
            config=config,
            model_files=engine.model_files,
            path=output.with_suffix(".json"),
            pose_retarget=getattr(engine, "pose_retarget", None),
        )
    except OSError as exc:
        logger.warning("could not write the sidecar of %s: %s", job.name, exc)
