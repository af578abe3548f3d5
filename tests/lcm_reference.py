"""AnimateLCM-SVD's published sampler, re-stated plainly for the fidelity tests.

Independent of ``mimicache.schedulers``: the formulas of the published scheduler
(animatelcm_svd in G-U-N/AnimateLCM), written out once, with its draw order.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor


class PublishedLCMSampler:
    def __init__(
        self,
        train=40,
        sigma_min=0.002,
        sigma_max=700.0,
        sigma_data=1.0,
        s_noise=1.0,
        rho=7.0,
        clip=False,
    ):
        self.train, self.smin, self.smax, self.sd = train, sigma_min, sigma_max, sigma_data
        self.s_noise, self.rho, self.clip = s_noise, rho, clip
        self.init_noise_sigma = (sigma_max**2 + 1) ** 0.5

    def karras(self, ramp):
        lo, hi = self.smin ** (1 / self.rho), self.smax ** (1 / self.rho)
        return (hi + ramp * (lo - hi)) ** self.rho

    def set_timesteps(self, steps):
        # training indices 0, r, 2r, ... (r = train // steps), noisiest first
        ramp = (np.arange(steps) * (self.train // steps)) / (self.train - 1)
        sigmas = self.karras(ramp)
        self.timesteps = torch.from_numpy(0.25 * np.log(sigmas + 1e-44))
        self.sigmas = torch.from_numpy(np.concatenate([sigmas, [0]]).astype(np.float32))
        self.i = 0

    def scale_model_input(self, x, t):
        return x / ((self.sigmas[self.i] ** 2 + self.sd**2) ** 0.5)

    def step(self, out, t, x, generator=None):
        sigma = self.sigmas[self.i]
        nxt = self.sigmas[self.i + 1] if self.i + 1 < self.train else self.sigmas[-1]
        c_skip = self.sd**2 / (sigma**2 + self.sd**2)
        c_out = -sigma * self.sd / (sigma**2 + self.sd**2) ** 0.5
        denoised = c_out * out + c_skip * x
        if self.clip:
            denoised = denoised.clamp(-1, 1)
        if len(self.timesteps) > 1:
            noise = randn_tensor(out.shape, dtype=out.dtype, device=out.device, generator=generator)
        else:
            noise = torch.zeros_like(out)
        prev = denoised + (noise * self.s_noise) * nxt.clamp(min=0, max=self.smax)
        self.i += 1
        return SimpleNamespace(prev_sample=prev)
