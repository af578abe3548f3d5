"""``--ray_address`` against a cluster started on its own (``ray start --head``), as a user
starts one before running mimicache; the CLI runs in a subprocess, so this test process's own
Ray session (``tests/ray_fixtures.py``) is never touched."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mimicache.batch.reporting.results import RESULTS_FILE, read_results
from mimicache.media import probe_video
from tests.engine_fixtures import figure_video, reference_image, write_config

RAY = Path(sys.executable).with_name("ray")
SRC = Path(__file__).resolve().parents[1] / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(group: int, grace_s: float = 2.0) -> None:
    """End the processes of one cluster by their process group (``ray stop`` would end every
    Ray process on the machine, other people's clusters included); those still there after
    ``grace_s`` are killed (a test cluster keeps nothing worth a longer wait)."""
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)


@pytest.fixture(scope="module")
def head() -> Iterator[dict]:
    """A one-node cluster (2 CPUs, no GPU) from ``ray start --head`` on free ports, with a temp
    dir of its own; its address and the environment a client needs to reach it."""
    # short: Ray's socket paths live under it and a Unix socket path has at most 107 bytes
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    env = dict(os.environ)
    env.update(
        RAY_USAGE_STATS_ENABLED="0",
        # explicit, so a token file that some other cluster left in ~/.ray changes nothing
        RAY_AUTH_MODE="disabled",
        PYTHONPATH=os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        HF_HUB_OFFLINE="1",
    )
    port = _free_port()
    ports = {
        name: _free_port()
        for name in ("dashboard-agent-listen", "runtime-env-agent", "node-manager",
                     "object-manager", "metrics-export")
    }  # fmt: skip
    cmd = [
        str(RAY), "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
        f"--temp-dir={temp}", "--include-dashboard=false", "--disable-usage-stats",
        "--node-ip-address=127.0.0.1", *(f"--{name}-port={p}" for name, p in ports.items()),
    ]  # fmt: skip
    log = temp / "start.log"
    with log.open("w") as out:
        # a session of its own: every process of this cluster shares the group we end later
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        code = proc.wait(timeout=120)  # `ray start` returns once the node is up
        assert code == 0, log.read_text()[-2000:]
        yield {"address": f"127.0.0.1:{port}", "env": env, "temp": temp}
    finally:
        if proc.poll() is None:
            proc.kill()
        _stop(proc.pid)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def workspace(tiny_bundle, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("address")
    videos = root / "clips"
    videos.mkdir()
    for i in range(2):
        figure_video(videos / f"v{i}.mp4", frames=4, phase=i / 2)
    image = reference_image(root / "ref.png")
    config = write_config(root / "cfg.yaml", tiny_bundle, image, videos / "v0.mp4")
    return {"root": root, "videos": videos, "config": config}


def _mimicache(head: dict, workspace: dict, out: Path, *extra: str) -> subprocess.CompletedProcess:
    argv = [
        sys.executable, "-m", "mimicache.cli", "run",
        "--inference_config", str(workspace["config"]),
        "--batch_folder", str(workspace["videos"]), "--output_dir", str(out),
        "--feature_cache_dir", str(out.parent / "cache"), "--threads", "1",
        "--executor", "ray", "--ray_address", head["address"], *extra,
    ]  # fmt: skip
    return subprocess.run(argv, env=head["env"], capture_output=True, text=True, timeout=300)


def test_a_batch_runs_on_a_cluster_started_separately(head, workspace, tmp_path):
    out = tmp_path / "out"
    done = _mimicache(head, workspace, out, "--workers", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("2 succeeded, 0 failed") == 1
    case = yaml.safe_load(workspace["config"].read_text())["test_case"][0]
    rows = read_results(out / RESULTS_FILE)
    assert sorted(r["index"] for r in rows) == [0, 1]
    for row in rows:
        assert row["status"] == "ok" and row["error"] is None
        video = Path(row["output"])
        info = probe_video(video)
        assert info.frame_count == case["num_frames"]
        assert (info.width, info.height) == (case["resolution"], case["resolution"])
        sidecar = json.loads(video.with_suffix(".json").read_text())
        assert sidecar["result_key"] == row["result_key"]
    # the workers were that cluster's: their logs are in its temp dir, not a local session's
    logs = list((head["temp"] / "session_latest" / "logs").glob("worker-*.out"))
    assert any("GenerationWorker" in p.read_text(errors="replace") for p in logs)


def test_gpus_per_worker_on_a_cluster_without_gpus_is_refused(head, workspace, tmp_path):
    done = _mimicache(head, workspace, tmp_path / "out", "--gpus_per_worker", "1")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr
    assert "--gpus_per_worker 1" in lines[-1] and "the Ray cluster has 0 GPU(s)" in lines[-1]
    assert not list((tmp_path / "out").rglob("*.mp4"))
    # asked for CUDA too: refused the same way, never a wait for GPUs that will not come
    done = _mimicache(
        head, workspace, tmp_path / "out2", "--gpus_per_worker", "1", "--device", "cuda"
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "the Ray cluster has 0 GPU(s)" in done.stderr.strip().splitlines()[-1]
