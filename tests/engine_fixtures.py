"""A small workspace for engine and CLI tests: tiny bundle, media, a config writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from mimicache.config import InferenceConfig, load_config
from mimicache.media import write_video
from mimicache.testing.tiny_dwpose import make_figure_frame

RESOLUTION = 64


def figure_video(path: Path, frames: int = 6, *, phase: float = 0.0, fps: float = 24.0) -> Path:
    stack = np.stack([make_figure_frame(72, 96, (phase + i / frames) % 1.0) for i in range(frames)])
    return write_video(path, stack, fps)


def reference_image(path: Path, phase: float = 0.5) -> Path:
    Image.fromarray(make_figure_frame(96, 64, phase)).save(path)
    return path


def write_config(path: Path, bundle, image: Path, video: Path, **case) -> Path:
    values = {
        "ref_video_path": str(video),
        "ref_image_path": str(image),
        "num_frames": 4,
        "resolution": RESOLUTION,
        "frames_overlap": 1,
        "num_inference_steps": 1,
        "noise_aug_strength": 0,
        "guidance_scale": 2.0,
        "sample_stride": 1,
        "fps": 8,
        "seed": 42,
    }
    values.update(case)
    config = {
        "base_model_path": str(bundle.base_model_path),
        "ckpt_path": str(bundle.ckpt_path),
        "test_case": [values],
        "dwpose": {
            "det_model_path": str(bundle.det_model_path),
            "pose_model_path": str(bundle.pose_model_path),
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def figure_config(root: Path, bundle, frames: int = 6) -> InferenceConfig:
    """The loaded config of a reference image and a walk of ``frames`` frames written in
    ``root``."""
    image = reference_image(root / "ref.png")
    video = figure_video(root / "walk.mp4", frames=frames)
    return load_config(write_config(root / "c.yaml", bundle, image, video))


def walk_workspace(root: Path, bundle) -> dict:
    """A folder with a reference image, a 6-frame walk and a config naming them."""
    image = reference_image(root / "ref.png")
    video = figure_video(root / "walk.mp4", frames=6)
    return {"root": root, "config": write_config(root / "cfg.yaml", bundle, image, video)}
