"""Sweep grids: for every (reference, video) pair of a sweep, its variants' finished clips side by
side. ``{base}_grid.mp4`` plays every variant as a tile, in step (a shorter clip holds its last
frame), each labelled with the values that differ between the variants and its score;
``{base}_grid.png`` is a sheet of a few frames, one row per variant. Both are drawn from the
written mp4s, so a grid can be made after the run (``mimicache grid``) and never holds up a
job. Frames are (F, H, W, 3) uint8 RGB.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

from mimicache.batch.reporting.scores import worst_part_error
from mimicache.errors import ConfigError, setting

logger = logging.getLogger(__name__)

__all__ = [
    "GridClip",
    "GridFiles",
    "GridGroup",
    "folder_of",
    "grid_frames",
    "grid_layout",
    "grid_sheet",
    "grids_of_results",
    "groups_of",
    "tile_label",
    "write_grid",
]

GRID_MAX_WIDTH = 1920  # the grid video is scaled down to fit this width
SHEET_FRAMES = 4  # frames per variant on the sheet
FONT_SIZE = 12
_SHORT = {
    "num_inference_steps": "steps",
    "guidance_scale": "g",
    "noise_aug_strength": "aug",
    "AnimateLCM_SVD": "lcm",
    "EulerDiscreteScheduler": "euler",
}


@dataclass(frozen=True)
class GridClip:
    """One variant: its mp4 (a path or URL), its swept values, its score (or None), its frame
    rate, and for the report its job's name and seconds."""

    video: str
    values: Mapping[str, Any]
    quality: Mapping[str, Any] | None = None
    fps: float = 7.0
    name: str = ""
    seconds: float | None = None


@dataclass
class GridGroup:
    """The variants of one (reference, video) pair of a sweep: ``base`` the pair's output name
    without the variants' values (the grid is ``{base}_grid.mp4``), ``folder`` where the
    variants were written (a path or URL), ``keys`` the swept keys in the sweep's order."""

    sweep_id: str
    base: str
    folder: str
    keys: tuple[str, ...]
    clips: list[GridClip] = field(default_factory=list)

    def add(self, clip: GridClip, base: str) -> None:
        """``clip`` as its variant's tile; of a variant made twice (a sweep run again), the
        newest (names end in their run's time), whose base then names the grid too."""
        self.base = max(self.base, base)
        same = next((i for i, c in enumerate(self.clips) if c.values == clip.values), None)
        if same is None:
            self.clips.append(clip)
        elif str(clip.video) > str(self.clips[same].video):
            self.clips[same] = clip

    def differing(self) -> list[str]:
        """The swept keys whose value differs between the variants."""
        return [k for k in self.keys if len({repr(c.values.get(k)) for c in self.clips}) > 1]


def groups_of(items: Iterable[tuple[Mapping[str, Any] | None, GridClip, str]]) -> list[GridGroup]:
    """The sweep groups of finished clips: ``(sweep, clip, folder)`` per clip (``sweep``: a
    job's or sidecar's ``{"id", "values", "base", "keys", "job"}``; None: not a sweep), one
    group per sweep, folder and planned job (``job``: its place in the plan, the same in
    every shard and resumed run; records without it: the base name); groups of one variant
    are left out."""
    groups: dict[tuple[str, str, str], GridGroup] = {}
    for sweep, clip, folder in items:
        if not sweep or not sweep.get("base"):
            continue
        base = str(sweep["base"])
        key = (str(sweep["id"]), folder, str(sweep.get("job", base)))
        if key not in groups:
            keys = tuple(sweep.get("keys") or sweep["values"])
            groups[key] = GridGroup(key[0], base, folder, keys)
        groups[key].add(clip, base)
    return [g for g in groups.values() if len(g.clips) > 1]


def grid_layout(
    group: GridGroup, *, rows: str | None = None, cols: str | None = None
) -> tuple[list[str], list[str], list[list[GridClip | None]]]:
    """(row headers, column headers, cells): ``cols`` the values of one key, ``rows`` of
    another (default: the last differing key across, the others down); each cell one
    variant or None. A key that is not swept is a ``ConfigError`` naming it."""
    differing = group.differing()
    for name, key in (("rows", rows), ("cols", cols)):
        if key is not None and key not in group.keys:
            raise ConfigError(
                f"{setting(name, key)}: not a swept key of this sweep ({', '.join(group.keys)})"
            )
    if cols is None:
        free = [k for k in differing if k != rows]
        cols = free[-1] if free else None
    down = [rows] if rows is not None else [k for k in differing if k != cols]
    down += [k for k in differing if k not in down and k != cols]  # the rest, folded in

    def text(clip: GridClip, keys: Sequence[str]) -> str:
        return " ".join(_shown(k, clip.values.get(k)) for k in keys)

    row_names: list[str] = []
    col_names: list[str] = []
    for clip in group.clips:
        r, c = text(clip, down), text(clip, [cols] if cols else [])
        if r not in row_names:
            row_names.append(r)
        if c not in col_names:
            col_names.append(c)
    cells: list[list[GridClip | None]] = [[None] * len(col_names) for _ in row_names]
    for clip in group.clips:
        r = row_names.index(text(clip, down))
        c = col_names.index(text(clip, [cols] if cols else []))
        cells[r][c] = clip
    return row_names, col_names, cells


def _shown(key: str, value: Any) -> str:
    name = _SHORT.get(key, key)
    if isinstance(value, str) and value in _SHORT:
        return _SHORT[value]
    return f"{name}={value}"


def tile_label(clip: GridClip, keys: Sequence[str]) -> list[str]:
    """A tile's label lines: the values that differ, then the score (verdict, the largest
    part error, the identity) when the clip has one."""
    lines = [" ".join(_shown(k, clip.values.get(k)) for k in keys) or "variant"]
    q = clip.quality
    if q:
        worst = worst_part_error(q)
        parts = [str(q.get("verdict", "?"))]
        if worst is not None:
            parts.append(f"worst part {worst:.2f}")
        if q.get("identity") is not None:
            parts.append(f"id {q['identity']:.2f}")
        lines.append(" · ".join(parts))
    return lines


def _font() -> PIL.ImageFont.ImageFont:
    return PIL.ImageFont.load_default(size=FONT_SIZE)


def _label_height(lines: int) -> int:
    # a whole number of the encoder's 16-pixel blocks: no block mixes label and tile, so a
    # tile's frames keep their fidelity however many lines the labels take
    text = lines * (FONT_SIZE + 3) + 4
    return -(-text // 16) * 16


def _fit(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """``frame`` scaled to fit height x width (aspect kept, centred on black)."""
    if frame.shape[:2] == (height, width):
        return frame
    image = PIL.Image.fromarray(frame)
    scale = min(width / image.width, height / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    image = image.resize(size, PIL.Image.Resampling.LANCZOS)
    out = PIL.Image.new("RGB", (width, height))
    out.paste(image, ((width - size[0]) // 2, (height - size[1]) // 2))
    return np.asarray(out)


def _tile_size(clips: Sequence[np.ndarray], columns: int) -> tuple[int, int]:
    """Every tile the first clip's frame size, scaled down so the grid fits the width; even."""
    height, width = clips[0].shape[1:3]
    scale = min(1.0, GRID_MAX_WIDTH / (width * columns))
    return max(2, int(height * scale) // 2 * 2), max(2, int(width * scale) // 2 * 2)


def grid_frames(
    group: GridGroup,
    frames: Mapping[str, np.ndarray],
    *,
    rows: str | None = None,
    cols: str | None = None,
) -> np.ndarray:
    """(T, H, W, 3) uint8: every variant's clip (``frames`` by its video) as a labelled tile in
    the layout's cell, in step; T the longest clip's frames."""
    row_names, col_names, cells = grid_layout(group, rows=rows, cols=cols)
    differing = group.differing()
    clips = [frames[c.video] for c in group.clips]
    height, width = _tile_size(clips, len(col_names))
    labels = {c.video: _wrapped(tile_label(c, differing), width - 6) for c in group.clips}
    band = _label_height(max(len(lines) for lines in labels.values()))
    total = max(len(f) for f in clips)
    canvas = np.zeros(
        (total, len(row_names) * (height + band), len(col_names) * width, 3), np.uint8
    )
    for r, row in enumerate(cells):
        for c, clip in enumerate(row):
            if clip is None:
                continue
            y, x = r * (height + band), c * width
            label = _label(labels[clip.video], width, band)
            canvas[:, y : y + band, x : x + width] = label
            tile = np.stack([_fit(frame, height, width) for frame in frames[clip.video]])
            cell = canvas[:, y + band : y + band + height, x : x + width]
            cell[: len(tile)] = tile
            cell[len(tile) :] = tile[-1]  # a shorter clip holds its last frame
    return canvas


def _wrapped(lines: Sequence[str], width: int) -> list[str]:
    """``lines`` broken between their parts (" · "-separated), and a part still too wide
    between its words, so each fits ``width`` pixels where it can."""
    out: list[str] = []
    for line in lines:
        for piece in _packed(line.split(" · "), " · ", width):
            too_wide = _font().getlength(piece) > width
            out += _packed(piece.split(" "), " ", width) if too_wide else [piece]
    return out


def _packed(parts: Sequence[str], sep: str, width: int) -> list[str]:
    """``parts`` joined by ``sep`` into as few lines as fit ``width`` pixels (a part wider
    than that stands alone)."""
    font = _font()
    out: list[str] = []
    current = ""
    for part in parts:
        joined = f"{current}{sep}{part}" if current else part
        if current and font.getlength(joined) > width:
            out.append(current)
            current = part
        else:
            current = joined
    out.append(current)
    return out


def _label(lines: Sequence[str], width: int, height: int) -> np.ndarray:
    image = PIL.Image.new("RGB", (width, height), (24, 24, 24))
    draw = PIL.ImageDraw.Draw(image)
    font = _font()
    for n, line in enumerate(lines):
        draw.text((3, 2 + n * (FONT_SIZE + 3)), line, fill=(240, 240, 240), font=font)
    return np.asarray(image)


def grid_sheet(group: GridGroup, frames: Mapping[str, np.ndarray]) -> PIL.Image.Image:
    """A sheet: one row per variant (its label on the left), ``SHEET_FRAMES`` evenly spaced
    frames across, with the frame numbers on top."""
    differing = group.differing()
    clips = [frames[c.video] for c in group.clips]
    total = max(len(f) for f in clips)
    picks = sorted({round(x) for x in np.linspace(0, total - 1, min(SHEET_FRAMES, total))})
    height, width = _tile_size(clips, len(picks))
    height, width = min(height, 192), min(width, round(192 * width / max(height, 1)))
    label_width, header, gap = 220, FONT_SIZE + 8, 4
    sheet = PIL.Image.new(
        "RGB",
        (label_width + len(picks) * (width + gap), header + len(clips) * (height + gap)),
        "white",
    )
    draw = PIL.ImageDraw.Draw(sheet)
    font = _font()
    for i, t in enumerate(picks):
        draw.text((label_width + i * (width + gap) + 2, 3), f"frame {t}", fill="black", font=font)
    for r, (clip, video) in enumerate(zip(group.clips, clips)):
        y = header + r * (height + gap)
        for n, line in enumerate(tile_label(clip, differing)):
            draw.text((4, y + 4 + n * (FONT_SIZE + 3)), line, fill="black", font=font)
        for i, t in enumerate(picks):
            tile = _fit(video[min(t, len(video) - 1)], height, width)
            sheet.paste(PIL.Image.fromarray(tile), (label_width + i * (width + gap), y))
    return sheet


@dataclass(frozen=True)
class GridFiles:
    """A group's grid as written: its video and its sheet (paths or URLs as records name
    them), or the reason it could not be drawn."""

    group: GridGroup
    video: str | None = None
    sheet: str | None = None
    error: str | None = None
    image: PIL.Image.Image | None = None  # the sheet, for the report


def write_grid(group: GridGroup, *, rows: str | None = None, cols: str | None = None) -> GridFiles:
    """Draw and publish ``{base}_grid.mp4`` and ``{base}_grid.png`` beside the variants
    (create-only, ``_N`` when the name is taken). A clip that cannot be read, or a store that
    refuses the files, is the returned error: a grid never fails a run."""
    from mimicache.batch.outputs.clips import read_clip
    from mimicache.batch.outputs.publish import publish_files
    from mimicache.batch.outputs.root import location
    from mimicache.media import encode_video

    try:
        frames = {clip.video: read_clip(clip.video) for clip in group.clips}
        video = encode_video(
            grid_frames(group, frames, rows=rows, cols=cols), group.clips[0].fps, group.base
        )
        image = grid_sheet(group, frames)
        written = publish_files(
            Path(group.folder), f"{group.base}_grid", {".mp4": video, ".png": _png(image)}
        )
    except ConfigError:
        raise
    except Exception as exc:  # a grid never fails the run
        logger.warning("no grid for %s: %s", group.base, exc)
        return GridFiles(group, error=str(exc))
    paths = {suffix: location(path) for suffix, path in written.items()}
    logger.info("grid of %d variants: %s", len(group.clips), paths[".mp4"])
    return GridFiles(group, paths[".mp4"], paths[".png"], image=image)


def grid_section(files: GridFiles) -> str:
    """The report's view of one sweep pair: its grid sheet, where the grid video is, and a
    sortable table of the variants (the values that differ, seconds, verdict, the largest
    part error, identity, flicker)."""
    from mimicache.batch.reporting.page import escape, image_uri, sortable_table

    group = files.group
    keys = group.differing()
    parts = [f"<h3>{escape(group.base)}: {len(group.clips)} variants</h3>"]
    if files.video:
        parts.append(f'<div class="muted">grid video: {escape(files.video)}</div>')
    if files.error:
        parts.append(f'<div class="muted">no grid: {escape(files.error)}</div>')
    if files.image is not None:
        uri = image_uri(files.image)
        if uri:
            parts.append(f'<img alt="grid of {escape(group.base)}" src="{uri}">')
    rows = []
    for clip in group.clips:
        q = clip.quality or {}
        worst = worst_part_error(q)
        rows.append(
            (
                clip.name or Path(clip.video).stem,
                *(str(clip.values.get(k)) for k in keys),
                "-" if clip.seconds is None else f"{clip.seconds:.2f}",
                str(q.get("verdict", "-")),
                "-" if worst is None else f"{worst:.3f}",
                "-" if q.get("identity") is None else f"{q['identity']:.3f}",
                "-" if q.get("flicker") is None else f"{q['flicker']:.4f}",
            )
        )
    header = ("variant", *keys, "total s", "verdict", "worst part error", "identity", "flicker")
    numeric = range(1 + len(keys), len(header))
    parts.append(sortable_table(rows, header, [i for i in numeric if i != len(keys) + 2]))
    return "".join(parts)


def _png(image: PIL.Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def folder_of(video: str) -> str:
    """The folder (a path or URL) a clip's mp4 is in."""
    return str(Path(video).parent) if "://" not in video else video.rsplit("/", 1)[0]


def grids_of_results(results: Iterable[Any]) -> list[GridFiles]:
    """The grids of a run's finished sweep variants (``JobResult``s: done, with an output and
    a ``job.sweep``), drawn and published beside them."""
    from mimicache.batch.outputs.root import location

    finished = [
        (
            r.job.sweep,
            GridClip(
                location(r.output),
                r.job.sweep["values"],
                r.quality,
                r.job.case.fps,
                r.job.name,
                r.timings.get("total"),
            ),
            location(r.output.parent),
        )
        for r in results
        if r.done and r.output is not None and r.job.sweep is not None
    ]
    return [write_grid(group) for group in groups_of(finished)]
