"""Progress as plain log lines, for where no bar can be drawn (a log file, CI, Slurm, a Ray
worker): an observer of a job's ``ProgressEvent``s that logs its stages as they start and its
denoising passes at most once per ``interval`` seconds (the first and the last always), each
with the time elapsed and, once a rate is known, the time left."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mimicache.engine.record import ProgressEvent, ProgressObserver

__all__ = ["ProgressLog", "format_duration"]

logger = logging.getLogger(__name__)


def format_duration(seconds: float) -> str:
    """``4.2 s``, ``2m05s``, ``1h02m``: short, for log lines."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@dataclass
class _Job:
    start: float
    denoise_start: float | None = None  # when the first denoising pass was reported
    denoise_first: int = 0  # the passes done by then
    last_line: float | None = None  # when the last denoise line was logged


@dataclass
class ProgressLog:
    """A ``ProgressObserver`` that logs lines; ``then``: another observer it passes events on
    to. ``clock`` is monotonic seconds (a test's own clock)."""

    interval: float = 5.0
    then: ProgressObserver | None = None
    clock: Callable[[], float] = time.monotonic
    log: logging.Logger = logger
    _jobs: dict[str, _Job] = field(default_factory=dict)

    def __call__(self, event: ProgressEvent) -> None:
        now = self.clock()
        job = self._jobs.setdefault(event.label, _Job(now))
        elapsed = format_duration(now - job.start)
        if event.stage == "denoise":
            self._denoise(event, job, now, elapsed)
        elif event.stage == "done":
            self._jobs.pop(event.label, None)
            self.log.info("%s: done in %s", event.label, elapsed)
        else:
            self.log.info("%s: %s (%s elapsed)", event.label, event.stage, elapsed)
        if self.then is not None:
            self.then(event)

    def _denoise(self, event: ProgressEvent, job: _Job, now: float, elapsed: str) -> None:
        if job.denoise_start is None:
            job.denoise_start, job.denoise_first = now, event.done
        last = event.done >= event.total
        if job.last_line is not None and not last and now - job.last_line < self.interval:
            return
        job.last_line = now
        rate_passes = event.done - job.denoise_first
        if rate_passes > 0:
            left = (now - job.denoise_start) / rate_passes * (event.total - event.done)
            eta = f", about {format_duration(left)} left" if not last else ""
        else:
            eta = ""
        percent = 100 * event.done // max(event.total, 1)
        self.log.info(
            "%s: denoise %d/%d passes (%d%%), %s elapsed%s",
            event.label,
            event.done,
            event.total,
            percent,
            elapsed,
            eta,
        )
