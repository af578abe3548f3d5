"""Warm preprocessing per job: ours (every entry a hit) against the seed's pickled entry.

    python benchmarks/warm_preprocess.py [--workdir DIR] [--processes 3] [--jobs 15]
        [--sizes tiny,published] [--compare SRC ...] [--md PATH]

Two cases on the tiny bundle (random weights; on a hit no model runs, so the models' size does
not matter): ``tiny``, the demo's (a 128x192 reference fitted at resolution 128, 6+1 pose
frames), and ``published``, the published size (a 1080x1920 portrait reference fitted to
576x1024, a 540x960 30 fps video sampled at stride 2: 72+1 pose frames).

The cache is filled once (a cold pass). Then --processes fresh processes per contender (the
contenders' processes taking turns) each run --jobs warm jobs through the engine's own calls
before denoising (``MimicMotion.prepare_pose``, then ``reference_features``; a full hit reads
the drawn pose frames and the two features), timed per job: the first job of a process (what
a one-video ``run`` pays) and the later ones (a batch in a long-lived process) are reported
apart, as medians. ``--compare SRC`` runs the same measurement with another source tree (a checkout's
``src`` folder) on the same cache, in the same run, for before/after figures.

The seed's warm path, for the same case and measured the same way (fresh processes, first and
later jobs): its key (the two files' paths and mtimes), then ``torch.load`` of its pickled
``.pt`` entry holding ``pose_pixels`` (1+F,3,H,W) and ``image_pixels`` (1,3,H,W) float32 (its
"preprocess"), then of its CLIP embedding and VAE latent entries (its pipeline features).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()

FULL_HIT = {"pose_frames", "clip_embeddings", "vae_latents"}

SIZES = {
    # name: (reference H, W, resolution, video H, W, video frames, fps)
    "tiny": (192, 128, 128, 96, 160, 12, 24),
    "published": (1920, 1080, 576, 960, 540, 144, 30),
}


def write_case(workdir: Path, size: str) -> Path:
    """The tiny bundle (shared), this size's media and its config; returns the config."""
    import numpy as np
    import yaml
    from PIL import Image

    from mimicache.media import write_video
    from mimicache.testing.models import TinyBundle, write_tiny_bundle
    from mimicache.testing.tiny_dwpose import make_figure_frame

    # written once: rewritten files are too new for the digest memo, so every process would
    # hash them again and time that instead of a warm job
    root = workdir / "models"
    done = root / "written"
    if not done.exists():
        bundle = write_tiny_bundle(root)
        done.write_text(json.dumps({k: str(v) for k, v in vars(bundle).items()}))
    bundle = TinyBundle(**{k: Path(v) for k, v in json.loads(done.read_text()).items()})
    ih, iw, resolution, vh, vw, count, fps = SIZES[size]
    media = workdir / size
    media.mkdir(parents=True, exist_ok=True)
    image, video = media / "reference.png", media / "dance.mp4"
    if not image.exists():
        Image.fromarray(make_figure_frame(ih, iw, 0.5)).save(image)
    if not video.exists():
        frames = np.stack([make_figure_frame(vh, vw, i / count) for i in range(count)])
        write_video(video, frames, fps=fps)
    config = {
        "base_model_path": str(bundle.base_model_path),
        "ckpt_path": str(bundle.ckpt_path),
        "test_case": [
            {
                "ref_video_path": str(video),
                "ref_image_path": str(image),
                "resolution": resolution,
                "sample_stride": 2,
                "noise_aug_strength": 0,
            }
        ],
        "dwpose": {
            "det_model_path": str(bundle.det_model_path),
            "pose_model_path": str(bundle.pose_model_path),
        },
    }
    path = media / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# --------------------------------------------------------------------------- one process


def worker(config_path: Path, cache_dir: Path, jobs: int) -> dict:
    """Load the engine, run ``jobs`` jobs' feature calls; seconds per job and whether all hit."""
    import torch

    from mimicache.cache import FeatureStore
    from mimicache.config import load_config
    from mimicache.engine import JobRecord, MimicMotion

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    config = load_config(config_path)
    case = config.test_case[0]
    store = FeatureStore(cache_dir)
    engine = MimicMotion.from_config(config, device="cpu", dtype=torch.float32, cache=store)
    preprocess, features, hits = [], [], []
    for _ in range(jobs):
        record = JobRecord(engine.device)
        start = time.perf_counter()
        pose_frames, image = engine.prepare_pose(case, record, progress=False)
        middle = time.perf_counter()
        engine.reference_features(case, image, record)
        end = time.perf_counter()
        preprocess.append(middle - start)
        features.append(end - start)
        # every stage a hit, the drawn frames and the features among them (code that reads
        # the keypoints too lists five; this one needs only these three)
        stages = {e.stage for e in record.events}
        hits.append(all(e.hit for e in record.events) and stages >= FULL_HIT)
    store.close()
    frames = tuple(pose_frames.shape)
    return {"preprocess": preprocess, "features": features, "all_hits": hits, "frames": frames}


def run_worker(src: Path | None, mode: str, *args: object) -> dict:
    """``mode`` ("--worker" or "--seed-worker") with ``args`` in a fresh process; its result."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if src is not None:
        env["PYTHONPATH"] = str(src)
    argv = [sys.executable, str(HERE), mode, *map(str, args)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker failed ({src or 'this tree'}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- the seed


def write_seed_entry(config_path: Path, cache_dir: Path, folder: Path) -> int:
    """The seed's pickles for this case: ``pose.pt`` (pose_pixels, image_pixels float32),
    ``clip.pt``, ``vae.pt``; returns the bytes of ``pose.pt``."""
    import torch

    from mimicache.cache import FeatureStore
    from mimicache.config import load_config
    from mimicache.engine import JobRecord, MimicMotion

    config = load_config(config_path)
    case = config.test_case[0]
    with FeatureStore(cache_dir) as store:
        engine = MimicMotion.from_config(config, device="cpu", dtype=torch.float32, cache=store)
        record = JobRecord(engine.device)
        pose_frames, image = engine.prepare_pose(case, record, progress=False)
        embeds, latent = engine.reference_features(case, image, record)[-2:]
    height, width = pose_frames.shape[-2:]
    folder.mkdir(parents=True, exist_ok=True)
    image_pixels = torch.zeros(1, 3, height, width)  # its values do not change a load's time
    pose = {"pose_pixels": pose_frames.float() / 127.5 - 1, "image_pixels": image_pixels}
    torch.save(pose, folder / "pose.pt")
    torch.save({"image_embeddings": embeds}, folder / "clip.pt")
    torch.save({"image_latents": latent}, folder / "vae.pt")
    return (folder / "pose.pt").stat().st_size


def seed_worker(config_path: Path, folder: Path, jobs: int) -> dict:
    """The seed's warm path, ``jobs`` times in this process: its key from the two files' paths
    and mtimes, then its pickles loaded (torch imported first, as its pipeline needs it)."""
    import hashlib

    import torch
    import yaml

    case = yaml.safe_load(config_path.read_text())["test_case"][0]

    def key() -> str:
        parts = []
        for name in ("ref_image_path", "ref_video_path"):
            path = Path(case[name])
            parts += [str(path.absolute()), str(os.stat(path).st_mtime)]
        parts += [str(case["resolution"]), str(case["sample_stride"])]
        return hashlib.md5("|".join(parts).encode()).hexdigest()

    preprocess, features = [], []
    for _ in range(jobs):
        start = time.perf_counter()
        key()
        torch.load(folder / "pose.pt")
        middle = time.perf_counter()
        torch.load(folder / "clip.pt")
        torch.load(folder / "vae.pt")
        end = time.perf_counter()
        preprocess.append(middle - start)
        features.append(end - start)
    return {"preprocess": preprocess, "features": features, "all_hits": [True] * jobs}


# --------------------------------------------------------------------------- report


def _ms(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) * 1e3:8.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mimicache_warm_preprocess"))
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=15)
    parser.add_argument("--sizes", default="tiny,published")
    parser.add_argument(
        "--compare", type=Path, nargs="*", default=[], help="other source trees (src folders)"
    )
    parser.add_argument("--md", type=Path, default=None, help="also write the table here")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--seed-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker or args.seed_worker:
        config, folder, jobs = args.worker or args.seed_worker
        measure = worker if args.worker else seed_worker
        print(json.dumps(measure(Path(config), Path(folder), int(jobs))))
        return 0

    import platform

    import torch

    workdir = args.workdir.absolute()
    trees: list[tuple[str, Path | None]] = [("this tree", None)]
    trees += [(str(src), src.absolute()) for src in args.compare]
    lines = [
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        f"command: {' '.join([Path(sys.executable).name, *sys.argv])}",
        f"{args.processes} fresh processes x {args.jobs} warm jobs each, the contenders' "
        "processes taking turns; median ms per job",
        "",
        "| case | code | first job: preprocess | first job: + CLIP/VAE | later jobs: preprocess"
        " | later jobs: + CLIP/VAE | all hits |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]

    def report(size: str, name: str, runs: list[dict]) -> None:
        first = {k: [r[k][0] for r in runs] for k in ("preprocess", "features")}
        later = {k: [t for r in runs for t in r[k][1:]] for k in ("preprocess", "features")}
        hits = all(h for r in runs for h in r["all_hits"])
        lines.append(
            f"| {size} | {name} | {_ms(first['preprocess'])} | {_ms(first['features'])} | "
            f"{_ms(later['preprocess'])} | {_ms(later['features'])} | {hits} |"
        )
        print(lines[-1], flush=True)

    for size in args.sizes.split(","):
        config = write_case(workdir, size)
        cache = workdir / size / "cache"
        cold = run_worker(None, "--worker", config, cache, 1)  # fills the cache
        print(f"{size}: {cold['frames']} pose frames; cache filled", flush=True)
        seed = workdir / size / "seed"
        size_mb = write_seed_entry(config, cache, seed) / 1e6
        contenders = [(name, src, "--worker", cache) for name, src in trees]
        contenders.append(
            (f"seed (`torch.load`, {size_mb:.1f} MB .pt)", None, "--seed-worker", seed)
        )
        # The processes of all contenders take turns, so a slow spell of the machine (or the
        # memory compaction a fresh process's first large array can meet) falls on all alike.
        runs: dict[str, list[dict]] = {name: [] for name, *_ in contenders}
        for _ in range(args.processes):
            for name, src, mode, folder in contenders:
                runs[name].append(run_worker(src, mode, config, folder, args.jobs))
        for name, *_ in contenders:
            report(size, name, runs[name])
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if args.md:
        args.md.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
