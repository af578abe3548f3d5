"""Cold vs warm: the same jobs run twice (forced refresh, then cache hits), timed per stage."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mimicache.batch import Job, JobResult, run_jobs
from mimicache.cache.store import FeatureStore
from mimicache.config import InferenceConfig
from mimicache.engine.stages import STAGES

# Rows of the table: the cached stages, the stages the cache does not touch (their cold/warm
# differences are run-to-run noise), then the seed's three totals.
UNCACHED = ("digest", "unpack", "pose_net", "denoise", "decode")
TOTALS = ("preprocess", "pipeline", "total")
ROWS = (*STAGES, *UNCACHED, *TOTALS)


@dataclass
class BenchReport:
    cold: list[JobResult]
    warm: list[JobResult]
    identical: bool
    table: str


def frames_digest(frames: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(frames).tobytes(), digest_size=16).hexdigest()


def run_benchmark(
    engine,
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
    finally:
        engine.cache = original
    cold, warm = runs["cold"], runs["warm"]
    identical = bool(digests["cold"]) and digests["cold"] == digests["warm"]
    return BenchReport(cold, warm, identical, format_table(cold, warm, identical, digests))


def _total(results: Sequence[JobResult], row: str) -> float | None:
    values = [r.timings[row] for r in results if r.ok and row in r.timings]
    return sum(values) if values else None


def format_table(cold, warm, identical: bool, digests: dict[str, dict[int, str]]) -> str:
    lines = [
        f"Feature cache benchmark: {len(cold)} job(s); cold = forced refresh, warm = cached",
        f"{'stage':<16} {'cold s':>9} {'warm s':>9} {'speed-up':>9} {'saved s':>9}",
    ]
    for row in ROWS:
        c, w = _total(cold, row), _total(warm, row)
        if c is None and w is None:
            continue
        if row in UNCACHED:
            speedup, saved = "uncached", "-"
        else:
            speedup = f"{c / w:8.1f}x" if c and w else "-"
            saved = f"{c - w:9.2f}" if c is not None and w is not None else "-"
        fmt = lambda v: f"{v:9.3f}" if v is not None else f"{'-':>9}"  # noqa: E731
        lines.append(f"{row:<16} {fmt(c)} {fmt(w)} {speedup:>9} {saved:>9}")
    same = sum(1 for i, d in digests["cold"].items() if digests["warm"].get(i) == d)
    lines.append(
        f"outputs bit-identical: {'yes' if identical else 'NO'} ({same} of {len(cold)} jobs)"
    )
    return "\n".join(lines)
