"""Progress where no bar can be drawn: plain lines per stage and per few seconds of denoising,
with the time elapsed and left, from the engine's progress events."""

from __future__ import annotations

import logging

from mimicache.engine.progress import ProgressLog, format_duration
from mimicache.engine.record import ProgressEvent
from tests.engine_fixtures import figure_config


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_durations_read_short():
    assert [format_duration(s) for s in (4.24, 59.9, 125, 3720)] == [
        "4.2 s",
        "59.9 s",
        "2m05s",
        "1h02m",
    ]


def test_denoise_lines_at_most_every_interval_plus_first_and_last(caplog):
    clock = Clock()
    seen: list[ProgressEvent] = []
    log = ProgressLog(interval=5.0, then=seen.append, clock=clock)
    events = [ProgressEvent("walk", "preprocess")]
    events += [ProgressEvent("walk", "denoise", n, 20) for n in range(1, 21)]
    events += [ProgressEvent("walk", "done")]
    with caplog.at_level(logging.INFO, logger="mimicache.engine.progress"):
        log(events[0])
        clock.now += 3.0  # preprocessing
        for event in events[1:-1]:
            clock.now += 1.0  # one second a pass
            log(event)
        log(events[-1])
    lines = [r.getMessage() for r in caplog.records]
    assert seen == events  # every event goes on to the next observer
    assert lines == [
        "walk: preprocess (0.0 s elapsed)",
        "walk: denoise 1/20 passes (5%), 4.0 s elapsed",
        "walk: denoise 6/20 passes (30%), 9.0 s elapsed, about 14.0 s left",
        "walk: denoise 11/20 passes (55%), 14.0 s elapsed, about 9.0 s left",
        "walk: denoise 16/20 passes (80%), 19.0 s elapsed, about 4.0 s left",
        "walk: denoise 20/20 passes (100%), 23.0 s elapsed",
        "walk: done in 23.0 s",
    ]


def test_jobs_are_followed_apart(caplog):
    clock = Clock()
    log = ProgressLog(interval=5.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="mimicache.engine.progress"):
        log(ProgressEvent("a", "denoise", 1, 3))
        clock.now += 1.0
        log(ProgressEvent("b", "denoise", 1, 3))  # another job's first pass: its own line
        log(ProgressEvent("a", "denoise", 2, 3))  # within a's interval: no line
        log(ProgressEvent("a", "done"))
    assert [r.getMessage() for r in caplog.records] == [
        "a: denoise 1/3 passes (33%), 0.0 s elapsed",
        "b: denoise 1/3 passes (33%), 0.0 s elapsed",
        "a: done in 1.0 s",
    ]


def test_a_job_without_a_terminal_logs_its_progress(tiny_bundle, tmp_path, caplog):
    """stderr is not a terminal under pytest: generate(progress=True) logs lines, and its
    observer still gets every event."""
    from mimicache.engine import build_engine
    from mimicache.engine.spec import EngineSpec

    config = figure_config(tmp_path, tiny_bundle, frames=5)
    case = config.test_case[0].replace(num_inference_steps=2)
    events: list[ProgressEvent] = []
    engine = build_engine(EngineSpec(config, device="cpu", cache_dir=tmp_path / "cache"))
    with caplog.at_level(logging.INFO, logger="mimicache.engine.progress"):
        engine.generate(case, progress=True, label="walk", observer=events.append)
    lines = [r.getMessage() for r in caplog.records if r.name == "mimicache.engine.progress"]
    assert lines[0].startswith("walk: preprocess (")
    assert lines[1].startswith("walk: denoise 1/4 passes (25%), ")
    assert lines[-2].startswith("walk: denoise 4/4 passes (100%), ")
    assert lines[-1].startswith("walk: done in ")
    assert len(events) == 6  # preprocess, 4 passes, done: the caller's observer is kept
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mimicache.engine.progress"):
        engine.generate(case, progress=False, label="walk")
    assert not [r for r in caplog.records if r.name == "mimicache.engine.progress"]


def test_a_ray_worker_reports_progress_as_lines_for_the_driver(tiny_bundle, tmp_path, capfd):
    """The worker class Ray runs, called here in-process: its job's log lines (which the
    driver logs again) hold the progress; nothing is drawn on its stderr."""
    from mimicache.batch.executing.workers import GenerationWorker
    from mimicache.batch.job import Job
    from mimicache.engine.spec import EngineSpec

    config = figure_config(tmp_path, tiny_bundle, frames=5)
    case = config.test_case[0].replace(num_inference_steps=2)
    worker = GenerationWorker(EngineSpec(config, device="cpu", cache_dir=tmp_path / "cache"))
    assert worker.info()["error"] is None
    capfd.readouterr()
    job = Job(0, 0, case, case.ref_video_path, tmp_path / "out" / "walk.mp4")
    outcome, lines = worker.run(job)
    assert outcome.error is None
    progress = [text for name, _, text in lines if name == "mimicache.engine.progress"]
    assert progress[0].startswith("walk: preprocess (")
    assert progress[1].startswith("walk: denoise 1/4 passes (25%), ")
    assert progress[-1].startswith("walk: done in ")
    assert "\r" not in capfd.readouterr().err  # no bar redrawn on the worker's stderr
