"""What clip scoring costs, and how far a subset of frames strays from scoring every frame.

On the demo's tiny bundle (random weights, the real DWPose/CLIP code paths): clips of
``--frames`` output frames are generated with the demo's settings but longer driving videos,
then

1. cost: each clip's job (no cache) with scoring on, the default frames (``auto``: 16 on the
   CPU) and every frame; the scoring stages' seconds (``output_keypoints``,
   ``output_embeddings``, ``score``) against the rest of the job;
2. spread: each clip scored with N evenly spaced frames against all of them: the largest
   difference over the clips of every part's error, DTW error and recall, of the identity, and
   how often the verdict changes;
3. the published size, estimated: CLIP ViT-H/14 (real size, random weights) timed here on
   frames at 576x1024, plus DWPose at its published per-frame cost (about 4 s per frame on a
   CPU, about 30 frames/s on a GPU), against a 72-frame job of about 22.6 s on an H200
   (``results/gpu_h200.md``).

    python benchmarks/score_bench.py [--frames 72] [--clips 3] [--repeats 3] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from mimicache.config import InferenceConfig, TestCase
from mimicache.config.thresholds import DEFAULT_THRESHOLDS
from mimicache.engine import JobRecord, MimicMotion
from mimicache.engine.scoring import CPU_SCORE_FRAMES, ScoreOptions, score_result
from mimicache.media import write_video
from mimicache.pipeline.clip import ImageEncoder
from mimicache.quality.metrics import PARTS
from mimicache.testing.models import (
    CLIP_PREPROCESSOR_CONFIG,
    CLIP_VIT_H_CONFIG,
    build_clip,
    write_tiny_bundle,
)
from mimicache.testing.tiny_dwpose import make_figure_frame

SCORE_STAGES = ("output_keypoints", "output_embeddings", "score")
SUBSETS = (4, 8, 12, 16, 24, 32)
DWPOSE_CPU_S = 4.0  # published: about 4 s per frame on a CPU
DWPOSE_GPU_FPS = 30.0  # published: about 30 frames/s on a GPU
H200_JOB_S = 22.573  # results/gpu_h200.md: one 72-frame job, 4 AnimateLCM steps, fp16


def _inputs(folder: Path, frames: int, clips: int) -> tuple[Path, list[Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    image = folder / "reference.png"
    PIL.Image.fromarray(make_figure_frame(192, 128, 0.5)).save(image)
    videos = []
    for n in range(clips):
        count = 2 * frames  # sampled with stride 2
        stack = np.stack(
            [make_figure_frame(96, 128, (n / clips + i / count) % 1.0) for i in range(count)]
        )
        videos.append(write_video(folder / f"walk_{n}.mp4", stack, 12.0))
    return image, videos


def _case(image: Path, video: Path) -> TestCase:
    """The demo's settings over a longer video: tiles of 16 frames overlapping by 4."""
    return TestCase(
        ref_video_path=video,
        ref_image_path=image,
        num_frames=16,
        resolution=128,
        frames_overlap=4,
        num_inference_steps=3,
        guidance_scale=2.0,
        sample_stride=2,
        fps=12,
        seed=42,
    )


def _engine(bundle, image: Path, video: Path, frames: int | str | None) -> MimicMotion:
    config = InferenceConfig(
        base_model_path=bundle.base_model_path,
        ckpt_path=bundle.ckpt_path,
        test_case=[_case(image, video)],
        dwpose_det_path=bundle.det_model_path,
        dwpose_pose_path=bundle.pose_model_path,
    )
    return MimicMotion.from_config(
        config, device="cpu", dtype=torch.float32, score=ScoreOptions(frames=frames)
    )


def _cost(bundle, image, videos, repeats: int) -> dict[str, dict[str, float]]:
    """Per frames setting: median job seconds without scoring, and scoring's seconds."""
    out = {}
    for label, frames in (("auto (16 on the CPU)", "auto"), ("every frame", None)):
        engine = _engine(bundle, image, videos[0], frames)
        rest, scoring = [], []
        for video in videos:
            for _ in range(repeats):
                result = engine.generate(_case(image, video), progress=False)
                spent = sum(result.timings.get(s, 0.0) for s in SCORE_STAGES)
                scoring.append(spent)
                rest.append(result.timings["total"] - spent)
        out[label] = {
            "job_s": statistics.median(rest),
            "score_s": statistics.median(scoring),
            "frames": len(result.score.frames),
        }
    return out


def _spread(bundle, image, videos) -> dict[int, dict[str, float]]:
    """N -> the largest |scored with N frames - scored with all| over the clips, per measure."""
    engine = _engine(bundle, image, videos[0], None)
    rows: dict[int, dict[str, float]] = {n: {} for n in SUBSETS}
    changed = dict.fromkeys(SUBSETS, 0)
    for video in videos:
        case = _case(image, video)
        result = engine.generate(case, progress=False)
        frames, targets = result.frames, result.targets
        full = result.score
        for n in SUBSETS:
            part = score_result(
                engine,
                case,
                frames,
                targets,
                JobRecord(engine.device),
                options=ScoreOptions(frames=n, thresholds=DEFAULT_THRESHOLDS),
                subject=str(video),
            )
            changed[n] += part.verdict != full.verdict
            for name in PARTS:
                for measure in ("error", "dtw", "recall"):
                    a = getattr(full.parts[name], measure)
                    b = getattr(part.parts[name], measure)
                    if a is None or b is None:
                        continue
                    key = f"{name} {measure}"
                    rows[n][key] = max(rows[n].get(key, 0.0), abs(a - b))
            if full.identity is not None:
                rows[n]["identity"] = max(
                    rows[n].get("identity", 0.0), abs(full.identity - part.identity)
                )
    for n in SUBSETS:
        rows[n]["verdicts changed"] = changed[n]
    return rows


def _clip_cpu_s(frames: int) -> float:
    """Seconds per frame of CLIP ViT-H/14 (real size, random weights) on this CPU."""
    from transformers import CLIPImageProcessor

    torch.manual_seed(0)
    clip = build_clip(CLIP_VIT_H_CONFIG).eval()
    processor = CLIPImageProcessor(**CLIP_PREPROCESSOR_CONFIG)
    encoder = ImageEncoder(clip, processor)
    pixels = np.stack([make_figure_frame(1024, 576, i / frames) for i in range(frames)])
    encoder.encode_frames(pixels[:1], "cpu")  # warm-up
    start = time.perf_counter()
    encoder.encode_frames(pixels, "cpu")
    return (time.perf_counter() - start) / frames


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=72, help="output frames per clip")
    parser.add_argument("--clips", type=int, default=3, help="clips (driving videos)")
    parser.add_argument("--repeats", type=int, default=3, help="jobs per clip for the cost")
    parser.add_argument("--clip_frames", type=int, default=4, help="frames CLIP ViT-H times")
    parser.add_argument("--out", help="also write the report (markdown) here")
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars between the table rows

    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    with tempfile.TemporaryDirectory(prefix="mimicache-score-bench-") as tmp:
        bundle = write_tiny_bundle(Path(tmp) / "bundle")
        image, videos = _inputs(Path(tmp) / "media", args.frames, args.clips)
        say("# Clip scoring: cost and subset spread")
        say()
        say(
            f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads)"
        )
        say(f"command: python benchmarks/score_bench.py {' '.join(sys.argv[1:])}".rstrip())
        say(
            f"clips: {args.clips} of {args.frames} output frames at 128x192 (the demo's tiny "
            "bundle, random weights), no cache"
        )
        say()
        say("## Cost on the demo (median seconds per job)")
        say()
        say("| frames scored | job without scoring | scoring | scoring / job |")
        say("| --- | --- | --- | --- |")
        cost = _cost(bundle, image, videos, args.repeats)
        for label, c in cost.items():
            say(
                f"| {label}: {c['frames']} | {c['job_s']:.3f} | {c['score_s']:.3f} | "
                f"{c['score_s'] / c['job_s']:.1%} |"
            )
        say()
        say("## Spread: N evenly spaced frames against every frame (largest |difference|)")
        say()
        spread = _spread(bundle, image, videos)
        measures = list(next(iter(spread.values())))
        say("| measure | " + " | ".join(f"N={n}" for n in SUBSETS) + " |")
        say("| --- | " + " | ".join("---" for _ in SUBSETS) + " |")
        for measure in measures:
            cells = []
            for n in SUBSETS:
                value = spread[n].get(measure)
                cells.append(
                    "-"
                    if value is None
                    else (f"{int(value)}" if measure == "verdicts changed" else f"{value:.3f}")
                )
            say(f"| {measure} | " + " | ".join(cells) + " |")
        say()
        per_frame = _clip_cpu_s(args.clip_frames)
        say("## The published size (72 frames at 576x1024), estimated")
        say()
        say(f"CLIP ViT-H/14 on this CPU: {per_frame:.2f} s per frame (measured, real size).")
        cpu = CPU_SCORE_FRAMES * (DWPOSE_CPU_S + per_frame)
        gpu_dwpose = 72 / DWPOSE_GPU_FPS
        say()
        say("| where | frames scored | scoring | against a 22.6 s H200 job |")
        say("| --- | --- | --- | --- |")
        say(
            f"| DWPose and CLIP on the CPU | {CPU_SCORE_FRAMES} | {cpu:.0f} s "
            f"({CPU_SCORE_FRAMES} x ({DWPOSE_CPU_S:.0f} s + {per_frame:.2f} s)) | "
            f"{cpu / H200_JOB_S:.1f}x |"
        )
        say(
            f"| DWPose on the GPU (CLIP not measured on a GPU) | 72 | {gpu_dwpose:.1f} s + "
            f"CLIP | {gpu_dwpose / H200_JOB_S:.0%} + CLIP |"
        )
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
