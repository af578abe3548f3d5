"""CLIP image embeddings as SVD computes them, for the reference image and for any frames:
pixels in [0, 1], resized in [-1, 1] with SVD's own antialiasing filter to 224x224 (no crop),
normalised for CLIP (no other resize, crop or rescale), then the encoder's ``image_embeds``."""

from __future__ import annotations

import numpy as np
import torch
from transformers.utils import logging as hf_logging

# diffusers' SVD module imports transformers' torchvision-backed CLIP processor, which only
# warns that it falls back to PIL; we never use that processor for tensors.
_verbosity = hf_logging.get_verbosity()
hf_logging.set_verbosity_error()
try:
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
        _resize_with_antialiasing,
    )
finally:
    hf_logging.set_verbosity(_verbosity)

__all__ = ["CLIP_INPUT_SIZE", "ImageEncoder", "clip_embeddings", "frame_pixels"]

CLIP_INPUT_SIZE = (224, 224)
_BATCH = 16  # frames per encoder call: a few hundred MB of activations at most


def frame_pixels(frames: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [0, 1] (as diffusers' image processor
    turns a PIL image into a tensor)."""
    frames = np.ascontiguousarray(frames)
    if not frames.flags.writeable:  # torch wants to be able to write what it wraps
        frames = frames.copy()
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0


class ImageEncoder:
    """CLIP as SVD uses it, for the reference image and for any frames (so they compare: a
    clip's identity): the pipeline's encoder and preprocessor, or ones loaded alone."""

    def __init__(self, image_encoder, feature_extractor) -> None:
        self.image_encoder = image_encoder
        self.feature_extractor = feature_extractor

    def encode_image(self, image, device: torch.device | str) -> torch.Tensor:
        """A PIL image -> ``image_embeds`` (1,D) in the encoder's dtype."""
        return self.encode_frames(np.asarray(image.convert("RGB"))[None], device)

    def encode_frames(self, frames: np.ndarray, device: torch.device | str) -> torch.Tensor:
        """(N,H,W,3) uint8 frames -> ``image_embeds`` (N,D) in the encoder's dtype."""
        pixels = frame_pixels(frames)
        return clip_embeddings(self.image_encoder, self.feature_extractor, pixels, device)


@torch.no_grad()
def clip_embeddings(
    image_encoder, feature_extractor, pixels: torch.Tensor, device: torch.device | str
) -> torch.Tensor:
    """(N, 3, H, W) float in [0, 1] -> CLIP ``image_embeds`` (N, D) in the encoder's dtype,
    ``_BATCH`` images per encoder call."""
    dtype = next(image_encoder.parameters()).dtype
    mean = torch.tensor(feature_extractor.image_mean, dtype=pixels.dtype)[:, None, None]
    std = torch.tensor(feature_extractor.image_std, dtype=pixels.dtype)[:, None, None]
    out = []
    for start in range(0, len(pixels), _BATCH):
        chunk = _resize_with_antialiasing(
            pixels[start : start + _BATCH] * 2.0 - 1.0, CLIP_INPUT_SIZE
        )
        chunk = ((chunk + 1.0) / 2.0 - mean) / std
        out.append(image_encoder(chunk.to(device=device, dtype=dtype)).image_embeds)
    return torch.cat(out)
