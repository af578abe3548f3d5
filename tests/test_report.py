"""report.html: self-contained, parses as HTML, holds every job, its stages, its cache events
and its failure; `run` writes it beside its log; `bench --plot` draws the comparison."""

from __future__ import annotations

import base64
import html.parser
import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mimicache.batch import Job, JobResult
from mimicache.batch.bench.plot import plot_cold_warm, stage_seconds
from mimicache.batch.reporting.html import render_report, report_path, report_row, write_report
from mimicache.batch.reporting.page import THUMB_HEIGHT, thumbnail_strip
from mimicache.cache.store import CacheEvent
from mimicache.cli import main
from mimicache.config import TestCase
from mimicache.engine.stages import UNCACHED_STEPS, VIDEO_KEYPOINTS_STAGE
from mimicache.errors import MimicacheError
from mimicache.media import write_video
from mimicache.testing.tiny_dwpose import make_figure_frame
from tests.engine_fixtures import figure_video, reference_image, write_config


class Page(html.parser.HTMLParser):
    """Tags (with attributes), text, and whether every opened element was closed."""

    VOID = frozenset({"meta", "img", "br", "hr", "link", "input"})

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.open: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, (tag, self.open[-5:])
        self.open.pop()

    def handle_data(self, data):
        self.text.append(data)

    @property
    def words(self) -> str:
        return " ".join(self.text)


def _job(tmp_path: Path, index: int, name: str) -> Job:
    case = TestCase(ref_video_path=tmp_path / f"{name}.mp4", ref_image_path=tmp_path / "ref.png")
    return Job(index, 0, case, case.ref_video_path, tmp_path / f"{name}_out.mp4")


def _results(tmp_path: Path) -> list[JobResult]:
    frames = np.stack([make_figure_frame(48, 64, i / 8) for i in range(8)])
    output = write_video(tmp_path / "walk_out.mp4", frames, 8.0)
    events = [
        CacheEvent("video_keypoints", True, "hit", 0.012, 2_500_000, "k1"),
        CacheEvent("vae_latents", False, "absent", 0.4, 1_000, "k2"),
    ]
    ok = JobResult(
        _job(tmp_path, 0, "walk"),
        "ok",
        output,
        {"video_keypoints": 0.5, "denoise": 2.0, "preprocess": 0.6, "total": 3.1},
        cache_events=events,
    )
    failed = JobResult.failure(
        _job(tmp_path, 1, "jump"), "InputError: no person in <frame 3> & beyond", {"total": 0.2}
    )
    return [ok, failed]


def test_report_parses_and_holds_every_job_and_the_failure(tmp_path):
    results = _results(tmp_path)
    text = render_report(
        [report_row(r) for r in results], title="mimicache run", parameters={"seed": 42}
    )
    page = Page(text)
    assert page.open == []  # every element closed, in order
    words = page.words
    for name in ("walk", "jump"):
        assert name in words
    # the failure's message, escaped in the source and intact once parsed
    assert "InputError: no person in <frame 3> & beyond" in words
    assert "&lt;frame 3&gt; &amp; beyond" in text
    # cache events with units, the stage timings in seconds
    assert "video_keypoints" in words and "absent" in words
    assert "2.50 MB" in words and "1.0 kB" in words
    assert "0.400 s" in words and "total 3.100 s" in words  # stages apart from the totals
    assert "1 succeeded, 1 failed" in words
    # one timing bar per job with segments, longest job full width
    bars = [a for t, a in page.tags if t == "div" and a.get("class") == "bar"]
    assert len(bars) == 1 and "width:100.0%" in bars[0]["style"]
    segments = [a["title"] for t, a in page.tags if t == "span" and "title" in a]
    assert segments == ["video_keypoints 0.50 s", "denoise 2.00 s"]
    # each segment and its legend swatch in the colour its stage declares
    colours = [a["style"].rpartition("background:")[2] for t, a in page.tags if "title" in a]
    assert colours == [VIDEO_KEYPOINTS_STAGE.color, UNCACHED_STEPS["denoise"]]
    swatches = [a["style"] for t, a in page.tags if t == "i" and a.get("class") == "swatch"]
    assert swatches == [f"background:{c}" for c in colours]


def test_report_is_self_contained(tmp_path):
    text = render_report(
        [report_row(r) for r in _results(tmp_path)], title="t", parameters={"a": "b"}
    )
    page = Page(text)
    assert "http://" not in text and "https://" not in text
    assert not {t for t, _ in page.tags} & {"script", "link", "iframe", "object", "embed"}
    images = [a["src"] for t, a in page.tags if t == "img"]
    assert len(images) == 1  # the ok job's strip; the failed job has no output
    for src in images:
        assert src.startswith("data:image/png;base64,")
        strip = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert strip.height == THUMB_HEIGHT and strip.width > 3 * THUMB_HEIGHT


def test_thumbnail_strip_spreads_the_frames():
    frames = np.stack([np.full((20, 30, 3), 10 * i, np.uint8) for i in range(11)])
    strip = np.asarray(thumbnail_strip(frames, count=3))
    width = round(30 * THUMB_HEIGHT / 20)
    assert strip.shape == (THUMB_HEIGHT, 3 * width + 2 * 4, 3)
    assert [strip[0, x, 0] for x in (0, width + 4, 2 * width + 8)] == [0, 50, 100]


def test_write_report_is_atomic_and_beside_the_log(tmp_path):
    assert report_path(tmp_path / "20250101.log") == tmp_path / "20250101.report.html"
    path = write_report(tmp_path / "r.report.html", [], title="empty", parameters={})
    assert Page(path.read_text()).open == []
    assert [p.name for p in tmp_path.iterdir()] == ["r.report.html"]


def test_run_writes_the_report_beside_its_log(tiny_bundle, tmp_path):
    videos = tmp_path / "clips"
    videos.mkdir()
    figure_video(videos / "a_walk.mp4", frames=4)
    (videos / "b_broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    image = reference_image(tmp_path / "ref.png")
    config = write_config(tmp_path / "cfg.yaml", tiny_bundle, image, videos / "a_walk.mp4")
    out = tmp_path / "out"
    code = main(
        [
            "run", "--inference_config", str(config), "--batch_folder", str(videos),
            "--output_dir", str(out), "--feature_cache_dir", str(tmp_path / "cache"), "--quiet",
            "--log_file", str(tmp_path / "logs" / "run.log"),
        ]
    )  # fmt: skip
    assert code == 1
    report = tmp_path / "logs" / "run.report.html"
    page = Page(report.read_text())
    words = page.words
    assert "a_walk" in words and "b_broken" in words
    assert "1 succeeded, 1 failed" in words
    assert "InputError" in words or "cannot" in words  # the broken video's message
    strips = [a for t, a in page.tags if t == "img" and a.get("alt", "").startswith("frames of")]
    assert len(strips) == 1  # the one written video's strip
    worst = [a for t, a in page.tags if t == "img" and a.get("alt") == "worst frames"]
    assert len(worst) == 1  # and its worst scored frames
    assert "pose_frames" in words and "absent" in words  # a cold cache: misses with reasons


def test_stage_seconds_sum_the_ok_jobs(tmp_path):
    ok, failed = _results(tmp_path)
    warm = JobResult(ok.job, "ok", ok.output, {"video_keypoints": 0.1, "denoise": 2.2})
    rows = dict((name, (c, w)) for name, c, w in stage_seconds([ok, failed], [warm]))
    assert rows["video_keypoints"] == (0.5, 0.1)
    assert rows["denoise"] == (2.0, 2.2)
    assert rows["total"] == (3.1, 0.0)
    assert "pose_frames" not in rows


def test_bench_plot_is_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="bench --plot needs the optional matplotlib")
    ok, _ = _results(tmp_path)
    warm = JobResult(ok.job, "ok", ok.output, {"video_keypoints": 0.1, "denoise": 2.2})
    path = plot_cold_warm([ok], [warm], tmp_path / "bench.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 400 and image.height > 100


def test_bench_plot_without_matplotlib_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    ok, _ = _results(tmp_path)
    with pytest.raises(MimicacheError, match="pip install matplotlib"):
        plot_cold_warm([ok], [ok], tmp_path / "bench.png")
    assert not (tmp_path / "bench.png").exists()


def test_sidecar_and_report_say_who_drove_the_pose(tmp_path):
    import json

    from mimicache.batch import write_sidecar
    from mimicache.config import InferenceConfig
    from mimicache.pose import PeopleReport

    ok, _ = _results(tmp_path)
    ok.people = PeopleReport("largest", 8, 2, [0], [3, 4], chosen=1, chosen_frames=7)
    config = InferenceConfig(base_model_path="b", ckpt_path=Path("c"), test_case=[ok.job.case])
    path = write_sidecar(ok.job, ok, config=config, model_files={}, path=tmp_path / "s.json")
    assert json.loads(path.read_text())["people"] == {
        "choice": "largest",
        "frames": 8,
        "people": 2,
        "no_person": [0],
        "several": [3, 4],
        "chosen": 1,
        "chosen_frames": 7,
    }
    words = Page(render_report([report_row(ok)], title="t", parameters={})).words
    assert "person 1 drives the pose (person='largest'), seen in 7 frames" in words
    assert "two or more at once in 2 (3, 4)" in words


def test_bench_report_holds_cold_and_warm_rows_and_the_table(tiny_bundle, tmp_path):
    import importlib.util

    video = figure_video(tmp_path / "walk.mp4", frames=4)
    image = reference_image(tmp_path / "ref.png")
    config = write_config(tmp_path / "cfg.yaml", tiny_bundle, image, video)
    plot = tmp_path / "bench.png"
    code = main(
        [
            "bench", "--inference_config", str(config), "--output_dir", str(tmp_path / "out"),
            "--feature_cache_dir", str(tmp_path / "cache"), "--quiet", "--plot", str(plot),
            "--log_file", str(tmp_path / "bench.log"),
        ]
    )  # fmt: skip
    assert code == 0
    page = Page((tmp_path / "bench.report.html").read_text())
    words = page.words
    assert "mimicache bench: 1 job(s), cold and warm" in words
    assert "walk (cold)" in words and "walk (warm)" in words
    assert "Cold vs warm" in words and "outputs bit-identical: yes" in words
    images = sum(t == "img" and a.get("alt") != "worst frames" for t, a in page.tags)
    if importlib.util.find_spec("matplotlib") is not None:
        assert plot.is_file() and images == 3  # two strips and the chart
    else:  # the benchmark ran; the log says how to get the chart
        assert not plot.exists() and images == 2
        assert "pip install matplotlib" in (tmp_path / "bench.log").read_text()


def test_every_timed_step_has_its_own_colour():
    """Stages and steps declare their colours once; no two share one, so bars stay legible."""
    from mimicache.engine.stages import CACHED_STAGES, STAGES, STEP_COLORS, TOTALS

    assert list(CACHED_STAGES) == list(STAGES)
    assert set(STAGES) <= set(STEP_COLORS) and not set(TOTALS) & set(STEP_COLORS)
    assert len(set(STEP_COLORS.values())) == len(STEP_COLORS)
