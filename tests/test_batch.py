from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

import mimicache
from mimicache.batch import (
    VIDEO_EXTENSIONS,
    Job,
    JobResult,
    exit_code,
    format_summary,
    list_videos,
    make_timestamp,
    plan_jobs,
    write_sidecar,
)
from mimicache.config import InferenceConfig, TestCase
from mimicache.errors import InputError
from mimicache.media import link_fault, probe_video

TS = "20240102030405"


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def make_config(tmp_path: Path, *videos: str, steps: int = 25) -> InferenceConfig:
    cases = [
        TestCase(tmp_path / "in" / v, tmp_path / "in" / f"ref{i}.jpg", num_inference_steps=steps)
        for i, v in enumerate(videos)
    ]
    return InferenceConfig(
        base_model_path="stabilityai/stable-video-diffusion-img2vid-xt-1-1",
        ckpt_path=tmp_path / "models/MimicMotion_1-1.pth",
        test_case=cases,
        source_path=tmp_path / "cfg.yaml",
    )


# --------------------------------------------------------------------------- list_videos


def test_list_videos_sorted_filtered_hidden_skipped(tmp_path):
    touch(
        tmp_path,
        "b.mp4",
        "A.MOV",
        "c.webm",
        "d.mkv",
        "e.avi",
        "f.txt",
        "g.mp4.part",
        ".hidden.mp4",
        "._a.mp4",
        "noext",
    )
    (tmp_path / "sub.mp4").mkdir()  # a folder with a video-like name
    touch(tmp_path / "nested", "x.mp4")  # not recursive
    assert [p.name for p in list_videos(tmp_path)] == ["A.MOV", "b.mp4", "c.webm", "d.mkv", "e.avi"]
    assert all(p.parent == tmp_path for p in list_videos(tmp_path))
    assert VIDEO_EXTENSIONS == (".mp4", ".mov", ".mkv", ".webm", ".avi")


def test_list_videos_lists_broken_and_looping_links_to_fail_in_words(tmp_path):
    touch(tmp_path, "good.mp4")
    (tmp_path / "gone.mp4").symlink_to(tmp_path / "deleted.mp4")
    (tmp_path / "loop.mp4").symlink_to(tmp_path / "loop.mp4")
    (tmp_path / "notes.txt").symlink_to(tmp_path / "deleted.txt")  # not a video name
    assert [p.name for p in list_videos(tmp_path)] == ["gone.mp4", "good.mp4", "loop.mp4"]
    assert link_fault(tmp_path / "good.mp4") is None
    assert link_fault(tmp_path / "gone.mp4") == (
        f"broken symbolic link: {tmp_path / 'gone.mp4'} points to {tmp_path / 'deleted.mp4'}, "
        "which does not exist"
    )
    assert link_fault(tmp_path / "loop.mp4").startswith("symbolic link loop: ")
    with pytest.raises(InputError, match=r"broken symbolic link: .* remove it"):
        probe_video(tmp_path / "gone.mp4")


def test_list_videos_missing_folder(tmp_path):
    with pytest.raises(
        InputError, match=r"batch_folder='.*nope' does not exist; pass a folder of videos"
    ):
        list_videos(tmp_path / "nope")


def test_list_videos_not_a_folder(tmp_path):
    touch(tmp_path, "a.mp4")
    with pytest.raises(InputError, match="is not a folder"):
        list_videos(tmp_path / "a.mp4")


def test_list_videos_no_video_names_extensions(tmp_path):
    touch(tmp_path, "notes.txt", ".hidden.mp4")
    with pytest.raises(InputError) as info:
        list_videos(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert ".mp4, .mov, .mkv, .webm, .avi" in str(info.value)


# --------------------------------------------------------------------------- plan_jobs


def test_make_timestamp():
    assert make_timestamp(datetime(2024, 1, 2, 3, 4, 5)) == "20240102030405"
    now = make_timestamp()
    assert len(now) == 14 and now.isdigit()


def test_plan_without_batch_folder(tmp_path):
    config = make_config(tmp_path, "pose1.mp4", "walk.mov")
    jobs = plan_jobs(config, batch_folder=None, output_dir=tmp_path / "out", timestamp=TS)
    assert [(j.index, j.case_index, j.name) for j in jobs] == [(0, 0, "pose1"), (1, 1, "walk")]
    assert jobs[0].output_path == tmp_path / "out" / f"pose1_{TS}.mp4"
    assert jobs[1].output_path == tmp_path / "out" / f"walk_{TS}.mp4"
    assert jobs[0].sidecar_path == tmp_path / "out" / f"pose1_{TS}.json"
    assert jobs[0].case is config.test_case[0]
    assert jobs[1].video_path == tmp_path / "in/walk.mov"


def test_plan_with_batch_folder_cases_times_videos(tmp_path):
    folder = tmp_path / "bad_videos"
    touch(folder, "b.mp4", "a.mp4", ".x.mp4", "readme.md")
    config = make_config(tmp_path, "pose1.mp4", "pose2.mp4", steps=4)
    jobs = plan_jobs(config, batch_folder=folder, output_dir=tmp_path / "out", timestamp=TS)
    assert [(j.index, j.case_index, j.name) for j in jobs] == [
        (0, 0, "a"),
        (1, 0, "b"),
        (2, 1, "a"),
        (3, 1, "b"),
    ]
    sub = tmp_path / "out" / "bad_videos"
    assert [j.output_path for j in jobs] == [
        sub / f"a_{TS}.mp4",
        sub / f"b_{TS}.mp4",
        sub / f"a_{TS}_1.mp4",
        sub / f"b_{TS}_1.mp4",
    ]
    assert jobs[2].case.ref_video_path == folder / "a.mp4"
    assert jobs[2].video_path == folder / "a.mp4"
    assert jobs[2].case.ref_image_path == tmp_path / "in/ref1.jpg"
    assert jobs[2].case.num_inference_steps == 4
    assert config.test_case[0].ref_video_path == tmp_path / "in/pose1.mp4"  # untouched


def test_plan_batch_folder_relative_and_trailing_slash(tmp_path, monkeypatch):
    touch(tmp_path / "clips", "a.mp4")
    monkeypatch.chdir(tmp_path)
    config = make_config(tmp_path, "pose1.mp4")
    jobs = plan_jobs(config, batch_folder="clips/", output_dir="outputs", timestamp=TS)
    assert jobs[0].output_path == Path("outputs/clips") / f"a_{TS}.mp4"
    assert jobs[0].video_path == tmp_path / "clips/a.mp4"
    monkeypatch.chdir(tmp_path / "clips")
    jobs = plan_jobs(config, batch_folder=".", output_dir="o", timestamp=TS)
    assert jobs[0].output_path == Path("o/clips") / f"a_{TS}.mp4"


def test_plan_never_overwrites_existing_files(tmp_path):
    out = tmp_path / "out"
    touch(out, f"pose1_{TS}.mp4", f"pose1_{TS}_1.mp4", f"pose1_{TS}_2.json")
    config = make_config(tmp_path, "pose1.mp4")
    jobs = plan_jobs(config, batch_folder=None, output_dir=out, timestamp=TS)
    assert jobs[0].output_path == out / f"pose1_{TS}_3.mp4"


def test_plan_same_stem_different_extension(tmp_path):
    touch(tmp_path / "v", "a.mp4", "a.webm")
    config = make_config(tmp_path, "pose1.mp4")
    jobs = plan_jobs(config, batch_folder=tmp_path / "v", output_dir=tmp_path, timestamp=TS)
    assert [j.output_path.name for j in jobs] == [f"a_{TS}.mp4", f"a_{TS}_1.mp4"]
    assert [j.video_path.name for j in jobs] == ["a.mp4", "a.webm"]


def test_plan_batch_folder_without_videos_raises(tmp_path):
    (tmp_path / "empty").mkdir()
    config = make_config(tmp_path, "pose1.mp4")
    with pytest.raises(InputError, match="holds no video"):
        plan_jobs(config, batch_folder=tmp_path / "empty", output_dir=tmp_path, timestamp=TS)


# --------------------------------------------------------------------------- results


def sample_results(tmp_path: Path) -> list[JobResult]:
    config = make_config(tmp_path, "pose1.mp4", "dance.mp4")
    jobs = plan_jobs(config, batch_folder=None, output_dir=Path("out"), timestamp=TS)
    ok = JobResult(
        jobs[0],
        "ok",
        jobs[0].output_path,
        {"preprocess": 1.234, "pipeline": 45.6789, "total": 46.913},
    )
    bad = JobResult.failure(
        jobs[1],
        InputError("cannot decode dance.mp4: invalid data found\nmore detail"),
        {"preprocess": 0.5, "total": 0.504},
    )
    return [ok, bad]


def test_format_summary(tmp_path):
    text = format_summary(sample_results(tmp_path))
    assert text.splitlines() == [
        "#  job             status  quality  preprocess  pipeline  total  output",
        f"1  pose1 (case 0)  ok      -              1.23     45.68  46.91  out/pose1_{TS}.mp4",
        "2  dance (case 1)  failed  -              0.50         -   0.50  "
        "error: InputError: cannot decode dance.mp4: invalid data found",
        "1 succeeded, 1 failed",
    ]


def test_the_summary_names_each_clips_verdict_and_counts_the_suspect(tmp_path):
    ok, bad = sample_results(tmp_path)
    ok.quality = {"verdict": "suspect", "reasons": ["right hand error 0.50 > 0.40"]}
    second = dataclasses.replace(ok, quality={"verdict": "ok", "reasons": []})
    lines = format_summary([ok, second, bad]).splitlines()
    assert lines[1].split()[5] == "suspect" and lines[2].split()[5] == "ok"
    assert lines[-1] == (
        "2 succeeded, 1 failed; 1 suspect (their reasons are in the sidecars and the report)"
    )


def test_format_summary_shows_whole_errors_and_tidy_paths(tmp_path):
    config = make_config(tmp_path, "pose1.mp4")
    job = plan_jobs(config, batch_folder=None, output_dir=Path("o/a/../b"), timestamp=TS)[0]
    long = "InputError: " + "x" * 150 + " in data/clip.mp4"
    text = format_summary([JobResult.failure(job, long + "\nsecond line")])
    row = text.splitlines()[1]
    assert row.startswith("1  pose1  failed")
    assert row.endswith("error: " + long)  # the whole first line: the path is its point
    assert text.splitlines()[-1] == "0 succeeded, 1 failed"
    done = JobResult(job, "ok", output=job.output_path)
    assert f"o/b/pose1_{TS}.mp4" in format_summary([done])  # no "a/.." left in it


def test_exit_code(tmp_path):
    ok, bad = sample_results(tmp_path)
    assert exit_code([ok]) == 0
    assert exit_code([ok, bad]) == 1
    assert exit_code([bad]) == 1
    assert exit_code([ok, bad, JobResult(ok.job, "interrupted")]) == 130
    assert ok.ok and not bad.ok
    assert bad.error == "InputError: cannot decode dance.mp4: invalid data found\nmore detail"
    assert bad.output is None and bad.cache_events == []


def test_job_result_rejects_unknown_status(tmp_path):
    ok, _ = sample_results(tmp_path)
    with pytest.raises(ValueError, match="status"):
        JobResult(ok.job, "done")  # type: ignore[arg-type]


@dataclass
class Event:
    stage: str
    hit: bool
    path: Path


def test_write_sidecar(tmp_path):
    config = make_config(tmp_path, "pose1.mp4")
    job = plan_jobs(config, batch_folder=None, output_dir=tmp_path / "out", timestamp=TS)[0]
    result = JobResult(
        job,
        "ok",
        job.output_path,
        {"preprocess": 1.5, "pipeline": 2.0, "total": 3.5, "dwpose": 1.25},
        cache_events=[Event("clip_embeddings", True, Path("/c/x.safetensors")), {"stage": "vae"}],
    )
    path = write_sidecar(
        job,
        result,
        config=config,
        model_files={"ckpt": "MimicMotion_1-1.pth", "det": Path("yolox_l.onnx")},
    )
    assert path == tmp_path / "out" / f"pose1_{TS}.json"
    data = json.loads(path.read_text())
    assert data["schema"] == 1
    assert data["mimicache_version"] == mimicache.__version__
    assert data["status"] == "ok" and data["error"] is None
    assert data["output"] == str(job.output_path)
    assert data["job"] == {"index": 0, "name": "pose1", "case_index": 0}
    assert data["config_file"] == str(tmp_path / "cfg.yaml")
    assert data["base_model_path"] == "stabilityai/stable-video-diffusion-img2vid-xt-1-1"
    assert data["parameters"] == {
        "ref_video_path": str(tmp_path / "in/pose1.mp4"),
        "ref_image_path": str(tmp_path / "in/ref0.jpg"),
        "num_frames": 72,
        "resolution": 576,
        "frames_overlap": 6,
        "num_inference_steps": 25,
        "noise_aug_strength": 0.0,
        "guidance_scale": 2.0,
        "sample_stride": 2,
        "fps": 15,
        "seed": 42,
    }
    assert data["model_files"] == {"ckpt": "MimicMotion_1-1.pth", "det": "yolox_l.onnx"}
    assert data["timings"] == {"preprocess": 1.5, "pipeline": 2.0, "total": 3.5, "dwpose": 1.25}
    assert data["cache_events"] == [
        {"stage": "clip_embeddings", "hit": True, "path": "/c/x.safetensors"},
        {"stage": "vae"},
    ]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left


def test_write_sidecar_for_failed_job(tmp_path):
    config = make_config(tmp_path, "pose1.mp4")
    job = plan_jobs(config, batch_folder=None, output_dir=tmp_path / "o", timestamp=TS)[0]
    path = write_sidecar(job, JobResult.failure(job, "boom"), config=config, model_files={})
    data = json.loads(path.read_text())
    assert path == job.sidecar_path
    assert (data["status"], data["error"], data["output"]) == ("failed", "boom", None)
    assert data["cache_events"] == [] and data["timings"] == {}


def test_job_dataclass_fields(tmp_path):
    case = TestCase(tmp_path / "v.mp4", tmp_path / "i.jpg")
    job = Job(3, 1, case, tmp_path / "clip.final.mp4", tmp_path / "o.mp4")
    assert job.name == "clip.final"
