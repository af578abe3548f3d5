"""GPU checks in one run: fp16/fp32 generation and cache transparency through the CLI on the
tiny bundle, then the published-size pipeline (SVD UNet, SVD VAE, CLIP ViT-H/14 with random
weights, 73 frames at 576x1024) timed per stage, cold vs precomputed features.

    python benchmarks/gpu_check.py --out DIR [--steps 4] [--skip-real]

Writes DIR/gpu_report.md and DIR/gpu_report.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch


def environment() -> dict:
    import onnxruntime

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def cli_checks(workdir: Path, device: str) -> dict:
    """The tiny demo batch through `mimicache run --benchmark_cache` on CUDA, fp16 and fp32."""
    from mimicache.cli import main
    from mimicache.cli.demo import write_demo_config, write_demo_media
    from mimicache.testing.models import write_tiny_bundle

    bundle = write_tiny_bundle(workdir / "models")
    image, videos = write_demo_media(workdir / "media")
    config = write_demo_config(workdir / "demo.yaml", bundle, image, videos)
    results = {}
    for label, extra in (("fp16", []), ("fp32", ["--no_use_float16"])):
        out = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(out):
            code = main(
                [
                    "run", "--inference_config", str(config), "--batch_folder", str(videos),
                    "--output_dir", str(workdir / f"out_{label}"), "--device", device,
                    "--feature_cache_dir", str(workdir / f"cache_{label}"), "--benchmark_cache",
                    "--quiet", *extra,
                ]
            )  # fmt: skip
        text = out.getvalue()
        results[label] = {
            "exit_code": code,
            "seconds": time.perf_counter() - start,
            "bit_identical": "outputs bit-identical: yes" in text,
            "table": text,
        }
    return results


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def real_size(steps: int, frames: int, device: str, height: int = 1024, width: int = 576) -> dict:
    """Published-size pipeline in fp16 with random weights: per-stage timings, cold vs warm."""
    from mimicache.models import MimicMotionUNet, PoseNet
    from mimicache.pipeline import MimicMotionPipeline
    from mimicache.pipeline.schedulers import SchedulerOptions, build_scheduler
    from mimicache.testing.models import (
        CLIP_PREPROCESSOR_CONFIG,
        CLIP_VIT_H_CONFIG,
        SVD_VAE_CONFIG,
        build_clip,
        build_vae,
    )

    device = torch.device(device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        unet = MimicMotionUNet()  # the class defaults are SVD img2vid-xt's UNet
        pose_net = PoseNet(unet.config.block_out_channels[0])
        torch.nn.init.normal_(pose_net.final_proj.weight, std=0.02)
        vae = build_vae(SVD_VAE_CONFIG)
        clip = build_clip(CLIP_VIT_H_CONFIG)

    class Processor:
        image_mean = CLIP_PREPROCESSOR_CONFIG["image_mean"]
        image_std = CLIP_PREPROCESSOR_CONFIG["image_std"]

    pipe = MimicMotionPipeline(
        vae=vae.to(device, dtype),
        image_encoder=clip.to(device, dtype),
        unet=unet.to(device, dtype).eval(),
        scheduler=build_scheduler(SchedulerOptions(name="AnimateLCM_SVD")),
        feature_extractor=Processor(),
        pose_net=pose_net.to(device, dtype).eval(),
    )
    pipe.set_progress_bar_config(disable=True)
    from PIL import Image

    rng = np.random.RandomState(0)
    image = Image.fromarray((rng.rand(height, width, 3) * 255).astype(np.uint8))
    pose = torch.from_numpy((rng.rand(frames, 3, height, width) * 255).astype(np.uint8)) / 127.5 - 1

    def call(**kw):
        timings: dict[str, float] = {}
        _sync()
        start = time.perf_counter()
        out = pipe(
            image, pose, height=height, width=width, num_frames=frames, tile_size=72, tile_overlap=6,
            num_inference_steps=steps, min_guidance_scale=2.0, max_guidance_scale=2.0, fps=7,
            noise_aug_strength=0.0, decode_chunk_size=8, output_type="pt", device=device,
            generator=torch.Generator(device).manual_seed(42), timings=timings, **kw,
        ).frames  # fmt: skip
        _sync()
        timings["call"] = time.perf_counter() - start
        return (out * 255).to(torch.uint8).cpu(), timings

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    cold_frames, cold = call()
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    # features as the cache would hand them back (CPU tensors)
    embeds = pipe.encode_image(image, device).cpu()
    gen = pipe.make_generator(42, device)
    latent = pipe.encode_reference_latent(image, height, width, 0.0, gen, device).cpu()
    warm_frames, warm = call(image_embeddings=embeds, image_latents=latent)

    # what the published code spends on PoseNet: steps x tiles x one tile of 72 frames
    tile = pose[: min(72, frames)].to(device, dtype)
    with torch.no_grad():
        pipe.pose_net(tile)
        _sync()
        start = time.perf_counter()
        pipe.pose_net(tile)
        _sync()
    per_tile = time.perf_counter() - start
    tiles = 2 if frames > 72 else 1
    return {
        "frames": frames,
        "size": f"{width}x{height} (W x H), {dtype}",
        "steps": steps,
        "cold": cold,
        "warm": warm,
        "bit_identical": bool(torch.equal(cold_frames, warm_frames)),
        "peak_gib": peak,
        "pose_net_one_tile_s": per_tile,
        "published_pose_net_s": per_tile * steps * tiles,
    }


def report(data: dict) -> str:
    lines = ["# GPU check", "", f"environment: `{json.dumps(data['env'])}`", ""]
    for label, res in data.get("cli", {}).items():
        lines += [
            f"## tiny bundle, `mimicache run --device cuda --benchmark_cache` ({label})",
            f"exit {res['exit_code']}, {res['seconds']:.1f} s, cold/warm bit-identical: {res['bit_identical']}",
            "```",
            res["table"].strip(),
            "```",
            "",
        ]
    real = data.get("real")
    if real:
        lines += [
            f"## published size: {real['frames']} frames at {real['size']}, {real['steps']} AnimateLCM steps",
            "| stage | cold s | warm s (precomputed CLIP/VAE) |",
            "| --- | --- | --- |",
        ]
        for key in ("clip", "vae_encode", "pose_net", "denoise", "decode", "call"):
            c, w = real["cold"].get(key), real["warm"].get(key)
            fmt = lambda v: f"{v:.3f}" if v is not None else "-"  # noqa: E731
            lines.append(f"| {key} | {fmt(c)} | {fmt(w)} |")
        lines += [
            "",
            f"frames bit-identical cold vs warm: {real['bit_identical']}; peak GPU memory "
            f"{real['peak_gib']:.1f} GiB; PoseNet on one 72-frame tile {real['pose_net_one_tile_s']:.3f} s "
            f"(the published per-tile-per-step PoseNet would spend {real['published_pose_net_s']:.2f} s "
            "in this call).",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mimicache-gpu"))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--frames", type=int, default=73)
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, nargs=2, default=(1024, 576), metavar=("H", "W"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data: dict = {"env": environment()}
    data["cli"] = cli_checks(args.workdir, args.device)
    (args.out / "gpu_report.md").write_text(report(data))
    if not args.skip_real:
        data["real"] = real_size(args.steps, args.frames, args.device, *args.size)
    (args.out / "gpu_report.json").write_text(json.dumps(data, indent=2, default=str))
    (args.out / "gpu_report.md").write_text(report(data))
    print(report(data))


if __name__ == "__main__":
    main()
