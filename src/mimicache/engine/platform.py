"""The numeric platform of a cached stage: where its floats were computed.

The same inputs give slightly different floats on another device model, with another thread
count, or under another version of the library doing the arithmetic (torch, cuDNN, ONNX
Runtime, OpenCV's affine warps). So the platform is part of the key of every stage whose
output depends on it, and a cache hit always equals the reader's own uncached result.
Values: flat dicts of JSON strings and ints, read when a key is made (after ``--threads``).
"""

from __future__ import annotations

import sys
from functools import cache
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["describe", "dwpose_platform", "engine_platform", "torch_platform"]


@cache
def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _onnxruntime_version() -> str | None:
    # The loaded module's own version when DWPose imported it (the usual case): reading the
    # installed distributions' metadata costs a job's first key half a millisecond.
    module = sys.modules.get("onnxruntime")
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return version
    return _version("onnxruntime") or _version("onnxruntime-gpu")


@cache
def _opencv_version() -> str:
    import cv2

    return cv2.__version__


def _device(device: torch.device) -> dict[str, Any]:
    import torch

    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return {
            "device": f"cuda {torch.cuda.get_device_name(index)}",
            "capability": f"sm_{major}{minor}",
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }
    if device.type == "cpu":
        # The CPU's vector unit picks torch's kernels; the thread count splits its reductions.
        return {
            "device": "cpu",
            "capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(),
        }
    return {"device": device.type}


def torch_platform(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Where a torch model (CLIP, VAE) computes: device model, dtype, torch and thread count."""
    import torch

    return {
        **_device(device),
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
    }


def dwpose_platform(backend: str, device: str, threads: int | None) -> dict[str, Any]:
    """Where DWPose computes keypoints: its backend's library and device, the OpenCV that warps
    its crops (and draws the pose frames that inherit this platform), and on the CPU the
    thread count of its sessions."""
    import torch

    platform = torch_platform(torch.device(device), torch.float32)
    # ``backend`` may name one runtime per file ("torch+onnxruntime" after a fallback).
    runtimes = set(backend.split("+"))
    if "torch" not in runtimes:
        platform.pop("torch")
    if "onnxruntime" in runtimes:
        platform["onnxruntime"] = _onnxruntime_version()
        if threads is not None and platform.get("device") == "cpu":
            platform["ort_threads" if "torch" in runtimes else "threads"] = threads
    platform["opencv"] = _opencv_version()
    return platform


def engine_platform(device: torch.device, dtype: torch.dtype, dwpose: Any) -> dict[str, Any]:
    """``{"models": ..., "dwpose": ...}`` of an engine: what its sidecars record and its keys
    hold. ``dwpose`` has ``backend``, ``device`` and ``threads`` (pose.DWPose)."""
    return {
        "models": torch_platform(device, dtype),
        "dwpose": dwpose_platform(dwpose.backend, dwpose.device, dwpose.threads),
    }


def describe(platform: dict[str, Any]) -> str:
    """One short line for people: ``cpu avx2 t2 float32 torch 2.13.0 opencv 5.1.0``."""
    if not platform:
        return "-"
    parts = [str(platform.get("device", "?"))]
    if platform.get("capability"):
        parts.append(str(platform["capability"]))
    if "threads" in platform:
        parts.append(f"t{platform['threads']}")
    if platform.get("dtype") and platform["dtype"] != "float32":
        parts.append(str(platform["dtype"]))
    for lib in ("torch", "cudnn", "onnxruntime", "opencv"):
        if platform.get(lib) is not None:
            parts.append(f"{lib} {platform[lib]}")
    return " ".join(parts)
