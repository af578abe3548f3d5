"""``report.html``: one self-contained page per run (inline CSS, images as base64 data URIs, no
script, nothing fetched): the parameters, a row per job with its status and per-stage timing
bar (seconds), the cache hits and misses with their reasons (seconds, MB), a thumbnail strip of
each output, and the failures with their messages. Frames in are (N,H,W,3) uint8 RGB.

An output in object storage is fetched once for its strip (a temporary file); when the store
cannot give it, the job says so plainly and the other objects are not asked for. A result the
store refused, kept on this machine, shows the kept mp4's strip."""

from __future__ import annotations

import base64
import html
import io
import logging
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mimicache.batch.outputs.root import fetch_object, location
from mimicache.engine.stage_names import STEP_COLORS, TOTALS
from mimicache.media import iter_frames, probe_video
from mimicache.storage.faults import fault_of
from mimicache.storage.files import atomic_write, printable
from mimicache.storage.objects import remote_url

if TYPE_CHECKING:  # numpy and PIL load when a report is drawn, not when the CLI starts
    import numpy as np
    import PIL.Image

if TYPE_CHECKING:
    from mimicache.batch.bench.cold_warm import BenchReport
    from mimicache.batch.job import JobResult

logger = logging.getLogger(__name__)

THUMBNAILS = 6  # frames in an output's strip
THUMB_HEIGHT = 120  # pixels
OTHER_COLOR = "#cccccc"

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
.muted{color:#777} table{border-collapse:collapse;margin:6px 0}
td,th{padding:4px 10px;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:top}
th{background:#f6f6f6;font-weight:600} td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1a7f37;font-weight:600} .failed{color:#c62828;font-weight:600}
.interrupted{color:#b26a00;font-weight:600}
.bar{display:flex;height:14px;min-width:2px;border-radius:2px;overflow:hidden;background:#eee}
.bar span{display:block;height:100%} .legend span{display:inline-block;margin-right:12px}
.swatch{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
.job{border:1px solid #e4e4e4;border-radius:6px;padding:10px 14px;margin:12px 0}
.job h3{font-size:15px;margin:0 0 6px} img{max-width:100%;border-radius:3px}
pre{background:#fbeaea;padding:8px 10px;border-radius:4px;white-space:pre-wrap}
pre.plain{background:#f6f6f6}
"""


@dataclass
class ReportRow:
    """One row of the report. ``timings`` in seconds; ``frames`` (N,H,W,3) uint8 for the strip
    (None: read from ``output`` when it is a video, fetched when it is a URL, else from
    ``kept``); ``notes`` extra lines (e.g. people); ``kept``: the mp4 of a result the output
    store refused, kept on this machine."""

    name: str
    status: str
    output: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    cache_events: list[Any] = field(default_factory=list)
    error: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    frames: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    kept: Path | None = None


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
        parameters=case_to_dict(result.job.case),
        notes=[f"people: {people.summary()}"] if people is not None else [],
        kept=result.kept,
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
) -> Path | None:
    """A run's (or a benchmark's: cold and warm rows, the comparison table and ``plot`` when
    it was drawn) report beside its log; a report that cannot be written is a warning, never
    a failed run. Returns its path, None when not written."""
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
        )
    except OSError as exc:
        logger.warning("could not write the report: %s", exc)
        return None
    logger.info("report: %s", path)
    return path


def write_report(
    path: str | Path,
    jobs: Sequence[ReportRow],
    *,
    title: str,
    parameters: Mapping[str, Any],
    sections: Sequence[tuple[str, str]] = (),
    images: Sequence[tuple[str, Path | PIL.Image.Image]] = (),
) -> Path:
    """Write the page atomically and return its path. ``sections``: (heading, preformatted
    text) shown after the jobs (e.g. the benchmark table); ``images``: (caption, image file or
    PIL image) embedded after those."""
    page = render_report(jobs, title=title, parameters=parameters, sections=sections, images=images)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, printable(page).encode("utf-8"))
    return path


def render_report(
    jobs: Sequence[ReportRow],
    *,
    title: str,
    parameters: Mapping[str, Any],
    sections: Sequence[tuple[str, str]] = (),
    images: Sequence[tuple[str, Path | PIL.Image.Image]] = (),
) -> str:
    """The page as one HTML string (see ``write_report``)."""
    from mimicache import __version__

    counts = Counter(j.status for j in jobs)
    tally = f"{counts['ok']} succeeded, {counts['failed']} failed"
    tally += "".join(f", {counts[s]} {s}" for s in ("interrupted", "skipped") if counts[s])
    created = datetime.now(timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    longest = max((_stage_sum(j.timings) for j in jobs), default=0.0) or 1.0
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<div class="muted">{_e(created)} · mimicache {_e(__version__)} · {len(jobs)} '
        f"job(s): {_e(tally)}</div>",
        "<h2>Parameters</h2>",
        _table([(str(k), _value(v)) for k, v in parameters.items()], ("parameter", "value")),
        "<h2>Jobs</h2>",
        _jobs_table(jobs, longest),
        _legend(jobs),
    ]
    failures = [j for j in jobs if j.status == "failed"]
    if failures:
        out.append("<h2>Failures</h2>")
        out += [
            f"<h3>{_e(j.name)}</h3><pre>{_e(j.error or 'unknown error')}</pre>" for j in failures
        ]
    strips = _Strips()
    out += [_job_section(i, j, strips) for i, j in enumerate(jobs, start=1)]
    for heading, text in sections:
        out.append(f'<h2>{_e(heading)}</h2><pre class="plain">{_e(text)}</pre>')
    for caption, image in images:
        uri = _image_uri(image)
        if uri:
            out.append(f'<h2>{_e(caption)}</h2><img alt="{_e(caption)}" src="{uri}">')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- pieces


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "-" if value is None else str(value)


def _table(
    rows: Sequence[Sequence[str]], header: Sequence[str], numeric: Sequence[int] = ()
) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_e(c)}</td>' if i in numeric else f"<td>{_e(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


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
        f'<span title="{_e(name)} {seconds:.2f} s" style="width:{100 * seconds / total:.2f}%;'
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


def _jobs_table(jobs: Sequence[ReportRow], longest: float) -> str:
    head = "".join(
        f"<th>{h}</th>" for h in ("#", "job", "status", "total", "stages", "cache", "output")
    )
    rows = []
    for i, job in enumerate(jobs, start=1):
        total = job.timings.get("total")
        rows.append(
            "<tr>"
            f'<td class="num">{i}</td><td><a href="#job{i}">{_e(job.name)}</a></td>'
            f'<td class="{_e(job.status)}">{_e(job.status)}</td>'
            f'<td class="num">{"-" if total is None else f"{total:.2f} s"}</td>'
            f'<td style="width:34%">{_bar(job.timings, longest)}</td>'
            f"<td>{_e(_cache_counts(job.cache_events))}</td>"
            f"<td>{_e(location(job.output)) if job.output else '-'}</td></tr>"
        )
    return f'<table style="width:100%"><tr>{head}</tr>{"".join(rows)}</table>'


def _legend(jobs: Sequence[ReportRow]) -> str:
    names: list[str] = []
    for job in jobs:
        names += [n for n, _ in _stages(job.timings) if n not in names]
    items = "".join(
        f'<span><i class="swatch" style="background:{STEP_COLORS.get(n, OTHER_COLOR)}"></i>'
        f"{_e(n)}</span>"
        for n in names
    )
    return f'<div class="legend muted">{items}</div>' if items else ""


def _job_section(number: int, job: ReportRow, strips: _Strips) -> str:
    parts = [f'<div class="job" id="job{number}"><h3>{number}. {_e(job.name)} · ']
    parts.append(f'<span class="{_e(job.status)}">{_e(job.status)}</span></h3>')
    if job.output:
        parts.append(f'<div class="muted">output: {_e(location(job.output))}</div>')
    if job.kept:
        parts.append(
            f'<div class="muted">kept on this machine, not published: {_e(job.kept)}</div>'
        )
    strip, missing = strips.uri(job)
    if strip:
        parts.append(f'<img alt="frames of {_e(job.name)}" src="{strip}">')
    elif missing:
        parts.append(f'<div class="muted">{_e(missing)}</div>')
    parts += [f"<div>{_e(note)}</div>" for note in job.notes]
    if job.error:
        parts.append(f"<pre>{_e(job.error)}</pre>")
    stages = [(name, f"{seconds:.3f} s") for name, seconds in job.timings.items()]
    if stages:
        parts.append(_table(stages, ("stage", "time"), {1}))
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
        parts.append(_table(rows, ("cache stage", "result", "reason", "time", "size"), {3, 4}))
    if job.parameters:
        parts.append(
            '<details><summary class="muted">parameters</summary>'
            + _table([(k, _value(v)) for k, v in job.parameters.items()], ("key", "value"))
            + "</details>"
        )
    parts.append("</div>")
    return "".join(parts)


# --------------------------------------------------------------------------- images


class _Strips:
    """Each job's thumbnail strip: from its frames, its local mp4, its object (fetched once to
    a temporary file) or its kept mp4. After an object could not be fetched, the others are
    not asked for: a store that failed once would make every job wait for its retries."""

    def __init__(self) -> None:
        self.store_failed: str | None = None

    def uri(self, job: ReportRow) -> tuple[str | None, str | None]:
        """(the strip as a data URI, or None and why there is none when it should have one)."""
        frames, missing = job.frames, None
        if frames is None and job.status == "ok" and job.output is not None:
            if remote_url(job.output) is None:
                frames = _sample_video(job.output)
            else:
                frames, missing = self._fetched(job.output)
        elif frames is None and job.kept is not None:
            frames = _sample_video(job.kept)
        if frames is None or len(frames) == 0:
            return None, missing
        return _png_uri(thumbnail_strip(frames)), None

    def _fetched(self, output: Path) -> tuple[np.ndarray | None, str | None]:
        url = location(output)
        if self.store_failed is not None:
            return None, f"no thumbnails: the output store failed ({self.store_failed})"
        with tempfile.TemporaryDirectory(prefix="mimicache-report-") as folder:
            try:
                local = fetch_object(output, Path(folder) / Path(output).name)
            except Exception as exc:  # a report never fails a run
                self.store_failed = fault_of(exc).detail
                logger.warning(
                    "report: no thumbnails of the outputs in object storage: %s could not be "
                    "fetched (%s)",
                    url,
                    self.store_failed,
                )
                return None, f"no thumbnails: {url} could not be fetched ({self.store_failed})"
            return _sample_video(local), None


def _sample_video(path: Path) -> np.ndarray | None:
    """Up to ``THUMBNAILS`` evenly spread frames of a video; None when it cannot be read."""
    import numpy as np

    try:
        count = probe_video(path).frame_count
        wanted = set(np.linspace(0, max(0, count - 1), THUMBNAILS).round().astype(int).tolist())
        picked = [f for i, f in enumerate(iter_frames(path, 1)) if i in wanted]
    except Exception as exc:  # a report never fails a run
        logger.warning("report: no thumbnails of %s: %s", path, exc)
        return None
    return np.stack(picked) if picked else None


def thumbnail_strip(frames: np.ndarray, count: int = THUMBNAILS) -> PIL.Image.Image:
    """Up to ``count`` evenly spread frames, ``THUMB_HEIGHT`` pixels high, side by side."""
    import numpy as np
    import PIL.Image

    picks = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    thumbs = []
    for i in picks:
        image = PIL.Image.fromarray(np.asarray(frames[i], dtype=np.uint8))
        width = max(1, round(image.width * THUMB_HEIGHT / image.height))
        thumbs.append(image.resize((width, THUMB_HEIGHT), PIL.Image.Resampling.BOX))
    gap = 4
    strip = PIL.Image.new(
        "RGB", (sum(t.width for t in thumbs) + gap * (len(thumbs) - 1), THUMB_HEIGHT), "white"
    )
    x = 0
    for thumb in thumbs:
        strip.paste(thumb, (x, 0))
        x += thumb.width + gap
    return strip


def _png_uri(image: PIL.Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _image_uri(image: Path | PIL.Image.Image) -> str | None:
    import PIL.Image

    if isinstance(image, PIL.Image.Image):
        return _png_uri(image)
    try:
        with PIL.Image.open(image) as opened:
            return _png_uri(opened.convert("RGB"))
    except OSError as exc:
        logger.warning("report: cannot embed %s: %s", image, exc)
        return None
