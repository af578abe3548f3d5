"""PoseNet: pose frames (B[,F],3,H,W) float in [-1,1] -> pose latents (B·F,C,H/8,W/8) added after conv_in.

Parameter names and shapes match the published checkpoint's ``pose_net.*`` keys.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# (kernel, stride, in, out) of the eight convolutions; each is followed by SiLU.
_CONV_SPECS = (
    (3, 1, 3, 3),
    (4, 2, 3, 16),
    (3, 1, 16, 16),
    (4, 2, 16, 32),
    (3, 1, 32, 32),
    (4, 2, 32, 64),
    (3, 1, 64, 64),
    (3, 1, 64, 128),
)


class PoseNet(nn.Module):
    def __init__(self, noise_latent_channels: int = 320):
        super().__init__()
        layers: list[nn.Module] = []
        for kernel, stride, c_in, c_out in _CONV_SPECS:
            layers += [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=1), nn.SiLU()]
        # keys conv_layers.{0,2,...,14}: convolutions sit at even indices, SiLUs between them
        self.conv_layers = nn.Sequential(*layers)
        self.final_proj = nn.Conv2d(128, noise_latent_channels, kernel_size=1)
        self.scale = nn.Parameter(torch.full((1,), 2.0))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # He-normal convolutions and a zero projection: an untrained PoseNet adds nothing.
        for module in self.conv_layers:
            if isinstance(module, nn.Conv2d):
                fan_in = module.kernel_size[0] * module.kernel_size[1] * module.in_channels
                nn.init.normal_(module.weight, mean=0.0, std=math.sqrt(2.0 / fan_in))
                nn.init.zeros_(module.bias)
        nn.init.zeros_(self.final_proj.weight)
        nn.init.zeros_(self.final_proj.bias)

    @property
    def dtype(self) -> torch.dtype:
        return self.scale.dtype

    @property
    def device(self) -> torch.device:
        return self.scale.device

    @property
    def out_channels(self) -> int:
        return self.final_proj.out_channels

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        if pose.ndim == 5:
            pose = pose.flatten(0, 1)
        return self.final_proj(self.conv_layers(pose)) * self.scale
