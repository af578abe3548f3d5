"""A deterministic tiny MimicMotion bundle on disk, in the real file formats.

``write_tiny_bundle(dir)`` writes a diffusers-format SVD folder (full and fp16-variant weights
for vae and image_encoder), a float16 MimicMotion checkpoint (``unet.*`` + ``pose_net.*``) and
the two DWPose ONNX models, so tests and the demo exercise the real loading code offline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from mimicache.models.pose_net import PoseNet
from mimicache.models.unet import MimicMotionUNet

TINY_UNET_CONFIG = {
    "_class_name": "UNetSpatioTemporalConditionModel",
    "sample_size": 8,
    "in_channels": 8,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"],
    "up_block_types": ["UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"],
    "block_out_channels": [32, 64],
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 24,
    "layers_per_block": 1,
    "cross_attention_dim": 32,
    "transformer_layers_per_block": 1,
    "num_attention_heads": [2, 4],
    "num_frames": 8,
}
TINY_VAE_CONFIG = {
    "_class_name": "AutoencoderKLTemporalDecoder",
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "block_out_channels": [32, 32, 32, 32],
    "layers_per_block": 1,
    "latent_channels": 4,
    "sample_size": 64,
    "scaling_factor": 0.18215,
    "force_upcast": True,
}
TINY_CLIP_CONFIG = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 224,
    "patch_size": 32,
    "projection_dim": 32,
    "hidden_act": "gelu",
}
# The published sizes, for benchmarks that need encoders of the real cost.
SVD_VAE_CONFIG = {
    **TINY_VAE_CONFIG,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "sample_size": 768,
}
CLIP_VIT_H_CONFIG = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "projection_dim": 1024,
    "hidden_act": "gelu",
}
SVD_SCHEDULER_CONFIG = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "sigma_max": 700.0,
    "sigma_min": 0.002,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "timestep_type": "continuous",
    "trained_betas": None,
    "use_karras_sigmas": True,
}
CLIP_PREPROCESSOR_CONFIG = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "CLIPImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 224},
}
MODEL_INDEX = {
    "_class_name": "StableVideoDiffusionPipeline",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "unet": ["diffusers", "UNetSpatioTemporalConditionModel"],
    "vae": ["diffusers", "AutoencoderKLTemporalDecoder"],
}
_SEED = 20240710


@dataclass(frozen=True)
class TinyBundle:
    root: Path
    base_model_path: Path
    ckpt_path: Path
    det_model_path: Path
    pose_model_path: Path


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _save_weights(state: dict[str, torch.Tensor], folder: Path, stem: str) -> None:
    """Full-precision and fp16-variant safetensors files, as the published repositories ship."""
    state = {k: v.detach().contiguous() for k, v in state.items()}
    save_file(state, str(folder / f"{stem}.safetensors"), metadata={"format": "pt"})
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    save_file(half, str(folder / f"{stem}.fp16.safetensors"), metadata={"format": "pt"})


def build_clip(config: dict) -> CLIPVisionModelWithProjection:
    return CLIPVisionModelWithProjection(CLIPVisionConfig(**config)).eval()


def build_vae(config: dict) -> AutoencoderKLTemporalDecoder:
    return AutoencoderKLTemporalDecoder.from_config(config).eval()


def write_base_model(folder: Path) -> Path:
    """A tiny SVD folder in diffusers layout."""
    folder = Path(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        vae = build_vae(TINY_VAE_CONFIG)
        clip = build_clip(TINY_CLIP_CONFIG)
        unet = UNetSpatioTemporalConditionModel.from_config(TINY_UNET_CONFIG)
    _write_json(folder / "model_index.json", MODEL_INDEX)
    _write_json(folder / "scheduler" / "scheduler_config.json", SVD_SCHEDULER_CONFIG)
    _write_json(folder / "feature_extractor" / "preprocessor_config.json", CLIP_PREPROCESSOR_CONFIG)
    vae.save_config(folder / "vae")
    _save_weights(vae.state_dict(), folder / "vae", "diffusion_pytorch_model")
    clip.config.save_pretrained(folder / "image_encoder")
    _save_weights(clip.state_dict(), folder / "image_encoder", "model")
    unet.save_config(folder / "unet")
    _save_weights(unet.state_dict(), folder / "unet", "diffusion_pytorch_model")
    return folder


def tiny_checkpoint_state() -> dict[str, torch.Tensor]:
    """A MimicMotion-format float16 state dict for the tiny UNet config."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED + 1)
        unet = MimicMotionUNet.from_config(TINY_UNET_CONFIG)
        pose_net = PoseNet(noise_latent_channels=TINY_UNET_CONFIG["block_out_channels"][0])
        # A trained PoseNet is not zero at the output; make the pose matter in the tiny model.
        torch.nn.init.normal_(pose_net.final_proj.weight, std=0.05)
    state = {f"unet.{k}": v for k, v in unet.state_dict().items()}
    state.update({f"pose_net.{k}": v for k, v in pose_net.state_dict().items()})
    return {k: v.detach().half().contiguous() for k, v in state.items()}


def write_tiny_bundle(directory: str | Path) -> TinyBundle:
    """Write (or rewrite, identically) the tiny bundle under ``directory``."""
    from mimicache.testing.tiny_dwpose import write_tiny_dwpose

    root = Path(directory)
    base = write_base_model(root / "svd-tiny")
    ckpt = root / "MimicMotion_tiny.pth"
    torch.save(tiny_checkpoint_state(), ckpt)
    det, pose = write_tiny_dwpose(root / "DWPose")
    return TinyBundle(root, base, ckpt, Path(det), Path(pose))
