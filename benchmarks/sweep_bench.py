"""A sweep in one command against the same variants as separate commands, on the demo's tiny
bundle: the whole command's wall time (process start, one model load, every job, the grid)
against the sum of one ``mimicache run`` per variant (each loads the models), both from an
empty feature cache; and each variant's preparation (the cached stages: pose frames, CLIP,
VAE) in the sweep, the first against the warm ones.

    python benchmarks/sweep_bench.py [--out FILE.md]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEEDS = (1, 2)
GUIDANCE = (1.5, 2.5)
SCHEDULERS = ("EulerDiscreteScheduler", "AnimateLCM_SVD")
PREPARE = (
    "digest",
    "unpack",
    "image_keypoints",
    "video_keypoints",
    "pose_frames",
    "clip_embeddings",
    "vae_latents",
)


def _mimicache(*args: str) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mimicache.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    if done.returncode != 0:
        raise SystemExit(f"mimicache {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the report (markdown) here")
    args = parser.parse_args(argv)
    from mimicache.cli.demo import write_demo_config, write_demo_media
    from mimicache.testing.models import write_tiny_bundle

    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    with tempfile.TemporaryDirectory(prefix="mimicache-sweep-bench-") as tmp:
        work = Path(tmp)
        bundle = write_tiny_bundle(work / "bundle")
        image, videos = write_demo_media(work / "media")
        config = write_demo_config(work / "demo.yaml", bundle, image, videos)
        common = ["--inference_config", str(config), "--device", "cpu", "--quiet"]

        sweep = [
            "--sweep",
            f"seed={','.join(map(str, SEEDS))}",
            f"guidance_scale={','.join(map(str, GUIDANCE))}",
            f"scheduler={','.join(SCHEDULERS)}",
        ]
        cache = work / "cache-sweep"
        one = _mimicache(
            "run",
            *common,
            "--output_dir",
            str(work / "sweep"),
            "--feature_cache_dir",
            str(cache),
            *sweep,
        )
        rows = [
            json.loads(line) for line in (work / "sweep" / "results.jsonl").read_text().splitlines()
        ]
        prepare = [sum(r["timings"].get(s, 0.0) for s in PREPARE) for r in rows]

        shutil.rmtree(work / "cache-separate", ignore_errors=True)
        separate = []
        for seed, guidance, scheduler in itertools.product(SEEDS, GUIDANCE, SCHEDULERS):
            separate.append(
                _mimicache(
                    "run",
                    *common,
                    "--output_dir",
                    str(work / "separate"),
                    "--feature_cache_dir",
                    str(work / "cache-separate"),
                    "--seed",
                    str(seed),
                    "--guidance_scale",
                    str(guidance),
                    "--scheduler",
                    scheduler,
                )
            )

    count = len(separate)
    say("# A sweep in one command against separate commands")
    say()
    say(f"machine: {platform.platform()}, {os.cpu_count()} CPUs")
    say("command: python benchmarks/sweep_bench.py")
    say(f"variants: seed {SEEDS} x guidance {GUIDANCE} x scheduler {SCHEDULERS}, the demo job")
    say()
    say("| | wall seconds |")
    say("| --- | --- |")
    say(f"| one `run --sweep` ({count} jobs, one model load, the grid) | {one:.1f} |")
    say(f"| {count} separate `run` commands (a model load each) | {sum(separate):.1f} |")
    say(f"| ratio | {sum(separate) / one:.2f}x |")
    say()
    warm = prepare[1:]
    say("Preparation per variant in the sweep (the cached stages with their keys and reads):")
    say(
        f"first {prepare[0] * 1000:.1f} ms, the warm ones median "
        f"{statistics.median(warm) * 1000:.2f} ms ({prepare[0] / statistics.median(warm):.0f}x "
        "less)"
    )
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
