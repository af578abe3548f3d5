"""Speed modes: ``exact`` (the published computation) and ``fast`` (the same mathematics, only
float rounding differs), with the batch sizes, kernels, memory formats and compilation they use.

Batch sizes count UNet samples (one tile's conditional or unconditional pass, T frames) per
UNet call and VAE decode chunks per decode call; both are 1 in ``exact``.
"""

from __future__ import annotations

import logging
import os
import shutil
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from mimicache.config.fields import SPEEDS
from mimicache.errors import setting

logger = logging.getLogger(__name__)

EXACT, FAST = SPEEDS

# Activation bytes one UNet sample needs per latent pixel and frame at 2-byte floats, and one
# decoded frame per output pixel: upper bounds read off the published-size run (72-frame tile
# at 576x1024 in fp16 peaks near 11 GiB above the weights, for a UNet pass or 8 decoded frames).
UNET_BYTES_PER_LATENT_PIXEL = 16 * 1024
DECODE_BYTES_PER_PIXEL = 2 * 1024
# The share of free memory a batch may plan to fill; the rest absorbs the estimate's error.
MEMORY_SHARE = 0.8
# Beyond four samples (two tiles' guidance pairs) a UNet call gains little; the temporal
# attention's batch (samples x latent pixels) must also stay under CUDA's 65535 grid rows.
MAX_UNET_BATCH = 4
MAX_ATTENTION_BATCH = 65535
# On the CPU only the guidance pair is batched: larger batches add memory, not speed.
CPU_UNET_BATCH = 2
CPU_DECODE_BATCH = 1


def check_speed(speed: str) -> str:
    if speed not in SPEEDS:
        raise ValueError(f"speed must be one of {', '.join(SPEEDS)}, got {speed!r}")
    return speed


@dataclass(frozen=True)
class BatchPlan:
    """How many UNet samples go into one UNet call, how many decode chunks into one decode."""

    unet_batch: int = 1
    decode_batch: int = 1


def available_memory(device: torch.device) -> int | None:
    """Bytes torch can still allocate on a CUDA device (free plus its own cached blocks)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return free + cached


def plan_batches(
    speed: str,
    device: torch.device | str,
    dtype: torch.dtype,
    tiles: list[list[int]],
    latents_shape: tuple[int, ...],
    vae_scale_factor: int,
    decode_chunk_size: int,
    guided: bool,
    *,
    free_bytes: int | None = None,
) -> BatchPlan:
    """The largest batches that fit for a call with these tiles and latents (B,N,4,h,w): up
    to every pass of a step per UNet call, every full chunk per decode call. ``free_bytes``
    overrides the CUDA device's available memory."""
    if check_speed(speed) == EXACT:
        return BatchPlan()
    device = torch.device(device)
    batch, num_frames, _, h, w = latents_shape
    num_samples = len(tiles) * (2 if guided else 1)
    num_chunks = max(1, batch * num_frames // decode_chunk_size)
    if device.type != "cuda":
        return BatchPlan(min(CPU_UNET_BATCH, num_samples), min(CPU_DECODE_BATCH, num_chunks))
    free = free_bytes if free_bytes is not None else available_memory(device)
    budget = free * MEMORY_SHARE
    scale = torch.finfo(dtype).bits / 16
    per_sample = len(tiles[0]) * h * w * UNET_BYTES_PER_LATENT_PIXEL * scale
    pixels = h * w * vae_scale_factor**2
    per_chunk = decode_chunk_size * pixels * DECODE_BYTES_PER_PIXEL * scale
    unet_cap = min(MAX_UNET_BATCH, num_samples, max(1, MAX_ATTENTION_BATCH // (h * w)))
    unet_batch = max(1, min(unet_cap, int(budget // per_sample)))
    decode_batch = max(1, min(num_chunks, int(budget // per_chunk)))
    return BatchPlan(unet_batch, decode_batch)


@dataclass(frozen=True)
class DecodeGroup:
    """Latent frames [start, stop) decoded in one call as videos of ``chunk`` frames each."""

    start: int
    stop: int
    chunk: int


def decode_groups(
    num_latents: int, chunk_size: int, speed: str = EXACT, decode_batch: int = 1
) -> list[DecodeGroup]:
    """The decode calls for ``num_latents`` frames in chunks of ``chunk_size``: exact, one chunk
    per call; fast, ``decode_batch`` full chunks per call. A shorter last chunk is always its own
    call, so every chunk covers the same frames in both modes."""
    if check_speed(speed) == EXACT and decode_batch != 1:
        raise ValueError(f"speed 'exact' decodes one chunk per call, got {decode_batch=}")
    if chunk_size < 1:
        raise ValueError(f"decode_chunk_size must be at least 1, got {chunk_size}")
    full = num_latents // chunk_size
    groups = [
        DecodeGroup(i * chunk_size, min(i + decode_batch, full) * chunk_size, chunk_size)
        for i in range(0, full, max(1, decode_batch))
    ]
    if num_latents % chunk_size:
        groups.append(DecodeGroup(full * chunk_size, num_latents, num_latents % chunk_size))
    return groups


def attention_backends(device: torch.device) -> list:
    """SDPA kernels for ``fast``, fastest first: cuDNN's fused attention leads on Hopper and
    newer, FlashAttention elsewhere; the memory-efficient kernel and math are the fallbacks."""
    from torch.nn.attention import SDPBackend

    order = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    if torch.cuda.get_device_capability(device)[0] >= 9:
        order.insert(0, SDPBackend.CUDNN_ATTENTION)
    return order


@contextmanager
def kernel_choice(speed: str, device: torch.device | str):
    """``fast`` on CUDA: the attention order above and cuDNN's autotuned convolutions; every
    other case leaves torch's defaults alone."""
    device = torch.device(device)
    with ExitStack() as stack:
        if check_speed(speed) == FAST and device.type == "cuda":
            from torch.nn.attention import sdpa_kernel

            stack.enter_context(sdpa_kernel(attention_backends(device), set_priority=True))
            stack.enter_context(
                torch.backends.cudnn.flags(
                    enabled=True,
                    benchmark=True,
                    deterministic=False,
                    allow_tf32=torch.backends.cudnn.allow_tf32,
                )
            )
        yield


def use_channels_last(module: nn.Module) -> int:
    """Stores every 2-D convolution's weight channels-last (NHWC), where cuDNN's fp16 kernels
    are fastest; 3-D (temporal) convolutions keep their layout. Returns the count converted."""
    count = 0
    for sub in module.modules():
        if isinstance(sub, nn.Conv2d):
            sub.weight.data = sub.weight.data.to(memory_format=torch.channels_last)
            count += 1
    return count


def compile_problem(device: torch.device | str, backend: str = "inductor") -> str | None:
    """Why ``torch.compile`` cannot work here (and what fixes it), or None when it can."""
    from torch import _dynamo

    device = torch.device(device)
    if not _dynamo.is_dynamo_supported():
        return "this Python/torch build does not support torch.compile (use Python 3.10-3.12)"
    if backend != "inductor":
        return None
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            return "Triton is missing (pip install triton, or a torch build that bundles it)"
    elif device.type == "cpu":
        compiler = os.environ.get("CXX", "g++")
        if not any(shutil.which(c) for c in (compiler, "g++", "c++", "clang++")):
            return "no C++ compiler on PATH (apt-get install g++, or set CXX)"
    return None


def compile_models(
    pipe, device: torch.device | str, *, backend: str = "inductor", mode: str | None = None
) -> bool:
    """Compiles the UNet and the VAE decoder in place (``nn.Module.compile``), once: graphs
    are built on the first call of each shape and reused by every later call of that shape.
    Returns False, with a warning saying why, when compilation is unavailable."""
    problem = compile_problem(device, backend)
    if problem:
        logger.warning("%s is off: %s; running uncompiled", setting("compile", True), problem)
        return False
    # dynamic=False: a batch's jobs share shapes, and static shapes give the fastest kernels
    for module in (pipe.unet, pipe.vae.decoder):
        module.compile(backend=backend, mode=mode, dynamic=False)
    return True
