"""`mimicache run --feature_cache_dir s3://...` from two machines' local tiers (moto's S3).

Each run is a process of its own, as on two machines: only the bucket joins them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np

import mimicache
from mimicache.cache.remote import RemoteTier
from tests import s3_fixtures
from tests.engine_fixtures import figure_video, reference_image, write_config

s3_server, s3_url = s3_fixtures.s3_server, s3_fixtures.s3_url  # fixtures


def _frames(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _run(config, out, url, tier) -> dict:
    env = {
        **os.environ,
        "MIMICACHE_LOCAL_CACHE_DIR": str(tier),
        "PYTHONPATH": str(Path(mimicache.__file__).parents[1]),
        "HF_HUB_OFFLINE": "1",
    }
    argv = [
        sys.executable, "-m", "mimicache.cli", "run", "--inference_config", str(config),
        "--output_dir", str(out), "--feature_cache_dir", url, "--quiet",
    ]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (mp4,) = out.glob("**/*.mp4")
    return {"frames": _frames(mp4), "sidecar": json.loads(mp4.with_suffix(".json").read_text())}


def test_second_machine_hits_every_stage_in_the_bucket(tiny_bundle, s3_url, tmp_path):
    image = reference_image(tmp_path / "ref.png")
    video = figure_video(tmp_path / "walk.mp4", frames=5)
    config = write_config(tmp_path / "cfg.yaml", tiny_bundle, image, video)

    first = _run(config, tmp_path / "out1", s3_url, tmp_path / "machine1")
    events = first["sidecar"]["cache_events"]
    assert events and not any(e["hit"] for e in events)
    tier = RemoteTier(s3_url)
    tier.fs.invalidate_cache()
    stored = {p.rsplit("/", 3)[1] for p in tier.fs.find(tier.base)}
    assert stored == {e["stage"] for e in events}  # every computed entry went to the bucket
    assert len(list((tmp_path / "machine1").rglob("*.safetensors"))) == len(events)

    second = _run(config, tmp_path / "out2", s3_url, tmp_path / "machine2")
    events2 = second["sidecar"]["cache_events"]
    # the drawn frames and the features: with the frames drawn, no keypoints are needed; the
    # same clip's scores come from the bucket too
    assert {e["stage"] for e in events2} == {
        "pose_frames",
        "clip_embeddings",
        "vae_latents",
        "output_keypoints",
        "output_embeddings",
    }
    assert all(e["hit"] for e in events2)
    # machine 2 holds the very entry files machine 1 computed: the inputs of denoising are equal
    files = [sorted((tmp_path / m).rglob("*.safetensors")) for m in ("machine1", "machine2")]
    assert len(files[1]) == len(events2)
    computed = {p.name: p for p in files[0]}
    assert all(p.read_bytes() == computed[p.name].read_bytes() for p in files[1])
    assert np.array_equal(first["frames"], second["frames"])
