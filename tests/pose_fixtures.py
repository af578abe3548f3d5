"""Shared helpers for the pose and media tests (tiny DWPose models, synthetic media)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mimicache.media import write_video
from mimicache.pose import DWPose
from mimicache.testing.tiny_dwpose import make_figure_frame, write_tiny_dwpose


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> tuple[Path, Path]:
    return write_tiny_dwpose(tmp_path_factory.mktemp("dwpose"))


@pytest.fixture(scope="module")
def dwpose(tiny_models) -> DWPose:
    return DWPose(*tiny_models)


def figure_video(path: Path, n: int, *, height=96, width=128, fps=24.0, people=1) -> Path:
    frames = np.stack(
        [make_figure_frame(height, width, i / max(1, n - 1), people=people) for i in range(n)]
    )
    return write_video(path, frames, fps)


def frame_index_video(path: Path, n: int, fps: float, *, height=32, width=32) -> Path:
    """Frame i is uniformly grey with value 8 * i (to identify decoded frames)."""
    frames = np.stack([np.full((height, width, 3), 8 * i, np.uint8) for i in range(n)])
    return write_video(path, frames, fps)
