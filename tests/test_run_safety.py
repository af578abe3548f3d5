"""Nothing lost, nothing misreported: concurrent runs, paths checked before work, clear
messages for bad media and checkpoints, quiet and labelled progress, file modes, help."""

import errno
import hashlib
import json
import os
import stat
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

import mimicache.engine.engine
import mimicache.engine.loaded
from mimicache.batch import Job, JobResult, override_tag, publish_output, reserve_log
from mimicache.batch.bench.cold_warm import format_table
from mimicache.cli import build_parser, main, original_script_main
from mimicache.config import TestCase
from mimicache.errors import InputError, ModelLoadError
from mimicache.media import probe_video, write_video
from mimicache.pipeline.weights import read_checkpoint
from mimicache.pose.align import align_poses
from mimicache.pose.keypoints import PoseFrame
from mimicache.testing.tiny_dwpose import make_figure_frame
from tests.engine_fixtures import figure_video, reference_image, write_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workspace(tiny_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    videos = root / "clips"
    videos.mkdir()
    figure_video(videos / "good.mp4", frames=4)
    image = reference_image(root / "ref.png")
    config = write_config(root / "cfg.yaml", tiny_bundle, image, videos / "good.mp4")
    return {"root": root, "videos": videos, "config": config, "image": image}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- concurrent runs


def test_concurrent_runs_into_one_folder_lose_nothing(workspace, tmp_path):
    out = tmp_path / "out"
    cache = tmp_path / "cache"
    seeds = ["1", "2", "1", None]  # two identical runs: same name asked for twice
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1")
    procs = []
    for seed in seeds:
        argv = [
            sys.executable, "-m", "mimicache.cli", "run",
            "--inference_config", str(workspace["config"]),
            "--batch_folder", str(workspace["videos"]),
            "--output_dir", str(out), "--feature_cache_dir", str(cache), "--quiet",
        ]  # fmt: skip
        if seed is not None:
            argv += ["--seed", seed]
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True))
    reported = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, stdout
        reported += [line.split()[-1] for line in stdout.splitlines() if " ok " in line]
    videos = sorted((out / "clips").glob("*.mp4"))
    assert len(videos) == len(seeds) == len(set(reported))
    assert sorted(Path(p) for p in reported) == videos
    names = [v.name for v in videos]
    for seed in ("1", "2"):
        assert any(f"_seed{seed}" in n for n in names)
    assert sum("_seed1" in n for n in names) == 2  # the same request twice: two files
    for video in videos:
        sidecar = json.loads(video.with_suffix(".json").read_text())
        assert sidecar["status"] == "ok" and sidecar["output"] == str(video)
        assert video.stat().st_size > 0
    by_seed = {}
    for video in videos:
        seed = json.loads(video.with_suffix(".json").read_text())["parameters"]["seed"]
        by_seed.setdefault(seed, set()).add(_sha(video))
    assert sorted(by_seed) == [1, 2, 42]
    assert len({next(iter(d)) for d in by_seed.values()}) == 3  # each seed its own video
    logs = sorted(out.glob("*.log"))
    assert len(logs) == len(seeds)
    assert all("log file:" in log.read_text() for log in logs)


def _publish(args):
    folder, stem = args
    video = f"video of pid {os.getpid()}".encode()
    return str(publish_output(Path(folder), stem, video, lambda p: p.name.encode()))


def test_publications_from_many_processes_never_collide(tmp_path):
    with ProcessPoolExecutor(4) as pool:
        got = list(pool.map(_publish, [(str(tmp_path), "clip_20240101000000")] * 12))
    assert len(set(got)) == 12
    assert sorted(Path(p).name for p in got)[0] == "clip_20240101000000.mp4"
    # every published mp4 has its own sidecar, which names it; no temp file is left
    assert all(Path(p).with_suffix(".json").read_text() == Path(p).name for p in got)
    assert all(Path(p).read_bytes().startswith(b"video of pid") for p in got)
    assert list(tmp_path.glob(".*")) == []


def test_a_failed_jobs_sidecar_blocks_the_video_name(tmp_path):
    failed = publish_output(tmp_path, "x", None, lambda p: b"{}")
    assert failed == tmp_path / "x.mp4" and not failed.exists()
    assert (tmp_path / "x.json").read_bytes() == b"{}"
    assert publish_output(tmp_path, "x", b"mp4", lambda p: b"{}") == tmp_path / "x_1.mp4"
    assert reserve_log(tmp_path, "20240101000000").name == "20240101000000.log"
    assert reserve_log(tmp_path, "20240101000000").name == "20240101000000_1.log"


def test_override_tag_names_what_differs():
    assert override_tag({"seed": 1, "num_inference_steps": 8, "guidance_scale": None}) == (
        "seed1_steps8"
    )
    assert override_tag({"guidance_scale": 2.5, "scheduler": "AnimateLCM_SVD"}) == "g2.5_lcm"
    assert override_tag({"seed": None}) == ""
    with pytest.raises(ValueError):
        override_tag({"no_such_value": 5})


# --------------------------------------------------------------------------- before any work


@pytest.fixture
def no_model_load(monkeypatch):
    loads = []
    monkeypatch.setattr(mimicache.engine.loaded, "load_pipeline", lambda *a, **k: loads.append(1))
    return loads


def _run(workspace, tmp_path, *extra):
    return main(
        [
            "run", "--inference_config", str(workspace["config"]),
            "--feature_cache_dir", str(tmp_path / "cache"), "--quiet", *extra,
        ]
    )  # fmt: skip


def test_output_dir_that_is_a_file(workspace, tmp_path, capsys, no_model_load):
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    assert _run(workspace, tmp_path, "--output_dir", str(blocker)) == 2
    err = capsys.readouterr().err
    assert f"output folder {blocker}" in err and "a file is in the way" in err
    assert "Traceback" not in err and not no_model_load


def test_unwritable_output_dir_fails_before_models_load(workspace, tmp_path, capsys, no_model_load):
    log = tmp_path / "run.log"
    code = _run(workspace, tmp_path, "--output_dir", "/sys/mimicache-out", "--log_file", str(log))
    assert code == 2
    err = capsys.readouterr().err
    assert "output folder /sys/mimicache-out is not writable" in err
    assert "Traceback" not in err and not no_model_load


def test_unwritable_log_file(workspace, tmp_path, capsys, no_model_load):
    code = _run(
        workspace, tmp_path, "--output_dir", str(tmp_path / "o"), "--log_file", "/sys/x.log"
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "log folder /sys is not writable" in err and not no_model_load
    folder_log = tmp_path / "logdir"
    folder_log.mkdir()
    code = _run(
        workspace, tmp_path, "--output_dir", str(tmp_path / "o"), "--log_file", str(folder_log)
    )
    assert code == 2 and "is a folder" in capsys.readouterr().err


# --------------------------------------------------------------------------- clear messages


def test_ffmpeg_errors_in_words(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"garbage" * 100)
    with pytest.raises(InputError) as info:
        probe_video(bad)
    text = str(info.value)
    assert "not a video PyAV can decode: invalid data found" in text and str(bad) in text
    assert "Errno" not in text and "1094995529" not in text


def _pose(people: int, visible: bool, y0: float = 0.2) -> PoseFrame:
    candidate = np.tile(np.linspace([0.3, y0], [0.7, y0 + 0.6], 18), (people, 1))
    score = np.full((people, 18), 0.9 if visible else 0.05)
    subset = np.where(score > 0.3, np.arange(people * 18).reshape(people, 18), -1.0)
    return PoseFrame(
        candidate=candidate,
        subset=subset.astype(float),
        body_score=score,
        faces=np.zeros((people, 68, 2)),
        faces_score=np.zeros((people, 68)),
        hands=np.zeros((2 * people, 21, 2)),
        hands_score=np.zeros((2 * people, 21)),
    )


def test_a_video_without_any_person_is_an_error(recwarn):
    ref = _pose(1, True)
    with pytest.raises(InputError, match=r"no person was detected in the driving video v\.mp4"):
        align_poses(ref, [_pose(1, False)] * 5, (96, 72), (64, 64), video_path="v.mp4")
    assert not [w for w in recwarn if "Polyfit" in str(w.message)]


def test_a_video_with_some_empty_frames_warns_with_the_share(caplog):
    ref = _pose(1, True)
    frames = [_pose(1, True, 0.1 + 0.05 * i) for i in range(3)] + [_pose(1, False)]
    with caplog.at_level("WARNING"):
        aligned = align_poses(ref, frames, (96, 72), (64, 64), video_path="v.mp4")
    assert len(aligned) == 4
    assert "a person was detected in 3 of 4 sampled frames (75 %)" in caplog.text
    assert "v.mp4" in caplog.text


def test_a_solid_colour_video_fails_its_job_in_words(workspace, tmp_path, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    write_video(clips / "blank.mp4", np.full((4, 96, 72, 3), 90, np.uint8), fps=24)
    out = tmp_path / "out"
    with _no_rank_warning():
        code = _run(workspace, tmp_path, "--output_dir", str(out), "--batch_folder", str(clips))
    assert code == 1
    assert "no person was detected" in capsys.readouterr().out
    assert not list((out / "clips").glob("*.mp4"))


class _no_rank_warning:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings(record=True)
        self.caught = self._ctx.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        assert not [w for w in self.caught if "Polyfit" in str(w.message)]


class Payload:
    """Any non-tensor object makes a pickle that weights_only refuses."""


def test_pickled_checkpoint_refusal_says_code_and_how_to_convert(tmp_path):
    ckpt = tmp_path / "mm.pth"
    torch.save({"unet.x": torch.zeros(1), "payload": Payload()}, ckpt)
    with pytest.raises(ModelLoadError) as info:
        read_checkpoint(ckpt)
    text = str(info.value)
    assert "holds code" in text and "not only tensors" in text and "Payload" in text
    assert "save_file" in text and str(ckpt.with_suffix(".safetensors")) in text
    assert "Re-running `torch.load`" not in text and "add_safe_globals" not in text


# --------------------------------------------------------------------------- progress output


def test_quiet_shows_no_bar_at_all(workspace, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(mimicache.engine.engine, "_stderr_is_terminal", lambda: True)
    assert _run(workspace, tmp_path, "--output_dir", str(tmp_path / "o")) == 0
    err = capsys.readouterr().err
    assert "it/s" not in err and "Loading weights" not in err and "%|" not in err


def test_bars_are_labelled_on_a_terminal(workspace, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(mimicache.engine.engine, "_stderr_is_terminal", lambda: True)
    code = main(
        [
            "run", "--inference_config", str(workspace["config"]), "--output_dir", str(tmp_path),
            "--feature_cache_dir", str(tmp_path / "cache"),
        ]
    )  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert "good: DWPose" in err and "good: denoise" in err


def test_no_bars_but_stage_lines_when_stderr_is_not_a_terminal(workspace, tmp_path, capsys):
    out = tmp_path / "o"
    code = main(
        [
            "run", "--inference_config", str(workspace["config"]), "--output_dir", str(out),
            "--feature_cache_dir", str(tmp_path / "cache"),
        ]
    )  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert "%|" not in err and "it/s" not in err
    log = next(out.glob("*.log")).read_text()
    [line] = [x for x in log.splitlines() if " good: digest " in x]  # the stages in one line
    assert all(f" {stage} " in line for stage in ("video_keypoints", "denoise", "decode"))
    # the cache: one line per job on the console, every entry's line in the log file
    assert "good: 0 of 7 cached stages from the cache; computed" in err
    assert "Cache miss for" not in err and "Cache miss for video_keypoints" in log


# --------------------------------------------------------------------------- files and help


def test_outputs_get_the_umask_mode(workspace, tmp_path):
    old = os.umask(0o022)
    try:
        assert _run(workspace, tmp_path, "--output_dir", str(tmp_path / "o")) == 0
    finally:
        os.umask(old)
    written = [*(tmp_path / "o").glob("*.mp4"), *(tmp_path / "o").glob("*.json")]
    assert len(written) == 2
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_help_documents_scheduler_flags_and_never_says_none(capsys):
    parser = build_parser()
    for command in ("run", "bench"):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "(default: None)" not in text
        assert "Karras schedule exponent (AnimateLCM_SVD only; default: 7.0)" in text
        assert "--lcm_num_train_timesteps" in text and "default: 40" in text
        assert ("--benchmark_cache" in text) == (command == "run")
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--help"])
    assert "cold" in capsys.readouterr().out.split("options:")[0]
    with pytest.raises(SystemExit):
        original_script_main(["--help"], cache=True)
    assert "(default: None)" not in capsys.readouterr().out


def test_bench_table_marks_uncached_stages(tmp_path):
    case = TestCase(ref_video_path=Path("v.mp4"), ref_image_path=Path("i.png"))
    job = Job(0, 0, case, Path("v.mp4"), tmp_path / "v.mp4")
    cold = [JobResult(job, "ok", timings={"video_keypoints": 2.0, "decode": 1.3, "total": 4})]
    warm = [JobResult(job, "ok", timings={"video_keypoints": 0.01, "decode": 1.0, "total": 2})]
    rows = {
        line.split()[0]: line
        for line in format_table(cold, warm, True, {"cold": {}, "warm": {}}).splitlines()
    }
    assert "uncached" in rows["decode"] and "1.3x" not in rows["decode"]
    assert "200.0x" in rows["video_keypoints"] and "2.0x" in rows["total"]


def test_a_person_number_a_video_lacks_fails_that_job_alone(workspace, tmp_path, caplog):
    clips = tmp_path / "clips"
    clips.mkdir()
    figure_video(clips / "solo.mp4", frames=4)
    duo = np.stack([make_figure_frame(72, 96, i / 4, people=2) for i in range(4)])
    write_video(clips / "duo.mp4", duo, fps=24)
    out = tmp_path / "out"
    with _no_rank_warning():
        code = _run(
            workspace, tmp_path, "--output_dir", str(out), "--batch_folder", str(clips),
            "--person", "1",
        )  # fmt: skip
    assert code == 1
    text = next(out.glob("*.log")).read_text()  # the run's log speaks in flags
    assert f"--person 1: the driving video {clips / 'solo.mp4'} shows 1 person" in text
    assert "choose one of those, or largest, center or auto" in text
    assert [p.name.split("_")[0] for p in (out / "clips").glob("*.mp4")] == ["duo"]


def test_broken_and_looping_links_in_the_batch_folder_fail_their_jobs_alone(
    workspace, tmp_path, caplog
):
    clips = tmp_path / "clips"
    clips.mkdir()
    figure_video(clips / "good.mp4", frames=4)
    (clips / "gone.mp4").symlink_to(tmp_path / "deleted.mp4")
    (clips / "loop.mp4").symlink_to(clips / "loop.mp4")
    out = tmp_path / "out"
    with _no_rank_warning():
        code = _run(workspace, tmp_path, "--output_dir", str(out), "--batch_folder", str(clips))
    assert code == 1
    gone, deleted = clips / "gone.mp4", tmp_path / "deleted.mp4"
    assert f"broken symbolic link: {gone} points to {deleted}, which does not exist" in caplog.text
    assert f"symbolic link loop: {clips / 'loop.mp4'}" in caplog.text
    assert [p.name.split("_")[0] for p in (out / "clips").glob("*.mp4")] == ["good"]
    sidecars = [json.loads(p.read_text()) for p in sorted((out / "clips").glob("*.json"))]
    assert [(s["status"], "symbolic link" in (s["error"] or "")) for s in sidecars] == [
        ("failed", True),  # gone
        ("ok", False),  # good
        ("failed", True),  # loop
    ]


def test_long_video_names_get_short_distinct_output_names(workspace, tmp_path):
    from mimicache.batch.planning.plan import plan_jobs
    from mimicache.config import load_config

    clips = tmp_path / "clips"
    clips.mkdir()
    long_a, long_b = "a" * 240 + "x.mp4", "a" * 240 + "y.mp4"
    for name in (long_a, long_b):
        figure_video(clips / name, frames=4)
    config = load_config(workspace["config"])
    jobs = plan_jobs(
        config, batch_folder=clips, output_dir=tmp_path / "out", timestamp="20260101000000",
        tag="seed1_steps8_g2.5_aug0.02_lcm",
    )  # fmt: skip
    names = [job.output_path.name for job in jobs]
    assert len(set(names)) == 2
    for name in names:
        assert len(os.fsencode(name.replace(".mp4", "_9999.json"))) <= 255
        assert name.startswith("a" * 100) and "_20260101000000_seed1" in name
    out = tmp_path / "run"
    with _no_rank_warning():
        code = _run(workspace, tmp_path, "--output_dir", str(out), "--batch_folder", str(clips))
    assert code == 0
    assert len(list((out / "clips").glob("*.mp4"))) == 2


def test_an_undecodable_video_name_does_not_abort_the_batch(workspace, tmp_path, caplog):
    clips = tmp_path / "clips"
    clips.mkdir()
    figure_video(clips / "good.mp4", frames=4)
    figure_video(clips / os.fsdecode(b"bad\xff.mp4"), frames=4)
    out = tmp_path / "out"
    with _no_rank_warning():
        code = _run(workspace, tmp_path, "--output_dir", str(out), "--batch_folder", str(clips))
    assert code == 0
    sidecars = [json.loads(p.read_text()) for p in sorted((out / "clips").glob("*.json"))]
    assert len(sidecars) == 2 and len(list(out.glob("*.report.html"))) == 1
    assert "Traceback" not in caplog.text
    assert sorted(s["job"]["name"] for s in sidecars) == [os.fsdecode(b"bad\xff"), "good"]
    for path in [*out.glob("*.log"), *out.glob("*.report.html")]:
        text = path.read_text(encoding="utf-8")
        assert "good" in text and "bad\\xff" in text, path


def test_an_output_folder_that_turns_unwritable_mid_run_fails_the_rest_cleanly(
    workspace, tmp_path, caplog, capsys, monkeypatch
):
    """After the first job's files land the folder refuses new files (as a read-only remount or a
    revoked permission would): the later jobs fail with one line each, nothing partial or
    empty is left under a real name or as a temp file, and the run still ends with its
    summary."""
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("a", "b", "c"):
        figure_video(clips / f"{name}.mp4", frames=4)
    out = tmp_path / "out"
    jobs = out / "clips"
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if (
            flags & os.O_CREAT
            and Path(os.fsdecode(path)).parent == jobs
            and any(jobs.glob("*.json"))
        ):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    with _no_rank_warning():
        code = _run(workspace, tmp_path, "--output_dir", str(out), "--batch_folder", str(clips))
    assert code == 1
    written = sorted(jobs.iterdir())
    assert [p.suffix for p in written] == [".json", ".mp4"] and written[0].stem.startswith("a_")
    assert all(p.stat().st_size > 0 for p in written)
    assert "Traceback" not in caplog.text
    failures = [r.getMessage() for r in caplog.records if "failed:" in r.getMessage()]
    assert len(failures) == 2 and all("Permission denied" in f for f in failures), failures
    assert all(f"to {jobs}" in f and "writable" in f for f in failures)
    summary = capsys.readouterr().out
    assert "2 failed" in summary or "failed: 2" in summary, summary


def test_a_retried_job_adopts_its_own_earlier_publication(tmp_path):
    """A worker that died after publishing leaves its files; the retry of the same job finds
    them (its sidecar names this run and this job) instead of publishing a second copy."""

    def ours(data: bytes) -> bool:
        return json.loads(data)["run"] == "r1"

    sidecar = lambda path: json.dumps({"run": "r1", "name": path.name}).encode()  # noqa: E731
    first = publish_output(tmp_path, "clip", b"mp4 bytes", sidecar, ours)
    again = publish_output(tmp_path, "clip", b"mp4 bytes", sidecar, ours)
    assert again == first == tmp_path / "clip.mp4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.json", "clip.mp4"]
    other = lambda path: json.dumps({"run": "r2"}).encode()  # noqa: E731
    theirs = lambda data: json.loads(data)["run"] == "r2"  # noqa: E731
    assert publish_output(tmp_path, "clip", b"mp4", other, theirs) == tmp_path / "clip_1.mp4"


def test_a_retried_job_whose_files_stand_finishes_as_done(tmp_path):
    """The retry of a job whose first attempt published and then died publishes nothing
    new and still comes back done, naming the files that stand."""
    from mimicache.batch.executing.job_loop import RunInfo, finish_job
    from mimicache.batch.job import Outcome
    from mimicache.config import InferenceConfig
    from mimicache.engine.record import GenerationResult

    case = TestCase(ref_video_path=tmp_path / "walk.mp4", ref_image_path=tmp_path / "ref.png")
    job = Job(0, 0, case, case.ref_video_path, tmp_path / "out" / "walk_x.mp4")
    config = InferenceConfig(base_model_path="", ckpt_path=Path(), test_case=[case])
    info = RunInfo(config, {})
    frames = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    first = finish_job(job, Outcome(GenerationResult(frames, 8, {})), info)
    again = finish_job(job, Outcome(GenerationResult(frames, 8, {})), info)
    assert first.ok and again.ok and again.output == first.output
    assert (again.output_bytes, again.output_blake3) == (first.output_bytes, first.output_blake3)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["walk_x.json", "walk_x.mp4"]
