"""Inference config: the published MimicMotion YAML schema plus mimicache's keys, validated.

The YAML layout (``configs/test.yaml``)::

    base_model_path: stabilityai/stable-video-diffusion-img2vid-xt-1-1   # hub id or local folder
    ckpt_path: models/MimicMotion_1-1.pth
    test_case:                      # one or more cases, each a mapping
      - ref_video_path: ...         # required
        ref_image_path: ...         # required
        num_frames: 72              # tile size of the tiled denoising, >= 2
        resolution: 576             # short side of the output, multiple of 8, >= 40
        frames_overlap: 6           # 0 <= overlap < num_frames
        num_inference_steps: 25
        noise_aug_strength: 0       # >= 0
        guidance_scale: 2.0         # >= 0
        sample_stride: 2
        fps: 15                     # frame rate of the written mp4
        seed: 42                    # 0 <= seed < 2**64
    batch:                          # optional (the original scripts' key)
      video_folder: assets/videos   # or null
    dwpose:                         # optional (mimicache's key)
      det_model_path: models/DWPose/yolox_l.onnx
      pose_model_path: models/DWPose/dw-ll_ucoco_384.onnx
      backend: auto                 # auto | onnxruntime | torch
    pose:                           # optional (mimicache's key)
      retarget: published           # or graft (the original scripts' pose frames); unset: the
                                    # command's default (run: published, original scripts: graft)
      person: auto                  # which dancer drives the pose: auto (published: everyone
                                    # drawn), largest, center, or N (0 = first to appear)

``ckpt_path`` and the DWPose files may be hub references, ``hf://OWNER/REPO/PATH/IN/REPO`` (or
``hf://OWNER/REPO@REVISION/PATH``), and ``base_model_path`` ``hf://OWNER/REPO[@REVISION]``:
they are kept as written (``HubFile``) and resolved through the hub cache when a file is used.

The file is read with OmegaConf, like the published scripts, so ``${...}`` interpolations work.
Relative paths resolve against the working directory at load time (the published scripts open
them relative to the working directory); loaded configs hold absolute paths.
"""

from mimicache.config.fields import (
    BATCH_KEYS,
    DEFAULT_DWPOSE_DET_PATH,
    DEFAULT_DWPOSE_POSE_PATH,
    DEFAULT_PERSON,
    DWPOSE_BACKENDS,
    DWPOSE_HF_REPO,
    DWPOSE_KEYS,
    PERSON_MODES,
    POSE_KEYS,
    RETARGET_MODES,
    TEST_CASE_KEYS,
    TOP_LEVEL_KEYS,
)
from mimicache.config.hub import HubFile, hub_file, local_file
from mimicache.config.loading import load_config
from mimicache.config.schema import InferenceConfig, TestCase, case_to_dict, config_to_dict
from mimicache.config.validation import check_dwpose_files, person_choice

__all__ = [
    "BATCH_KEYS",
    "DEFAULT_DWPOSE_DET_PATH",
    "DEFAULT_DWPOSE_POSE_PATH",
    "DEFAULT_PERSON",
    "DWPOSE_BACKENDS",
    "DWPOSE_HF_REPO",
    "DWPOSE_KEYS",
    "PERSON_MODES",
    "POSE_KEYS",
    "RETARGET_MODES",
    "TEST_CASE_KEYS",
    "TOP_LEVEL_KEYS",
    "HubFile",
    "InferenceConfig",
    "TestCase",
    "case_to_dict",
    "check_dwpose_files",
    "config_to_dict",
    "hub_file",
    "load_config",
    "local_file",
    "person_choice",
]
