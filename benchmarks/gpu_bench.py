"""Speed modes measured: per-stage seconds of exact, fast and fast + compile, their difference
from exact (max |Δ|, PSNR), peak memory per mode and per offload mode, the UNet's model-FLOPs
utilisation, and DWPose frames/s for both backends.

    python benchmarks/gpu_bench.py --size published --device cuda        # one GPU call
    python benchmarks/gpu_bench.py --size reduced --device cpu --modes exact,fast

Sizes: ``published`` is SVD's UNet and VAE and CLIP ViT-H/14 at real size with random weights,
73 frames at 576x1024 (W x H), tiles of 72 with 6 overlapping, fp16 on CUDA, real-architecture
YOLOX-L / RTMPose-l for DWPose; ``reduced`` the SVD architecture at a fifth of the width, 9
frames at 96x128 (for CPUs); ``tiny`` the test bundle's models. Every call after the first of
a mode is warm: CLIP and VAE features come precomputed, as the feature cache gives them. Each
section is written to ``--out`` as soon as it finishes (JSON and markdown), so a run cut short
still leaves its figures.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from mimicache.pipeline.fast import FAST, kernel_choice

REDUCED_UNET = {
    "block_out_channels": (64, 128, 256, 256),
    "num_attention_heads": (1, 2, 4, 4),
    "cross_attention_dim": 1024,
}
REDUCED_VAE = {"block_out_channels": [32, 64, 128, 128], "layers_per_block": 2}
SIZES = {
    "tiny": {"frames": 9, "tile": 4, "overlap": 1, "height": 64, "width": 48},
    "reduced": {"frames": 9, "tile": 8, "overlap": 2, "height": 128, "width": 96},
    "published": {"frames": 73, "tile": 72, "overlap": 6, "height": 1024, "width": 576},
}
# dense fp16 tensor-core peaks (no sparsity), TFLOP/s, by a part of the device name
PEAK_TFLOPS = {
    "H200": 989.4, "H100 SXM": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0,
    "L40S": 362.1, "RTX 4090": 165.2, "RTX 3090": 71.0, "A10": 125.0, "L4": 121.0,
}  # fmt: skip


# -- building -----------------------------------------------------------------------------------


def build_pipeline(size: str, device: torch.device, dtype: torch.dtype, scheduler: str):
    from mimicache.models import MimicMotionUNet, PoseNet
    from mimicache.pipeline import MimicMotionPipeline
    from mimicache.pipeline.schedulers import SchedulerOptions, build_scheduler
    from mimicache.testing import models as tm

    torch.manual_seed(0)
    on = device if size == "published" else torch.device("cpu")  # build big models in place
    with torch.device(on):
        if size == "published":
            unet = MimicMotionUNet()  # the class defaults are SVD img2vid-xt's UNet
            vae, clip = tm.build_vae(tm.SVD_VAE_CONFIG), tm.build_clip(tm.CLIP_VIT_H_CONFIG)
        elif size == "reduced":
            unet = MimicMotionUNet(**REDUCED_UNET)
            vae = tm.build_vae({**tm.TINY_VAE_CONFIG, **REDUCED_VAE})
            clip = tm.build_clip({**tm.TINY_CLIP_CONFIG, "projection_dim": 1024})
        else:
            unet = MimicMotionUNet.from_config(tm.TINY_UNET_CONFIG)
            vae, clip = tm.build_vae(tm.TINY_VAE_CONFIG), tm.build_clip(tm.TINY_CLIP_CONFIG)
        pose_net = PoseNet(unet.config.block_out_channels[0])
        torch.nn.init.normal_(pose_net.final_proj.weight, std=0.02)

    class Processor:
        image_mean = tm.CLIP_PREPROCESSOR_CONFIG["image_mean"]
        image_std = tm.CLIP_PREPROCESSOR_CONFIG["image_std"]

    pipe = MimicMotionPipeline(
        vae=vae.to(device, dtype).eval(),
        image_encoder=clip.to(device, dtype).eval(),
        unet=unet.to(device, dtype).eval(),
        scheduler=build_scheduler(SchedulerOptions(name=scheduler)),
        feature_extractor=Processor(),
        pose_net=pose_net.to(device, dtype).eval(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_scheduler(name: str):
    """AnimateLCM-SVD with the seed's settings, or SVD's Euler from its published config."""
    from diffusers import EulerDiscreteScheduler

    from mimicache.pipeline.schedulers import SchedulerOptions, build_scheduler
    from mimicache.testing.models import SVD_SCHEDULER_CONFIG

    if name == "EulerDiscreteScheduler":
        return EulerDiscreteScheduler.from_config(SVD_SCHEDULER_CONFIG)
    return build_scheduler(SchedulerOptions(name=name))


def make_inputs(shape: dict):
    from PIL import Image

    rng = np.random.RandomState(0)
    h, w, n = shape["height"], shape["width"], shape["frames"]
    image = Image.fromarray((rng.rand(h, w, 3) * 255).astype(np.uint8))
    pose = torch.from_numpy((rng.rand(n, 3, h, w) * 255).astype(np.uint8))
    return image, pose


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


# -- the generation modes -------------------------------------------------------------------------


def call(pipe, image, pose, shape, steps, device, mode, features=None, **extra):
    """One pipeline call; (frames (N,3,H,W) float in [0,1] on the CPU, timings)."""
    timings: dict[str, float] = {}
    features = features or {}
    sync(device)
    start = time.perf_counter()
    frames = pipe(
        image, pose, height=shape["height"], width=shape["width"], num_frames=shape["frames"],
        tile_size=shape["tile"], tile_overlap=shape["overlap"], num_inference_steps=steps,
        min_guidance_scale=2.0, max_guidance_scale=2.0, fps=7, noise_aug_strength=0.0,
        decode_chunk_size=8, output_type="pt", device=device, timings=timings,
        generator=torch.Generator(device).manual_seed(42), speed=mode, **features, **extra,
    ).frames[0].cpu()  # fmt: skip
    sync(device)
    timings["call"] = time.perf_counter() - start
    return frames, timings


def prepare(pipe, mode: str, device: torch.device, compile_mode: str | None) -> float:
    """Turns the pipeline into ``mode``'s models (in the order exact, fast, fast+compile, each
    step only adds); seconds spent."""
    from mimicache.engine.speed import SpeedOptions, prepare_models

    start = time.perf_counter()
    if mode != "exact":
        prepare_models(pipe, SpeedOptions(FAST), device)
    if mode == "fast+compile":
        from mimicache.pipeline.fast import compile_models

        if not compile_models(pipe, device, mode=compile_mode):
            raise RuntimeError("torch.compile is unavailable here (see the warning)")
    return time.perf_counter() - start


def unet_flops(pipe, shape: dict, device, dtype) -> float:
    """FLOPs of one UNet sample (a tile's pass), counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    h, w, t = shape["height"] // 8, shape["width"] // 8, shape["tile"]
    sample = torch.randn(1, t, 8, h, w, device=device, dtype=dtype)
    emb = torch.randn(1, 1, pipe.unet.config.cross_attention_dim, device=device, dtype=dtype)
    ids = torch.tensor([[6.0, 127.0, 0.0]], device=device, dtype=dtype)
    pose = torch.randn(t, pipe.unet.config.block_out_channels[0], h, w, device=device, dtype=dtype)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        pipe.unet(sample, torch.tensor(1.0, device=device), emb, ids, pose_latents=pose)
    return float(counter.get_total_flops())


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def generation(args, results: dict, save) -> None:
    device, shape = torch.device(args.device), SIZES[args.size]
    dtype = torch.float16 if device.type == "cuda" and not args.fp32 else torch.float32
    image, pose = make_inputs(shape)
    pipe = build_pipeline(args.size, device, dtype, "AnimateLCM_SVD")
    from mimicache.pipeline.tiles import tile_indices

    features = {
        "image_embeddings": pipe.encode_image(image, device).cpu(),
        "image_latents": pipe.encode_reference_latent(
            image, shape["height"], shape["width"], 0.0, pipe.make_generator(42, device), device
        ).cpu(),
    }
    tiles = len(tile_indices(shape["frames"], shape["tile"], shape["overlap"]))
    flops = unet_flops(pipe, shape, device, dtype)
    peak = peak_tflops(device, args.peak_tflops)
    gen = results["generation"] = {
        "dtype": str(dtype), "shape": shape, "tiles": tiles, "unet_tflop_per_sample": flops / 1e12,
        "peak_tflops": peak, "modes": {},
    }  # fmt: skip
    schedulers = [("AnimateLCM_SVD", args.lcm_steps), ("EulerDiscreteScheduler", args.euler_steps)]
    exact_frames: dict[str, torch.Tensor] = {}
    for mode in args.modes:
        entry = gen["modes"][mode] = {}
        try:
            entry["prepare_s"] = prepare(pipe, mode, device, args.compile_mode)
            speed = "exact" if mode == "exact" else FAST
            reset_peak(device)
            # first call of the shape: compilation, cuDNN autotuning, allocator warm-up
            _, first = call(pipe, image, pose, shape, 1, device, speed, features)
            entry["first_call_s"] = first["call"]
            for name, steps in schedulers:
                if steps <= 0:
                    continue
                pipe.scheduler = make_scheduler(name)
                frames, timings = call(pipe, image, pose, shape, steps, device, speed, features)
                run = entry[f"{name}_{steps}"] = {"timings": timings}
                samples = tiles * 2 * steps
                run["unet_utilisation"] = (
                    flops * samples / timings["denoise"] / (peak * 1e12) if peak else None
                )
                if mode == "exact":
                    exact_frames[name] = frames
                elif name in exact_frames:
                    ref = exact_frames[name]
                    a, b = (frames * 255).to(torch.uint8), (ref * 255).to(torch.uint8)
                    run["vs_exact"] = {
                        "max_abs": float((frames - ref).abs().max()),
                        "psnr_db": psnr(frames, ref),
                        "uint8_max": int((a.int() - b.int()).abs().max()),
                        "uint8_differing": float((a != b).float().mean()),
                    }
            entry["peak_gib"] = peak_gib(device)
        except Exception as exc:  # a mode that fails still leaves the others' figures
            entry["error"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        save()
    if device.type == "cuda" and args.kernels:
        results["kernels"] = kernel_checks(pipe, shape, device, dtype)
        save()


def kernel_checks(pipe, shape, device, dtype) -> dict:
    """One UNet call of a guidance pair per attention kernel, and the UNet channels-last."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    h, w, t = shape["height"] // 8, shape["width"] // 8, shape["tile"]
    x = torch.randn(2, t, 8, h, w, device=device, dtype=dtype)
    emb = torch.randn(2, 1, pipe.unet.config.cross_attention_dim, device=device, dtype=dtype)
    ids = torch.tensor([[6.0, 127.0, 0.0]] * 2, device=device, dtype=dtype)
    tt = torch.tensor(1.0, device=device)

    def timed(ctx) -> float | str:
        try:
            with torch.no_grad(), ctx:
                pipe.unet(x, tt, emb, ids)
                sync(device)
                start = time.perf_counter()
                pipe.unet(x, tt, emb, ids)
                sync(device)
            return time.perf_counter() - start
        except Exception as exc:
            return f"{type(exc).__name__}: {str(exc)[:120]}"

    out = {"fast order": timed(kernel_choice(FAST, device))}
    for backend in ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION"):
        out[backend] = timed(sdpa_kernel([getattr(SDPBackend, backend)]))
    from mimicache.pipeline.fast import use_channels_last

    use_channels_last(pipe.unet)
    out["unet channels-last, fast order"] = timed(kernel_choice(FAST, device))
    return out


# -- memory modes -------------------------------------------------------------------------------


def offload_modes(args, results: dict, save) -> None:
    """Peak memory and seconds of one exact AnimateLCM job per offload mode (fresh models)."""
    from mimicache.pipeline.offload import apply_offload

    device, shape = torch.device(args.device), SIZES[args.size]
    dtype = torch.float16 if not args.fp32 else torch.float32
    image, pose = make_inputs(shape)
    out = results["offload"] = {}
    for mode in ("model", "sequential"):
        try:
            pipe = build_pipeline(args.size, torch.device("cpu"), dtype, "AnimateLCM_SVD")
            apply_offload(pipe, mode, device)
            reset_peak(device)
            _, timings = call(pipe, image, pose, shape, args.lcm_steps, device, "exact")
            out[mode] = {"timings": timings, "peak_gib": peak_gib(device)}
            del pipe
        except Exception as exc:
            out[mode] = {"error": f"{type(exc).__name__}: {exc}"}
            traceback.print_exc()
        save()


# -- DWPose -------------------------------------------------------------------------------------


def dwpose(args, results: dict, save) -> None:
    from mimicache.pose import DWPose
    from mimicache.testing.pose_models import write_rtmpose_onnx, write_yolox_onnx
    from mimicache.testing.tiny_dwpose import make_figure_frame

    width = 1.0 if args.size == "published" else 0.25
    out = results["dwpose"] = {"model_width": width, "frames": args.pose_frames}
    with tempfile.TemporaryDirectory() as tmp:
        det = write_yolox_onnx(Path(tmp) / "yolox_l.onnx", width=width, depth=width)
        pose = write_rtmpose_onnx(Path(tmp) / "dw-ll_ucoco_384.onnx", width=width, depth=width)
        frames = [make_figure_frame(1024, 576, i / 24) for i in range(args.pose_frames)]
        for backend in ("onnxruntime", "torch"):
            try:
                model = DWPose(det, pose, device=args.device, backend=backend)
                model.detect_many(frames[:4], progress=False)  # sessions, kernels, allocator
                sync(torch.device(args.device))
                start = time.perf_counter()
                model.detect_many(frames, progress=False)
                sync(torch.device(args.device))
                seconds = time.perf_counter() - start
                out[backend] = {
                    "frames_per_s": len(frames) / seconds,
                    "providers": list(model.providers),
                }
            except Exception as exc:
                out[backend] = {"error": f"{type(exc).__name__}: {exc}"}
            save()


# -- report -------------------------------------------------------------------------------------


def environment() -> dict:
    import onnxruntime

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
        "onnxruntime_providers": onnxruntime.get_available_providers(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _f(value, digits=3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(results: dict) -> str:
    lines = [f"# Speed modes ({results['size']}, {results['device']})", ""]
    lines += [
        f"command: `{results['command']}`",
        "",
        f"environment: `{json.dumps(results['env'])}`",
    ]
    gen = results.get("generation")
    if gen:
        shape = gen["shape"]
        lines += [
            "",
            f"{shape['frames']} frames at {shape['width']}x{shape['height']} (W x H), tiles of "
            f"{shape['tile']} ({gen['tiles']} tiles), {gen['dtype']}; warm calls (CLIP/VAE "
            f"features precomputed). One UNet sample: {gen['unet_tflop_per_sample']:.2f} TFLOP.",
            "",
            "| mode | sampler | pose_net s | denoise s | decode s | call s | UNet util. | "
            "max abs vs exact | PSNR dB | uint8 max | peak GiB | first call s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for mode, entry in gen["modes"].items():
            if "error" in entry and len(entry) <= 2:
                lines.append(f"| {mode} | error: {entry['error']} |")
                continue
            for key, run in entry.items():
                if not isinstance(run, dict) or "timings" not in run:
                    continue
                t, vs = run["timings"], run.get("vs_exact", {})
                util = run.get("unet_utilisation")
                lines.append(
                    f"| {mode} | {key} | {_f(t.get('pose_net'))} | {_f(t.get('denoise'))} | "
                    f"{_f(t.get('decode'))} | {_f(t.get('call'))} | "
                    f"{'-' if util is None else f'{util:.0%}'} | "
                    f"{_f(vs.get('max_abs'), 6) if vs else '-'} | "
                    f"{_f(vs.get('psnr_db'), 1) if vs else '-'} | {vs.get('uint8_max', '-')} | "
                    f"{_f(entry.get('peak_gib'), 1)} | {_f(entry.get('first_call_s'), 1)} |"
                )
            if "error" in entry:
                lines.append(f"| {mode} | error: {entry['error']} |")
    for title, key in (("Offload (exact, AnimateLCM)", "offload"), ("DWPose", "dwpose")):
        if key in results:
            lines += ["", f"## {title}", "```", json.dumps(results[key], indent=1), "```"]
    if "kernels" in results:
        lines += ["", "## One UNet call (guidance pair), s", "```"]
        lines += [f"{k}: {_f(v, 4)}" for k, v in results["kernels"].items()] + ["```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    import sys

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=SIZES, default="published")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--name", help="result file stem (default: speed_<size>_<device type>)")
    ap.add_argument("--modes", default="exact,fast,fast+compile")
    ap.add_argument("--lcm_steps", type=int, default=4)
    ap.add_argument("--euler_steps", type=int, default=25, help="0 skips the Euler runs")
    ap.add_argument("--compile_mode", default=None, help="torch.compile mode (default: default)")
    ap.add_argument("--fp32", action="store_true", help="float32 on CUDA too")
    ap.add_argument("--peak_tflops", type=float, help="the device's dense fp16 peak")
    ap.add_argument("--pose_frames", type=int, default=64)
    ap.add_argument("--skip", default="", help="comma list of: generation,offload,dwpose,kernels")
    args = ap.parse_args()
    args.modes = [m for m in args.modes.split(",") if m]
    skip = set(args.skip.split(","))
    args.kernels = "kernels" not in skip
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.name or f"speed_{args.size}_{torch.device(args.device).type}"
    results = {
        "size": args.size,
        "device": args.device,
        "command": "python " + " ".join(sys.argv),
        "env": environment(),
    }

    def save() -> None:
        (args.out / f"{stem}.json").write_text(json.dumps(results, indent=1, default=str))
        (args.out / f"{stem}.md").write_text(markdown(results))

    save()
    if "generation" not in skip:
        generation(args, results, save)
    if "offload" not in skip and torch.device(args.device).type == "cuda":
        offload_modes(args, results, save)
    if "dwpose" not in skip:
        dwpose(args, results, save)
    print(markdown(results))


if __name__ == "__main__":
    main()
