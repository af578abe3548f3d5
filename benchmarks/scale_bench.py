"""Scale-out: jobs per minute of the local executor and of Ray with 1 and 2 workers, the
per-job overhead Ray adds, and the transfer cost of one job's frames through Ray's store.

    python benchmarks/scale_bench.py [--jobs 8] [--frames 6] [--config CFG --batch_folder DIR]

Without ``--config`` it runs the tiny random-weight bundle on generated videos (CPU). With a
config (e.g. real-size random-weight models on a GPU machine) it runs that config's plan.
Threads: the local run and a single worker use every core; with W workers each gets
cores / W torch threads, so workers never oversubscribe the machine. The goal: with W workers
the wall time is within 10 % of sum(job seconds) / W plus one model load.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _workspace(tmp: Path, jobs: int, frames: int) -> tuple[Path, Path]:
    import yaml
    from PIL import Image

    from mimicache.media import write_video
    from mimicache.testing.dwpose import make_figure_frame
    from mimicache.testing.models import write_tiny_bundle

    bundle = write_tiny_bundle(tmp / "bundle")
    clips = tmp / "clips"
    clips.mkdir()
    for v in range(jobs):
        stack = [make_figure_frame(72, 96, ((v / jobs) + i / frames) % 1.0) for i in range(frames)]
        write_video(clips / f"v{v:02d}.mp4", np.stack(stack), 24.0)
    Image.fromarray(make_figure_frame(96, 64, 0.5)).save(tmp / "ref.png")
    case = {
        "ref_video_path": str(clips / "v00.mp4"), "ref_image_path": str(tmp / "ref.png"),
        "num_frames": 4, "resolution": 64, "frames_overlap": 1, "num_inference_steps": 2,
        "noise_aug_strength": 0, "guidance_scale": 2.0, "sample_stride": 1, "fps": 8, "seed": 1,
    }  # fmt: skip
    config = {
        "base_model_path": str(bundle.base_model_path), "ckpt_path": str(bundle.ckpt_path),
        "test_case": [case],
        "dwpose": {"det_model_path": str(bundle.det_model_path),
                   "pose_model_path": str(bundle.pose_model_path)},
    }  # fmt: skip
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(config))
    return tmp / "cfg.yaml", clips


def _spec(config_path: Path, cache: Path, threads: int, device: str | None):
    from mimicache.config import load_config
    from mimicache.engine.spec import EngineSpec

    config = load_config(config_path)
    return EngineSpec(config, device=device, cache_dir=cache, threads=threads)


def _warm_cache(spec, jobs) -> None:
    """Fill the feature cache once so every timed run does the same (generation) work."""
    from mimicache.batch import run_jobs
    from mimicache.engine.build import build_engine

    engine = build_engine(spec)
    run_jobs(engine, jobs, config=spec.config, progress=False)


def _plan(spec, clips: Path, out: Path):
    from mimicache.batch import plan_jobs

    return plan_jobs(spec.config, batch_folder=clips, output_dir=out, timestamp="bench")


def _row(name: str, wall: float, results, load: float, workers: int) -> dict:
    job_seconds = sum(r.timings.get("total", 0.0) + r.timings.get("write", 0.0) for r in results)
    ideal = job_seconds / workers + load
    return {
        "run": name, "jobs": len(results), "wall_s": wall, "jobs_per_min": 60 * len(results) / wall,
        "sum_job_s": job_seconds, "ideal_s": ideal, "over_ideal_pct": 100 * (wall / ideal - 1),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--config", type=Path)
    ap.add_argument("--batch_folder", type=Path)
    ap.add_argument("--device", default=None)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, help="torch threads per process (default: cores/W)")
    ap.add_argument("--transfer_shape", default="72,576,1024,3")
    args = ap.parse_args()

    import ray
    import torch

    from mimicache.batch import run_jobs
    from mimicache.batch.executor import ExecutorSettings
    from mimicache.batch.ray_executor import RayExecutor

    cores = os.cpu_count() or 1
    gpus = torch.cuda.device_count()
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.config:
            config_path, clips = args.config, args.batch_folder
        else:
            config_path, clips = _workspace(tmp, args.jobs, args.frames)
        cache = tmp / "cache"
        base = _spec(config_path, cache, args.threads or cores, args.device)
        _warm_cache(base, _plan(base, clips, tmp / "warm"))

        start = time.perf_counter()
        engine = base.build()
        load = time.perf_counter() - start
        jobs = _plan(base, clips, tmp / "local")
        start = time.perf_counter()
        results = run_jobs(engine, jobs, config=base.config, progress=False)
        rows.append(_row("local, 1 process", time.perf_counter() - start, results, 0.0, 1))
        del engine

        ray.init(num_cpus=cores, num_gpus=gpus, include_dashboard=False, log_to_driver=False)
        for workers in args.workers:
            threads = args.threads or (max(1, cores // workers) if not gpus else cores)
            spec = base.replace(threads=threads)
            per = 1.0 if gpus else 0.0
            settings = ExecutorSettings(workers=workers, gpus_per_worker=per, pose_workers=0)
            jobs = _plan(spec, clips, tmp / f"ray{workers}")
            executor = RayExecutor(spec, settings, progress=False)
            start = time.perf_counter()
            results = executor.run(jobs, config=spec.config)
            wall = time.perf_counter() - start
            row = _row(f"ray, {workers} worker(s) x {threads} threads", wall, results,
                       executor.startup_s, workers)  # fmt: skip
            row["startup_s"] = executor.startup_s
            rows.append(row)
        transfer = _transfer(ray, tuple(int(x) for x in args.transfer_shape.split(",")))
        ray.shutdown()

    print(f"machine: {cores} CPU cores, {gpus} GPU(s); model load {load:.2f} s (local)")
    print(f"{'run':34} {'jobs':>4} {'wall s':>8} {'jobs/min':>9} {'sum job s':>10} "
          f"{'ideal s':>8} {'vs ideal':>9}")  # fmt: skip
    for r in rows:
        print(f"{r['run']:34} {r['jobs']:4d} {r['wall_s']:8.2f} {r['jobs_per_min']:9.1f} "
              f"{r['sum_job_s']:10.2f} {r['ideal_s']:8.2f} {r['over_ideal_pct']:+8.1f}%")  # fmt: skip
    local = rows[0]
    for r in rows[1:]:
        extra = (r["wall_s"] - r["ideal_s"]) / r["jobs"]
        print(f"{r['run']}: workers up (processes, imports, model load) in "
              f"{r['startup_s']:.2f} s; {extra * 1000:+.0f} ms per job beyond ideal")  # fmt: skip
    print(
        f"Ray round trip of one job's frames {args.transfer_shape} uint8 "
        f"({transfer['mb']:.0f} MB): {transfer['call_ms']:.2f} ms per empty call, "
        f"{transfer['frames_ms']:.0f} ms per frames transfer"
    )
    print(f"local per-job seconds: {local['sum_job_s'] / local['jobs']:.2f}")
    print("ideal = sum(job seconds) / workers + start-up (local: no start-up counted)")


def _transfer(ray, shape: tuple[int, ...]) -> dict:
    @ray.remote(num_cpus=0)
    class Echo:
        def nothing(self) -> None:
            return None

        def frames(self) -> np.ndarray:
            return np.zeros(shape, dtype=np.uint8)

    actor = Echo.remote()
    ray.get(actor.nothing.remote())
    start = time.perf_counter()
    for _ in range(50):
        ray.get(actor.nothing.remote())
    call = (time.perf_counter() - start) / 50
    ray.get(actor.frames.remote())
    start = time.perf_counter()
    for _ in range(3):
        frames = ray.get(actor.frames.remote())
        frames.sum(dtype=np.uint64)  # touch the bytes on the driver
    moved = (time.perf_counter() - start) / 3
    ray.kill(actor)
    return {"mb": np.prod(shape) / 1e6, "call_ms": call * 1000, "frames_ms": moved * 1000}


if __name__ == "__main__":
    main()
