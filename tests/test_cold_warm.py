"""The benchmark's headline: a warm-up job first (cache off, untimed), then the cached stages'
and the whole job's speed-ups apart."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from mimicache.batch import Job
from mimicache.batch.bench.cold_warm import Speedup, run_benchmark, speedups
from mimicache.batch.job import JobResult
from mimicache.cache.modes import CacheEvent
from mimicache.cache.store import FeatureStore
from mimicache.config import InferenceConfig, TestCase
from mimicache.engine.stages import JOB_STAGES

FIRST_CALL = 5.0  # seconds the stand-in's first generation costs on top


@dataclass
class Generated:
    frames: np.ndarray
    fps: int
    timings: dict[str, float]
    cache_events: list


@dataclass
class SlowStart:
    """A stand-in engine whose first generation pays a one-off cost, as a process's first
    torch call does; DWPose takes 2 s on a miss, 0.01 s on a hit, denoising 1 s always."""

    cache: FeatureStore
    calls: list[tuple[str, str]] = field(default_factory=list)
    made_keys: list[tuple[str, str]] = field(default_factory=list)
    model_files: dict = field(default_factory=dict)
    pose_retarget: str = "published"

    def keys(self, case):
        """Records which store each key was made through."""
        made, store = self.made_keys, self.cache

        class Keys:
            def __getattr__(self, stage):
                made.append((stage, store.mode.value))
                return stage

        return Keys()

    def generate(self, case, *, progress, label):
        self.calls.append((label, self.cache.mode.value))
        first = FIRST_CALL if len(self.calls) == 1 else 0.0
        events = []
        pose = 2.0
        if self.cache.enabled:
            hit = not self.cache.force_refresh
            pose = 0.01 if hit else 2.0
            events = [CacheEvent("video_keypoints", hit, "hit" if hit else "forced", pose, 1, "k")]
        timings = {"video_keypoints": pose, "digest": 0.02, "denoise": 1.0 + first}
        timings["total"] = sum(timings.values())
        frames = np.zeros((2, 8, 8, 3), dtype=np.uint8)
        return Generated(frames, 8, timings, events)


def _stores(root: Path):
    """The run's store in each mode, as the composition root opens it."""
    return lambda mode: FeatureStore(root, mode=mode)


def _plan(tmp_path: Path):
    case = TestCase(ref_video_path=tmp_path / "walk.mp4", ref_image_path=tmp_path / "ref.png")

    def plan(label: str) -> list[Job]:
        out = tmp_path / "out"
        return [
            Job(i, 0, case, case.ref_video_path, out / f"walk{i}_{label}.mp4") for i in range(2)
        ]

    return plan


def test_the_warm_up_runs_uncached_first_and_is_not_timed(tmp_path):
    root = tmp_path / "cache"
    engine = SlowStart(FeatureStore(root))
    config = InferenceConfig(base_model_path="", ckpt_path=Path(), test_case=[])
    report = run_benchmark(
        engine, config, _plan(tmp_path), open_store=_stores(root), progress=False
    )
    assert engine.calls[0] == ("walk (warm-up)", "off")
    assert [mode for _, mode in engine.calls[1:]] == ["refresh"] * 2 + ["read-write"] * 2
    assert not list((tmp_path / "out").glob("*warm-up*"))  # the warm-up writes no output
    # the keys (and the engine's model fingerprints) made once, through the run's own store
    assert engine.made_keys == [(stage, "read-write") for stage in JOB_STAGES]
    # the one-off cost went to the warm-up, not to the cold run; a job's total includes
    # writing its mp4, the same work both times (counted at its faster time in both)
    pairs = zip(report.cold, report.warm, strict=True)
    writes = sum(min(c.timings["write"], w.timings["write"]) for c, w in pairs)
    assert report.whole.cold == pytest.approx(2 * 3.02 + writes)
    assert report.whole.warm == pytest.approx(2 * 1.03 + writes)
    assert report.cached.cold == 2 * 2.02 and report.cached.warm == 2 * 0.03
    assert "cached stages (video_keypoints; keys, decoding): cold 4.040 s, warm 0.060 s: " \
        "67.3x faster" in report.table  # fmt: skip
    assert re.search(r"whole job \(every stage\): cold 6\.0\d\d s, warm 2\.0\d\d s", report.table)
    assert "walk ran once first with the cache off, untimed" in report.table


def _result(tmp_path, index, status, timings, stages=()):
    case = TestCase(ref_video_path=tmp_path / "v.mp4", ref_image_path=tmp_path / "i.png")
    job = Job(index, 0, case, case.ref_video_path, tmp_path / f"v{index}.mp4")
    events = [CacheEvent(s, True, "hit", 0.0, 1, "k") for s in stages]
    return JobResult(job, status, timings=timings, cache_events=events)


def test_speedups_count_only_the_stages_the_cache_served_and_jobs_done_twice(tmp_path):
    both = {
        "video_keypoints": 1.0, "clip_embeddings": 0.5, "unpack": 0.1, "denoise": 1.0,
        "total": 4.0,
    }  # fmt: skip
    cold = [
        _result(tmp_path, 0, "ok", both),
        _result(tmp_path, 1, "ok", {"total": 9.0}),  # failed warm: left out of both figures
    ]
    warm_times = {
        "video_keypoints": 0.1, "clip_embeddings": 0.5, "unpack": 0.1, "denoise": 1.4,
        "total": 2.0,
    }  # fmt: skip
    warm = [
        # --disable_pipeline_feature_cache: CLIP computed both times, not a cached stage
        _result(tmp_path, 0, "ok", warm_times, stages=("video_keypoints",)),
        _result(tmp_path, 1, "failed", {}),
    ]
    cached, whole = speedups(cold, warm)
    assert cached == Speedup("cached stages (video_keypoints; keys, decoding)", 1.1, 0.2)
    # denoising did the same work both times: its slower warm 1.4 s counts as the cold 1.0 s
    assert whole.cold == 4.0 and whole.warm == pytest.approx(1.6) and whole.factor == 2.5
    assert whole.note == (
        "measured totals 4.000 s and 2.000 s; denoise, clip_embeddings do the same work both "
        "times and count their faster time in both"
    )
    assert speedups(cold[1:], warm[1:]) == (None, None)


def test_the_charts_legend_covers_no_label_and_the_title_gives_the_bars_figures(
    tmp_path, monkeypatch
):
    import mimicache.batch.bench.plot as bench_plot

    timings = {
        "video_keypoints": 2.0, "digest": 0.02, "denoise": 1.0, "decode": 1.0,
        "preprocess": 2.1, "pipeline": 2.0, "total": 4.1,
    }  # fmt: skip
    warm_timings = {**timings, "video_keypoints": 0.01, "preprocess": 0.05, "total": 2.05}
    cold = [_result(tmp_path, 0, "ok", timings)]
    warm = [_result(tmp_path, 0, "ok", warm_timings, stages=("video_keypoints",))]
    seen = {}
    real_save = bench_plot._save

    def save(fig, path):
        renderer = fig.canvas.get_renderer()
        (ax,) = fig.axes
        legend = ax.get_legend().get_window_extent(renderer)
        labels = [*ax.texts, *ax.get_yticklabels(), ax.xaxis.label]
        seen["covered"] = [
            t.get_text() for t in labels if legend.overlaps(t.get_window_extent(renderer))
        ]
        seen["inside"] = fig.bbox.contains(legend.x0, legend.y0) and fig.bbox.contains(
            legend.x1, legend.y1
        )
        seen["title"] = ax.get_title(loc="left")
        return real_save(fig, path)

    monkeypatch.setattr(bench_plot, "_save", save)
    bench_plot.plot_cold_warm(cold, warm, tmp_path / "bench.png")
    assert seen["covered"] == [] and seen["inside"]
    # the figures of the bars drawn: the cached stages' sums and the total row's
    assert seen["title"].splitlines()[1] == (
        "cached stages 2.00 s → 10.0 ms (200x); total 4.10 s → 2.05 s (2.00x)"
    )


@dataclass
class NoisyHit(SlowStart):
    """The stand-in with the engine's stage calls: its warm run's first hit is slowed by
    noise (0.5 s instead of 0.01 s); timed alone the stages take what they always take."""

    alone: list[str] = field(default_factory=list)

    def generate(self, case, *, progress, label):
        generated = super().generate(case, progress=progress, label=label)
        warm_calls = [c for c in self.calls if c[1] == "read-write"]
        if len(warm_calls) == 1:  # the warm run's first job: a noisy timing
            generated.timings["video_keypoints"] = 0.5
        return generated

    def prepare_pose(self, case, record, *, progress):
        self.alone.append(self.cache.mode.value)
        record.timings.update(video_keypoints=2.0 if self.cache.force_refresh else 0.01)
        record.timings["digest"] = 0.02
        return None, "image"

    def reference_features(self, case, image, record):
        assert image == "image"


def test_the_cached_stages_figure_takes_each_jobs_fastest(tmp_path):
    engine = NoisyHit(FeatureStore(tmp_path / "cache"))
    config = InferenceConfig(base_model_path="", ckpt_path=Path(), test_case=[])
    stores = _stores(tmp_path / "cache")
    report = run_benchmark(engine, config, _plan(tmp_path), open_store=stores, progress=False)
    # two jobs, each timed alone three times more: cold (forced refresh), then warm (hits)
    assert engine.alone == ["refresh"] * 6 + ["read-write"] * 6
    # warm: the fastest of (0.52, 0.03, 0.03, 0.03) and of (0.03, ...); the noisy 0.5 s is out
    assert report.cached.cold == pytest.approx(2 * 2.02)
    assert report.cached.warm == pytest.approx(2 * 0.03)
    assert "each job's fastest of 4 timings: its run's and 3 of the cached stages alone" in (
        report.table
    )
    assert report.warm[0].timings["video_keypoints"] == 0.5  # the table keeps what was measured
