"""Cold vs warm: the same jobs run twice (forced refresh, then cache hits), timed per stage
(seconds), and the outputs' frames compared bit for bit (BLAKE2b of the uint8 arrays).

Before the cold run one job runs with the cache off, untimed: a process's first generation
pays one-off costs (allocator and kernel set-up, lazily loaded code, cold file pages) that the
cold run would otherwise count as cache misses. The headline keeps two figures apart: the
stages the cache serves (their speed-up is the cache's) and the whole job (which includes the
uncached PoseNet, denoising and decoding: the same work in both runs, so each is counted at
its faster time in both and their noise does not pass for a cache effect). A warm hit takes
milliseconds, so one timing of it is mostly noise: after both runs the cached stages alone run
``STAGE_REPEATS`` more times each way (forced refresh, then hits), and the cached-stages figure
takes each job's fastest (the same work each time, so what is above it is the machine's noise,
as ``timeit`` reasons)."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from mimicache.batch.executing.job_loop import Engine, run_jobs
from mimicache.batch.job import Job, JobResult
from mimicache.batch.planning.inputs import fetched
from mimicache.batch.reporting.report import text_table
from mimicache.cache import CacheMode, FeatureStore
from mimicache.config import InferenceConfig
from mimicache.engine.stage_names import JOB_STAGES, STAGES, TOTALS, UNCACHED_STEPS

# Rows of the table: the cached stages, the stages the cache does not touch, then the totals.
UNCACHED = tuple(UNCACHED_STEPS)
ROWS = (*STAGES, *UNCACHED, *TOTALS)
# The work a hit replaces: the stage itself plus its key (file digests) and decoding its value.
CACHE_OVERHEAD = ("digest", "unpack")
STAGE_REPEATS = 3  # more timings of the cached stages alone, per job, cold and warm

Retimes = dict[str, dict[int, list[dict[str, float]]]]  # run -> job index -> stage timings

logger = logging.getLogger(__name__)


class CachedEngine(Engine, Protocol):
    """An engine whose feature store the benchmark swaps for the cold and the warm run."""

    cache: FeatureStore


@dataclass(frozen=True)
class Speedup:
    """Cold and warm seconds of one part of the jobs, summed over the jobs that succeeded in
    both runs."""

    name: str
    cold: float
    warm: float
    note: str = ""

    @property
    def factor(self) -> float | None:
        return self.cold / self.warm if self.warm > 0 else None

    def line(self) -> str:
        factor = self.factor
        shown = (
            "warm took no time"
            if factor is None
            else f"{factor:.{2 if factor < 10 else 1}f}x faster"
        )
        text = f"{self.name}: cold {self.cold:.3f} s, warm {self.warm:.3f} s: {shown}"
        return f"{text}\n    {self.note}" if self.note else text


@dataclass
class BenchReport:
    cold: list[JobResult]
    warm: list[JobResult]
    identical: bool
    table: str
    cached: Speedup | None = None  # the stages the cache served, with their keys and decoding
    whole: Speedup | None = None  # the jobs' total time


def frames_digest(frames: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(frames).tobytes(), digest_size=16).hexdigest()


StoreOpener = Callable[[CacheMode], FeatureStore]
"""The run's feature store in a given mode (the composition root's ``engine.build.open_cache``
with that mode): the benchmark never builds a store of its own."""

_RUNS = (("cold", CacheMode.REFRESH), ("warm", CacheMode.READ_WRITE))


def run_benchmark(
    engine: CachedEngine,
    config: InferenceConfig,
    plan: Callable[[str], Sequence[Job]],
    *,
    open_store: StoreOpener,
    progress: bool = True,
) -> BenchReport:
    """Runs ``plan("cold")`` then ``plan("warm")`` (the label ends the output names) on the
    run's cache, forced refresh then cached (``open_store``), and compares the outputs."""
    original = engine.cache
    digests: dict[str, dict[int, str]] = {"cold": {}, "warm": {}}
    runs: dict[str, list[JobResult]] = {}
    jobs = {name: plan(name) for name in ("cold", "warm")}
    try:
        warmup = warm_up(engine, jobs["cold"], open_store)
        for name, mode in _RUNS:
            with open_store(mode) as store:
                engine.cache = store
                runs[name] = run_jobs(
                    engine,
                    jobs[name],
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
    done = {r.job.index for r in warm if r.ok} & {r.job.index for r in cold if r.ok}
    retimes = {
        name: retime_stages(
            engine, [r.job for r in runs[name] if r.job.index in done], open_store, mode
        )
        for name, mode in _RUNS
    }
    cached, whole = speedups(cold, warm, retimes)
    table = format_table(cold, warm, identical, digests)
    table += "\n" + format_headline(cached, whole, warmup, len(done))
    return BenchReport(cold, warm, identical, table, cached, whole)


def warm_up(engine: CachedEngine, jobs: Sequence[Job], open_store: StoreOpener) -> str:
    """Generates the first job once with the cache off (it reads and fills nothing) and
    writes nothing, so the cold run is not charged the process's first-call costs. Returns
    what was done, for the headline."""
    if not jobs:
        return "no warm-up (no job)"
    job = jobs[0]
    logger.info(
        "warm-up: %s once with the cache off, untimed, so the cold run is not charged this "
        "process's one-time start-up (library and kernel initialisation)",
        job.name,
    )
    start = time.perf_counter()
    original = engine.cache
    with open_store(CacheMode.OFF) as off:
        engine.cache = off
        try:
            engine.generate(fetched(job.case), progress=False, label=f"{job.name} (warm-up)")
            engine.cache = original
            _make_keys(engine, job)
        except Exception as exc:  # the cold run reports the job's own failure
            logger.info("warm-up with %s failed (%s); the cold run includes it", job.name, exc)
            return f"no warm-up ({job.name} failed)"
        finally:
            engine.cache = original
    seconds = time.perf_counter() - start
    logger.info("warm-up done in %.2f s", seconds)
    return f"{job.name} ran once first with the cache off, untimed ({seconds:.2f} s)"


def retime_stages(
    engine: CachedEngine, jobs: Sequence[Job], open_store: StoreOpener, mode: CacheMode
) -> dict[int, list[dict[str, float]]]:
    """Each job's cached stages alone (``prepare_pose``, then ``reference_features`` when they
    are cached), ``STAGE_REPEATS`` times on the run's store in ``mode`` (a forced refresh, as
    the cold run, or reading), as the runs time them; {} for an engine without them."""
    from mimicache.engine.record import JobRecord

    prepare, features = (getattr(engine, n, None) for n in ("prepare_pose", "reference_features"))
    if prepare is None or features is None:
        return {}
    with_features = getattr(engine, "cache_pipeline_features", True)
    original = engine.cache
    out: dict[int, list[dict[str, float]]] = {}
    with open_store(mode) as store:
        engine.cache = store
        try:
            for job in jobs:
                case = fetched(job.case)  # as the run gave it (URL inputs are local by now)
                for _ in range(STAGE_REPEATS):
                    record = JobRecord()
                    _, image = prepare(case, record, progress=False)
                    if with_features:
                        features(case, image, record)
                    out.setdefault(job.index, []).append(record.timings)
        except Exception as exc:  # the runs' own timings stand
            logger.info("timing the cached stages again failed (%s): one timing each", exc)
        finally:
            engine.cache = original
    return out


def _make_keys(engine: CachedEngine, job: Job) -> None:
    """Every cache key of the job, through the real store's digest memo: the engine keeps its
    model fingerprints once made, so only the first timed job would pay for them (the warm
    run never does). Reads no entry and writes none."""
    keys = getattr(engine, "keys", None)
    if keys is None:  # an engine without cache keys has nothing to make
        return
    job_keys = keys(fetched(job.case))
    for stage in JOB_STAGES:
        getattr(job_keys, stage)


def speedups(
    cold: Sequence[JobResult], warm: Sequence[JobResult], retimes: Retimes | None = None
) -> tuple[Speedup | None, Speedup | None]:
    """(the cached stages, the whole job), over the jobs that succeeded cold and warm. The
    cached stages are those with cache events in either run (so
    ``--disable_pipeline_feature_cache`` leaves CLIP and VAE out, and the keypoint stages a
    full hit does not need count with what they cost cold) plus the key and decoding work a
    hit still does; with ``retimes`` (``retime_stages`` of "cold" and "warm"), each
    job's fastest of its run's timing and those."""
    warm_by_index = {r.job.index: r for r in warm if r.ok}
    pairs = [(c, warm_by_index[c.job.index]) for c in cold if c.ok and c.job.index in warm_by_index]
    if not pairs:
        return None, None
    events = {e.stage for c, w in pairs for e in (*c.cache_events, *w.cache_events)}
    # the preprocessing a job's generation takes from the cache; the clip scores' stages are
    # cached too, but after the generation: they count in the whole job
    served = events & set(JOB_STAGES)
    parts = [stage for stage in STAGES if stage in served] + list(CACHE_OVERHEAD)

    def seconds(result: JobResult, names: Sequence[str]) -> float:
        return sum(result.timings.get(name, 0.0) for name in names)

    def fastest(result: JobResult, run: str) -> float:
        again = (retimes or {}).get(run, {}).get(result.job.index, [])
        return min(
            [seconds(result, parts)] + [sum(t.get(name, 0.0) for name in parts) for t in again]
        )

    cached = None
    if served:
        counts = {
            1 + len((retimes or {}).get(run, {}).get(c.job.index, []))
            for c, _ in pairs
            for run in ("cold", "warm")
        }
        cached = Speedup(
            "cached stages (" + ", ".join(s for s in STAGES if s in served) + "; keys, decoding)",
            sum(fastest(c, "cold") for c, _ in pairs),
            sum(fastest(w, "warm") for _, w in pairs),
            note=f"each job's fastest of {max(counts)} timings: its run's and {max(counts) - 1} "
            "of the cached stages alone"
            if max(counts) > 1
            else "",
        )
    # Stages that do the same work cold and warm (bit-identical outputs) differ only by noise,
    # which on a busy or virtual machine outweighs what the cache saves on small jobs: each is
    # counted at its faster time in both runs, so the figure moves with the cache alone.
    timed = {name for pair in pairs for r in pair for name in r.timings}
    steps = (*UNCACHED, "write", *STAGES)  # the mp4's encoding and writing: the same both times
    same = [s for s in steps if s in timed and s not in (*events, *CACHE_OVERHEAD)]

    def job_total(result: JobResult, other: JobResult) -> float:
        shared = sum(min(result.timings.get(n, 0.0), other.timings.get(n, 0.0)) for n in same)
        return seconds(result, ["total"]) - seconds(result, same) + shared

    measured = [sum(seconds(r, ["total"]) for r in run) for run in zip(*pairs, strict=True)]
    whole = Speedup(
        "whole job (every stage)",
        sum(job_total(c, w) for c, w in pairs),
        sum(job_total(w, c) for c, w in pairs),
        note=f"measured totals {measured[0]:.3f} s and {measured[1]:.3f} s; "
        f"{', '.join(same) or 'no other stage'} do the same work both times and count their faster "
        "time in both",
    )
    return cached, whole


def headline(cached: Speedup | None, whole: Speedup | None, jobs: int) -> str | None:
    """One sentence of what the cache did: the cached stages' speed-up and the time a warm
    job saved (never a loss made of noise: the other stages count their faster time)."""
    if cached is None or whole is None or jobs == 0:
        return None
    factor = cached.factor
    faster = "took no time warm" if factor is None else f"ran {factor:.0f}x faster warm"
    saved = max(0.0, (whole.cold - whole.warm) / jobs)
    return (
        f"The cache: its stages {faster} ({cached.cold / jobs:.3f} s -> "
        f"{cached.warm / jobs:.3f} s per job); a warm job saved {saved:.2f} s of "
        f"{whole.cold / jobs:.2f} s."
    )


def format_headline(
    cached: Speedup | None, whole: Speedup | None, warmup: str, jobs: int = 0
) -> str:
    """The headline, then the two figures kept apart: what the cache speeds up, and what a
    whole job gains."""
    lines = [text] if (text := headline(cached, whole, jobs)) else []
    lines.append(f"Speed-up, summed over the jobs done both times (warm-up: {warmup}):")
    for part in (cached, whole):
        if part is not None:
            lines.append("  " + part.line())
    if cached is None and whole is not None:
        lines.append("  no stage was served by the cache")
    return "\n".join(lines)


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
