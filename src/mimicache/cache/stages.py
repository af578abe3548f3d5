"""Key recipes of the cached stages: each stage is keyed only by what its output depends on.

Plain values in, StageKey out; nothing here knows how the stages are computed. Digests are
content digests (``keys.file_digest``), fingerprints come from ``keys.fingerprint_files``.
"""

from __future__ import annotations

from mimicache.cache.store import StageKey

VIDEO_KEYPOINTS = "video_keypoints"
IMAGE_KEYPOINTS = "image_keypoints"
POSE_FRAMES = "pose_frames"
CLIP_EMBEDDINGS = "clip_embeddings"
VAE_LATENTS = "vae_latents"
POSE_STAGES = (VIDEO_KEYPOINTS, IMAGE_KEYPOINTS, POSE_FRAMES)
PIPELINE_STAGES = (CLIP_EMBEDDINGS, VAE_LATENTS)
STAGES = POSE_STAGES + PIPELINE_STAGES

# Bump when DWPose pre/post-processing, alignment or drawing changes what they produce.
KEYPOINTS_VERSION = 1
DRAWING_VERSION = 1


def video_keypoints_key(video_digest: str, effective_stride: int, detector: str) -> StageKey:
    """Raw keypoints are in normalised frame coordinates: the resolution is not part of the key."""
    return StageKey(
        inputs={"video": video_digest},
        models={"dwpose": detector},
        params={"effective_stride": effective_stride, "code": KEYPOINTS_VERSION},
    )


def image_keypoints_key(image_digest: str, resolution: int, detector: str) -> StageKey:
    return StageKey(
        inputs={"image": image_digest},
        models={"dwpose": detector},
        params={"resolution": resolution, "code": KEYPOINTS_VERSION},
    )


def pose_frames_key(
    video_keys: StageKey, image_keys: StageKey, retarget: str = "published"
) -> StageKey:
    """Drawn frames follow from both keypoint entries (which already hold size and stride) and
    the retarget mode. The mode enters the key only when it is not "published", so entries
    written before the mode existed keep their keys."""
    params: dict = {
        "video_keypoints": video_keys.digest,
        "image_keypoints": image_keys.digest,
        "code": DRAWING_VERSION,
    }
    if retarget != "published":
        params["retarget"] = retarget
    return StageKey(
        inputs={"video": video_keys.inputs["video"], "image": image_keys.inputs["image"]},
        models={"dwpose": video_keys.models["dwpose"]},
        params=params,
    )


def clip_embeddings_key(
    image_digest: str, resolution: int, encoder: str, dtype: str, device_type: str
) -> StageKey:
    return StageKey(
        inputs={"image": image_digest},
        models={"image_encoder": encoder},
        params={"resolution": resolution, "dtype": dtype, "device": device_type},
    )


def vae_latents_key(
    image_digest: str,
    resolution: int,
    vae: str,
    dtype: str,
    device_type: str,
    noise_aug_strength: float,
    seed: int,
    generator_device: str,
) -> StageKey:
    """Without augmentation the latent is seed-free, so the seed only enters when it matters."""
    params: dict = {
        "resolution": resolution,
        "dtype": dtype,
        "device": device_type,
        "noise_aug_strength": float(noise_aug_strength),
    }
    if noise_aug_strength != 0:
        params.update(seed=seed, generator_device=generator_device)
    return StageKey(inputs={"image": image_digest}, models={"vae": vae}, params=params)
