"""Loading an engine's models: DWPose first (a missing ONNX file fails before minutes of
checkpoint loading), then the pipeline, placed and prepared for the speed options once."""

from __future__ import annotations

import torch

from mimicache.config import InferenceConfig
from mimicache.engine.devices import pose_parts
from mimicache.engine.speed import SpeedOptions, prepare_models
from mimicache.pipeline import MimicMotionPipeline
from mimicache.pipeline.loading import BaseModelFiles, load_pipeline, resolve_base_model
from mimicache.pipeline.memory import apply_offload, offload_applies, require_accelerate
from mimicache.pipeline.schedulers import SchedulerOptions
from mimicache.pose import DWPose


def load_models(
    config: InferenceConfig,
    options: SpeedOptions,
    device: str | torch.device | None,
    dtype: torch.dtype | None,
    scheduler: SchedulerOptions | None,
    pose_retarget: str | None,
    person: str | None,
    dwpose_device: str | None,
) -> tuple[MimicMotionPipeline, DWPose, BaseModelFiles, torch.device, torch.dtype, str, str]:
    """(pipeline, DWPose, base model files, device, dtype, retarget mode, person); ``dtype``
    None: float16 on CUDA, float32 elsewhere."""
    device, dwpose, pose_retarget, person = pose_parts(
        config, device, pose_retarget, person, dwpose_device
    )
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    base_files = resolve_base_model(config.base_model_path)
    offloaded = offload_applies(options.offload, device)
    if offloaded:
        require_accelerate(options.offload)
    pipeline = load_pipeline(
        base_files,
        config.ckpt_path,
        dtype=dtype,
        # offloaded models start on the CPU: the hooks move each to the device in turn
        device="cpu" if offloaded else device,
        scheduler=scheduler,
    )
    if offloaded:
        apply_offload(pipeline, options.offload, device)
    prepare_models(pipeline, options, device)
    return pipeline, dwpose, base_files, device, dtype, pose_retarget, person
