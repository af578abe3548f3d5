"""GPU memory modes: where the pipeline's models live between uses (``--offload``).

``none`` keeps every model on the device; ``model`` keeps each whole model on the CPU until
its turn (diffusers' model CPU offload: CLIP, PoseNet, UNet, VAE); ``sequential`` moves one
layer at a time (least memory, slowest). Both need the ``accelerate`` package.
"""

from __future__ import annotations

import importlib.util
import logging

import torch

from mimicache.config.fields import OFFLOADS
from mimicache.errors import ModelLoadError, setting

logger = logging.getLogger(__name__)

OFFLOAD_NONE, OFFLOAD_MODEL, OFFLOAD_SEQUENTIAL = OFFLOADS


def check_offload(offload: str) -> str:
    if offload not in OFFLOADS:
        raise ValueError(f"offload must be one of {', '.join(OFFLOADS)}, got {offload!r}")
    return offload


def offload_applies(offload: str, device: torch.device | str) -> bool:
    """Offloading only means something for a CUDA device; elsewhere it is a no-op, said once."""
    if check_offload(offload) == OFFLOAD_NONE:
        return False
    device = torch.device(device)
    if device.type != "cuda":
        logger.warning(
            "%s does nothing on %s: models stay where they are", setting("offload", offload), device
        )
        return False
    return True


def accelerate_missing() -> bool:
    return importlib.util.find_spec("accelerate") is None


def require_accelerate(offload: str) -> None:
    """Fails before any model loads when an offload mode needs the missing accelerate."""
    if check_offload(offload) != OFFLOAD_NONE and accelerate_missing():
        raise ModelLoadError(
            f"{setting('offload', offload)} needs the accelerate package: "
            "pip install 'accelerate>=0.26'"
        )


def apply_offload(pipe, offload: str, device: torch.device | str) -> bool:
    """Installs the offload hooks on a pipeline loaded on the CPU; True when hooks were added.

    The pipeline keeps receiving ``device`` explicitly: the hooks move each model there when it
    runs and back to the CPU after (``model``) or layer by layer (``sequential``).
    """
    if not offload_applies(offload, device):
        return False
    require_accelerate(offload)
    if offload == OFFLOAD_MODEL:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.enable_sequential_cpu_offload(device=device)
    return True
