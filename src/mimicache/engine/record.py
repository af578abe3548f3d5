"""A job's record: seconds per stage and the cache events, filled in as the job runs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from mimicache.pipeline import stage_timer

logger = logging.getLogger(__name__)


@dataclass
class JobRecord:
    """``timings`` in seconds by stage name (insertion order = run order); ``events`` the
    cache events (hits and misses with reasons); ``people`` who was seen in the driving video
    and who drives the pose (a ``pose.PeopleReport``). ``device`` is waited for before a
    stage's clock stops, so GPU work is counted where it happens."""

    device: torch.device | None = None
    timings: dict[str, float] = field(default_factory=dict)
    events: list[Any] = field(default_factory=list)
    people: Any = None

    @contextmanager
    def time(self, stage: str, *, wait: bool = True) -> Iterator[None]:
        with stage_timer(self.timings, stage, self.device if wait else None):
            yield

    def log_stages(self, label: str) -> None:
        """One log line per stage: what a terminal without progress bars gets instead."""
        for stage, seconds in self.timings.items():
            logger.info("%s: %s %.2f s", label, stage, seconds)
