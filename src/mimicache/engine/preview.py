"""Pose previews: the driving frames, the skeleton over the reference image, the skeleton alone.

``pose_preview(engine, case)`` runs the engine's own pose stages (``MimicMotion.prepare_pose``,
so it reads and fills the same cache entries as ``generate``) and returns (1+F,H,W,3) uint8
arrays: frame 0 is the reference (image and pose), frames 1.. the sampled driving frames.
``panels`` puts the three side by side, ``contact_sheet`` lays every n-th row out as one image.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

from mimicache.config import TestCase
from mimicache.engine.record import JobRecord
from mimicache.media import iter_frames

if TYPE_CHECKING:
    from mimicache.engine.engine import MimicMotion
    from mimicache.pose import PeopleReport, PoseSequence

MAX_SHEET_ROWS = 12
SHEET_ROW_HEIGHT = 144  # pixels per contact-sheet row
LABEL_WIDTH = 64  # the frame-number column of the contact sheet
PANEL_GAP = 4  # dark pixels between the panels
DIM = 0.45  # the reference under the skeleton, dimmed so thin limbs stand out


@dataclass
class PosePreview:
    """What the pipeline would get, with what it came from. All (1+F,H,W,3) uint8 RGB.

    ``pose_frames`` equals ``prepare_pose``'s pose frames exactly (frame 0: the reference pose);
    ``driving`` is the reference image then each sampled driving frame, fitted inside H x W
    (letterboxed); ``overlay`` the pose frames drawn over the fitted reference image."""

    pose_frames: np.ndarray
    driving: np.ndarray
    overlay: np.ndarray
    fps: int
    people: PeopleReport | None = None
    timings: dict[str, float] = field(default_factory=dict)
    cache_events: list[Any] = field(default_factory=list)
    targets: PoseSequence | None = None  # the poses the pose frames show (1+F)

    @property
    def num_frames(self) -> int:
        return int(self.pose_frames.shape[0])

    def panels(self) -> np.ndarray:
        """(1+F, H, 3W + 2 gaps, 3) uint8: driving | overlay | skeleton, side by side."""
        n, h, _, _ = self.pose_frames.shape
        gap = np.zeros((n, h, PANEL_GAP, 3), dtype=np.uint8)
        return np.concatenate([self.driving, gap, self.overlay, gap, self.pose_frames], axis=2)


def pose_preview(
    engine: MimicMotion, case: TestCase, *, progress: bool = True, label: str | None = None
) -> PosePreview:
    """The pose frames a run of ``case`` would get, and the frames they came from.

    Args:
        engine: an engine (``MimicMotion.for_pose`` is enough: DWPose alone); its cache is
            used with the keys of ``generate``, so a preview fills what a run then hits.
        case: the test case: reference image, driving video, resolution, stride, fps.
        progress: a DWPose bar on a terminal, one log line per stage otherwise.
        label: the bars' label (default: the video's name).

    Returns:
        A ``PosePreview``: the pose frames (1+F,H,W,3) uint8, the driving frames and the
        overlays, who was seen, timings and cache events.

    Raises:
        InputError: as ``generate`` would for the same inputs.
    """
    record = JobRecord(engine.device)
    label = label or Path(case.ref_video_path).stem
    bars = progress and sys.stderr.isatty()
    start = time.perf_counter()
    with record.time("preprocess"):
        pose, image = engine.prepare_pose(case, record, progress=bars, label=label)
    with record.time("preview"):
        pose_frames = pose.permute(0, 2, 3, 1).numpy()
        reference = image.pixels
        height, width = reference.shape[:2]
        driving = np.empty_like(pose_frames)
        driving[0] = reference
        # the same frames DWPose saw: the same decoder, the same stride
        frames = iter_frames(case.ref_video_path, case.sample_stride)
        for i, frame in zip(range(1, len(driving)), frames):
            driving[i] = letterbox(frame, height, width)
        overlay = np.stack([draw_over(reference, p) for p in pose_frames])
    record.timings["total"] = time.perf_counter() - start
    if progress and not bars:
        record.log_stages(label)
    return PosePreview(
        pose_frames,
        driving,
        overlay,
        case.fps,
        record.people,
        record.timings,
        record.events,
        record.targets,
    )


def letterbox(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h,w,3) uint8 scaled to fit inside height x width, centred on black (aspect kept)."""
    h, w = frame.shape[:2]
    scale = min(height / h, width / w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    resized = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_AREA)
    out = np.zeros((height, width, 3), dtype=np.uint8)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out[top : top + new_h, left : left + new_w] = resized
    return out


def draw_over(image: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """The skeleton over a dimmed image: each pixel mixes toward the pose colour by the pose's
    brightness, so faint (low-confidence) parts stay faint, as the model sees them."""
    alpha = pose.max(axis=2, keepdims=True).astype(np.float32) / 255.0
    base = image.astype(np.float32) * DIM
    mixed = base * (1.0 - alpha) + pose.astype(np.float32) * alpha
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def sheet_step(num_frames: int, max_rows: int = MAX_SHEET_ROWS) -> int:
    """Every n-th frame so that at most ``max_rows`` rows show (n >= 1)."""
    return max(1, -(-num_frames // max_rows))


SHEET_HEADERS = ("driving", "over reference", "skeleton")
HEADER_HEIGHT = 22  # pixels of the column headers' row


def contact_sheet(preview: PosePreview, *, max_rows: int = MAX_SHEET_ROWS) -> PIL.Image.Image:
    """Every n-th frame's three panels in one RGB image, one row per frame, its number at left
    ("ref" for the reference, i for sampled driving frame i, counted from 1), the columns
    named on top. The skeletons are drawn thicker by the factor the rows shrink them, so a
    limb stays visible at thumbnail size."""
    step = sheet_step(preview.num_frames, max_rows)
    indices = list(range(0, preview.num_frames, step))
    _, h, w, _ = preview.pose_frames.shape
    scale = SHEET_ROW_HEIGHT / h
    thick = _thicker(preview.pose_frames[indices], scale)
    reference = preview.driving[0]
    panels = PosePreview(
        thick,
        preview.driving[indices],
        np.stack([draw_over(reference, p) for p in thick]),
        preview.fps,
    ).panels()
    row_w = max(1, round(panels.shape[2] * scale))
    top0 = HEADER_HEIGHT
    sheet = PIL.Image.new(
        "RGB", (LABEL_WIDTH + row_w, top0 + SHEET_ROW_HEIGHT * len(indices)), (0, 0, 0)
    )
    draw = PIL.ImageDraw.Draw(sheet)
    font = PIL.ImageFont.load_default(size=12)
    draw.text((6, 5), "frame", fill=(200, 200, 200), font=font)
    for i, header in enumerate(SHEET_HEADERS):
        x = LABEL_WIDTH + round(i * (w + PANEL_GAP) * scale) + 3
        draw.text((x, 5), header, fill=(235, 235, 235), font=font)
    for row, (index, panel) in enumerate(zip(indices, panels)):
        thumb = PIL.Image.fromarray(panel).resize(
            (row_w, SHEET_ROW_HEIGHT), PIL.Image.Resampling.BOX
        )
        top = top0 + row * SHEET_ROW_HEIGHT
        sheet.paste(thumb, (LABEL_WIDTH, top))
        text = "ref" if index == 0 else str(index)
        draw.text((6, top + SHEET_ROW_HEIGHT // 2 - 6), text, fill=(235, 235, 235), font=font)
    return sheet


def _thicker(poses: np.ndarray, scale: float) -> np.ndarray:
    """(N,H,W,3) skeleton images with every stroke widened (a maximum filter) by twice the
    shrink 1/``scale`` the sheet applies, so a limb stays visible at thumbnail size."""
    size = max(2, round(2 / scale))  # twice the shrink: a 4-pixel limb stays 2 pixels wide
    kernel = np.ones((size, size), np.uint8)
    return np.stack([cv2.dilate(p, kernel) for p in poses])
