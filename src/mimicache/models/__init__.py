"""Model classes and strict loading; the tiny bundle lives in ``mimicache.models.tiny``."""

from mimicache.models.loading import (
    BaseModelFiles,
    build_mimicmotion_modules,
    load_pipeline,
    read_checkpoint,
    resolve_base_model,
)
from mimicache.models.pose_net import PoseNet
from mimicache.models.unet import MimicMotionUNet

__all__ = [
    "BaseModelFiles",
    "MimicMotionUNet",
    "PoseNet",
    "build_mimicmotion_modules",
    "load_pipeline",
    "read_checkpoint",
    "resolve_base_model",
]
