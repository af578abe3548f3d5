"""What became of a job: ``Outcome`` (what an executor hands over: the frames (F,H,W,3)
uint8 or the error) and ``JobResult`` (what the run reports: status, output, timings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mimicache.batch.plan import Job

STATUSES = ("ok", "failed", "skipped", "interrupted")


@dataclass
class JobResult:
    """What happened to one job. ``timings`` in seconds (``preprocess``, ``pipeline``,
    ``total`` and per-stage keys); ``error`` a one-line message for failed jobs; "skipped":
    ``--resume`` found the job's result (``output``) from an earlier run; "interrupted": the run
    was stopped (Ctrl-C) before the job finished; ``people`` who was
    seen in the driving video and who drove the pose (``pose.PeopleReport``); ``kept``: a
    "failed" job whose video the output store refused, kept on this machine (``unpublished``)
    for ``--resume`` to publish."""

    job: Job
    status: Literal["ok", "failed", "skipped", "interrupted"]
    output: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    cache_events: list[Any] = field(default_factory=list)
    people: Any = None
    platform: dict = field(default_factory=dict)  # where the video was computed
    result_key: Any = None  # a batch.resume.ResultKey; None for jobs not run here
    output_bytes: int | None = None  # the mp4's size and BLAKE3 digest, as published
    output_blake3: str | None = None
    # a failed job whose output store refused its files: the mp4 kept on this machine
    kept: Path | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {self.status!r}")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def done(self) -> bool:
        """Its result exists: made now ("ok") or found from an earlier run ("skipped")."""
        return self.status in ("ok", "skipped")

    @classmethod
    def failure(
        cls, job: Job, error: BaseException | str, timings: dict[str, float] | None = None
    ) -> JobResult:
        """A failed result; an exception becomes ``"TypeName: message"``."""
        return cls(job, "failed", None, dict(timings or {}), error_text(error))


def error_text(error: BaseException | str) -> str:
    return error if isinstance(error, str) else f"{type(error).__name__}: {error}"


@dataclass
class Outcome:
    """One job as an executor hands it to ``finish_job``: the frames, or the error."""

    frames: Any = None  # (F,H,W,3) uint8; None when the job failed
    fps: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    cache_events: list[Any] = field(default_factory=list)
    error: str | None = None
    result_key: Any = None  # a batch.resume.ResultKey, recorded in the sidecar
    people: Any = None  # pose.PeopleReport of the driving video
    platform: dict = field(default_factory=dict)  # engine.platform of the engine that made it

    @classmethod
    def generated(cls, result: Any, result_key: Any = None) -> Outcome:
        """The outcome of a job that ran: ``result`` is what ``engine.generate`` returned."""
        return cls(
            result.frames,
            result.fps,
            dict(result.timings),
            list(result.cache_events),
            result_key=result_key,
            people=getattr(result, "people", None),
            platform=dict(getattr(result, "platform", {})),
        )
