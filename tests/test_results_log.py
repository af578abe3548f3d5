"""A run from a manifest end to end with the tiny engine: a bad row fails alone, results.jsonl
holds a row per job (written as each job finishes), and ``--resume`` finds done jobs by it."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import pytest

from mimicache.batch import run_jobs
from mimicache.batch.planning.manifest import plan_manifest, read_manifest
from mimicache.batch.reporting.results import RESULTS_FILE, ResultsLog, read_results
from mimicache.cli import main
from mimicache.config import load_config
from mimicache.engine.build import build_engine
from mimicache.engine.spec import EngineSpec
from mimicache.storage.digests import file_digest
from tests.engine_fixtures import figure_video, reference_image, write_config


@pytest.fixture(scope="module")
def workspace(tiny_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("manifest-run")
    (root / "clips").mkdir()
    for i in range(2):
        figure_video(root / "clips" / f"v{i}.mp4", frames=4, phase=i / 2)
    reference_image(root / "ref.png")
    config = write_config(root / "cfg.yaml", tiny_bundle, root / "ref.png", root / "clips/v0.mp4")
    (root / "jobs.csv").write_text(
        "ref_image,video,seed,steps,output_name\n"
        "ref.png,clips/v0.mp4,7,2,\n"
        "ref.png,clips/missing.mp4,,,\n"
        "ref.png,clips/v1.mp4,,,named\n"
    )
    return root, config


def _argv(root: Path, config: Path, out: Path, *extra: str) -> list[str]:
    return [
        "run", "--inference_config", str(config), "--manifest", str(root / "jobs.csv"),
        "--output_dir", str(out), "--feature_cache_dir", str(out.parent / "cache"),
        "--threads", "1", "--quiet", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def first_run(workspace, tmp_path_factory):
    root, config = workspace
    out = tmp_path_factory.mktemp("run") / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(_argv(root, config, out))
    return out, code, printed.getvalue()


def test_a_bad_row_fails_alone_and_the_others_run(first_run):
    out, code, summary = first_run
    assert code == 1  # a job failed
    assert "2 succeeded, 1 failed" in summary
    row = next(line for line in summary.splitlines() if line.startswith("2 "))
    assert "missing" in row and "failed" in row and "jobs.csv row 2 (line 3)" in row
    made = sorted(p.relative_to(out) for p in out.rglob("*.mp4"))
    assert len(made) == 2 and Path("jobs/named.mp4") in made
    seeded = next(p for p in made if p.name != "named.mp4")
    assert seeded.name.startswith("v0_") and seeded.stem.endswith("_seed7_steps2")
    sidecars = {p.stem: json.loads(p.read_text()) for p in (out / "jobs").glob("*.json")}
    assert len(sidecars) == 2  # the bad row claimed no name
    named = sidecars["named"]
    assert named["parameters"]["seed"] == 42 and named["parameters"]["num_inference_steps"] == 1
    assert named["manifest"]["row"] == 3 and named["manifest"]["values"]["output_name"] == "named"
    assert sidecars[seeded.stem]["parameters"]["seed"] == 7


def test_results_jsonl_has_a_row_per_job_success_and_failure(workspace, first_run):
    root, _ = workspace
    out, _, _ = first_run
    rows = read_results(out / RESULTS_FILE)
    assert [(r["index"], r["status"]) for r in rows] == [(0, "ok"), (2, "ok"), (1, "failed")]
    by_index = {r["index"]: r for r in rows}
    ok = by_index[0]
    sidecar = json.loads(Path(ok["sidecar"]).read_text())
    assert ok["result_key"] == sidecar["result_key"] and len(ok["result_key"]) == 64
    assert ok["output"] == sidecar["output"]
    assert ok["output_blake3"] == file_digest(Path(ok["output"]))
    assert ok["ref_image"] == str(root / "ref.png") and ok["video"] == str(root / "clips/v0.mp4")
    assert ok["parameters"]["seed"] == 7 and ok["parameters"]["num_inference_steps"] == 2
    assert ok["manifest"] == {
        "path": str(root / "jobs.csv"),
        "row": 1,
        "values": {"ref_image": "ref.png", "video": "clips/v0.mp4", "seed": "7", "steps": "2"},
    }
    assert ok["timings"]["total"] > 0 and ok["timings"]["total"] == sidecar["timings"]["total"]
    stages = {e["stage"]: e["hit"] for e in sidecar["cache_events"]}
    assert ok["cache_hits"] == stages and set(stages) >= {"video_keypoints", "vae_latents"}
    assert ok["platform"] == sidecar["platform"] and ok["error"] is None
    assert by_index[2]["cache_hits"]["clip_embeddings"] is True  # the same image, second job
    bad = by_index[1]
    assert bad["output"] is None and bad["result_key"] is None
    assert bad["error"].startswith(f"{root / 'jobs.csv'} row 2 (line 3): video ")
    assert bad["video"] == "clips/missing.mp4" and bad["ref_image"] == "ref.png"
    assert len({r["run"] for r in rows}) == 1


def test_resume_finds_done_jobs_by_results_jsonl_alone(workspace, first_run, tmp_path, caplog):
    root, config = workspace
    first, _, _ = first_run
    out = tmp_path / "out"
    # a copy of the first run's outputs without its sidecars: only results.jsonl tells
    (out / "jobs").mkdir(parents=True)
    rows = read_results(first / RESULTS_FILE)
    for row in rows:
        if row["output"]:
            moved = out / "jobs" / Path(row["output"]).name
            moved.write_bytes(Path(row["output"]).read_bytes())
            row["output"] = str(moved)
    (out / RESULTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"cut sh')
    with caplog.at_level(logging.INFO):
        assert main(_argv(root, config, out, "--resume")) == 1  # the bad row fails again
    assert sum("skipped (done)" in m for m in caplog.messages) == 2
    assert any("line 4 is not a result row" in m for m in caplog.messages)  # the cut line
    assert not list(out.rglob("*.json"))  # nothing ran again: no new sidecar
    again = read_results(out / RESULTS_FILE)[len(rows) :]
    assert [(r["index"], r["status"]) for r in again] == [(0, "skipped"), (1, "failed"),
                                                          (2, "skipped")]  # fmt: skip
    assert [r["result_key"] for r in again if r["status"] == "skipped"] == [
        r["result_key"] for r in rows if r["status"] == "ok"
    ]
    # a damaged mp4 is redone, as with a sidecar
    damaged = Path(again[0]["output"])
    damaged.write_bytes(damaged.read_bytes()[:-10])
    with caplog.at_level(logging.INFO):
        assert main(_argv(root, config, out, "--resume")) == 1
    assert any(f"the mp4 {damaged} is damaged" in m for m in caplog.messages)
    latest = read_results(out / RESULTS_FILE)[-3:]
    assert [r["status"] for r in latest] == ["ok", "failed", "skipped"]


def test_rows_are_written_as_jobs_finish(workspace, tmp_path):
    """Ctrl-C in the second job: the first job's row is already on disk; finishing the log
    adds the interrupted one."""
    root, config_path = workspace
    config = load_config(config_path)
    spec = EngineSpec(config, device="cpu", cache_dir=tmp_path / "cache", threads=1,
                      pose_retarget="published")  # fmt: skip
    engine = build_engine(spec)
    manifest = read_manifest(root / "jobs.csv", config.test_case[0])
    jobs = plan_manifest(manifest, output_dir=tmp_path / "out", timestamp="T").jobs
    log = ResultsLog(tmp_path / "out" / RESULTS_FILE, run="T")
    calls: list[int] = []

    class StopInSecondJob:
        model_files = engine.model_files
        pose_retarget = engine.pose_retarget

        def generate(self, case, **kw):
            calls.append(1)
            if len(calls) == 2:
                assert [r["status"] for r in read_results(log.path)] == ["ok"]
                raise KeyboardInterrupt
            return engine.generate(case, **kw)

    results = run_jobs(StopInSecondJob(), jobs, config=config, progress=False, on_result=log.add)
    assert [r["index"] for r in read_results(log.path)] == [0]
    log.finish(results)
    log.finish(results)  # idempotent: each result once
    assert [(r["index"], r["status"]) for r in read_results(log.path)] == [
        (0, "ok"),
        (2, "interrupted"),
    ]


def test_a_manifest_and_a_batch_folder_are_one_too_many(workspace, tmp_path, capsys):
    root, config = workspace
    argv = [*_argv(root, config, tmp_path / "out"), "--batch_folder", str(root / "clips")]
    assert main(argv) == 2
    assert "--manifest and --batch_folder both name the jobs" in capsys.readouterr().err
