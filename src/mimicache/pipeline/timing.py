"""Seconds per pipeline stage, measured once the device has finished the stage's work."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def stage_timer(
    timings: dict[str, float] | None, name: str, device: torch.device | None = None
) -> Iterator[None]:
    """Adds the block's wall time to ``timings[name]`` once ``device`` has finished the work;
    ``timings=None`` times nothing."""
    start = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            if device is not None and device.type == "cuda":
                torch.cuda.synchronize(device)
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
