"""Where the models and DWPose run: the default device, DWPose's device and backend, and the
pose options (retarget mode, person) resolved from the arguments and the config."""

from __future__ import annotations

import logging

import torch

from mimicache.config import DEFAULT_PERSON, InferenceConfig, person_choice
from mimicache.pose import DWPose
from mimicache.pose.retarget import PUBLISHED, check_mode

logger = logging.getLogger(__name__)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pose_parts(
    config: InferenceConfig,
    device: str | torch.device | None,
    pose_retarget: str | None,
    person: str | int | None,
    dwpose_device: str | None = None,
) -> tuple[torch.device, DWPose, str, str]:
    """The device, DWPose (on ``dwpose_device`` when given), and the retarget mode and person
    choice (argument > config > default), checked."""
    pose_retarget = check_mode(pose_retarget or config.pose_retarget or PUBLISHED)
    person = person_choice(person if person is not None else config.pose_person or DEFAULT_PERSON)
    device = torch.device(device) if device is not None else default_device()
    dwpose = DWPose(
        config.dwpose_det_path,
        config.dwpose_pose_path,
        device=dwpose_device or _dwpose_device(device, config.dwpose_backend),
        backend=config.dwpose_backend,
    )
    return device, dwpose, pose_retarget, person


def _dwpose_device(device: torch.device, backend: str) -> str:
    """DWPose runs where the models run; only ONNX Runtime asked for by name on a GPU it has no
    provider for falls back to the CPU, said once (``auto`` then picks the torch backend)."""
    if backend != "onnxruntime" or device.type != "cuda":
        return str(device)
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return f"cuda:{device.index}" if device.index is not None else "cuda"
    logger.warning(
        "DWPose runs on the CPU: this onnxruntime has no CUDA provider "
        "(pip uninstall onnxruntime && pip install onnxruntime-gpu)"
    )
    return "cpu"
