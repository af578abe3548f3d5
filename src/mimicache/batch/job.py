"""A job and what became of it, the one vocabulary from a finished generation to a report row:
``Job`` (a test case and where its mp4 goes), ``Outcome`` (what running it gave: the engine's
``GenerationResult`` or the error, and its result key) and ``JobResult`` (what the run
reports and records: status, output, timings, cache events, score). A report row is
``reporting.html.ReportRow``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mimicache.config import TestCase


@dataclass
class Job:
    """One generation: a test case (with its driving video) and where its mp4 goes.

    ``output_path`` is the name planned when the run started; the name really written is
    published only when the job's result is ready (``publish_output``), so a concurrent run that
    took the planned name in the meantime pushes this job to the next free ``_N``.
    """

    index: int  # 0-based position in the plan
    case_index: int  # index into config.test_case
    case: TestCase
    video_path: Path
    output_path: Path
    base_stem: str = ""  # the output name before any ``_N``; defaults to output_path's stem
    # a manifest job's origin: {"path": manifest path or URL, "row": n, "values": {...}}
    source: dict[str, Any] | None = None
    # a sweep variant's engine choices (flag keys: scheduler, speed, pose_retarget, ...), made
    # on the loaded models; its sweep ({"id": ..., "values": {...}}) and name part (seed1_g2.5)
    engine: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, Any] | None = None
    variant: str = ""

    def __post_init__(self) -> None:
        self.base_stem = self.base_stem or self.output_path.stem

    @property
    def name(self) -> str:
        """The video's name, and a sweep variant's values (``walk_seed1_g2.5``)."""
        return self.video_path.stem + (f"_{self.variant}" if self.variant else "")

    @property
    def sidecar_path(self) -> Path:
        return self.output_path.with_suffix(".json")


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
    # the clip's scores (quality.score.ClipScore.to_dict()); None: not scored
    quality: dict[str, Any] | None = None

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
    def from_outcome(cls, job: Job, outcome: Outcome, status: str, **fields: Any) -> JobResult:
        """A result with what ``outcome``'s generation recorded (timings, cache events, who
        was seen, where it ran) and its result key; ``fields`` the rest (output, error, the
        mp4's size and digest, kept) and any timings that replace the generation's."""
        generated = outcome.generated
        score = getattr(generated, "score", None)
        return cls(
            job,
            status,  # type: ignore[arg-type]
            timings=fields.pop("timings", outcome.timings),
            cache_events=list(generated.cache_events),
            people=getattr(generated, "people", None),
            platform=dict(getattr(generated, "platform", {})),
            result_key=outcome.result_key,
            quality=None if score is None else score.to_dict(),
            **fields,
        )

    @property
    def verdict(self) -> str | None:
        """The clip's quality verdict ("ok", "suspect"); None when it was not scored."""
        return None if self.quality is None else self.quality.get("verdict")

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
    """What running a job gave ``run.finish_job``: the engine's result (``generated``, an
    ``engine.GenerationResult``: frames (F,H,W,3) uint8, timings, cache events, who was seen,
    where it ran, the poses drawn) or the ``error`` text; the job's ``result_key`` (a
    ``ResultKey``, for ``--resume``)."""

    generated: Any = None
    error: str | None = None
    result_key: Any = None

    @property
    def timings(self) -> dict[str, float]:
        return dict(self.generated.timings) if self.generated is not None else {}
