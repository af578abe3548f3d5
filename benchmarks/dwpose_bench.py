"""DWPose frames/s: ONNX Runtime vs the torch backend, on the CPU and (when present) on CUDA.

    python benchmarks/dwpose_bench.py [--width 1.0] [--depth 1.0] [--frames 8] [--chunk 8]
        [--models DIR] [--devices cpu,cuda] [--out FILE]

Models: ``--models DIR`` holding yolox_l.onnx and dw-ll_ucoco_384.onnx (the published files),
or else the real-architecture random-weight stand-ins of ``mimicache.testing.pose_models`` at
``--width`` / ``--depth`` (1.0 / 1.0 is the published YOLOX-L / RTMPose-l size), written once to
``$TMPDIR/mimicache-dwpose-bench``. Frames: 1280x720 figure frames. Each (backend, device)
runs ``detect_many`` once to warm up (allocations, kernel selection for these batch shapes),
then the best of ``--repeats`` timed runs is reported, with the largest keypoint difference
from ONNX Runtime on the CPU (in units of the frame size).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _models(args) -> tuple[Path, Path, str]:
    from mimicache.testing.pose_models import write_rtmpose_onnx, write_yolox_onnx

    if args.models:
        return args.models / "yolox_l.onnx", args.models / "dw-ll_ucoco_384.onnx", "published"
    root = Path(tempfile.gettempdir()) / "mimicache-dwpose-bench" / f"w{args.width}-d{args.depth}"
    det, pose = root / "yolox_l.onnx", root / "dw-ll_ucoco_384.onnx"
    if not det.is_file():
        write_yolox_onnx(det, width=args.width, depth=args.depth)
    if not pose.is_file():
        write_rtmpose_onnx(pose, width=args.width, depth=args.depth)
    return det, pose, f"random-weight YOLOX-L / RTMPose-l, width {args.width}, depth {args.depth}"


def _max_diff(ref, got) -> float:
    worst = 0.0
    for a, b in zip(ref, got):
        if a.num_people != b.num_people:
            return float("inf")
        for pa, pb in ((a.candidate, b.candidate), (a.faces, b.faces), (a.hands, b.hands)):
            worst = max(worst, float(np.abs(pa - pb).max(initial=0.0)))
    return worst


def main() -> None:
    import onnxruntime as ort
    import torch

    from mimicache.pose import DWPose
    from mimicache.testing.tiny_dwpose import make_figure_frame

    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--depth", type=float, default=1.0)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--chunk", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--models", type=Path)
    ap.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    det, pose, what = _models(args)
    frames = [
        make_figure_frame(720, 1280, i / max(1, args.frames - 1), people=1 + i % 2)
        for i in range(args.frames)
    ]
    lines = [
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}, torch {torch.__version__} ({torch.get_num_threads()} threads)"
        f", onnxruntime {ort.__version__} ({', '.join(ort.get_available_providers())})",
        f"command: {' '.join([Path(sys.executable).name, *sys.argv])}",
        f"models: {what} ({det.stat().st_size / 1e6:.0f} MB + {pose.stat().st_size / 1e6:.0f} MB)",
        f"frames: {args.frames} at 1280x720, chunk {args.chunk}, best of {args.repeats}",
        "",
        f"{'backend':<12} {'device':<7} {'frames/s':>9} {'people/frame':>13} {'max |dkp|':>10}",
    ]
    print("\n".join(lines))
    reference = None
    for device in args.devices.split(","):
        for backend in ("onnxruntime", "torch"):
            try:
                dw = DWPose(det, pose, device=device, backend=backend, chunk_size=args.chunk)
            except Exception as exc:  # a backend without this device: say so and go on
                row = f"{backend:<12} {device:<7} unavailable: {str(exc).splitlines()[0][:80]}"
                print(row)
                lines.append(row)
                continue
            poses = dw.detect_many(frames, progress=False)  # warm-up
            best = float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                poses = dw.detect_many(frames, progress=False)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - start)
            if reference is None:
                reference = poses  # ONNX Runtime on the first device
            people = sum(p.num_people for p in poses) / len(poses)
            row = (
                f"{backend:<12} {device:<7} {len(frames) / best:>9.2f} {people:>13.2f} "
                f"{_max_diff(reference, poses):>10.2e}"
            )
            print(row)
            lines.append(row)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
