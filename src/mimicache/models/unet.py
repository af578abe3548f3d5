"""MimicMotion UNet: diffusers' SVD UNet whose conv_in output receives pose latents (B·F,C,h,w).

Same parameter names as ``UNetSpatioTemporalConditionModel``, so the published checkpoint's
``unet.*`` keys load unchanged.
"""

from __future__ import annotations

import functools

import torch
from diffusers import UNetSpatioTemporalConditionModel
from torch import nn


class _PoseConditionedConvIn(nn.Conv2d):
    """conv_in that adds the pose latents of the current forward call to its output.

    Adding at this exact point is the whole MimicMotion change to the UNet; keeping it inside
    the module (not in a copied forward) lets diffusers' forward stay untouched.
    """

    pose_latents: torch.Tensor | None = None

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        out = super().forward(sample)
        if self.pose_latents is not None:
            out = out + self.pose_latents
        return out


class MimicMotionUNet(UNetSpatioTemporalConditionModel):
    # wraps keeps the parent's signature visible to diffusers' config machinery
    @functools.wraps(UNetSpatioTemporalConditionModel.__init__)
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        old = self.conv_in
        conv_in = _PoseConditionedConvIn(
            old.in_channels,
            old.out_channels,
            kernel_size=old.kernel_size,
            padding=old.padding,
        )
        conv_in.load_state_dict(old.state_dict())
        self.conv_in = conv_in

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        added_time_ids: torch.Tensor,
        pose_latents: torch.Tensor | None = None,
        return_dict: bool = True,
    ):
        """sample (B,F,8,h,w); pose_latents (B·F,C,h,w) or None for the plain SVD UNet."""
        if pose_latents is not None:
            expected = (sample.shape[0] * sample.shape[1], self.conv_in.out_channels)
            if tuple(pose_latents.shape[:2]) != expected:
                raise ValueError(
                    f"pose_latents must have shape {expected + tuple(sample.shape[-2:])}, "
                    f"got {tuple(pose_latents.shape)}"
                )
        self.conv_in.pose_latents = pose_latents
        try:
            return super().forward(
                sample,
                timestep,
                encoder_hidden_states=encoder_hidden_states,
                added_time_ids=added_time_ids,
                return_dict=return_dict,
            )
        finally:
            self.conv_in.pose_latents = None
