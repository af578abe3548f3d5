"""A clip's scores in the report: the scores per part with the verdict and its reasons, the
per-frame error of each part as an inline SVG chart (no script), and the worst frames side by
side (the target skeleton | the clip's frame | the skeleton found in it); and the quality
overview of a run, worst clip first. ``quality`` is ``quality.score.ClipScore.to_dict()``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mimicache.batch.reporting.page import THUMB_HEIGHT, escape, png_uri, table
from mimicache.config.thresholds import PART_WORDS

if TYPE_CHECKING:
    import numpy as np

    from mimicache.batch.reporting.page import ReportRow

__all__ = [
    "PART_COLORS",
    "error_chart",
    "quality_overview",
    "quality_section",
    "worst_frames",
    "worst_part_error",
]

PARTS = tuple(PART_WORDS)
# Okabe and Ito's palette: told apart with any colour vision
PART_COLORS = {
    "body": "#0072B2",
    "left_hand": "#E69F00",
    "right_hand": "#D55E00",
    "face": "#009E73",
}
CHART = (560, 160)  # the per-frame chart's width and height in pixels


def _n(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def _share(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0%}"


def quality_section(quality: Mapping[str, Any], frames: Callable[[list[int]], dict]) -> str:
    """A job's scores (``frames(indices)`` gives the clip's frames at those indices, for the
    worst frames; {} when it has none)."""
    verdict = quality.get("verdict", "-")
    parts = [
        f'<div class="quality"><b>quality: <span class="{escape(verdict)}">'
        f"{escape(verdict)}</span></b>"
    ]
    parts += [f"<div>{escape(reason)}</div>" for reason in quality.get("reasons", [])]
    thresholds = quality.get("thresholds", {})
    rows = [
        (
            PART_WORDS[part],
            _n(score.get("error")),
            _n(thresholds.get(part)),
            _share(score.get("recall")),
            _n(score.get("dtw")),
        )
        for part in PARTS
        if (score := quality.get("parts", {}).get(part)) is not None
    ]
    parts.append(
        table(rows, ("part", "error", "threshold", "points shown", "time-warped"), (1, 2, 3, 4))
    )
    identity = quality.get("identity")
    extra = [
        (
            "identity (CLIP cosine to the reference)",
            f"{_n(identity)} (worst frame {quality.get('identity_worst_frame', '-')}: "
            f"{_n(quality.get('identity_min'))})"
            if identity is not None
            else "-",
        ),
        ("flicker", _n(quality.get("flicker"), 4)),
        ("frames scored", _frames_text(quality.get("frames", []))),
        ("body scale", f"{_n(quality.get('scale'), 1)} px (the reference's shoulder width)"),
    ]
    parts.append(table(extra, ("score", "value")))
    parts.append(error_chart(quality))
    worst = worst_frames(quality, frames)
    if worst:
        parts.append(
            '<div class="muted">worst frames: the target skeleton · the clip\'s frame · '
            "the skeleton found in it</div>"
        )
        parts.append(f'<img alt="worst frames" src="{worst}">')
    parts.append("</div>")
    return "".join(parts)


def _frames_text(frames: Sequence[int]) -> str:
    if not frames:
        return "-"
    step = "every frame" if list(frames) == list(range(len(frames))) else "evenly spaced"
    return f"{len(frames)} ({step}: {frames[0]} to {frames[-1]})"


def error_chart(quality: Mapping[str, Any]) -> str:
    """The per-frame error of each part over the scored frames (an SVG, one line each, its
    threshold dashed); empty when there is nothing to draw."""
    frames = list(quality.get("frames", []))
    series = {
        part: quality["parts"][part].get("errors", []) for part in PARTS if part in quality["parts"]
    }
    values = [v for s in series.values() for v in s if v is not None]
    if len(frames) < 2 or not values:
        return ""
    width, height = CHART
    pad_left, pad_bottom, pad_top = 36, 18, 8
    thresholds = quality.get("thresholds", {})
    top = max([*values, *(thresholds.get(p, 0) for p in series)], default=1.0) or 1.0
    span = max(frames[-1] - frames[0], 1)

    def x(frame: int) -> float:
        return pad_left + (width - pad_left - 4) * (frame - frames[0]) / span

    def y(value: float) -> float:
        return pad_top + (height - pad_top - pad_bottom) * (1 - min(value, top) / top)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="error per frame and part" style="font:11px sans-serif">',
        f'<line x1="{pad_left}" y1="{y(0):.1f}" x2="{width - 4}" y2="{y(0):.1f}" stroke="#999"/>',
        f'<text x="2" y="{y(top) + 4:.1f}">{top:.2f}</text><text x="2" y="{y(0):.1f}">0</text>',
        f'<text x="{pad_left}" y="{height - 3}">frame {frames[0]}</text>',
        f'<text x="{width - 4}" y="{height - 3}" text-anchor="end">{frames[-1]}</text>',
    ]
    for part, errors in series.items():
        color = PART_COLORS[part]
        if part in thresholds and thresholds[part] <= top:
            out.append(
                f'<line x1="{pad_left}" x2="{width - 4}" y1="{y(thresholds[part]):.1f}" '
                f'y2="{y(thresholds[part]):.1f}" stroke="{color}" stroke-dasharray="4 3" '
                'stroke-opacity="0.6"/>'
            )
        points = " ".join(f"{x(f):.1f},{y(v):.1f}" for f, v in zip(frames, errors) if v is not None)
        if points:
            out.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}">'
                f"<title>{escape(PART_WORDS[part])}</title></polyline>"
            )
    out.append("</svg>")
    legend = "".join(
        f'<span><i class="swatch" style="background:{PART_COLORS[p]}"></i>{escape(PART_WORDS[p])}</span>'
        for p in series
    )
    return (
        '<div class="muted">error per scored frame, in shoulder widths (dashed: thresholds)'
        f'</div>{"".join(out)}<div class="legend muted">{legend}</div>'
    )


def worst_frames(
    quality: Mapping[str, Any], frames: Callable[[list[int]], dict[int, np.ndarray]]
) -> str | None:
    """The worst frames as one PNG data URI: per frame a row of the target skeleton, the
    clip's frame (when ``frames`` gives it) and the skeleton found in it; None without any."""
    import numpy as np
    import PIL.Image

    from mimicache.pose.draw import draw_pose
    from mimicache.quality.points import points_pose

    worst = quality.get("worst") or []
    if not worst:
        return None
    shown = frames([w["frame"] for w in worst])
    rows = []
    for item in worst:
        clip = shown.get(item["frame"])
        height, width = clip.shape[:2] if clip is not None else _size_of(item)
        panels = [draw_pose(points_pose(np.array(item["target"]), height, width), height, width)]
        if clip is not None:
            panels.append(clip)
        panels.append(draw_pose(points_pose(np.array(item["found"]), height, width), height, width))
        rows.append(_row([PIL.Image.fromarray(p) for p in panels]))
    sheet = PIL.Image.new(
        "RGB", (max(r.width for r in rows), sum(r.height + 4 for r in rows)), "white"
    )
    top = 0
    for row in rows:
        sheet.paste(row, (0, top))
        top += row.height + 4
    return png_uri(sheet)


def _size_of(item: Mapping[str, Any]) -> tuple[int, int]:
    """A frame size that holds the points (when the clip's frame cannot be read)."""
    xs = [p[0] for p in (*item["target"], *item["found"])] or [1.0]
    ys = [p[1] for p in (*item["target"], *item["found"])] or [1.0]
    return max(16, int(max(ys)) + 16), max(16, int(max(xs)) + 16)


def _row(images: list) -> Any:
    import PIL.Image

    thumbs = [
        image.resize((max(1, round(image.width * THUMB_HEIGHT / image.height)), THUMB_HEIGHT))
        for image in images
    ]
    row = PIL.Image.new(
        "RGB", (sum(t.width for t in thumbs) + 4 * (len(thumbs) - 1), THUMB_HEIGHT), "white"
    )
    x = 0
    for thumb in thumbs:
        row.paste(thumb, (x, 0))
        x += thumb.width + 4
    return row


def worst_part_error(quality: Mapping[str, Any] | None) -> float | None:
    """The largest part error of a clip's scores (None: no part was measured)."""
    errors = [p.get("error") for p in ((quality or {}).get("parts") or {}).values()]
    return max((e for e in errors if e is not None), default=None)


def quality_overview(jobs: Sequence[ReportRow]) -> str:
    """The scored jobs, worst first (suspect before ok, then by their largest part error):
    the order a person checks a dataset in. Empty when no job was scored."""
    scored = [(i, j) for i, j in enumerate(jobs, start=1) if j.quality is not None]
    if not scored:
        return ""

    def worst(item: tuple[int, ReportRow]) -> tuple[bool, float]:
        quality = item[1].quality
        return quality.get("verdict") != "suspect", -(worst_part_error(quality) or 0.0)

    scored.sort(key=worst)
    head = "".join(
        f"<th>{escape(h)}</th>"
        for h in (
            "#",
            "job",
            "verdict",
            "body",
            "left hand",
            "right hand",
            "face",
            "identity",
            "flicker",
            "reasons",
        )
    )
    rows = []
    for number, job in scored:
        q = job.quality
        cells = [_n(q["parts"].get(p, {}).get("error")) for p in PARTS]
        rows.append(
            f'<tr><td class="num">{number}</td><td><a href="#job{number}">{escape(job.name)}</a>'
            f'</td><td class="{escape(q.get("verdict", ""))}">{escape(q.get("verdict", "-"))}</td>'
            + "".join(f'<td class="num">{c}</td>' for c in cells)
            + f'<td class="num">{_n(q.get("identity"))}</td>'
            f'<td class="num">{_n(q.get("flicker"), 4)}</td>'
            f"<td>{escape('; '.join(q.get('reasons', [])) or '-')}</td></tr>"
        )
    return (
        "<h2>Quality, worst first</h2>"
        '<div class="muted">errors in shoulder widths of the reference; see each job for its '
        "chart and worst frames</div>"
        f"<table><tr>{head}</tr>{''.join(rows)}</table>"
    )
