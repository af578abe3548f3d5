"""Start-up time of the command line: ``--help`` and the cache commands on 1,000 entries.

    python benchmarks/cli_startup.py [--workdir DIR] [--entries 1000] [--runs 5] [--md PATH]

Fills a feature cache under --workdir with --entries tiny entries (a 4x4 float32 tensor each,
spread over the five stages, with the platform key fields a real run records) through the
real ``FeatureStore.get_or_compute``, then starts each command --runs times as a fresh process
(the installed ``mimicache`` beside this interpreter) and prints the median, min and max wall
seconds as a Markdown table: ``mimicache --help``, ``run --help``, every other sub-command's
``--help``, ``cache ls`` and ``cache verify``. Targets (issue 20): each ``--help`` under 0.5 s,
``cache ls`` / ``cache verify`` on 1,000 entries under 1 s.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

STAGES = ("video_keypoints", "image_keypoints", "pose_frames", "clip_embeddings", "vae_latents")
PLATFORM = {"device": "cpu", "capability": "AVX2", "threads": 2, "torch": "2.13.0"}


def fill(root: Path, entries: int) -> None:
    """``entries`` tiny entries in a new cache at ``root`` (written through the real store)."""
    import torch

    from mimicache.cache import FeatureStore, StageKey

    shutil.rmtree(root, ignore_errors=True)
    with FeatureStore(root) as store:
        for i in range(entries):
            stage = STAGES[i % len(STAGES)]
            key = StageKey({"video": f"{i:064x}"}, {"model": "tiny"}, {"i": i}, PLATFORM)
            value = torch.full((4, 4), float(i))
            store.get_or_compute(stage, key, lambda v=value: {"value": v}, subject=f"in{i}.mp4")


def wall_seconds(argv: list[str], runs: int) -> list[float]:
    """Wall seconds of ``runs`` fresh starts of ``argv`` (after one untimed start)."""
    times = []
    for n in range(runs + 1):
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, check=False)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()}")
        if n:
            times.append(elapsed)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mimicache_cli_startup"))
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--md", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    root = args.workdir / "cache"
    fill(root, args.entries)
    exe = str(Path(sys.executable).with_name("mimicache"))
    subcommands = ("run", "bench", "pose", "cache", "demo", "doctor", "ui")
    commands = [
        ("mimicache --help", [exe, "--help"]),
        *((f"mimicache {c} --help", [exe, c, "--help"]) for c in subcommands),
        *(
            (
                f"mimicache cache {a} ({args.entries} entries)",
                [exe, "cache", a, "--feature_cache_dir", str(root)],
            )
            for a in ("ls", "verify")
        ),
    ]
    lines = ["| command | median s | min s | max s |", "| --- | ---: | ---: | ---: |"]
    for label, command in commands:
        t = wall_seconds(command, args.runs)
        lines.append(f"| `{label}` | {statistics.median(t):.3f} | {min(t):.3f} | {max(t):.3f} |")
        print(lines[-1], flush=True)
    if args.md:
        args.md.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
