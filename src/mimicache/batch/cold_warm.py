"""Cold vs warm: the same jobs run twice (forced refresh, then cache hits), timed per stage
(seconds), and the outputs' frames compared bit for bit (BLAKE2b of the uint8 arrays)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from mimicache.batch.outcome import JobResult
from mimicache.batch.plan import Job
from mimicache.batch.report import text_table
from mimicache.batch.run import Engine, run_jobs
from mimicache.cache.store import FeatureStore
from mimicache.config import InferenceConfig
from mimicache.engine.stages import STAGES

# Rows of the table: the cached stages, the stages the cache does not touch (their cold/warm
# differences are run-to-run noise), then the seed's three totals.
UNCACHED = ("digest", "unpack", "pose_net", "denoise", "decode")
TOTALS = ("preprocess", "pipeline", "total")
ROWS = (*STAGES, *UNCACHED, *TOTALS)


class CachedEngine(Engine, Protocol):
    """An engine whose feature store the benchmark swaps for the cold and the warm run."""

    cache: FeatureStore


@dataclass
class BenchReport:
    cold: list[JobResult]
    warm: list[JobResult]
    identical: bool
    table: str


def frames_digest(frames: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(frames).tobytes(), digest_size=16).hexdigest()


def run_benchmark(
    engine: CachedEngine,
    config: InferenceConfig,
    plan: Callable[[str], Sequence[Job]],
    *,
    progress: bool = True,
) -> BenchReport:
    """Runs ``plan("cold")`` then ``plan("warm")`` (the label ends the output names) on
    ``engine``'s cache root, forced refresh then cached, and compares the outputs."""
    original = engine.cache
    root = original.root
    digests: dict[str, dict[int, str]] = {"cold": {}, "warm": {}}
    runs: dict[str, list[JobResult]] = {}
    try:
        for name, force in (("cold", True), ("warm", False)):
            with FeatureStore(root, force_refresh=force) as store:
                engine.cache = store
                runs[name] = run_jobs(
                    engine,
                    plan(name),
                    config=config,
                    progress=progress,
                    on_frames=lambda job, frames, d=digests[name]: d.__setitem__(
                        job.index, frames_digest(frames)
                    ),
                )
            if any(r.status == "interrupted" for r in runs[name]):
                raise KeyboardInterrupt  # Ctrl-C: half a benchmark compares nothing
    finally:
        engine.cache = original
    cold, warm = runs["cold"], runs["warm"]
    identical = bool(digests["cold"]) and digests["cold"] == digests["warm"]
    return BenchReport(cold, warm, identical, format_table(cold, warm, identical, digests))


def _total(results: Sequence[JobResult], row: str) -> float | None:
    values = [r.timings[row] for r in results if r.ok and row in r.timings]
    return sum(values) if values else None


def _seconds(value: float | None) -> str:
    return f"{value:9.3f}" if value is not None else "-"


def format_table(
    cold: Sequence[JobResult],
    warm: Sequence[JobResult],
    identical: bool,
    digests: dict[str, dict[int, str]],
) -> str:
    """Per stage: cold and warm seconds (summed over the jobs), speed-up and seconds saved;
    stages the cache does not touch say ``uncached``. Then whether the outputs are identical."""
    rows = [("stage", "cold s", "warm s", "speed-up", "saved s")]
    for row in ROWS:
        c, w = _total(cold, row), _total(warm, row)
        if c is None and w is None:
            continue
        if row in UNCACHED:
            speedup, saved = "uncached", "-"
        else:
            speedup = f"{c / w:8.1f}x" if c and w else "-"
            saved = f"{c - w:9.2f}" if c is not None and w is not None else "-"
        rows.append((row, _seconds(c), _seconds(w), speedup, saved))
    same = sum(1 for i, d in digests["cold"].items() if digests["warm"].get(i) == d)
    return "\n".join(
        [
            f"Feature cache benchmark: {len(cold)} job(s); cold = forced refresh, warm = cached",
            text_table(rows, right=(1, 2, 3, 4), sep=" ", min_widths=(16, 9, 9, 9, 9)),
            f"outputs bit-identical: {'yes' if identical else 'NO'} ({same} of {len(cold)} jobs)",
        ]
    )
