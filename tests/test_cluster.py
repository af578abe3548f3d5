"""A cluster without a shared disk: a Ray cluster of two worker nodes (``ray.cluster_utils``),
each node with its own local tier folder, and nothing shared but a bucket (moto's S3 server
through s3fs) holding the inputs, the manifest, the feature cache and the outputs.

Workers fetch their inputs, generate, and publish their own mp4 and sidecar into the bucket;
the driver writes results.jsonl, the log and the report at the output root. A second batch on
emptied local tiers finds its entries in the remote tier; a node removed mid-batch has its
job rerun on another node with nothing lost and no partial object.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from mimicache.batch import JobResult, make_timestamp
from mimicache.batch.executing.executor import ExecutorSettings
from mimicache.batch.executing.ray_executor import RayExecutor
from mimicache.batch.outputs.root import location
from mimicache.batch.planning.manifest import plan_manifest, read_manifest
from mimicache.batch.reporting.results import RESULTS_FILE
from mimicache.cli import main
from mimicache.config import load_config
from mimicache.engine.spec import EngineSpec
from mimicache.storage.digests import bytes_digest
from tests import s3_fixtures
from tests.engine_fixtures import figure_video, reference_image, write_config

s3_server = s3_fixtures.s3_server  # fixture
JOBS = 3


def _fs():
    import fsspec

    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    return fs


def _add_node(cluster, tier: Path):
    """A worker node whose processes see ``tier`` as their local cache folder (a node's
    processes inherit the environment it was started with)."""
    saved = os.environ.get("MIMICACHE_LOCAL_CACHE_DIR")
    os.environ["MIMICACHE_LOCAL_CACHE_DIR"] = str(tier)
    try:
        return cluster.add_node(num_cpus=1)
    finally:
        if saved is None:
            os.environ.pop("MIMICACHE_LOCAL_CACHE_DIR", None)
        else:
            os.environ["MIMICACHE_LOCAL_CACHE_DIR"] = saved


@pytest.fixture(scope="module")
def cluster(s3_server, tmp_path_factory):
    """(cluster, {node: its tier folder}); the session's local Ray (if up) is shut down
    meanwhile and started again afterwards, so other Ray tests still find it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray.cluster_utils import Cluster

    was_up = ray.is_initialized()
    if was_up:
        ray.shutdown()
    root = tmp_path_factory.mktemp("nodes")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    tiers = {}
    try:
        for name in ("node1", "node2"):
            tiers[_add_node(cluster, root / name)] = root / name
        cluster.wait_for_nodes()
        yield cluster, tiers
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        if was_up:  # the session-wide single-node cluster of tests/ray_fixtures.py
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


@pytest.fixture(scope="module")
def bucket(s3_server, tiny_bundle, tmp_path_factory):
    """``s3://bucket`` holding data/ref.png, data/clips/v*.mp4 and data/jobs.csv; the config
    (models stay local folders, as on every node)."""
    local = tmp_path_factory.mktemp("data")
    fs = _fs()
    name = f"cluster-{os.getpid()}"
    fs.mkdir(name)
    image = reference_image(local / "ref.png")
    fs.put_file(str(image), f"{name}/data/ref.png")
    lines = ["ref_image,video,seed"]
    for i in range(JOBS):
        video = figure_video(local / f"v{i}.mp4", frames=4, phase=i / JOBS)
        fs.put_file(str(video), f"{name}/data/clips/v{i}.mp4")
        lines.append(f"ref.png,clips/v{i}.mp4,{i}")
    fs.pipe_file(f"{name}/data/jobs.csv", ("\n".join(lines) + "\n").encode())
    config = write_config(local / "cfg.yaml", tiny_bundle, image, local / "v0.mp4")
    return {"url": f"s3://{name}", "config": config}


def _argv(bucket, cluster, out: str, *extra: str) -> list[str]:
    return [
        "run", "--inference_config", str(bucket["config"]),
        "--manifest", f"{bucket['url']}/data/jobs.csv", "--output_dir", out,
        "--feature_cache_dir", f"{bucket['url']}/cache", "--executor", "ray",
        "--ray_address", cluster.address, "--workers", "2", "--pose_workers", "0",
        "--threads", "1", "--quiet", *extra,
    ]  # fmt: skip


def _outputs(url: str) -> dict[str, tuple[bytes, dict]]:
    """Every mp4 under ``url`` with its sidecar, by stem; asserts nothing else is there but
    pairs (no partial object, no mp4 without its sidecar)."""
    fs = _fs()
    paths = fs.find(url.removeprefix("s3://"))
    stems = {p.rsplit(".", 1)[0] for p in paths}
    assert sorted(paths) == sorted(f"{s}.{x}" for s in stems for x in ("mp4", "json"))
    found = {}
    for stem in stems:
        data, sidecar = fs.cat_file(f"{stem}.mp4"), json.loads(fs.cat_file(f"{stem}.json"))
        assert sidecar["status"] == "ok" and sidecar["output"] == f"s3://{stem}.mp4"
        assert sidecar["output_bytes"] == len(data)
        assert sidecar["output_blake3"] == bytes_digest(data)  # whole, as its worker made it
        found[stem.rsplit("/", 1)[-1]] = (data, sidecar)
    return found


def _rows(url: str) -> list[dict]:
    return [json.loads(line) for line in _fs().cat_file(f"{url}/{RESULTS_FILE}").splitlines()]


def test_manifest_batch_on_two_nodes_writes_everything_to_the_bucket(
    cluster, bucket, tmp_path, monkeypatch, capsys
):
    cluster, tiers = cluster
    monkeypatch.setenv("MIMICACHE_LOCAL_CACHE_DIR", str(tmp_path / "driver"))
    out = f"{bucket['url']}/out"
    assert main(_argv(bucket, cluster, out)) == 0
    assert f"{JOBS} succeeded, 0 failed" in capsys.readouterr().out
    outputs = _outputs(f"{out}/jobs")
    assert len(outputs) == JOBS
    rows = _rows(out)
    assert sorted(r["index"] for r in rows) == list(range(JOBS))
    for row in rows:
        stem = row["output"].rsplit("/", 1)[-1].removesuffix(".mp4")
        data, sidecar = outputs[stem]
        assert row["status"] == "ok" and row["output_blake3"] == bytes_digest(data)
        assert row["result_key"] == sidecar["result_key"]
        assert row["video"].startswith(f"{bucket['url']}/data/clips/")
    names = {p.rsplit("/", 1)[-1] for p in _fs().ls(out.removeprefix("s3://"))}
    assert any(n.endswith(".log") for n in names) and any(n.endswith(".report.html") for n in names)
    # both nodes worked, each fetching inputs and keeping entries in its own tier only
    for tier in tiers.values():
        assert list((tier / "inputs").rglob("v*.mp4")), f"{tier} fetched no video"
        assert list(tier.rglob("*.safetensors")), f"{tier} holds no cache entry"
    # the driver fetched the manifest and nothing else: the inputs went to the workers
    fetched = {p.name for p in (tmp_path / "driver" / "inputs").rglob("*") if p.is_file()}
    assert "jobs.csv" in fetched and not any(n.endswith((".mp4", ".png")) for n in fetched)


def test_second_batch_on_fresh_local_tiers_hits_the_remote_tier(
    cluster, bucket, tmp_path, monkeypatch
):
    cluster, tiers = cluster
    monkeypatch.setenv("MIMICACHE_LOCAL_CACHE_DIR", str(tmp_path / "driver"))
    out = f"{bucket['url']}/again"
    assert main(_argv(bucket, cluster, out)) == 0  # fills the remote tier (if not yet)
    for tier in tiers.values():  # every node starts over with an empty local tier
        shutil.rmtree(tier)
    assert main(_argv(bucket, cluster, out)) == 0
    outputs = _outputs(f"{out}/jobs")
    assert len(outputs) == 2 * JOBS
    second = [r for r in _rows(out) if r["run"] == max(r["run"] for r in _rows(out))]
    assert len(second) == JOBS and all(r["status"] == "ok" for r in second)
    for row in second:
        assert row["cache_hits"] and all(row["cache_hits"].values()), row["cache_hits"]
    # the entries came down from the bucket into the emptied tiers
    assert sum(len(list(t.rglob("*.safetensors"))) for t in tiers.values() if t.exists()) > 0
    # --resume reads results.jsonl and the sidecars from the bucket: nothing is redone
    assert main([*_argv(bucket, cluster, out), "--resume"]) == 0
    assert len(_outputs(f"{out}/jobs")) == 2 * JOBS
    assert [r["status"] for r in _rows(out)][-JOBS:] == ["skipped"] * JOBS


def _node_of(pid: int, nodes) -> object | None:
    """The cluster node whose raylet started process ``pid``."""
    import psutil
    from ray._private import ray_constants

    raylets = {
        node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid: node for node in nodes
    }
    process = psutil.Process(pid)
    while process is not None:
        if process.pid in raylets:
            return raylets[process.pid]
        process = process.parent()
    return None


def test_a_node_removed_mid_batch_has_its_job_rerun_on_another(
    cluster, bucket, tmp_path, monkeypatch, caplog
):
    import ray

    cluster, tiers = cluster
    monkeypatch.setenv("MIMICACHE_LOCAL_CACHE_DIR", str(tmp_path / "driver"))
    config = load_config(bucket["config"])
    out = f"{bucket['url']}/removed"
    manifest = read_manifest(f"{bucket['url']}/data/jobs.csv", config.test_case[0])
    jobs = plan_manifest(manifest, output_dir=Path(out), timestamp=make_timestamp()).jobs
    # The first job is short and the others long, so the first result comes back while the
    # other worker is surely still in the middle of its job.
    jobs = [
        job if job.index == 0 else dataclasses.replace(job, case=job.case.replace(
            num_inference_steps=12))
        for job in jobs
    ]  # fmt: skip
    spec = EngineSpec(config, device="cpu", cache_dir=f"{bucket['url']}/cache", threads=1,
                      pose_retarget="published")  # fmt: skip
    removed: list[object] = []

    def remove_a_busy_node(result: JobResult, executor: RayExecutor) -> None:
        if removed:
            return
        running, _ = ray.wait(list(executor.busy), num_returns=len(executor.busy), timeout=0)
        busy = [slot.pid for ref, (_, slot, _) in executor.busy.items() if ref not in running]
        node = _node_of(busy[0], cluster.worker_nodes) if busy else None
        if node is not None:
            cluster.remove_node(node)
            removed.append(node)
            tiers[_add_node(cluster, tmp_path / "node3")] = tmp_path / "node3"

    caplog.set_level(logging.INFO)
    settings = ExecutorSettings(workers=2, pose_workers=0, address=cluster.address)
    executor = RayExecutor(spec, settings, progress=False, on_result=remove_a_busy_node)
    results = executor.run(jobs, config=config)
    assert removed, "a node was running a job when the first result came"
    assert [r.status for r in results] == ["ok"] * JOBS
    assert any("its worker died" in m and "retry 1 of 1" in m for m in caplog.messages)
    outputs = _outputs(out)  # every job once, every object whole
    assert len(outputs) == JOBS
    assert {location(r.output) for r in results} == {f"{out}/jobs/{s}.mp4" for s in outputs}
