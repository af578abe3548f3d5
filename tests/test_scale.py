"""One plan, several executors: Ray workers write what a local run writes, a dead worker's
job is retried, ``--resume`` runs only what is missing, ``--shard`` splits a plan."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
from collections import Counter
from pathlib import Path

import pytest

from mimicache.batch import JobResult, plan_jobs
from mimicache.batch.executing import ray_executor
from mimicache.batch.executing.executor import ExecutorSettings
from mimicache.batch.executing.ray_executor import RayExecutor
from mimicache.batch.planning.plan import shard_jobs
from mimicache.batch.reporting.results import RESULTS_FILE, read_results
from mimicache.cache import FeatureStore
from mimicache.cli import main
from mimicache.cli.scale import shard_arg
from mimicache.config import load_config
from mimicache.engine.spec import EngineSpec
from mimicache.engine.stage_names import JOB_STAGES
from tests.engine_fixtures import figure_video, reference_image, write_config

JOBS = 6


@pytest.fixture(scope="module")
def workspace(tiny_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    videos = root / "clips"
    videos.mkdir()
    for i in range(JOBS):
        figure_video(videos / f"v{i}.mp4", frames=4, phase=i / JOBS)
    image = reference_image(root / "ref.png")
    config = write_config(root / "cfg.yaml", tiny_bundle, image, videos / "v0.mp4")
    return {"root": root, "videos": videos, "config": config}


def _argv(workspace, out: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "run", "--inference_config", str(workspace["config"]),
        "--batch_folder", str(workspace["videos"]), "--output_dir", str(out),
        "--feature_cache_dir", str(cache), "--threads", "1", "--quiet", *extra,
    ]  # fmt: skip


def _videos(out: Path) -> dict[str, bytes]:
    """mp4 bytes by video name (``v3_<timestamp>.mp4`` -> ``v3``)."""
    return {p.name.split("_")[0]: p.read_bytes() for p in sorted(out.rglob("*.mp4"))}


def _sidecars(out: Path) -> dict[str, dict]:
    return {p.name.split("_")[0]: json.loads(p.read_text()) for p in sorted(out.rglob("*.json"))}


@pytest.fixture(scope="module")
def local_run(workspace, tmp_path_factory):
    """The local executor's outputs (one torch thread, as each Ray worker here)."""
    out = tmp_path_factory.mktemp("local-out")
    assert main(_argv(workspace, out, out.parent / "local-cache")) == 0
    return {"videos": _videos(out), "sidecars": _sidecars(out)}


def test_ray_two_workers_write_what_a_local_run_writes(
    workspace, local_run, ray_cluster, tmp_path, capsys
):
    out, cache = tmp_path / "out", tmp_path / "cache"
    code = main(
        _argv(workspace, out, cache, "--executor", "ray", "--workers", "2", "--pose_workers", "1")
    )
    assert code == 0
    stdout = capsys.readouterr().out
    assert stdout.count("#  job") == 1 and stdout.count(f"{JOBS} succeeded, 0 failed") == 1
    videos = _videos(out)
    assert len(videos) == JOBS and videos == local_run["videos"]  # byte-identical
    sidecars = _sidecars(out)
    for name, data in sidecars.items():
        assert data["status"] == "ok"
        assert data["result_key"] == local_run["sidecars"][name]["result_key"]
    # each entry computed once across the workers (and the pose stage)
    events = [e for data in sidecars.values() for e in data["cache_events"]]
    computed = Counter((e["stage"], e["key"]) for e in events if not e["hit"])
    on_disk = {(e.stage, e.key) for e in FeatureStore(cache).entries()}
    assert set(computed) == on_disk and set(computed.values()) == {1}
    # clip, vae, the image's keypoints; per video its keypoints, frames, and the scores' two
    assert len(on_disk) == 2 + 1 + 2 * JOBS + 2 * JOBS
    # the driver's results.jsonl: a row per job, as a local run writes it
    rows = read_results(out / RESULTS_FILE)
    assert sorted(r["index"] for r in rows) == list(range(JOBS))
    for row in rows:
        name = Path(row["output"]).name.split("_")[0]
        assert row["status"] == "ok" and row["result_key"] == sidecars[name]["result_key"]
        assert row["timings"]["total"] == sidecars[name]["timings"]["total"]
    # the pose stage ran ahead: some jobs found all their pose entries as hits
    pose_stages = {"image_keypoints", "video_keypoints", "pose_frames"}
    ahead = [
        data for data in sidecars.values()
        if "pose_ahead" in data["timings"]
        and all(e["hit"] for e in data["cache_events"][3:] if e["stage"] in pose_stages)
    ]  # fmt: skip
    assert ahead


def test_ray_workers_at_one_thread_never_take_entries_of_a_two_thread_run(
    workspace, local_run, ray_cluster, tmp_path, capsys
):
    out2, out1, cache = tmp_path / "out2", tmp_path / "out1", tmp_path / "cache"
    two = [*_argv(workspace, out2, cache)[:-2], "2", "--quiet"]  # --threads 2
    assert main(two) == 0
    written_at_two = {
        (e["stage"], e["key"]) for d in _sidecars(out2).values() for e in d["cache_events"]
    }
    ray_argv = _argv(workspace, out1, cache, "--executor", "ray", "--workers", "2")
    ray_argv.remove("--quiet")  # progress on, but stderr is no terminal here: no bar
    assert main(ray_argv) == 0
    assert "jobs:" not in capsys.readouterr().err
    assert _videos(out1) == local_run["videos"]  # the one-thread result, not the two-thread one
    sidecars = _sidecars(out1)
    used = {(e["stage"], e["key"]) for d in sidecars.values() for e in d["cache_events"]}
    assert used and not used & written_at_two
    reasons = {
        e["reason"]
        for d in sidecars.values()
        for e in d["cache_events"]
        if not e["hit"] and e["stage"] in JOB_STAGES  # the clips differ: their scores miss too
    }
    assert reasons == {"computed on another platform"}
    assert {d["platform"]["models"]["threads"] for d in sidecars.values()} == {1}
    assert {d["platform"]["models"]["threads"] for d in _sidecars(out2).values()} == {2}


def _spec(workspace, cache: Path) -> EngineSpec:
    config = load_config(workspace["config"])
    return EngineSpec(config, device="cpu", cache_dir=cache, threads=1, pose_retarget="published")


def test_a_worker_killed_mid_batch_is_replaced_and_its_job_retried(
    workspace, local_run, ray_cluster, tmp_path, caplog, monkeypatch
):
    spec = _spec(workspace, tmp_path / "cache")
    jobs = plan_jobs(spec.config, batch_folder=workspace["videos"], output_dir=tmp_path / "out",
                     timestamp="20240101000000")  # fmt: skip
    killed: list[int] = []

    def kill_a_busy_worker(result: JobResult, executor: RayExecutor) -> None:
        if not killed:
            busy = executor.worker_pids(busy_only=True)
            assert busy, "another worker is running a job"
            os.kill(busy[0], signal.SIGKILL)
            killed.append(busy[0])

    caplog.set_level(logging.INFO)
    executor = RayExecutor(
        spec,
        ExecutorSettings(workers=2, pose_workers=0),
        progress=False,
        on_result=kill_a_busy_worker,
    )
    # the workers' progress lines are logged here while their jobs still run
    monkeypatch.setattr(ray_executor, "RELAY_POLL_S", 0.05)
    running: list[bool] = []

    class WhileRunning(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            label = record.getMessage().split(":")[0]
            refs = [ref for ref, (job, *_) in executor.busy.items() if job.name == label]
            running.append(bool(refs) and not ray_cluster.wait(refs, timeout=0)[0])

    watch = WhileRunning()
    logging.getLogger("mimicache.engine.progress").addHandler(watch)
    try:
        results = executor.run(jobs, config=spec.config)
    finally:
        logging.getLogger("mimicache.engine.progress").removeHandler(watch)
    assert killed and [r.status for r in results] == ["ok"] * JOBS
    assert [r.job.index for r in results] == list(range(JOBS))
    assert any("its worker died" in m and "retry 1 of 1" in m for m in caplog.messages)
    assert _videos(tmp_path / "out") == local_run["videos"]
    assert any(running)  # a job's line came before its result, not replayed after it
    done = Counter(m.split(":")[0] for m in caplog.messages if ": done in " in m)
    retried = {m.split(":")[0] for m in caplog.messages if "its worker died" in m}
    # each line once, streamed and not also replayed; the killed job's first attempt may have
    # finished generating (and said so) before it died while publishing
    assert len(retried) == 1 and set(done) == {job.name for job in jobs}
    assert all(n == 1 or (n == 2 and name in retried) for name, n in done.items()), done


def test_resume_runs_only_the_missing_jobs(workspace, local_run, tmp_path, capsys, caplog):
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert main(_argv(workspace, out, cache, "--shard", "1/2")) == 0  # a partial batch: 3 jobs
    first = _videos(out)
    assert sorted(first) == ["v0", "v2", "v4"]
    damaged = next(out.rglob("v4_*.mp4"))
    damaged.write_bytes(damaged.read_bytes()[:-10])  # a result cut short is not done
    (out / "clips" / "v5_20000101000000.mp4").write_bytes(b"")  # a killed run's empty claim
    (out / "clips" / "v5_20000101000000.json").write_bytes(b"")
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="mimicache.batch.executing.resume"):
        assert main(_argv(workspace, out, cache, "--resume")) == 0
    redone = _why(caplog.messages)
    assert sorted(redone) == ["v1", "v3", "v4", "v5"]  # one line each, with why
    assert "v1: not finished: no earlier result in" in redone["v1"]
    assert "v5: not finished" in redone["v5"]  # a killed run's empty claim is no result
    assert f"v4: runs again: the mp4 {damaged} is damaged" in redone["v4"]
    stdout = capsys.readouterr().out
    assert "4 succeeded, 0 failed, 2 skipped (done)" in stdout
    rows = {line.split()[1]: line for line in stdout.splitlines() if line[:1].isdigit()}
    assert "skipped (done)" in rows["v0"] and "skipped (done)" in rows["v2"]
    assert all(" ok " in rows[v] for v in ("v1", "v3", "v4", "v5"))
    made = [p for p in out.rglob("*.mp4") if p.stat().st_size > 0 and p != damaged]
    assert len(made) == JOBS
    assert {p.name.split("_")[0]: p.read_bytes() for p in made} == local_run["videos"]
    capsys.readouterr()
    assert main(_argv(workspace, out, cache, "--resume")) == 0  # all done: nothing runs
    assert f"0 succeeded, 0 failed, {JOBS} skipped (done)" in capsys.readouterr().out


def test_resume_logs_why_each_job_is_redone(tmp_path, caplog):
    from mimicache.batch.executing.resume import ResultKey, split_done
    from mimicache.batch.job import Job

    out = tmp_path / "out"
    out.mkdir()
    case = load_config_like(tmp_path).test_case[0]
    jobs = [
        Job(i, 0, case, tmp_path / f"{name}.mp4", out / f"{name}_2.mp4")
        for i, name in enumerate(("fresh", "reseeded", "empty", "gone", "done"))
    ]
    fields = {"seed": 1, "pose_frames": "a" * 64}
    keys = [ResultKey(f"{i}" * 64, fields) for i in range(len(jobs))]
    keys[1] = ResultKey("9" * 64, dict(fields, seed=2))

    def earlier(job: Job, key: ResultKey, video: bytes | None) -> None:
        stem = out / f"{job.name}_1"
        if video is not None:
            stem.with_suffix(".mp4").write_bytes(video)
        sidecar = {
            "status": "ok", "output": str(stem.with_suffix(".mp4")),
            "job": {"index": job.index, "name": job.name, "case_index": 0},
            "result_key": key.digest, "result_fields": key.fields,
            "output_bytes": 3, "output_blake3": file_digest_of(b"mp4"),
        }  # fmt: skip
        stem.with_suffix(".json").write_text(json.dumps(sidecar))

    earlier(jobs[1], ResultKey("8" * 64, fields), b"mp4")  # an earlier seed
    earlier(jobs[2], keys[2], b"")
    earlier(jobs[3], keys[3], None)
    earlier(jobs[4], keys[4], b"mp4")
    with caplog.at_level(logging.INFO, logger="mimicache.batch.executing.resume"):
        skipped, todo = split_done(jobs, [*keys[:4], keys[4]])
    assert [r.job.name for r in skipped] == ["done"]
    assert [j.name for j in todo] == ["fresh", "reseeded", "empty", "gone"]
    redone = _why(caplog.messages)
    assert f"fresh: not finished: no earlier result in {out}" in redone["fresh"]
    assert "changed since reseeded_1.json: seed 1 -> 2" in redone["reseeded"]
    assert "pose_frames" not in redone["reseeded"]  # only the fields that differ
    assert f"the mp4 {out / 'empty_1.mp4'} is empty" in redone["empty"]
    assert f"the mp4 {out / 'gone_1.mp4'} is missing" in redone["gone"]
    with caplog.at_level(logging.INFO, logger="mimicache.batch.executing.resume"):
        assert split_done(jobs[:1], [None])[1] == jobs[:1]
    assert "no result key (an input cannot be read)" in caplog.messages[-1]


def _why(messages: list[str]) -> dict[str, str]:
    """Job name -> the line that says why it runs (never finished, or its result cannot stand)."""
    return {
        m.split(":")[0]: m for m in messages if ": not finished: " in m or ": runs again: " in m
    }


def test_resume_says_a_job_an_earlier_run_never_finished_was_not_finished(tmp_path, caplog):
    from mimicache.batch.executing.resume import ResultKey, split_done
    from mimicache.batch.job import Job

    case = load_config_like(tmp_path).test_case[0]
    jobs = [Job(i, 0, case, tmp_path / f"{n}.mp4", tmp_path / f"{n}_1.mp4") for i, n in
            enumerate(("cut", "broke"))]  # fmt: skip
    records = [
        {"name": "cut", "case_index": 0, "status": "interrupted", "run": "20261206120000"},
        {"name": "broke", "case_index": 0, "status": "failed", "run": "20261206120000",
         "error": "InputError: bad video"},
    ]  # fmt: skip
    keys = [ResultKey(f"{i}" * 64, {}) for i in range(2)]
    with caplog.at_level(logging.INFO, logger="mimicache.batch.executing.resume"):
        assert split_done(jobs, keys, records)[1] == jobs
    why = _why(caplog.messages)
    assert "not finished: the run of 20261206120000 was interrupted before it" in why["cut"]
    assert "not finished: it failed in 20261206120000 (InputError: bad video)" in why["broke"]
    assert not any("redone" in m for m in caplog.messages)


def file_digest_of(data: bytes) -> str:
    import blake3

    return blake3.blake3(data).hexdigest()


def test_shards_cover_every_job_once(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    for i in range(7):
        (folder / f"c{i}.mp4").write_bytes(b"")
    config = load_config_like(tmp_path)
    jobs = plan_jobs(config, batch_folder=folder, output_dir=tmp_path / "o", timestamp="1")
    shards = [shard_jobs(jobs, k, 3) for k in (1, 2, 3)]
    indices = [j.index for shard in shards for j in shard]
    assert sorted(indices) == list(range(14)) and len(set(indices)) == 14
    assert [len(s) for s in shards] == [5, 5, 4]
    again = plan_jobs(config, batch_folder=folder, output_dir=tmp_path / "o", timestamp="2")
    assert [[j.name for j in shard_jobs(again, k, 3)] for k in (1, 2, 3)] == [
        [j.name for j in s] for s in shards
    ]
    assert shard_arg("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "3", "a/b", "1/0"):
        with pytest.raises(argparse.ArgumentTypeError, match="K/N"):
            shard_arg(bad)


def load_config_like(tmp_path: Path):
    from mimicache.config import InferenceConfig, TestCase

    cases = [TestCase(tmp_path / "x.mp4", tmp_path / f"ref{i}.png") for i in range(2)]
    return InferenceConfig(base_model_path="b", ckpt_path=tmp_path / "c.pth", test_case=cases)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-0.5", "half"])
def test_gpus_per_worker_must_be_a_finite_non_negative_number(value, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--gpus_per_worker", value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert "argument --gpus_per_worker:" in err.splitlines()[-1]


def test_unreachable_ray_address_is_a_clear_error(workspace, tmp_path, monkeypatch, capsys):
    import ray

    def no_cluster(*args, **kwargs):
        raise ConnectionError("Could not find any running Ray instance.\nPlease specify ...")

    # stands in for ray.init: whether `auto` finds a cluster depends on the machine
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", no_cluster)
    argv = _argv(workspace, tmp_path / "o", tmp_path / "c", "--executor", "ray")
    assert main([*argv, "--ray_address", "auto"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert line.startswith("error: --ray_address auto: no Ray cluster reachable (Could not find")
    assert line.endswith(
        "start one with `ray start --head`, or leave the address out to run a local one"
    )
