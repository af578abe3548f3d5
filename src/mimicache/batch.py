"""Batch runs: jobs = test cases x driving videos, output names, the run loop that isolates
each job's failure, sidecars, the summary table and the exit code. Models come in as an
already-loaded engine; nothing here loads them."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import itertools
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from mimicache.config import InferenceConfig, TestCase, case_to_dict
from mimicache.errors import InputError, MimicacheError, OutputError
from mimicache.media import new_file_mode, write_video

logger = logging.getLogger(__name__)

__all__ = [
    "SIDECAR_SCHEMA",
    "TIMESTAMP_FORMAT",
    "VIDEO_EXTENSIONS",
    "Job",
    "JobResult",
    "check_log_file",
    "check_output_folder",
    "exit_code",
    "format_summary",
    "list_videos",
    "make_timestamp",
    "override_tag",
    "plan_jobs",
    "reserve_log",
    "reserve_output",
    "run_jobs",
    "write_sidecar",
]

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi")
TIMESTAMP_FORMAT = "%Y%m%d%H%M%S"
SIDECAR_SCHEMA = 1


def make_timestamp(now: datetime | None = None) -> str:
    """``YYYYmmddHHMMSS`` of ``now`` (default: the local time now), as the seed scripts name
    their outputs."""
    return (now or datetime.now()).strftime(TIMESTAMP_FORMAT)


def list_videos(folder: str | Path) -> list[Path]:
    """The driving videos directly inside ``folder``, sorted by name.

    Extensions in ``VIDEO_EXTENSIONS`` (any case); hidden files (leading dot) and
    sub-folders are skipped. ``InputError`` if the folder is missing or holds no video.
    """
    path = Path(folder)
    if not path.exists():
        raise InputError(f"batch folder {path} does not exist (check --batch_folder)")
    if not path.is_dir():
        raise InputError(f"batch folder {path} is not a folder (check --batch_folder)")
    videos = [
        entry
        for entry in path.iterdir()
        if not entry.name.startswith(".")
        and entry.suffix.lower() in VIDEO_EXTENSIONS
        and entry.is_file()
    ]
    if not videos:
        raise InputError(
            f"batch folder {path} holds no video file ({', '.join(VIDEO_EXTENSIONS)}, any "
            "case; hidden files are skipped)"
        )
    return sorted(videos, key=lambda p: p.name)


@dataclass
class Job:
    """One generation: a test case (with its driving video) and where its mp4 goes.

    ``output_path`` is the name planned when the run started; the name really written is
    claimed only when the job's result is ready (``reserve_output``), so a concurrent run that
    took the planned name in the meantime pushes this job to the next free ``_N``.
    """

    index: int  # 0-based position in the plan
    case_index: int  # index into config.test_case
    case: TestCase
    video_path: Path
    output_path: Path
    base_stem: str = ""  # the output name before any ``_N``; defaults to output_path's stem

    def __post_init__(self) -> None:
        self.base_stem = self.base_stem or self.output_path.stem

    @property
    def name(self) -> str:
        return self.video_path.stem

    @property
    def sidecar_path(self) -> Path:
        return self.output_path.with_suffix(".json")


def plan_jobs(
    config: InferenceConfig,
    *,
    batch_folder: str | Path | None,
    output_dir: str | Path,
    timestamp: str,
    tag: str = "",
) -> list[Job]:
    """The jobs of one run, in order.

    Without ``batch_folder``: every test case as written, output
    ``{output_dir}/{video_stem}_{timestamp}.mp4``. With it: every test case x every video of
    the folder (case-major; the case's ``ref_video_path`` replaced by the video), output
    ``{output_dir}/{basename(batch_folder)}/{video_stem}_{timestamp}.mp4``. ``tag`` (see
    ``override_tag``) is appended to the stem as ``_{tag}``. A name that exists on disk (mp4 or
    its json sidecar) or is already planned gets ``_1``, ``_2``... The caller passes
    ``config.batch_video_folder`` when the command line gave no folder.
    """
    out = Path(output_dir)
    pairs: list[tuple[int, TestCase]] = []
    if batch_folder is None:
        pairs = list(enumerate(config.test_case))
        target = out
    else:
        folder = Path(batch_folder)
        videos = list_videos(folder)
        name = folder.resolve().name if folder.name in ("", ".", "..") else folder.name
        target = out / name
        for case_index, case in enumerate(config.test_case):
            pairs += [(case_index, case.replace(ref_video_path=video)) for video in videos]

    taken: set[Path] = set()
    jobs = []
    suffix = f"_{tag}" if tag else ""
    for index, (case_index, case) in enumerate(pairs):
        stem = f"{case.ref_video_path.stem}_{timestamp}{suffix}"
        output = next(p for p in _candidates(target, stem) if p not in taken and not _in_use(p))
        taken.add(output)
        jobs.append(Job(index, case_index, case, case.ref_video_path, output, stem))
    return jobs


def override_tag(overrides: dict[str, Any]) -> str:
    """A name part for the values a command line overrode, so runs of a sweep that start in
    the same second get names that tell them apart: ``{"seed": 1, "num_inference_steps": 8}``
    -> ``"seed1_steps8"``. ``None`` values are skipped; unknown keys are an error."""
    labels = {
        "seed": "seed",
        "num_inference_steps": "steps",
        "guidance_scale": "g",
        "noise_aug_strength": "aug",
        "scheduler": "",
    }
    parts = []
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in labels:
            raise ValueError(f"no name label for override {key!r}")
        text = {"AnimateLCM_SVD": "lcm", "EulerDiscreteScheduler": "euler"}.get(value, value)
        parts.append(f"{labels[key]}{text}")
    return "_".join(parts)


def _candidates(folder: Path, stem: str, suffix: str = ".mp4") -> Iterator[Path]:
    yield folder / f"{stem}{suffix}"
    for n in itertools.count(1):
        yield folder / f"{stem}_{n}{suffix}"


def _in_use(video: Path) -> bool:
    return video.exists() or video.with_suffix(".json").exists()


def _claim(path: Path) -> bool:
    """Create ``path`` empty if nothing is there; False if something is."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except FileExistsError:
        return False
    return True


def reserve_output(folder: Path, stem: str, *, video: bool) -> Path:
    """Claim the first free ``{stem}[_N].mp4`` name in ``folder`` for this process; return it.

    Claims are exclusive creates, so concurrent runs never get the same name: every job claims
    the sidecar (``.json``), and a job with a video also claims the ``.mp4`` first. The empty
    claimed files are then replaced whole (``write_video``, ``write_sidecar``). A name whose
    mp4 or sidecar exists is skipped.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for candidate in _candidates(folder, stem):
        sidecar = candidate.with_suffix(".json")
        if _in_use(candidate):
            continue
        if video and not _claim(candidate):
            continue
        if _claim(sidecar):
            return candidate
        if video:  # another run claimed the sidecar first: give the video name back
            candidate.unlink(missing_ok=True)
    raise AssertionError("unreachable: the candidate names never run out")


def check_output_folder(folder: str | Path, what: str = "output folder") -> Path:
    """Create ``folder`` if needed and prove a file can be written in it, before any work.

    ``OutputError`` naming the path when a file is in the way or the folder is read-only,
    full or not permitted.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".mimicache-write-check."):
            pass
    except (FileExistsError, NotADirectoryError):
        raise OutputError(
            f"{what} {folder} cannot be used: a file is in the way (the path or one of its "
            "parents is a regular file). Choose another folder."
        ) from None
    except OSError as exc:
        raise OutputError(
            f"{what} {folder} is not writable ({exc.strerror or exc}). Choose a folder you "
            "can write to."
        ) from None
    return folder


def check_log_file(path: str | Path) -> Path:
    """The log file's folder is writable and the path, if it exists, is a file we can append to."""
    path = Path(path)
    check_output_folder(path.parent, "log folder")
    if path.is_dir():
        raise OutputError(f"log file {path} is a folder. Choose a file path for the log.")
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise OutputError(
            f"log file {path} cannot be written ({exc.strerror or exc}). Choose another path."
        ) from None
    return path


def reserve_log(folder: Path, timestamp: str) -> Path:
    """``{folder}/{timestamp}.log``, or ``{timestamp}_N.log`` when a concurrent run has it."""
    folder.mkdir(parents=True, exist_ok=True)
    return next(p for p in _candidates(folder, timestamp, ".log") if _claim(p))


@dataclass
class JobResult:
    """What happened to one job. ``timings`` in seconds (``preprocess``, ``pipeline``,
    ``total`` and per-stage keys); ``error`` a one-line message for failed jobs."""

    job: Job
    status: Literal["ok", "failed"]
    output: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    cache_events: list[Any] = field(default_factory=list)

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


def write_sidecar(
    job: Job,
    result: JobResult,
    *,
    config: InferenceConfig,
    model_files: dict[str, Any],
    path: Path | None = None,
    pose_retarget: str | None = None,
) -> Path:
    """Write the JSON sidecar (default: next to the job's mp4, same stem, ``.json``) and
    return its path.

    Holds the case's parameters, the pose retarget mode, the model files, the timings, the
    cache events (dataclasses through ``asdict``), the status and the mimicache version.
    Written atomically.
    """
    from mimicache import __version__

    video = result.output if result.output is not None else job.output_path
    path = Path(path) if path is not None else Path(video).with_suffix(".json")
    data = {
        "schema": SIDECAR_SCHEMA,
        "mimicache_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": result.status,
        "error": result.error,
        "output": str(video) if result.output is not None else None,
        "job": {"index": job.index, "name": job.name, "case_index": job.case_index},
        "config_file": None if config.source_path is None else str(config.source_path),
        "parameters": case_to_dict(job.case),
        "pose_retarget": pose_retarget,
        "base_model_path": str(config.base_model_path),
        "model_files": {str(k): _jsonable(v) for k, v in model_files.items()},
        "timings": {str(k): float(v) for k, v in result.timings.items()},
        "cache_events": [_jsonable(e) for e in result.cache_events],
    }
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, new_file_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(value)


_SUMMARY_HEADER = ("#", "job", "status", "preprocess", "pipeline", "total", "output")
_ERROR_WIDTH = 80


def format_summary(results: Sequence[JobResult] | Iterable[JobResult]) -> str:
    """A text table: job, status, the three timings (seconds, 2 decimals) and the output
    (failed jobs: a short error), then ``"N succeeded, M failed"``."""
    results = list(results)
    rows = [_SUMMARY_HEADER]
    for r in results:
        if r.ok:
            last = str(r.output if r.output is not None else r.job.output_path)
        else:
            last = "error: " + _short(r.error or "unknown error")
        rows.append(
            (
                str(r.job.index + 1),
                _job_label(r.job, results),
                r.status,
                _seconds(r.timings.get("preprocess")),
                _seconds(r.timings.get("pipeline")),
                _seconds(r.timings.get("total")),
                last,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_SUMMARY_HEADER) - 1)]
    right = {0, 3, 4, 5}
    lines = []
    for row in rows:
        cells = [
            row[i].rjust(widths[i]) if i in right else row[i].ljust(widths[i])
            for i in range(len(widths))
        ]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    ok = sum(r.ok for r in results)
    lines.append(f"{ok} succeeded, {len(results) - ok} failed")
    return "\n".join(lines)


def _job_label(job: Job, results: list[JobResult]) -> str:
    several_cases = len({r.job.case_index for r in results}) > 1
    return f"{job.name} (case {job.case_index})" if several_cases else job.name


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _short(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return line if len(line) <= _ERROR_WIDTH else line[: _ERROR_WIDTH - 3] + "..."


def exit_code(results: Iterable[JobResult]) -> int:
    """0 when every job succeeded, 1 when any failed."""
    return 0 if all(r.ok for r in results) else 1


def run_jobs(
    engine: Any,
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
            result = JobResult(job, "ok", output, timings, cache_events=generated.cache_events)
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
                _release(output)
            raise
        try:
            if not result.ok:
                if output is not None:  # claimed, then the write failed
                    _release(output)
                output = reserve_output(job.output_path.parent, job.base_stem, video=False)
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
        results.append(result)
    return results


def _release(video: Path) -> None:
    """Remove a claimed name whose job did not finish (empty placeholders only)."""
    for path in (video, video.with_suffix(".json")):
        with contextlib.suppress(OSError):
            if path.stat().st_size == 0:
                path.unlink()
