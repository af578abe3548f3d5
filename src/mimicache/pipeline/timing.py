"""Seconds per pipeline stage, measured once the device has finished the stage's work."""

from __future__ import annotations

import time

import torch


class StageTimer:
    """Adds the block's wall time to ``timings[name]`` once ``device`` has finished the work;
    ``timings=None`` times nothing. A class, not a generator: a warm job times some thirty
    blocks of microseconds each."""

    __slots__ = ("device", "name", "start", "timings")

    def __init__(
        self, timings: dict[str, float] | None, name: str, device: torch.device | None = None
    ) -> None:
        self.timings, self.name, self.device = timings, name, device
        self.start = 0.0

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        if self.timings is not None:
            if self.device is not None and self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            seconds = time.perf_counter() - self.start
            self.timings[self.name] = self.timings.get(self.name, 0.0) + seconds
