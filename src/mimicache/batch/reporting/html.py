"""``report.html``: one self-contained page per run (inline CSS, images as base64 data URIs, a
few lines of inline script to sort a sweep's tables, nothing fetched): the parameters, a row per
job with its status and per-stage timing bar (seconds), the cache hits and misses with their
reasons (seconds, MB), a thumbnail strip of each output, a sweep's grids, and the failures with
their messages. Frames in are (N,H,W,3) uint8 RGB.

An output in object storage is fetched once for its strip (a temporary file); when the store
cannot give it, the job says so plainly and the other objects are not asked for. A result the
store refused, kept on this machine, shows the kept mp4's strip."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mimicache.batch.outputs.root import location
from mimicache.batch.reporting.page import (
    CSS,
    OTHER_COLOR,
    SORT_SCRIPT,
    ReportRow,
    Videos,
    escape,
    frames_at,
    image_uri,
    show,
    table,
)
from mimicache.batch.reporting.scores import quality_overview, quality_section
from mimicache.engine.stage_names import STEP_COLORS, TOTALS
from mimicache.storage.files import atomic_write, printable

if TYPE_CHECKING:  # numpy and PIL load when a report is drawn, not when the CLI starts
    import PIL.Image

if TYPE_CHECKING:
    from mimicache.batch.bench.cold_warm import BenchReport
    from mimicache.batch.job import JobResult
    from mimicache.batch.reporting.grid import GridFiles

logger = logging.getLogger(__name__)


def report_row(result: JobResult, *, label: str = "") -> ReportRow:
    """A batch result as a report row (``label``: e.g. ``cold``/``warm``, added to the name)."""
    from mimicache.config import case_to_dict

    people = getattr(result, "people", None)
    return ReportRow(
        name=result.job.name + (f" ({label})" if label else ""),
        status=result.status,
        output=result.output,
        timings=dict(result.timings),
        cache_events=list(result.cache_events),
        error=result.error,
        parameters={**case_to_dict(result.job.case), **result.job.engine},
        notes=[f"people: {people.summary()}"] if people is not None else [],
        kept=result.kept,
        quality=result.quality,
    )


def report_path(log_file: str | Path) -> Path:
    """The report beside a run's log: ``{log stem}.report.html``."""
    log_file = Path(log_file)
    return log_file.with_name(log_file.stem + ".report.html")


def write_run_report(
    log_file: Path,
    results: Sequence[JobResult],
    *,
    parameters: Mapping[str, Any],
    bench: BenchReport | None = None,
    plot: str | Path | None = None,
    grids: Sequence[GridFiles] = (),
    earlier: Sequence[str] = (),
) -> Path | None:
    """A run's (or a benchmark's: cold and warm rows, the comparison table and ``plot`` when
    it was drawn) report beside its log, with its sweep's ``grids``; a report that cannot be
    written is a warning, never a failed run. Returns its path, None when not written."""
    sections: list[tuple[str, str]] = []
    images: list[tuple[str, Path | PIL.Image.Image]] = []
    if bench is None:
        jobs = [report_row(r) for r in results]
    else:
        jobs = [report_row(r, label="cold") for r in bench.cold]
        jobs += [report_row(r, label="warm") for r in bench.warm]
        sections.append(("Cold vs warm", bench.table))
        if plot and Path(plot).is_file():
            images.append(("Cold vs warm per stage", Path(plot)))
    command = parameters.get("command", "run")
    title = f"mimicache {command}: {len(results)} job(s)"
    if bench is not None:
        title = f"mimicache {command}: {len(bench.cold)} job(s), cold and warm"
    try:
        path = write_report(
            report_path(log_file),
            jobs,
            title=title,
            parameters=parameters,
            sections=sections,
            images=images,
            blocks=[*_earlier_block(earlier), *_sweep_blocks(grids)],
        )
    except OSError as exc:
        logger.warning("could not write the report: %s", exc)
        return None
    logger.info("report: %s", path)
    return path


def _earlier_block(names: Sequence[str]) -> list[str]:
    """Links to the reports of earlier runs in the same folder (a resumed batch's others)."""
    if not names:
        return []
    links = "".join(f'<li><a href="{escape(n)}">{escape(n)}</a></li>' for n in names)
    return [f'<div class="muted">earlier runs in this folder:</div><ul>{links}</ul>']


def _sweep_blocks(grids: Sequence[GridFiles]) -> list[str]:
    if not grids:
        return []
    from mimicache.batch.reporting.grid import grid_section

    return ["<h2>Sweeps, side by side</h2>", *(grid_section(g) for g in grids)]


def write_report(path: str | Path, jobs: Sequence[ReportRow], **page: Any) -> Path:
    """Write the page (``render_report(jobs, **page)``) atomically and return its path."""
    text = render_report(jobs, **page)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, printable(text).encode("utf-8"))
    return path


def render_report(
    jobs: Sequence[ReportRow],
    *,
    title: str,
    parameters: Mapping[str, Any],
    sections: Sequence[tuple[str, str]] = (),
    images: Sequence[tuple[str, Path | PIL.Image.Image]] = (),
    blocks: Sequence[str] = (),
) -> str:
    """The page as one HTML string: ``title``, the run's ``parameters``, the jobs;
    ``sections``: (heading, preformatted text) shown after the jobs (e.g. the benchmark
    table); ``images``: (caption, image file or PIL image) embedded after those; ``blocks``:
    HTML shown after the jobs table (a sweep's grids, links to earlier runs)."""
    from mimicache import __version__

    counts = Counter(j.status for j in jobs)
    tally = f"{counts['ok']} succeeded, {counts['failed']} failed"
    tally += "".join(f", {counts[s]} {s}" for s in ("interrupted", "skipped") if counts[s])
    created = datetime.now(timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    longest = max((_stage_sum(j.timings) for j in jobs), default=0.0) or 1.0
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<div class="muted">{escape(created)} · mimicache {escape(__version__)} · {len(jobs)} '
        f"job(s): {escape(tally)}</div>",
        *_settings(jobs, parameters),
        "<h2>Parameters</h2>",
        table(
            [(str(k), show(v)) for k, v in parameters.items() if k not in _SETTING_NAMES],
            ("parameter", "value"),
        ),
        "<h2>Jobs</h2>",
        _jobs_table(jobs, longest, _differing(jobs)),
        _legend(jobs),
        *blocks,
        quality_overview(jobs),
    ]
    failures = [j for j in jobs if j.status == "failed"]
    if failures:
        out.append("<h2>Failures</h2>")
        out += [
            f"<h3>{escape(j.name)}</h3><pre>{escape(j.error or 'unknown error')}</pre>"
            for j in failures
        ]
    with Videos() as videos:
        out += [_job_section(i, j, videos) for i, j in enumerate(jobs, start=1)]
    for heading, text in sections:
        out.append(f'<h2>{escape(heading)}</h2><pre class="plain">{escape(text)}</pre>')
    for caption, image in images:
        uri = image_uri(image)
        if uri:
            out.append(f'<h2>{escape(caption)}</h2><img alt="{escape(caption)}" src="{uri}">')
    if any('class="sortable"' in part for part in out):
        out.append(SORT_SCRIPT)
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- pieces


def _stages(timings: Mapping[str, float]) -> list[tuple[str, float]]:
    return [(k, float(v)) for k, v in timings.items() if k not in TOTALS and v > 0]


def _stage_sum(timings: Mapping[str, float]) -> float:
    return sum(v for _, v in _stages(timings))


def _bar(timings: Mapping[str, float], longest: float) -> str:
    """Segments per stage, the bar's length relative to the longest job's."""
    stages = _stages(timings)
    total = sum(v for _, v in stages)
    if total <= 0:
        return '<span class="muted">-</span>'
    spans = "".join(
        f'<span title="{escape(name)} {seconds:.2f} s" style="width:{100 * seconds / total:.2f}%;'
        f'background:{STEP_COLORS.get(name, OTHER_COLOR)}"></span>'
        for name, seconds in stages
    )
    return f'<div class="bar" style="width:{max(2.0, 100 * total / longest):.1f}%">{spans}</div>'


def _size(count: int) -> str:
    """Bytes in kB below a megabyte, else MB (decimal units)."""
    return f"{count / 1e3:.1f} kB" if count < 1_000_000 else f"{count / 1e6:.2f} MB"


def _cache_counts(events: Sequence[Any]) -> str:
    hits = sum(bool(getattr(e, "hit", False)) for e in events)
    return f"{hits} hit(s), {len(events) - hits} miss(es)" if events else "not used"


# The values a run's jobs are made with, shown at the top of its report (one value, or the
# values when the jobs differ).
SETTINGS = (
    ("num_inference_steps", "steps"),
    ("guidance_scale", "guidance"),
    ("seed", "seed"),
    ("resolution", "resolution"),
    ("num_frames", "frames per tile"),
    ("frames_overlap", "tile overlap"),
    ("noise_aug_strength", "noise augmentation"),
    ("sample_stride", "sample stride"),
    ("fps", "fps"),
    ("scheduler", "scheduler"),
    ("speed", "speed"),
)


_SETTING_NAMES = {name for _, name in SETTINGS}  # shown in the settings, not again


def _values(jobs: Sequence[ReportRow], key: str) -> list[Any]:
    seen: list[Any] = []
    for job in jobs:
        if key in job.parameters and job.parameters[key] not in seen:
            seen.append(job.parameters[key])
    return seen


def _settings(jobs: Sequence[ReportRow], run: Mapping[str, Any]) -> list[str]:
    """The values the jobs were made with (the run's own where no job names one)."""
    rows = []
    for key, name in SETTINGS:
        values = _values(jobs, key) or ([run[name]] if run.get(name) is not None else [])
        if values:
            text = ", ".join(show(v) for v in values)
            rows.append((name, text + (" (differs per job)" if len(values) > 1 else "")))
    return ["<h2>Settings</h2>", table(rows, ("setting", "value"))] if rows else []


def _differing(jobs: Sequence[ReportRow]) -> list[str]:
    """The parameters whose value differs between the jobs (a column each)."""
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.parameters if k not in keys]
    return [k for k in keys if len(_values(jobs, k)) > 1 and k != "ref_video_path"]


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    return Path(str(value)).name if key.endswith("_path") else show(value)


def _jobs_table(jobs: Sequence[ReportRow], longest: float, columns: Sequence[str] = ()) -> str:
    names = dict(SETTINGS)
    header = ("#", "job", *(names.get(k, k) for k in columns), "status", "total", "stages")
    head = "".join(f"<th>{escape(h)}</th>" for h in (*header, "cache", "output"))
    rows = []
    for i, job in enumerate(jobs, start=1):
        total = job.timings.get("total")
        values = "".join(
            f'<td class="{"num" if isinstance(v, (int, float)) else "nowrap"}">'
            f"{escape(_cell(k, v))}</td>"
            for k in columns
            for v in [job.parameters.get(k)]
        )
        rows.append(
            "<tr>"
            f'<td class="num">{i}</td><td><a href="#job{i}">{escape(job.name)}</a></td>{values}'
            f'<td class="{escape(job.status)}">{escape(job.status)}</td>'
            f'<td class="num">{"-" if total is None else f"{total:.2f}&nbsp;s"}</td>'
            f'<td style="width:30%">{_bar(job.timings, longest)}</td>'
            f'<td class="nowrap">{escape(_cache_counts(job.cache_events))}</td>'
            f"<td>{escape(location(job.output)) if job.output else '-'}</td></tr>"
        )
    return f'<table style="width:100%"><tr>{head}</tr>{"".join(rows)}</table>'


def _legend(jobs: Sequence[ReportRow]) -> str:
    names: list[str] = []
    for job in jobs:
        names += [n for n, _ in _stages(job.timings) if n not in names]
    items = "".join(
        f'<span><i class="swatch" style="background:{STEP_COLORS.get(n, OTHER_COLOR)}"></i>'
        f"{escape(n)}</span>"
        for n in names
    )
    return f'<div class="legend muted">{items}</div>' if items else ""


def _job_section(number: int, job: ReportRow, strips: Videos) -> str:
    parts = [f'<div class="job" id="job{number}"><h3>{number}. {escape(job.name)} · ']
    parts.append(f'<span class="{escape(job.status)}">{escape(job.status)}</span></h3>')
    if job.output:
        parts.append(f'<div class="muted">output: {escape(location(job.output))}</div>')
    if job.kept:
        parts.append(
            f'<div class="muted">kept on this machine, not published: {escape(job.kept)}</div>'
        )
    strip, missing = strips.uri(job)
    if job.quality is not None:
        parts.append(quality_section(job.quality, lambda indices: _frames(strips, job, indices)))
    if strip:
        parts.append(f'<img alt="frames of {escape(job.name)}" src="{strip}">')
    elif missing:
        parts.append(f'<div class="muted">{escape(missing)}</div>')
    parts += [f"<div>{escape(note)}</div>" for note in job.notes]
    if job.error:
        parts.append(f"<pre>{escape(job.error)}</pre>")
    stages = [(n, f"{v:.3f} s") for n, v in job.timings.items() if n not in TOTALS]
    if stages:
        parts.append(table(stages, ("stage", "time"), {1}))
    totals = [f"{n} {job.timings[n]:.3f} s" for n in TOTALS if n in job.timings]
    if totals:  # sums of the stages above: apart from them
        parts.append(f'<div class="muted">totals: {escape(" · ".join(totals))}</div>')
    if job.cache_events:
        rows = [
            (
                str(getattr(e, "stage", "?")),
                "hit" if getattr(e, "hit", False) else "miss",
                str(getattr(e, "reason", "")),
                f"{float(getattr(e, 'seconds', 0.0)):.3f} s",
                _size(int(getattr(e, "bytes", 0))),
            )
            for e in job.cache_events
        ]
        parts.append(table(rows, ("cache stage", "result", "reason", "time", "size"), {3, 4}))
    if job.parameters:
        parts.append(
            '<details><summary class="muted">parameters</summary>'
            + table([(k, show(v)) for k, v in job.parameters.items()], ("key", "value"))
            + "</details>"
        )
    parts.append("</div>")
    return "".join(parts)


# --------------------------------------------------------------------------- images


def _frames(videos: Videos, job: ReportRow, indices: list[int]) -> dict:
    """The job's output frames at ``indices``: from its own frames, else from its video."""
    if job.frames is not None:
        return {i: job.frames[i] for i in indices if 0 <= i < len(job.frames)}
    path, _ = videos.local(job)
    return frames_at(path, indices) if path is not None else {}
