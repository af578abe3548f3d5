"""The remote cache tier against an S3 endpoint: hit time and bytes per job.

    python benchmarks/remote_cache_bench.py [--jobs 20] [--json benchmarks/results/remote_cache_cpu.json]

Starts moto's S3 server on localhost (the real S3 HTTP API, served by Python: its latency is
not a cloud region's, so the times are the client side's cost plus a local round trip), and
points s3fs at it through ``AWS_ENDPOINT_URL``. Each job has the five feature entries of one
job at the published size (entry sizes from benchmarks/results/cache_bench_cpu.txt: image
keypoints 3.8 kB, video keypoints 191 kB, pose frames 541 kB, CLIP embedding 4.8 kB, VAE
latent 148 kB; tensors of random bytes sized to match), under keys of its own. Phases, per job:

- publish: machine A computes (a no-op) and writes every entry to its local tier and the bucket;
- remote hit: machine B, an empty local tier, reads every entry from the bucket (verified,
  copied into its local tier);
- local hit: machine B again, every entry now local.

Reported: median and p90 seconds per job for each phase, bytes read from the bucket per job,
GET/PUT requests per job (counted from the store's calls), and the environment.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from mimicache.cache.store import FeatureStore, StageKey

# Entry file sizes of one job at the published size (cache_bench_cpu.txt); the tensor holds
# the size less the header (about 1 kB), so the files come out close to these.
STAGE_BYTES = {
    "image_keypoints": 3_768,
    "video_keypoints": 191_344,
    "pose_frames": 540_680,
    "clip_embeddings": 4_792,
    "vae_latents": 148_168,
}
HEADER_ALLOWANCE = 900


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _key(job: int, stage: str) -> StageKey:
    return StageKey({"job": job}, {"stage": stage}, {"bench": "remote"})


def _tensors(job: int, stage: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(job * 31 + len(stage))
    n = max(STAGE_BYTES[stage] - HEADER_ALLOWANCE, 16)
    return {"x": torch.randint(0, 256, (n,), generator=g, dtype=torch.uint8)}


def _never() -> dict[str, torch.Tensor]:
    raise AssertionError("computed although the entry should be cached")


def _job(store: FeatureStore, job: int, compute: bool) -> tuple[float, int, int]:
    """(seconds, entry bytes, hits) of one job's five stages."""
    start = time.perf_counter()
    size = hits = 0
    for stage in STAGE_BYTES:
        fn = (lambda s=stage: _tensors(job, s)) if compute else _never
        _, ev = store.get_or_compute(stage, _key(job, stage), fn)
        size += ev.bytes
        hits += ev.hit
    return time.perf_counter() - start, size, hits


def _summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
    }


class _Counter:
    """Counts the remote tier's GET and PUT calls (wrapping the file system's methods)."""

    def __init__(self, fs) -> None:
        self.gets = self.puts = 0
        real_cat, real_pipe = fs.cat_file, fs.pipe_file

        def cat_file(*a, **k):
            self.gets += 1
            return real_cat(*a, **k)

        def pipe_file(*a, **k):
            self.puts += 1
            return real_pipe(*a, **k)

        fs.cat_file, fs.pipe_file = cat_file, pipe_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
    )
    import fsspec

    fsspec.filesystem("s3").mkdir("mimicache-bench")
    url = "s3://mimicache-bench/cache"
    phases: dict[str, list[float]] = {"publish": [], "remote_hit": [], "local_hit": []}
    sizes: list[int] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            with FeatureStore(url, local_dir=Path(tmp) / "a") as a:
                for job in range(args.jobs):
                    seconds, _, _ = _job(a, job, compute=True)
                    phases["publish"].append(seconds)
            with FeatureStore(url, local_dir=Path(tmp) / "b") as b:
                assert b.tiers is not None
                counter = _Counter(b.tiers.remote.fs)
                for job in range(args.jobs):
                    seconds, size, hits = _job(b, job, compute=False)
                    assert hits == len(STAGE_BYTES)
                    phases["remote_hit"].append(seconds)
                    sizes.append(size)
                gets = counter.gets
                for job in range(args.jobs):
                    seconds, _, hits = _job(b, job, compute=False)
                    assert hits == len(STAGE_BYTES)
                    phases["local_hit"].append(seconds)
                assert counter.gets == gets  # local hits never ask the bucket
    finally:
        server.stop()
    result = {
        "benchmark": "remote_cache_bench",
        "command": "python benchmarks/remote_cache_bench.py " + " ".join(sys.argv[1:]),
        "endpoint": "moto ThreadedMotoServer on 127.0.0.1 (s3fs via AWS_ENDPOINT_URL)",
        "jobs": args.jobs,
        "stages_per_job": len(STAGE_BYTES),
        "bytes_per_job_from_bucket": int(statistics.median(sizes)),
        "requests_per_job": {"remote_hit_get": gets / args.jobs, "publish_put": len(STAGE_BYTES)},
        "per_job": {name: _summary(values) for name, values in phases.items()},
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
