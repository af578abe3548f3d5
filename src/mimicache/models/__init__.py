"""The two MimicMotion networks: PoseNet and the pose-conditioned SVD UNet.

Loading them (with the base model's VAE, CLIP and scheduler) is ``mimicache.pipeline.weights``.
"""

from mimicache.models.pose_net import PoseNet
from mimicache.models.unet import MimicMotionUNet

__all__ = ["MimicMotionUNet", "PoseNet"]
