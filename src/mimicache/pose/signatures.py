"""Signature checks of the two DWPose ONNX files, read from either backend's inputs/outputs.

Detector: one float input (B, 3, 640, 640), first output (B, 8400, 5+C). Pose model: one float
input (B, 3, H, W) with fixed H, W, outputs simcc_x (B, 133, Wx) and simcc_y (B, 133, Hy).
A mismatch raises :class:`ModelLoadError` naming the file and what was found.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mimicache.config import DWPOSE_HF_REPO
from mimicache.errors import ModelLoadError

DET_INPUT_SIZE = (640, 640)
NUM_WHOLEBODY = 133

__all__ = ["PoseSignature", "check_detector", "check_pose_model"]


@dataclass(frozen=True)
class PoseSignature:
    """What the pose model's signature tells us: input (w, h) and whether the batch is free."""

    input_wh: tuple[int, int]
    batch_dynamic: bool


def _dims(node) -> list:
    return list(node.shape) if node.shape is not None else []


def _is_dynamic(dim) -> bool:
    return not isinstance(dim, int) or dim <= 0


def _signature_error(path: Path, what: str, expected: str) -> ModelLoadError:
    return ModelLoadError(
        f"{path} does not have the {what} signature: expected {expected}. Check that the "
        f"detector and pose files are not swapped and come from https://huggingface.co/{DWPOSE_HF_REPO}."
    )


def check_detector(model, path: Path) -> None:
    """``model`` has ``inputs`` / ``outputs`` with ``name``, ``shape``, ``type``."""
    det_in, det_out = model.inputs, model.outputs
    expected = "one input (1, 3, 640, 640) float and a first output (1, 8400, 85)"
    if len(det_in) != 1 or len(det_out) < 1:
        raise _signature_error(path, "YOLOX detector", expected)
    din, dout = _dims(det_in[0]), _dims(det_out[0])
    ok = (
        len(din) == 4
        and din[1] == 3
        and din[2:] == list(DET_INPUT_SIZE)
        and "float" in det_in[0].type
        and len(dout) == 3
        and (_is_dynamic(dout[2]) or dout[2] >= 6)
        and (_is_dynamic(dout[1]) or dout[1] == 8400)
    )
    if not ok:
        raise _signature_error(path, "YOLOX detector", f"{expected}, got input {din} output {dout}")


def check_pose_model(model, path: Path) -> PoseSignature:
    pin, pout = model.inputs, model.outputs
    expected = "one input (B, 3, H, W) float and outputs simcc_x (B, 133, Wx), simcc_y (B, 133, Hy)"
    if len(pin) != 1 or len(pout) < 2:
        raise _signature_error(path, "DWPose SimCC", expected)
    shp = _dims(pin[0])
    outs = [_dims(o) for o in pout[:2]]
    ok = (
        len(shp) == 4
        and shp[1] == 3
        and not _is_dynamic(shp[2])
        and not _is_dynamic(shp[3])
        and "float" in pin[0].type
        and all(len(o) == 3 and o[1] == NUM_WHOLEBODY for o in outs)
    )
    if not ok:
        raise _signature_error(path, "DWPose SimCC", f"{expected}, got input {shp} outputs {outs}")
    return PoseSignature(input_wh=(int(shp[3]), int(shp[2])), batch_dynamic=_is_dynamic(shp[0]))
