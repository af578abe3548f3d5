"""The pieces of a self-contained report page: a row (``ReportRow``), its CSS, escaping,
tables, images as base64 data URIs, and the frames of an output video (``Videos``: a local mp4, a kept one, or an
object fetched once into a temporary folder). Frames are (N,H,W,3) uint8 RGB."""

from __future__ import annotations

import base64
import html
import io
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mimicache.batch.outputs.root import fetch_object, location
from mimicache.media import iter_frames, probe_video
from mimicache.storage.faults import fault_of
from mimicache.storage.objects import remote_url

if TYPE_CHECKING:  # numpy and PIL load when a report is drawn, not when the CLI starts
    import numpy as np
    import PIL.Image


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
td.num,td.nowrap{white-space:nowrap}
.ok{color:#1a7f37;font-weight:600} .failed{color:#c62828;font-weight:600}
.interrupted{color:#b26a00;font-weight:600} .suspect{color:#b26a00;font-weight:600}
.quality{margin:8px 0;padding:6px 10px;background:#fafafa;border-radius:4px}
.bar{display:flex;height:14px;min-width:2px;border-radius:2px;overflow:hidden;background:#eee}
.bar span{display:block;height:100%} .legend span{display:inline-block;margin-right:12px}
.swatch{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
.job{border:1px solid #e4e4e4;border-radius:6px;padding:10px 14px;margin:12px 0}
.job h3{font-size:15px;margin:0 0 6px} img{max-width:100%;border-radius:3px}
pre{background:#fbeaea;padding:8px 10px;border-radius:4px;white-space:pre-wrap}
pre.plain{background:#f6f6f6}
table.sortable th{cursor:pointer} table.sortable th:after{content:" \\2195";color:#aaa}
"""

# Sorts a ``table.sortable`` by the column clicked (numbers as numbers; again: reversed). The
# page reads the same without it: the rows start in the run's order.
SORT_SCRIPT = """<script>
document.querySelectorAll("table.sortable").forEach(function (t) {
  t.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var rows = Array.from(t.querySelectorAll("tr")).slice(1);
      var down = th.dataset.down !== "1"; th.dataset.down = down ? "1" : "0";
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.v || a.cells[col].textContent;
        var y = b.cells[col].dataset.v || b.cells[col].textContent;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
        return down ? c : -c;
      });
      rows.forEach(function (r) { t.appendChild(r); });
    });
  });
});
</script>"""


def escape(text: Any) -> str:
    return html.escape(str(text), quote=True)


def show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "-" if value is None else str(value)


def table(rows: Sequence[Sequence[str]], header: Sequence[str], numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{escape(c)}</td>' if i in numeric else f"<td>{escape(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def sortable_table(
    rows: Sequence[Sequence[str]], header: Sequence[str], numeric: Sequence[int] = ()
) -> str:
    """``table`` whose columns sort when their header is clicked (``SORT_SCRIPT``)."""
    return table(rows, header, numeric).replace("<table>", '<table class="sortable">', 1)


def png_uri(image: PIL.Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_uri(image: Path | PIL.Image.Image) -> str | None:
    import PIL.Image

    if isinstance(image, PIL.Image.Image):
        return png_uri(image)
    try:
        with PIL.Image.open(image) as opened:
            return png_uri(opened.convert("RGB"))
    except OSError as exc:
        logger.warning("report: cannot embed %s: %s", image, exc)
        return None


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
    quality: dict[str, Any] | None = None  # the clip's scores (ClipScore.to_dict())


class Videos:
    """The frames of each job's output: its own (``frames``), its local mp4, its object
    (fetched once into a temporary folder kept while the page is drawn) or its kept mp4.
    After an object could not be fetched, the others are not asked for: a store that failed
    once would make every job wait for its retries. Use as a context manager."""

    def __init__(self) -> None:
        self.store_failed: str | None = None
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._local: dict[str, Path | None] = {}

    def __enter__(self) -> Videos:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._folder is not None:
            self._folder.cleanup()

    def uri(self, job: ReportRow) -> tuple[str | None, str | None]:
        """(the strip as a data URI, or None and why there is none when it should have one)."""
        frames, missing = job.frames, None
        if frames is None:
            path, missing = self.local(job)
            frames = sample_video(path) if path is not None else None
        if frames is None or len(frames) == 0:
            return None, missing
        return png_uri(thumbnail_strip(frames)), None

    def local(self, job: ReportRow) -> tuple[Path | None, str | None]:
        """The job's video on this machine (None, and why, when there is none to show)."""
        if job.status in ("ok", "skipped") and job.output is not None:
            if remote_url(job.output) is None:
                return Path(job.output), None
            return self._fetched(Path(job.output))
        return (Path(job.kept), None) if job.kept is not None else (None, None)

    def _fetched(self, output: Path) -> tuple[Path | None, str | None]:
        url = location(output)
        if url in self._local:
            return self._local[url], None
        if self.store_failed is not None:
            return None, f"no thumbnails: the output store failed ({self.store_failed})"
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="mimicache-report-")
        target = Path(self._folder.name) / f"{len(self._local)}{Path(output).suffix}"
        try:
            self._local[url] = fetch_object(output, target)
        except Exception as exc:  # a report never fails a run
            self.store_failed = fault_of(exc).detail
            logger.warning(
                "report: no thumbnails of the outputs in object storage: %s could not be "
                "fetched (%s)",
                url,
                self.store_failed,
            )
            return None, f"no thumbnails: {url} could not be fetched ({self.store_failed})"
        return self._local[url], None


def frames_at(path: Path, indices: Sequence[int]) -> dict[int, np.ndarray]:
    """The frames of the video at ``indices`` (counted from 0); {} when it cannot be read."""
    wanted, found = set(indices), {}
    try:
        for i, frame in enumerate(iter_frames(path, 1)):
            if i in wanted:
                found[i] = frame
            if len(found) == len(wanted):
                break
    except Exception as exc:  # a report never fails a run
        logger.warning("report: cannot read frames of %s: %s", path, exc)
    return found


def sample_video(path: Path) -> np.ndarray | None:
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
