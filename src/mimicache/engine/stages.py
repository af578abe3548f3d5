"""The cached stages, each declared once: its name, its codec (value <-> named tensors) and its
key recipe (keyed only by what its output depends on), and the job's keys computed lazily.

Values: image keypoints a PoseFrame, video keypoints VideoPoses, pose frames a DrawnPose
((1+F,H,W,3) uint8 and who was seen), CLIP embeddings (1,D) and VAE latents (1,4,H/8,W/8)
tensors in the model dtype.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mimicache.cache import StageKey
from mimicache.config import TestCase
from mimicache.engine.codecs import (  # noqa: F401 - pack_frames, unpack_frames re-exported
    json_tensor,
    pack_drawn,
    pack_frames,
    tensor_json,
    unpack_drawn,
    unpack_frames,
)
from mimicache.engine.stage_names import (  # noqa: F401 - re-exported for the stages users
    CLIP_EMBEDDINGS,
    IMAGE_KEYPOINTS,
    JOB_STAGES,
    JOB_STEPS,
    OUTPUT_EMBEDDINGS,
    OUTPUT_KEYPOINTS,
    PIPELINE_STAGES,
    POSE_FRAMES,
    POSE_STAGES,
    STAGE_COLORS,
    STAGES,
    STEP_COLORS,
    TOTALS,
    UNCACHED_STEPS,
    VAE_LATENTS,
    VIDEO_KEYPOINTS,
)
from mimicache.media import effective_stride, missing_file, probe_video
from mimicache.pose import PoseSequence, VideoPoses
from mimicache.pose.dwpose import KEYPOINTS_VERSION
from mimicache.storage.digests import bytes_digest

# Bump when alignment or drawing changes what they produce (DWPose's own version is
# pose.dwpose.KEYPOINTS_VERSION).
# 2: the entry keeps who was seen, so a hit needs no keypoints; 3: and the poses it drew,
# so a clip can be scored against them
DRAWING_VERSION = 3


def video_keypoints_key(
    video_digest: str, effective_stride: int, detector: str, platform: dict | None = None
) -> StageKey:
    """Raw keypoints are in normalised frame coordinates: the resolution is not part of the key.
    ``platform`` (engine.platform): where the floats were computed, as in every recipe below."""
    return StageKey(
        inputs={"video": video_digest},
        models={"dwpose": detector},
        params={"effective_stride": effective_stride, "code": KEYPOINTS_VERSION},
        platform=dict(platform or {}),
    )


def image_keypoints_key(
    image_digest: str, resolution: int, detector: str, platform: dict | None = None
) -> StageKey:
    return StageKey(
        inputs={"image": image_digest},
        models={"dwpose": detector},
        params={"resolution": resolution, "code": KEYPOINTS_VERSION},
        platform=dict(platform or {}),
    )


def pose_frames_key(
    video_keys: StageKey, image_keys: StageKey, retarget: str = "published", person: str = "auto"
) -> StageKey:
    """Drawn frames follow from both keypoint entries (which already hold size, stride and the
    platform, which the drawing's OpenCV shares), the retarget mode and the person choice. Each enters the key only when it is not its default
    ("published", "auto"), so entries written before it existed keep their keys."""
    params: dict = {
        "video_keypoints": video_keys.digest,
        "image_keypoints": image_keys.digest,
        "code": DRAWING_VERSION,
    }
    if retarget != "published":
        params["retarget"] = retarget
    if person != "auto":
        params["person"] = person
    return StageKey(
        inputs={"video": video_keys.inputs["video"], "image": image_keys.inputs["image"]},
        models={"dwpose": video_keys.models["dwpose"]},
        params=params,
        platform=dict(video_keys.platform),
    )


def clip_embeddings_key(
    image_digest: str,
    resolution: int,
    encoder: str,
    dtype: str,
    device_type: str,
    platform: dict | None = None,
) -> StageKey:
    return StageKey(
        inputs={"image": image_digest},
        models={"image_encoder": encoder},
        params={"resolution": resolution, "dtype": dtype, "device": device_type},
        platform=dict(platform or {}),
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
    platform: dict | None = None,
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
    return StageKey(
        inputs={"image": image_digest},
        models={"vae": vae},
        params=params,
        platform=dict(platform or {}),
    )


def clip_frames(frames: np.ndarray) -> dict:
    """A clip's scored (n,H,W,3) uint8 frames as the output stages' key inputs: the digest of
    their bytes (read in place, not copied) and their shape."""
    data = memoryview(np.ascontiguousarray(frames)).cast("B")
    return {"frames": bytes_digest(data), "shape": list(frames.shape)}


def output_keypoints_key(frames: dict, detector: str, platform: dict) -> StageKey:
    """DWPose on a clip's scored frames (``frames``: ``clip_frames``), the detector, the
    platform (as the video's keypoints)."""
    return StageKey(
        inputs=dict(frames),
        models={"dwpose": detector},
        params={"code": KEYPOINTS_VERSION},
        platform=dict(platform),
    )


def output_embeddings_key(
    frames: dict, encoder: str, dtype: str, device_type: str, platform: dict
) -> StageKey:
    """CLIP of a clip's scored frames (``frames``: ``clip_frames``), as the reference's."""
    return StageKey(
        inputs=dict(frames),
        models={"image_encoder": encoder},
        params={"dtype": dtype, "device": device_type},
        platform=dict(platform),
    )


@dataclass(frozen=True)
class Stage:
    """A cached stage: ``encode`` turns its value into named tensors, ``decode`` back (losslessly,
    so a hit equals a fresh computation). Pipeline features are the CLIP and VAE stages, which
    ``cache_pipeline_features=False`` leaves uncached."""

    name: str
    encode: Callable[[Any], dict[str, torch.Tensor]]
    decode: Callable[[Mapping[str, torch.Tensor]], Any]
    pipeline_feature: bool = False

    @property
    def color(self) -> str:
        """Its segment in the report's bars."""
        return STAGE_COLORS[self.name]


IMAGE_KEYPOINTS_STAGE = Stage(
    IMAGE_KEYPOINTS,
    encode=lambda pose: PoseSequence([pose]).to_tensors(),
    decode=lambda tensors: PoseSequence.from_tensors(tensors)[0],
)
VIDEO_KEYPOINTS_STAGE = Stage(
    VIDEO_KEYPOINTS,
    encode=VideoPoses.to_tensors,
    decode=VideoPoses.from_tensors,
)


POSE_FRAMES_STAGE = Stage(POSE_FRAMES, encode=pack_drawn, decode=unpack_drawn)
CLIP_EMBEDDINGS_STAGE = Stage(
    CLIP_EMBEDDINGS,
    encode=lambda embeds: {"image_embeds": embeds},
    decode=lambda tensors: tensors["image_embeds"],
    pipeline_feature=True,
)
VAE_LATENTS_STAGE = Stage(
    VAE_LATENTS,
    encode=lambda latent: {"latent": latent},
    decode=lambda tensors: tensors["latent"],
    pipeline_feature=True,
)
# A finished clip's scored frames: the poses found in them, their CLIP embeddings
OUTPUT_KEYPOINTS_STAGE = Stage(
    OUTPUT_KEYPOINTS,
    encode=lambda poses: poses.to_tensors(),
    decode=PoseSequence.from_tensors,
)
OUTPUT_EMBEDDINGS_STAGE = Stage(
    OUTPUT_EMBEDDINGS,
    encode=lambda embeds: {"image_embeds": embeds},
    decode=lambda tensors: tensors["image_embeds"],
    pipeline_feature=True,
)
CACHED_STAGES = {
    stage.name: stage
    for stage in (
        VIDEO_KEYPOINTS_STAGE,
        IMAGE_KEYPOINTS_STAGE,
        POSE_FRAMES_STAGE,
        CLIP_EMBEDDINGS_STAGE,
        VAE_LATENTS_STAGE,
        OUTPUT_KEYPOINTS_STAGE,
        OUTPUT_EMBEDDINGS_STAGE,
    )
}

# --------------------------------------------------------------------------- warnings

logger = logging.getLogger(__name__)
WARNINGS = "__warnings__"  # a tensor name no stage's codec uses


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def compute_with_warnings(stage: Stage, compute: Callable[[], Any]) -> dict[str, torch.Tensor]:
    """``stage.encode(compute())`` plus the warnings mimicache logged while computing, as JSON
    bytes: a warning belongs to the result, so a hit repeats it (``replay_warnings``)."""
    collect = _Collect()
    root = logging.getLogger("mimicache")
    root.addHandler(collect)
    try:
        tensors = dict(stage.encode(compute()))
    finally:
        root.removeHandler(collect)
    if collect.messages:
        tensors[WARNINGS] = json_tensor(collect.messages)
    return tensors


def replay_warnings(stage: Stage, tensors: Mapping[str, torch.Tensor], *, hit: bool) -> dict:
    """An entry's tensors without its warnings; on a hit the warnings are logged again (the
    computing run logged them as they happened)."""
    tensors = dict(tensors)
    stored = tensors.pop(WARNINGS, None)
    if stored is not None and hit:
        for message in tensor_json(stored):
            logger.warning("%s (from the cached %s)", message, stage.name)
    return tensors


# --------------------------------------------------------------------------- a job's keys


class JobKeys:
    """The cache keys of one job, each computed on first use: when the cache is off, no file
    is digested and no video is probed. ``digest(path)`` is the store's memoised content
    digest; ``fact(digest, name, compute)`` a memoised value the bytes determine (the video's
    frame rate, so a job whose entries all hit never opens the video); ``fingerprints`` has
    ``dwpose``, ``image_encoder`` and ``vae``."""

    def __init__(
        self,
        case: TestCase,
        *,
        digest: Callable[[Path], str],
        fingerprints: Any,
        retarget: str,
        dtype: torch.dtype,
        device: torch.device,
        person: str = "auto",
        pose_platform: Callable[[], dict] = dict,
        model_platform: Callable[[], dict] = dict,
        fact: Callable[[str, str, Callable[[], Any]], Any] = lambda digest, name, compute: (
            compute()
        ),
    ):
        self.case = case
        # Read when the first key is made, so a worker's --threads is already in force.
        self._pose_platform = pose_platform
        self._model_platform = model_platform
        self._digest = digest
        self._fact = fact
        self._fingerprints = fingerprints
        self._retarget = retarget
        self._person = person
        self._dtype = str(dtype).removeprefix("torch.")
        self._device = device.type

    @cached_property
    def pose_platform(self) -> dict:
        """Where DWPose computes (and OpenCV warps and draws): keypoints and pose frames."""
        return self._pose_platform()

    @cached_property
    def model_platform(self) -> dict:
        """Where CLIP and the VAE compute."""
        return self._model_platform()

    def _input_digest(self, path: Path, what: str, hint: str) -> str:
        if not path.is_file():  # the error a user can act on, not the digest's OSError
            raise missing_file(path, what, hint)
        return self._digest(path)

    @cached_property
    def image_digest(self) -> str:
        image = Path(self.case.ref_image_path)
        return self._input_digest(
            image, "reference image", "Check the ref_image_path in your config."
        )

    @cached_property
    def video_digest(self) -> str:
        video = Path(self.case.ref_video_path)
        return self._input_digest(
            video, "driving video", "Check ref_video_path or the batch folder."
        )

    @cached_property
    def image_keypoints(self) -> StageKey:
        return image_keypoints_key(
            self.image_digest, self.case.resolution, self._fingerprints.dwpose, self.pose_platform
        )

    @cached_property
    def video_keypoints(self) -> StageKey:
        video = Path(self.case.ref_video_path)
        fps = self._fact(self.video_digest, "video.avg_fps", lambda: probe_video(video).avg_fps)
        stride = effective_stride(self.case.sample_stride, fps)
        return video_keypoints_key(
            self.video_digest, stride, self._fingerprints.dwpose, self.pose_platform
        )

    @cached_property
    def pose_frames(self) -> StageKey:
        return pose_frames_key(
            self.video_keypoints, self.image_keypoints, self._retarget, self._person
        )

    @cached_property
    def clip_embeddings(self) -> StageKey:
        return clip_embeddings_key(
            self.image_digest,
            self.case.resolution,
            self._fingerprints.image_encoder,
            self._dtype,
            self._device,
            self.model_platform,
        )

    @cached_property
    def vae_latents(self) -> StageKey:
        case = self.case
        return vae_latents_key(
            self.image_digest,
            case.resolution,
            self._fingerprints.vae,
            self._dtype,
            self._device,
            case.noise_aug_strength,
            case.seed,
            self._device,
            self.model_platform,
        )
