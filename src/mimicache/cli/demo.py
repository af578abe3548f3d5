"""`mimicache demo`: the tiny bundle, generated media and a cold + warm batch run, offline.

Everything goes through the same code path as `mimicache run --benchmark_cache`; only the
models are tiny random weights, so the frames look like noise while every stage really runs.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from mimicache.cli.console import setup_logging
from mimicache.cli.run import run_main

logger = logging.getLogger(__name__)

DEMO_RESOLUTION = 128
DEMO_VIDEO_SIZE = (96, 160)  # H, W of the generated driving videos
DEMO_FRAMES = 12
DEMO_FPS = 24


def write_demo_media(folder: Path) -> tuple[Path, Path]:
    """A reference image and two driving videos of a moving stick figure; returns (image, videos)."""
    import numpy as np
    from PIL import Image

    from mimicache.media import write_video
    from mimicache.testing.tiny_dwpose import make_figure_frame

    videos = folder / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    image = folder / "reference.png"
    Image.fromarray(make_figure_frame(192, 128, 0.5)).save(image)
    height, width = DEMO_VIDEO_SIZE
    for name, phase in (("walk_a", 0.0), ("walk_b", 0.5)):
        frames = np.stack(
            [
                make_figure_frame(height, width, (phase + i / DEMO_FRAMES) % 1.0)
                for i in range(DEMO_FRAMES)
            ]
        )
        write_video(videos / f"{name}.mp4", frames, fps=DEMO_FPS)
    return image, videos


def write_demo_config(path: Path, bundle, image: Path, videos: Path) -> Path:
    config = {
        "base_model_path": str(bundle.base_model_path),
        "ckpt_path": str(bundle.ckpt_path),
        "test_case": [
            {
                "ref_video_path": str(sorted(videos.glob("*.mp4"))[0]),
                "ref_image_path": str(image),
                "num_frames": 4,
                "resolution": DEMO_RESOLUTION,
                "frames_overlap": 1,
                "num_inference_steps": 3,
                "noise_aug_strength": 0,
                "guidance_scale": 2.0,
                "sample_stride": 2,
                "fps": 12,
                "seed": 42,
            }
        ],
        "dwpose": {
            "det_model_path": str(bundle.det_model_path),
            "pose_model_path": str(bundle.pose_model_path),
        },
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


HELP = "tiny models + generated media: the whole flow, offline (about 12 s on 2 CPU cores)"
DESCRIPTION = """\
Write a tiny random-weight model bundle and two generated driving videos, then run both cold and
warm through the feature cache exactly as `mimicache bench` does, and print what the cache
saved. Offline; about 12 s on 2 CPU cores (median of 3 runs), the first run of a fresh install a
few seconds more.
"""


def add_demo_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``demo`` on an argparse sub-parser set."""
    demo = subparsers.add_parser("demo", help=HELP, description=DESCRIPTION)
    demo.add_argument("--workdir", default="mimicache-demo", help="(default: %(default)s)")
    demo.add_argument("-v", "--verbose", action="store_true")
    demo.set_defaults(func=demo_command)
    return demo


def demo_command(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    return run_demo(Path(args.workdir))


def mimicache_command() -> str:
    """The command that reaches this very mimicache, so printed lines work without activating.

    A bare `mimicache` fails (or finds another install) when the venv is not activated.
    """
    script = Path(sys.executable).parent / "mimicache"
    if script.is_file():
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m mimicache.cli"


def run_demo(workdir: Path) -> int:
    start = time.perf_counter()
    workdir = workdir.absolute()
    print(
        "mimicache demo: 2 jobs (one reference image, 2 driving videos), each run cold and then "
        f"warm through the feature cache, tiny random-weight models on the CPU; in {workdir}"
    )
    # The tiny models need torch and diffusers: loaded here, not when the CLI starts.
    from mimicache.testing.models import write_tiny_bundle

    bundle = write_tiny_bundle(workdir / "models")
    image, videos = write_demo_media(workdir / "media")
    config = write_demo_config(workdir / "demo.yaml", bundle, image, videos)
    outputs = workdir / "outputs"
    code = run_main(
        [
            "--inference_config",
            str(config),
            "--batch_folder",
            str(videos),
            "--output_dir",
            str(outputs),
            "--feature_cache_dir",
            str(workdir / "cache"),
            "--device",
            "cpu",
            "--benchmark_cache",
        ]
    )
    cmd = mimicache_command()
    print(
        f"\nDemo finished in {time.perf_counter() - start:.1f} s (exit code {code}).\n"
        f"Outputs: {outputs / videos.name} (mp4 + JSON sidecar per job), cache: {workdir / 'cache'}.\n"
        "The models are tiny random weights, so the videos look like noise (and every clip's\n"
        "score says suspect); every stage (DWPose, alignment, drawing, CLIP, VAE, tiled\n"
        "denoising, decoding, scoring, the cache) ran for real.\n"
        "Run it again (warm, from the demo's cache) or look at its cache:\n"
        f"  {cmd} run --inference_config {config} --batch_folder {videos} "
        f"--feature_cache_dir {workdir / 'cache'} --device cpu --output_dir {outputs}\n"
        f"  {cmd} cache stats --feature_cache_dir {workdir / 'cache'}\n"
        "For real clips: what this machine can run, then the weights (README, 'First steps'):\n"
        f"  {cmd} doctor\n"
        f"  {cmd} download --ref_image me.png --video sign.mp4\n"
        f"  {cmd} run --inference_config configs/real.yaml"
    )
    return code
