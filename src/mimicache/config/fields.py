"""The config's fields: key names, defaults and the allowed values of its choices."""

from __future__ import annotations

import re
from pathlib import Path

# pose.retarget: the published alignment alone, or the original scripts' graft onto the reference
RETARGET_MODES = ("published", "graft")
# pose.person: which person of the driving video drives the pose. "auto" is the published
# behaviour (every person drawn); a whole number N >= 0 is the N-th person to appear (0-based).
PERSON_MODES = ("auto", "largest", "center")
DEFAULT_PERSON = "auto"

DEFAULT_DWPOSE_DET_PATH = Path("models/DWPose/yolox_l.onnx")
DEFAULT_DWPOSE_POSE_PATH = Path("models/DWPose/dw-ll_ucoco_384.onnx")
DWPOSE_HF_REPO = "yzd-v/DWPose"  # where both ONNX files are published

TOP_LEVEL_KEYS = ("base_model_path", "ckpt_path", "test_case", "batch", "dwpose", "pose", "score")
BATCH_KEYS = ("video_folder",)
DWPOSE_PATH_KEYS = ("det_model_path", "pose_model_path")
DWPOSE_KEYS = (*DWPOSE_PATH_KEYS, "backend")
# dwpose.backend: auto = ONNX Runtime when it has the device's provider, otherwise PyTorch
DWPOSE_BACKENDS = ("auto", "onnxruntime", "torch")
POSE_KEYS = ("retarget", "person")
# score: the clip scores' frames (N or "all") and the verdict's thresholds (quality.score)
SCORE_KEYS = ("frames", "thresholds")
# How the pipeline computes: exact is the published computation, fast the same mathematics up
# to float rounding; offload keeps models on the CPU until used (whole models or layer by layer)
SPEEDS = ("exact", "fast")
OFFLOADS = ("none", "model", "sequential")

_PATH_FIELDS = ("ref_video_path", "ref_image_path")
_INT_FIELDS = (
    "num_frames",
    "resolution",
    "frames_overlap",
    "num_inference_steps",
    "sample_stride",
    "fps",
    "seed",
)
_FLOAT_FIELDS = ("noise_aug_strength", "guidance_scale")
TEST_CASE_KEYS = _PATH_FIELDS + _INT_FIELDS + _FLOAT_FIELDS

_MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed accepts unsigned 64-bit seeds

# A Hugging Face repo id: "name" or "namespace/name", letters, digits, "-", "_", ".".
_HUB_ID = re.compile(r"^(?!\.)[A-Za-z0-9_.\-]+(/(?!\.)[A-Za-z0-9_.\-]+)?$")
