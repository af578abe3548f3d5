"""The sampler's options (``--scheduler`` and AnimateLCM-SVD's settings), declared once with
their flags; ``pipeline.schedulers`` builds the sampler from them. No torch."""

from __future__ import annotations

from dataclasses import dataclass

from mimicache.config.options import Flag, option

SCHEDULER_NAMES = ("EulerDiscreteScheduler", "AnimateLCM_SVD")
_LCM = "AnimateLCM_SVD only"


def _lcm_float(name: str, default: float, text: str):
    return option(
        default,
        flag=Flag(f"--scheduler_{name}", f"{text} ({_LCM}; default: %(default)s)", type=float),
    )


@dataclass(frozen=True)
class SchedulerOptions:
    """The original scripts' scheduler flags (``--scheduler_<field>``, ``--lcm_num_train_timesteps``);
    all but ``name`` are AnimateLCM_SVD's settings."""

    name: str = option(
        "EulerDiscreteScheduler",
        flag=Flag(
            "--scheduler", "(default: %(default)s)", choices=SCHEDULER_NAMES, dest="scheduler"
        ),
    )
    sigma_min: float = _lcm_float("sigma_min", 0.002, "smallest noise level of the sigma table")
    sigma_max: float = _lcm_float("sigma_max", 700.0, "largest noise level, where sampling starts")
    sigma_data: float = _lcm_float(
        "sigma_data", 1.0, "data standard deviation in the consistency scalings"
    )
    s_noise: float = _lcm_float("s_noise", 1.0, "scale of the fresh noise added between steps")
    rho: float = _lcm_float("rho", 7.0, "Karras schedule exponent")
    clip_denoised: bool = option(
        False,
        flag=Flag(
            "--scheduler_clip_denoised",
            f"clamp each step's denoised latent to [-1, 1] ({_LCM}; default: off)",
        ),
    )
    num_train_timesteps: int = option(
        40,
        flag=Flag(
            "--lcm_num_train_timesteps",
            "length of the sigma table the inference steps are picked from "
            f"({_LCM}; default: %(default)s)",
            type=int,
        ),
    )
