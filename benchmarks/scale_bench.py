"""Scale-out: jobs per minute of the local executor and of Ray with 1 and 2 workers, the
per-job overhead Ray adds, and the transfer cost of one job's frames through Ray's store.

    python benchmarks/scale_bench.py [--jobs 8] [--frames 6] [--config CFG --batch_folder DIR]

Without ``--config`` it runs the tiny random-weight bundle on generated videos (CPU). With a
config (e.g. real-size random-weight models on a GPU machine) it runs that config's plan.
Threads: the local run and a single worker use every core; with W workers each gets
cores / W torch threads, so workers never oversubscribe the machine. The goal: with W workers
the wall time is within 10 % of sum(job seconds) / W plus one model load.

The driver's budget (``--json``/``--md`` write it): the driver process's CPU seconds per job
(``time.process_time`` of the driver, every thread of it, around the dispatch loop, less the
workers' start-up and the bench's own measuring) and the bytes it receives per job (the
pickled objects the workers return); then the same at the published job size (``--published``:
72 frames at 576x1024, measured with synthetic frames: the Ray transfer of the frames and
``media.encode_video`` of them, no models), and from it how many workers one driver feeds at
``--job_s`` seconds per job (about 20 s per job on an H200; the goal: 1,000 workers, that is
at most 20 ms of driver time per job). With ``--remote`` it adds the remote tier against
moto's S3 server (``remote_cache_bench.py``): hit time and bytes per job.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pickle
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def workspace(tmp: Path, jobs: int, frames: int) -> tuple[Path, Path]:
    import yaml
    from PIL import Image

    from mimicache.media import write_video
    from mimicache.testing.models import write_tiny_bundle
    from mimicache.testing.tiny_dwpose import make_figure_frame

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
    ap.add_argument("--fps", type=float, default=7.0, help="of the published-size encode")
    ap.add_argument("--job_s", type=float, default=20.0, help="seconds per job on one GPU")
    ap.add_argument("--remote", type=int, default=0, help="jobs of the S3 remote-tier run")
    ap.add_argument("--json", type=Path, help="write the driver's budget here")
    ap.add_argument("--md", type=Path, help="and a Markdown table here")
    args = ap.parse_args()

    import ray
    import torch

    from mimicache.batch import run_jobs
    from mimicache.batch.executing.executor import ExecutorSettings
    from mimicache.batch.executing.ray_executor import RayExecutor
    from mimicache.engine.build import build_engine

    cores = os.cpu_count() or 1
    gpus = torch.cuda.device_count()
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.config:
            config_path, clips = args.config, args.batch_folder
        else:
            config_path, clips = workspace(tmp, args.jobs, args.frames)
        cache = tmp / "cache"
        base = _spec(config_path, cache, args.threads or cores, args.device)
        _warm_cache(base, _plan(base, clips, tmp / "warm"))

        start = time.perf_counter()
        engine = build_engine(base)
        load = time.perf_counter() - start
        jobs = _plan(base, clips, tmp / "local")
        start = time.perf_counter()
        results = run_jobs(engine, jobs, config=base.config, progress=False)
        rows.append(_row("local, 1 process", time.perf_counter() - start, results, 0.0, 1))
        del engine

        # "local": a cluster of its own even while one from `ray start` runs on this machine
        ray.init(address="local", num_cpus=cores, num_gpus=gpus, include_dashboard=False,
                 log_to_driver=False)  # fmt: skip
        for workers in args.workers:
            threads = args.threads or (max(1, cores // workers) if not gpus else cores)
            spec = base.replace(threads=threads)
            per = 1.0 if gpus else 0.0
            settings = ExecutorSettings(workers=workers, gpus_per_worker=per, pose_workers=0)
            jobs = _plan(spec, clips, tmp / f"ray{workers}")
            executor = _metered(RayExecutor)(spec, settings, progress=False)
            start = time.perf_counter()
            results = executor.run(jobs, config=spec.config)
            wall = time.perf_counter() - start
            row = _row(f"ray, {workers} worker(s) x {threads} threads", wall, results,
                       executor.startup_s, workers)  # fmt: skip
            row["startup_s"] = executor.startup_s
            row["driver"] = executor.driver()
            rows.append(row)
        shape = tuple(int(x) for x in args.transfer_shape.split(","))
        transfer = _transfer(ray, shape)
        published = _published(ray, shape, args.fps)
        ray.shutdown()
    remote = _remote_tier(args.remote) if args.remote else None

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
    budget = _budget(rows[1:], published, remote, args, cores, gpus)
    print(_markdown(budget))
    if args.json:
        args.json.write_text(json.dumps(budget, indent=2) + "\n")
    if args.md:
        args.md.write_text(_markdown(budget))


def _budget(
    ray_rows: list[dict], published: dict, remote: dict | None, args, cores: int, gpus: int
) -> dict:
    """The driver's cost per job, measured and at the published size, and the workers one
    driver feeds at ``args.job_s`` seconds per job."""
    # the costliest run's figure: the cores here are shared, so the spread is noise
    measured = max(ray_rows, key=lambda r: r["driver"]["cpu_ms_per_job"])["driver"]
    # before: the frames travel to the driver, which encodes and writes them; after: the
    # worker publishes its own mp4 and the driver gets a small record
    frames_to_driver = measured["frames_to_driver"]
    if frames_to_driver:
        # the per-job work that does not grow with the frames, plus the transfer and encode
        # of the published size's frames
        at_size = (measured["cpu_ms_per_job"] + published["transfer_cpu_ms"]
                   + published["encode_cpu_ms"])  # fmt: skip
        received = published["received_bytes_per_job"] + measured["received_bytes_per_job"]
    else:
        at_size, received = measured["cpu_ms_per_job"], measured["received_bytes_per_job"]
    result = {
        "benchmark": "scale_bench",
        "command": "python benchmarks/scale_bench.py " + " ".join(sys.argv[1:]),
        "design": "frames to the driver" if frames_to_driver else "workers publish",
        "ray_runs": [{"run": r["run"], **r["driver"]} for r in ray_rows],
        "published": published,
        "driver_at_published_size": {
            "cpu_ms_per_job": round(at_size, 1),
            "received_bytes_per_job": int(received),
            "job_s": args.job_s,
            "workers_per_driver": int(1000 * args.job_s / max(at_size, 1e-3)),
            "goal_workers": 1000,
        },
        "machine": {"cpu_count": cores, "gpus": gpus, "python": platform.python_version(),
                    "platform": platform.platform()},
    }  # fmt: skip
    if remote is not None:
        result["remote_tier"] = {
            "endpoint": remote["endpoint"],
            "jobs": remote["jobs"],
            "hit_ms_per_job": remote["per_job"]["remote_hit"],
            "bytes_per_job": remote["bytes_per_job_from_bucket"],
            "get_per_job": remote["requests_per_job"]["remote_hit_get"],
            "publish_ms_per_job": remote["per_job"]["publish"],
        }
    return result


def _markdown(budget: dict) -> str:
    lines = [
        f"Driver budget ({budget['design']}): `{budget['command']}`", "",
        "| run | jobs | driver CPU ms/job | of it finish_job | received bytes/job |",
        "|---|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in budget["ray_runs"]:
        lines.append(f"| {r['run']} | {r['jobs']} | {r['cpu_ms_per_job']:.2f} | "
                     f"{r['finish_cpu_ms_per_job']:.2f} | {r['received_bytes_per_job']:,} |")  # fmt: skip
    p, d = budget["published"], budget["driver_at_published_size"]
    lines += [
        "",
        f"Published size {'x'.join(map(str, p['shape']))} uint8 ({p['frames_bytes'] / 1e6:.0f} MB): "
        f"Ray transfer {p['transfer_cpu_ms']:.0f} ms driver CPU ({p['transfer_wall_ms']:.0f} ms wall), "
        f"encode {p['encode_cpu_ms']:.0f} ms CPU ({p['encode_wall_ms']:.0f} ms wall, "
        f"{p['mp4_bytes'] / 1e6:.2f} MB mp4).",
        "",
        f"At the published size the driver spends {d['cpu_ms_per_job']:.1f} ms CPU and receives "
        f"{d['received_bytes_per_job']:,} bytes per job: one driver feeds "
        f"{d['workers_per_driver']:,} workers at {d['job_s']:g} s per job "
        f"(goal {d['goal_workers']:,}).",
    ]  # fmt: skip
    if "remote_tier" in budget:
        r = budget["remote_tier"]
        lines += ["", f"Remote tier ({r['endpoint']}, {r['jobs']} jobs): a hit takes "
                  f"{r['hit_ms_per_job']['median_ms']:.1f} ms per job (median; p90 "
                  f"{r['hit_ms_per_job']['p90_ms']:.1f} ms), {r['bytes_per_job']:,} bytes and "
                  f"{r['get_per_job']:g} GETs per job."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _metered(base):
    """A subclass of the Ray executor ``base`` that counts the driver's CPU seconds in the
    start-up and in the dispatch loop, the pickled bytes of each worker's answer, and the
    driver's CPU seconds in ``finish_job`` (encode and write); the bench's own pickling is
    taken out of the loop's count."""
    import mimicache.batch.executing.ray_executor as module

    class Metered(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.cpu = {"start": 0.0, "loop": 0.0, "finish": 0.0, "measuring": 0.0}
            self.received: list[int] = []
            self.frames_seen = False

        def _start(self) -> None:
            begin = time.process_time()
            super()._start()
            self.cpu["start"] += time.process_time() - begin

        def _run(self, jobs, config):
            real = getattr(module, "finish_job", None)

            def finish_job(*args, **kwargs):
                begin = time.process_time()
                try:
                    return real(*args, **kwargs)
                finally:
                    self.cpu["finish"] += time.process_time() - begin

            module.finish_job = finish_job
            begin = time.process_time()
            try:
                return super()._run(jobs, config)
            finally:
                self.cpu["loop"] += time.process_time() - begin
                module.finish_job = real

        def driver(self) -> dict:
            jobs = max(len(self.received), 1)
            loop = self.cpu["loop"] - self.cpu["measuring"]
            return {
                "jobs": len(self.received),
                "startup_cpu_s": round(self.cpu["start"], 4),
                "cpu_ms_per_job": round(1000 * loop / jobs, 2),
                "finish_cpu_ms_per_job": round(1000 * self.cpu["finish"] / jobs, 2),
                "dispatch_cpu_ms_per_job": round(1000 * (loop - self.cpu["finish"]) / jobs, 2),
                "received_bytes_per_job": int(np.median(self.received)) if self.received else 0,
                "frames_to_driver": self.frames_seen,
            }

    # what the worker's answer is named: ``_outcome`` (frames) or ``_result`` (a record)
    answer = "_result" if hasattr(base, "_result") else "_outcome"

    def received(self, ref, *args, **kwargs):
        got = getattr(base, answer)(self, ref, *args, **kwargs)
        begin = time.process_time()
        if got is not None:  # what ray.get handed over, less the log lines
            self.received.append(len(pickle.dumps(got, protocol=5)))
            self.frames_seen |= getattr(got, "frames", None) is not None
        self.cpu["measuring"] += time.process_time() - begin
        return got

    setattr(Metered, answer, received)
    return Metered


def _published(ray, shape: tuple[int, ...], fps: float, repeats: int = 3) -> dict:
    """The driver's share of one job at the published size, from synthetic frames: the Ray
    transfer of the frames (driver CPU and wall, pickled bytes) and ``encode_video`` of them
    (as ``finish_job`` does it)."""
    from PIL import Image

    from mimicache.media import encode_video
    from mimicache.testing.tiny_dwpose import make_figure_frame

    count, height, width, _ = shape
    # The encoder's cost and the mp4's size follow the content: a moving figure over a smooth
    # texture that pans, as a generated clip has, neither a flat frame nor pure noise.
    coarse = np.random.default_rng(0).integers(0, 160, (height // 24, width // 24, 3))
    texture = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((width, height)))
    frames = np.empty(shape, dtype=np.uint8)
    for i in range(count):
        figure = make_figure_frame(height, width, i / count)
        frames[i] = np.maximum(np.roll(texture, 4 * i, axis=1), figure)

    @ray.remote(num_cpus=0)
    class Source:
        def __init__(self, frames: np.ndarray):
            self.frames = frames.copy()

        def get(self) -> np.ndarray:
            return self.frames

    actor = Source.remote(frames)
    ray.get(actor.get.remote())
    cpu, wall = [], []
    for _ in range(repeats):
        begin_cpu, begin = time.process_time(), time.perf_counter()
        got = ray.get(actor.get.remote())
        got.sum(dtype=np.uint64)  # touch the bytes on the driver
        cpu.append(time.process_time() - begin_cpu)
        wall.append(time.perf_counter() - begin)
        del got
    ray.kill(actor)
    enc_cpu, enc_wall = [], []
    for _ in range(repeats):
        begin_cpu, begin = time.process_time(), time.perf_counter()
        video = encode_video(frames, fps)
        enc_cpu.append(time.process_time() - begin_cpu)
        enc_wall.append(time.perf_counter() - begin)
    return {
        "shape": list(shape),
        "frames_bytes": int(frames.nbytes),
        "received_bytes_per_job": len(pickle.dumps(frames, protocol=5)),
        "transfer_cpu_ms": round(1000 * float(np.median(cpu)), 1),
        "transfer_wall_ms": round(1000 * float(np.median(wall)), 1),
        "encode_cpu_ms": round(1000 * float(np.median(enc_cpu)), 1),
        "encode_wall_ms": round(1000 * float(np.median(enc_wall)), 1),
        "mp4_bytes": len(video),
        "fps": fps,
    }


def _remote_tier(jobs: int) -> dict:
    """``remote_cache_bench.py`` (moto's S3 server through s3fs), its JSON result."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import remote_cache_bench

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "remote.json"
        with contextlib.redirect_stdout(io.StringIO()):
            remote_cache_bench.main(["--jobs", str(jobs), "--json", str(out)])
        return json.loads(out.read_text())


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
