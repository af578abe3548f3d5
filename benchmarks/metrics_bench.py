"""The clip-score measures on plain keypoint arrays: seconds per clip of the time-warped error
(``dtw_error``, all four parts) at a driving video's frame counts, and its peak memory.

    python benchmarks/metrics_bench.py [--frames 72 300] [--repeat 3]

Random DWPose-layout keypoints (134 points: body, feet, face, hands), the output a copy of the
target shifted by two frames and jittered; the best of ``--repeat`` runs in one process.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from mimicache.quality.metrics import PARTS, dtw_error


def _clip(frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    points = max(sl.stop for sl in PARTS.values())
    target = np.concatenate(
        [rng.uniform(0, 512, (frames, points, 2)), rng.uniform(0.2, 1.0, (frames, points, 1))],
        axis=2,
    )
    output = np.roll(target, 2, axis=0)
    output[..., :2] += rng.normal(0, 3, (frames, points, 2))
    return target, output


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[72, 300])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print("| frames | dtw_error, 4 parts (s) | peak memory (MB) |")
    print("| ---: | ---: | ---: |")
    for frames in args.frames:
        target, output = _clip(frames)
        best = float("inf")
        for _ in range(args.repeat):
            started = time.perf_counter()
            for part in PARTS:
                dtw_error(target, output, 100.0, part)
            best = min(best, time.perf_counter() - started)
        tracemalloc.start()
        for part in PARTS:
            dtw_error(target, output, 100.0, part)
        peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        print(f"| {frames} | {best:.3f} | {peak:.1f} |")


if __name__ == "__main__":
    main()
