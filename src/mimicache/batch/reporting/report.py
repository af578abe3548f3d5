"""What a run leaves behind besides its videos: one JSON sidecar per job (parameters, model
files, timings in seconds, cache events, status) and the text summary table; ``text_table``
is the one plain-text table layout every command prints."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mimicache.batch.outputs.root import location
from mimicache.config import InferenceConfig, case_to_dict
from mimicache.errors import setting
from mimicache.storage.files import atomic_write, printable
from mimicache.storage.json_values import to_json_value

if TYPE_CHECKING:
    from mimicache.batch.job import Job, JobResult

SIDECAR_SCHEMA = 1
_SURROGATE = re.compile("[\ud800-\udfff]")


def write_sidecar(job: Job, result: JobResult, *, path: Path | None = None, **details: Any) -> Path:
    """Write the JSON sidecar ``sidecar_bytes(job, result, **details)`` atomically (default:
    next to the job's mp4, same stem, ``.json``) and return its path."""
    video = result.output if result.output is not None else job.output_path
    path = Path(path) if path is not None else Path(video).with_suffix(".json")
    data = sidecar_bytes(job, result, **details)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)
    return path


def sidecar_bytes(
    job: Job,
    result: JobResult,
    *,
    config: InferenceConfig,
    model_files: dict[str, Any],
    pose_retarget: str | None = None,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """The JSON sidecar of a job: the case's parameters, the pose retarget mode, the model
    files, the timings, the cache events (dataclasses through ``asdict``), the platform, the
    status and the mimicache version (UTF-8)."""
    from mimicache import __version__

    video = result.output if result.output is not None else job.output_path
    data = {
        "schema": SIDECAR_SCHEMA,
        "mimicache_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": result.status,
        "error": result.error,
        "output": location(video) if result.output is not None else None,
        "job": {"index": job.index, "name": job.name, "case_index": job.case_index},
        "config_file": None if config.source_path is None else str(config.source_path),
        "parameters": case_to_dict(job.case),
        "pose_retarget": pose_retarget,
        "base_model_path": str(config.base_model_path),
        "model_files": {str(k): to_json_value(v, canonical=False) for k, v in model_files.items()},
        "timings": {str(k): float(v) for k, v in result.timings.items()},
        "cache_events": [to_json_value(e, canonical=False) for e in result.cache_events],
        **{str(k): to_json_value(v, canonical=False) for k, v in (extra or {}).items()},
    }
    if job.source is not None:  # the manifest row the job came from
        data["manifest"] = to_json_value(job.source, canonical=False)
    if job.sweep is not None:  # the sweep and the values of this variant
        data["sweep"] = to_json_value(job.sweep, canonical=False)
    platform = getattr(result, "platform", None)
    if platform:  # the device, threads and library versions the video was computed with
        data["platform"] = to_json_value(platform, canonical=False)
    people = getattr(result, "people", None)
    if people is not None:  # who drove the pose (pose.person)
        data["people"] = to_json_value(people.to_dict(), canonical=False)
    quality = getattr(result, "quality", None)
    if quality is not None:  # the clip's scores against the poses it was asked for
        data["quality"] = to_json_value(quality, canonical=False)
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    # Surrogates (a file name that is not UTF-8) only occur inside JSON strings: written as
    # \\uXXXX escapes they stay valid UTF-8 JSON and load back as the exact name.
    text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text.encode("utf-8")


def text_table(
    rows: Sequence[Sequence[str]],
    *,
    right: Iterable[int] = (),
    sep: str = "  ",
    min_widths: Sequence[int] = (),
) -> str:
    """Rows of cells as aligned plain text: each column as wide as its widest cell (or
    ``min_widths[i]``), columns in ``right`` right-aligned, ``sep`` between columns, no
    trailing spaces. The first row is usually the header."""
    right = set(right)
    columns = max(len(r) for r in rows)
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(columns)]
    widths = [max(w, m) for w, m in zip(widths, [*min_widths, *[0] * columns])]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append(sep.join(cells).rstrip())
    return "\n".join(lines)


_SUMMARY_HEADER = ("#", "job", "status", "quality", "preprocess", "pipeline", "total", "output")


def format_summary(results: Sequence[JobResult] | Iterable[JobResult]) -> str:
    """A text table: job, status, the three timings (seconds, 2 decimals) and the output
    (failed jobs: a short error), then ``"N succeeded, M failed"`` (``, K interrupted`` when
    Ctrl-C stopped the run, ``, K skipped (done)`` when ``--resume`` found results of an
    earlier run); outputs are named as given (``s3://...``). Then, when an output store
    refused some results, the folders on this machine they are kept in."""
    results = list(results)
    rows = [_SUMMARY_HEADER]
    for r in results:
        if r.done:
            last = _tidy(location(r.output if r.output is not None else r.job.output_path))
        elif r.status == "interrupted":
            last = "-"
        else:  # the whole first line: the path it names is the point of the message
            last = "error: " + _first_line(r.error or "unknown error")
        rows.append(
            (
                str(r.job.index + 1),
                _job_label(r.job, results),
                "skipped (done)" if r.status == "skipped" else r.status,
                getattr(r, "verdict", None) or "-",
                _seconds(r.timings.get("preprocess")),
                _seconds(r.timings.get("pipeline")),
                _seconds(r.timings.get("total")),
                last,
            )
        )
    ok = sum(r.ok for r in results)
    skipped = sum(r.status == "skipped" for r in results)
    stopped = sum(r.status == "interrupted" for r in results)
    summary = f"{ok} succeeded, {len(results) - ok - skipped - stopped} failed"
    if stopped:
        summary += f", {stopped} interrupted"
    if skipped:
        summary += f", {skipped} skipped (done)"
    suspect = [r for r in results if getattr(r, "verdict", None) == "suspect"]
    if suspect:
        summary += f"; {len(suspect)} suspect (their reasons are in the sidecars and the report)"
    kept = [r.kept for r in results if r.kept is not None]
    if kept:
        folders = ", ".join(sorted({str(path.parent) for path in kept}))
        summary += (
            f"\n{len(kept)} result(s) not published (the output store refused them), kept on "
            f"this machine in {folders}: a run with {setting('resume', True)} publishes them"
        )
    return printable(text_table(rows, right=(0, 4, 5, 6)) + "\n" + summary)


def _job_label(job: Job, results: list[JobResult]) -> str:
    several_cases = len({r.job.case_index for r in results}) > 1
    return f"{job.name} (case {job.case_index})" if several_cases else job.name


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"


def _tidy(where: str | None) -> str:
    """A local path without ``..`` and ``.`` parts; a URL as it is."""
    if where is None:
        return "-"
    return where if "://" in where else os.path.normpath(where)
