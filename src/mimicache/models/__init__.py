"""The two MimicMotion networks: PoseNet and the pose-conditioned SVD UNet.

Loading them (with the base model's VAE, CLIP and scheduler) is ``mimicache.pipeline.loading``;
``mimicache.models.load_pipeline`` stays as an alias of ``mimicache.pipeline.load_pipeline``.
"""

import importlib

from mimicache.models.pose_net import PoseNet
from mimicache.models.unet import MimicMotionUNet

__all__ = ["MimicMotionUNet", "PoseNet"]

# Names that moved to mimicache.pipeline.loading; resolved on first use, since the pipeline
# package imports this one.
_MOVED = ("BaseModelFiles", "build_mimicmotion_modules", "load_pipeline", "read_checkpoint",
          "resolve_base_model")  # fmt: skip


def __getattr__(name: str):
    if name in _MOVED:
        return getattr(importlib.import_module("mimicache.pipeline.loading"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
