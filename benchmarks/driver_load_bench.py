"""What one job costs the Ray driver: bytes received and driver CPU seconds, before (a worker
returns the frames; the driver encodes and writes the mp4 and sidecar) and after (the worker
publishes its own files and returns a small record; the driver appends a results.jsonl row).

    python benchmarks/driver_load_bench.py [--jobs 8] [--published]

Runs the tiny random-weight bundle on generated videos (CPU), one generation worker, the same
jobs in both modes. ``--published`` adds what the frames path costs at the published job size
(72 frames of 1024x576: the bytes sent, and the driver's CPU seconds to encode them), which the
record path does not pay at all. Driver CPU is this process's CPU time (all its threads,
Ray's included) over the loop, per job; "handling" is the part after the result arrived.
"""

from __future__ import annotations

import argparse
import os
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PUBLISHED = (72, 576, 1024)  # frames, height, width of a published MimicMotion job


def _workspace(tmp: Path, jobs: int) -> Path:
    """scale_bench's tiny bundle and clips (6 frames each), the clips as the config's batch
    folder."""
    import yaml
    from scale_bench import workspace  # a sibling script: benchmarks/ is on the path

    config_path, clips = workspace(tmp, jobs, 6)
    config = yaml.safe_load(config_path.read_text())
    config["batch"] = {"video_folder": str(clips)}
    config_path.write_text(yaml.safe_dump(config))
    return config_path


def _modes(tmp: Path, jobs_count: int) -> dict[str, dict[str, float]]:
    import ray

    from mimicache.batch import plan_jobs
    from mimicache.batch.executing.job_loop import RunInfo, finish_job
    from mimicache.batch.executing.workers import GenerationWorker
    from mimicache.batch.job import Outcome
    from mimicache.batch.reporting.results import ResultsLog
    from mimicache.config import load_config
    from mimicache.engine.spec import EngineSpec

    config = load_config(_workspace(tmp, jobs_count))
    spec = EngineSpec(config, device="cpu", cache_dir=tmp / "cache", threads=1,
                      pose_retarget="published")  # fmt: skip
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        worker = ray.remote(GenerationWorker).options(num_cpus=1).remote(spec)
        info = ray.get(worker.info.remote())
        sidecar_info = RunInfo(config, info["model_files"], info["pose_retarget"])
        info_ref = ray.put(sidecar_info)
        figures: dict[str, dict[str, float]] = {}
        for mode in ("frames", "record", "frames", "record"):  # the second round is warm
            out = tmp / f"out-{mode}-{len(figures)}"
            jobs = plan_jobs(config, batch_folder=config.batch_video_folder, output_dir=out,
                             timestamp="20260101000000")  # fmt: skip
            log = ResultsLog(out / "results.jsonl", run="bench")
            received = handling = 0.0
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for job in jobs:
                if mode == "frames":
                    value = ray.get(worker.run.remote(job))
                    start = time.process_time()
                    outcome: Outcome = value[0]
                    result = finish_job(job, outcome, sidecar_info)
                else:
                    value = ray.get(worker.run_job.remote(job, info_ref))
                    start = time.process_time()
                    result = value[0]
                log.add(result)
                handling += time.process_time() - start
                received += len(pickle.dumps(value, protocol=5))
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            assert all(p.stat().st_size > 0 for p in out.rglob("*.mp4"))
            figures[mode] = {
                "bytes per job": received / len(jobs),
                "driver CPU per job": cpu / len(jobs),
                "handling CPU per job": handling / len(jobs),
                "wall per job": wall / len(jobs),
            }
        return figures
    finally:
        ray.shutdown()


def _published_encode() -> tuple[int, float]:
    """(bytes of one published job's frames, CPU seconds to encode them as the driver did)."""
    from mimicache.media import encode_video

    frames, height, width = PUBLISHED
    y, x = np.mgrid[0:height, 0:width]
    stack = np.stack(
        [
            np.stack([(x + 8 * t) % 256, (y + 4 * t) % 256, (x + y) % 256], -1).astype(np.uint8)
            for t in range(frames)
        ]
    )
    start = time.process_time()
    encode_video(stack, 8, "published")
    return stack.nbytes, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--published", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = _modes(Path(tmp), args.jobs)
    names = list(next(iter(figures.values())))
    print(f"| per job ({args.jobs} jobs, tiny bundle, CPU) | " + " | ".join(figures) + " |")
    print("|---|" + "---:|" * len(figures))
    for name in names:
        cells = [
            f"{v[name]:,.0f}" if name.startswith("bytes") else f"{v[name] * 1000:.1f} ms"
            for v in figures.values()
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.published:
        size, seconds = _published_encode()
        frames, height, width = PUBLISHED
        print(
            f"\npublished size ({frames}x{height}x{width}): frames path sends {size:,} bytes "
            f"and the driver spends {seconds:.2f} CPU s encoding each job; the record path "
            f"sends {figures['record']['bytes per job']:,.0f} bytes and encodes nothing"
        )


if __name__ == "__main__":
    main()
