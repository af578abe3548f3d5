"""Samplers for the denoising loop: SVD's Euler (from the base folder) and AnimateLCM-SVD.

Sigmas are float32 tensors after ``set_timesteps`` (AnimateLCM's end with an exact 0); model
timesteps follow each scheduler's convention (AnimateLCM: 0.25·ln σ, float64).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from diffusers import EulerDiscreteScheduler
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin, SchedulerOutput
from diffusers.utils.torch_utils import randn_tensor

from mimicache.config.sampler import SCHEDULER_NAMES, SchedulerOptions
from mimicache.errors import ConfigError, setting

__all__ = ["SCHEDULER_NAMES", "AnimateLCMSVDScheduler", "SchedulerOptions", "build_scheduler"]


class AnimateLCMSVDScheduler(SchedulerMixin, ConfigMixin):
    """Consistency sampler for an LCM-distilled SVD UNet (v-prediction, Karras sigmas).

    Each step jumps to the consistency estimate of the clean latent, then re-noises it at the
    next sigma with a fresh draw from the caller's generator. As in the published AnimateLCM-SVD
    sampler the table ends at sigma 0, so the last step returns the estimate itself (its draw is
    still made, and multiplied by 0); a single-step schedule draws nothing.
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 40,
        sigma_min: float = 0.002,
        sigma_max: float = 700.0,
        sigma_data: float = 1.0,
        s_noise: float = 1.0,
        rho: float = 7.0,
        clip_denoised: bool = False,
    ):
        if num_train_timesteps < 2:
            # the Karras ramp divides by (num_train_timesteps - 1)
            raise ConfigError(
                f"{setting('lcm_num_train_timesteps', num_train_timesteps)} must be at least 2"
            )
        if not math.isfinite(s_noise):
            raise ConfigError(f"{setting('scheduler_s_noise', s_noise)} must be a finite number")
        self.init_noise_sigma = (sigma_max**2 + 1) ** 0.5
        # the full training table, until set_timesteps picks from it (float64, as published)
        sigmas = np.append(self._karras(np.linspace(0.0, 1.0, num_train_timesteps)), 0.0)
        self.sigmas = torch.from_numpy(sigmas)
        self.timesteps = torch.from_numpy(self.sigma_to_t(sigmas))
        self.num_inference_steps: int | None = None
        self._step_index: int | None = None

    def _karras(self, ramp: np.ndarray) -> np.ndarray:
        c = self.config
        min_inv_rho = c.sigma_min ** (1.0 / c.rho)
        max_inv_rho = c.sigma_max ** (1.0 / c.rho)
        return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** c.rho

    @staticmethod
    def sigma_to_t(sigmas: np.ndarray) -> np.ndarray:
        return 0.25 * np.log(np.asarray(sigmas, dtype=np.float64) + 1e-44)

    @property
    def step_index(self) -> int | None:
        return self._step_index

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None):
        train = self.config.num_train_timesteps
        if not 1 <= num_inference_steps <= train:
            raise ConfigError(
                f"AnimateLCM_SVD needs 1..{train} inference steps "
                f"({setting('lcm_num_train_timesteps', train)} sets the most), "
                f"got {num_inference_steps}"
            )
        self.num_inference_steps = num_inference_steps
        # every (train // steps)-th training index, starting from the noisiest (index 0); when
        # steps do not divide train the least noisy indices are never visited
        indices = np.arange(num_inference_steps) * (train // num_inference_steps)
        sigmas = self._karras(indices / (train - 1))
        self.timesteps = torch.from_numpy(self.sigma_to_t(sigmas)).to(device)
        # a final sigma of exactly 0: the last step adds no noise
        sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
        self.sigmas = torch.from_numpy(sigmas).to(device)
        self._step_index = None

    def _init_step_index(self, timestep: torch.Tensor | float) -> None:
        timestep = torch.as_tensor(
            timestep, device=self.timesteps.device, dtype=self.timesteps.dtype
        )
        matches = (self.timesteps == timestep).nonzero()
        self._step_index = int(matches[0]) if len(matches) else 0

    def scale_model_input(self, sample: torch.Tensor, timestep) -> torch.Tensor:
        if self._step_index is None:
            self._init_step_index(timestep)
        sigma = self.sigmas[self._step_index]
        return sample / ((sigma**2 + self.config.sigma_data**2) ** 0.5)

    def step(
        self,
        model_output: torch.Tensor,
        timestep,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ):
        if self._step_index is None:
            self._init_step_index(timestep)
        sd = self.config.sigma_data
        sigma = self.sigmas[self._step_index]
        sigma_next = self.sigmas[self._step_index + 1]
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = -sigma * sd / (sigma**2 + sd**2) ** 0.5
        denoised = c_out * model_output + c_skip * sample
        if self.config.clip_denoised:
            denoised = denoised.clamp(-1, 1)
        if len(self.timesteps) > 1:
            noise = randn_tensor(
                model_output.shape,
                generator=generator,
                device=model_output.device,
                dtype=model_output.dtype,
            )
        else:
            noise = torch.zeros_like(model_output)
        prev = denoised + noise * self.config.s_noise * sigma_next.clamp(0, self.config.sigma_max)
        self._step_index += 1
        if not return_dict:
            return (prev,)
        return SchedulerOutput(prev_sample=prev)

    def __len__(self) -> int:
        return self.config.num_train_timesteps


def build_scheduler(options: SchedulerOptions, base_scheduler_dir: Path | str | None = None):
    """Euler from the base model's ``scheduler/`` config, or AnimateLCM-SVD from the options."""
    if options.name == "EulerDiscreteScheduler":
        if base_scheduler_dir is None:
            raise ConfigError("EulerDiscreteScheduler needs the base model's scheduler/ folder")
        return EulerDiscreteScheduler.from_pretrained(str(base_scheduler_dir))
    if options.name == "AnimateLCM_SVD":
        settings = asdict(options)
        del settings["name"]
        return AnimateLCMSVDScheduler(**settings)
    raise ConfigError(
        f"unknown {setting('scheduler', options.name)}: use one of {', '.join(SCHEDULER_NAMES)}"
    )
