"""An engine's loaded models (``LoadedModels``): DWPose first (a missing ONNX file fails
before minutes of checkpoint loading), then the pipeline, placed and prepared for the speed
options once; the pose settings resolved against the config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mimicache.config import HubFile, InferenceConfig
from mimicache.engine.devices import pose_parts
from mimicache.engine.settings import EngineSettings
from mimicache.engine.speed import prepare_models
from mimicache.pipeline import MimicMotionPipeline
from mimicache.pipeline.offload import apply_offload, offload_applies, require_accelerate
from mimicache.pipeline.weights import (
    BaseModelFiles,
    load_image_encoder,
    load_pipeline,
    resolve_base_model,
)
from mimicache.pose import DWPose

__all__ = ["LoadedModels", "load_models", "load_pose_models", "load_scoring_models"]


@dataclass(frozen=True)
class LoadedModels:
    """What an engine has loaded and where it runs; ``pipeline`` None: DWPose only (and
    ``encoder``, CLIP alone, to score clips that exist)."""

    pipeline: MimicMotionPipeline | None
    dwpose: DWPose
    base_files: BaseModelFiles | None
    ckpt_path: Path | HubFile
    device: torch.device
    dtype: torch.dtype
    encoder: Any = None


def load_pose_models(
    config: InferenceConfig, settings: EngineSettings, device: str | torch.device | None
) -> tuple[LoadedModels, EngineSettings]:
    """DWPose alone (no SVD or MimicMotion weights are read), and ``settings`` with the pose
    choices resolved (argument > config > default)."""
    device, dwpose, pose_retarget, person = pose_parts(
        config, device, settings.pose_retarget, settings.person, settings.dwpose_device
    )
    # the checkpoint as the config names it: a hub reference is resolved only when read
    models = LoadedModels(None, dwpose, None, config.ckpt_path, device, torch.float32)
    return models, settings.replace(pose_retarget=pose_retarget, person=person)


def _dtype(device: torch.device, dtype: torch.dtype | None) -> torch.dtype:
    """``dtype`` None: float16 on CUDA, float32 elsewhere."""
    if dtype is not None:
        return dtype
    return torch.float16 if device.type == "cuda" else torch.float32


def load_scoring_models(
    config: InferenceConfig,
    settings: EngineSettings,
    device: str | torch.device | None,
    dtype: torch.dtype | None,
) -> tuple[LoadedModels, EngineSettings]:
    """DWPose and SVD's CLIP image encoder: what scoring a written clip needs (no UNet, VAE
    or checkpoint is read)."""
    pose, settings = load_pose_models(config, settings, device)
    dtype = _dtype(pose.device, dtype)
    base_files = resolve_base_model(config.base_model_path)
    encoder = load_image_encoder(base_files, dtype=dtype, device=pose.device)
    models = LoadedModels(
        None, pose.dwpose, base_files, pose.ckpt_path, pose.device, dtype, encoder
    )
    return models, settings


def load_models(
    config: InferenceConfig,
    settings: EngineSettings,
    device: str | torch.device | None,
    dtype: torch.dtype | None,
) -> tuple[LoadedModels, EngineSettings]:
    """DWPose, then the pipeline; ``dtype`` None: float16 on CUDA, float32 elsewhere."""
    pose, settings = load_pose_models(config, settings, device)
    device = pose.device
    dtype = _dtype(device, dtype)
    base_files = resolve_base_model(config.base_model_path)
    options = settings.speed_options
    offloaded = offload_applies(options.offload, device)
    if offloaded:
        require_accelerate(options.offload)
    pipeline = load_pipeline(
        base_files,
        config.ckpt_path,
        dtype=dtype,
        # offloaded models start on the CPU: the hooks move each to the device in turn
        device="cpu" if offloaded else device,
        scheduler=settings.scheduler,
    )
    if offloaded:
        apply_offload(pipeline, options.offload, device)
    prepare_models(pipeline, options, device)
    return LoadedModels(pipeline, pose.dwpose, base_files, pose.ckpt_path, device, dtype), settings
