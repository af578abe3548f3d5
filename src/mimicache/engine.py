"""MimicMotion: models loaded once, ``generate(case)`` runs the cached stages and the pipeline.

A job's frames are (F,H,W,3) uint8 with the reference frame dropped, exactly what the
published script writes. Each stage goes through the feature cache when one is given; with
or without it the same code computes each value, so a hit never changes a result.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import zstandard

from mimicache.cache import stages
from mimicache.cache.keys import file_digest, fingerprint_files
from mimicache.cache.store import CacheEvent, FeatureStore, StageKey
from mimicache.config import InferenceConfig, TestCase
from mimicache.errors import InputError
from mimicache.media import effective_stride, fit_image, probe_video, read_image
from mimicache.pipeline import MimicMotionPipeline, stage_timer
from mimicache.pipeline.loading import BaseModelFiles, load_pipeline, resolve_base_model
from mimicache.pipeline.schedulers import SchedulerOptions
from mimicache.pose import DWPose, PoseSequence, VideoPoses
from mimicache.pose.preprocess import (
    extract_image_pose,
    extract_video_poses,
    render_pose_frames,
    to_model_pixels,
)
from mimicache.pose.retarget import GRAFT, PUBLISHED, check_graft_reference, check_mode

logger = logging.getLogger(__name__)

# The published script passes fps=7 to the pipeline whatever the config says; the config's fps
# only sets the written video's frame rate.
PIPELINE_FPS = 7
DECODE_CHUNK_SIZE = 8


@dataclass
class GenerationResult:
    frames: np.ndarray  # (F,H,W,3) uint8 RGB, reference frame dropped
    fps: int
    timings: dict[str, float]
    cache_events: list[CacheEvent] = field(default_factory=list)


def published_reference_image(image_pixels: torch.Tensor) -> PIL.Image.Image:
    """(1,3,H,W) in [-1,1] -> the PIL image the published script hands to the pipeline.

    It converts back with ``((x + 1) * 127.5).to(uint8)``, which truncates and so lowers about a
    quarter of the 256 levels by one; CLIP and the VAE see that image, so we do the same.
    """
    restored = ((image_pixels[0] + 1.0) * 127.5).to(torch.uint8)
    return PIL.Image.fromarray(restored.permute(1, 2, 0).numpy())


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class MimicMotion:
    """The loaded models plus an optional feature cache; generate() runs one job."""

    def __init__(
        self,
        pipeline: MimicMotionPipeline,
        dwpose: DWPose,
        *,
        base_files: BaseModelFiles,
        ckpt_path: Path,
        device: torch.device,
        dtype: torch.dtype,
        cache: FeatureStore | None = None,
        cache_pipeline_features: bool = True,
        pose_retarget: str = PUBLISHED,
    ):
        self.pipeline = pipeline
        self.dwpose = dwpose
        self.base_files = base_files
        self.ckpt_path = Path(ckpt_path)
        self.device = device
        self.dtype = dtype
        self.cache = cache
        self.cache_pipeline_features = cache_pipeline_features
        self.pose_retarget = check_mode(pose_retarget)
        self._fingerprints: dict[str, str] = {}

    @classmethod
    def from_config(
        cls,
        config: InferenceConfig,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        cache: FeatureStore | None = None,
        cache_pipeline_features: bool = True,
        scheduler: SchedulerOptions | None = None,
        pose_retarget: str | None = None,
    ) -> MimicMotion:
        """``pose_retarget`` None: the config's ``pose.retarget``, else "published"."""
        pose_retarget = pose_retarget or config.pose_retarget or PUBLISHED
        check_mode(pose_retarget)
        device = torch.device(device) if device is not None else default_device()
        if dtype is None:
            dtype = torch.float16 if device.type == "cuda" else torch.float32
        # DWPose first: a missing ONNX file should fail before minutes of checkpoint loading.
        dwpose = DWPose(
            config.dwpose_det_path, config.dwpose_pose_path, device=_dwpose_device(device)
        )
        base_files = resolve_base_model(config.base_model_path)
        pipeline = load_pipeline(
            base_files.root, config.ckpt_path, dtype=dtype, device=device, scheduler=scheduler
        )
        return cls(
            pipeline,
            dwpose,
            base_files=base_files,
            ckpt_path=config.ckpt_path,
            device=device,
            dtype=dtype,
            cache=cache,
            cache_pipeline_features=cache_pipeline_features,
            pose_retarget=pose_retarget,
        )

    @property
    def model_files(self) -> dict[str, str]:
        return {
            "base_model": str(self.base_files.root),
            "checkpoint": str(self.ckpt_path),
            "vae": self.base_files.vae_weights.name,
            "image_encoder": self.base_files.image_encoder_weights.name,
            "dwpose_det": str(self.dwpose.det_model_path),
            "dwpose_pose": str(self.dwpose.pose_model_path),
        }

    # -- keys -----------------------------------------------------------------------------------
    def _caching(self) -> bool:
        return self.cache is not None and self.cache.enabled

    def _digest(self, path: Path) -> str:
        return file_digest(path, memo=self.cache.memo)

    def _fingerprint(self, name: str) -> str:
        if name not in self._fingerprints:
            memo = self.cache.memo if self.cache is not None else None
            if name == "dwpose":
                value = fingerprint_files(
                    {"det": self.dwpose.det_model_path, "pose": self.dwpose.pose_model_path},
                    extra={"settings": self.dwpose.settings, "providers": self.dwpose.providers},
                    memo=memo,
                )
            elif name == "image_encoder":
                root = self.base_files.root
                value = fingerprint_files(
                    {
                        "weights": self.base_files.image_encoder_weights,
                        "config": root / "image_encoder" / "config.json",
                        "preprocessor": root / "feature_extractor" / "preprocessor_config.json",
                    },
                    memo=memo,
                )
            else:
                value = fingerprint_files(
                    {
                        "weights": self.base_files.vae_weights,
                        "config": self.base_files.root / "vae" / "config.json",
                    },
                    memo=memo,
                )
            self._fingerprints[name] = value
        return self._fingerprints[name]

    def _stage(
        self,
        stage: str,
        key: Callable[[], StageKey],
        compute: Callable[[], Mapping[str, torch.Tensor]],
        subject: Path,
        timings: dict[str, float],
        events: list[CacheEvent],
        *,
        enabled: bool = True,
    ) -> Mapping[str, torch.Tensor]:
        """One stage through the cache (when on), timed under the stage's name either way."""
        with stage_timer(timings, stage, self.device):
            if not (enabled and self._caching()):
                return compute()
            tensors, event = self.cache.get_or_compute(stage, key(), compute, subject=str(subject))
        events.append(event)
        return tensors

    # -- one job --------------------------------------------------------------------------------
    def generate(
        self, case: TestCase, *, progress: bool = True, label: str | None = None
    ) -> GenerationResult:
        """One job. ``progress``: labelled bars (``label``, default the video's name) on a
        terminal, one log line per stage when stderr is not a terminal; False: neither."""
        timings: dict[str, float] = {}
        events: list[CacheEvent] = []
        label = label or Path(case.ref_video_path).stem
        bars = progress and _stderr_is_terminal()
        self.pipeline.set_progress_bar_config(
            disable=not bars, desc=f"{label}: denoise", leave=False
        )
        start = time.perf_counter()
        with stage_timer(timings, "preprocess"):
            pose_pixels, image_pixels = self.prepare_pose(
                case, timings, events, progress=bars, label=label
            )
        with stage_timer(timings, "pipeline"):
            reference, embeddings, latent = self.reference_features(
                case, image_pixels, timings, events
            )
            frames = self._run_pipeline(case, pose_pixels, reference, embeddings, latent, timings)
        timings["total"] = time.perf_counter() - start
        if progress and not bars:
            for stage, seconds in timings.items():
                logger.info("%s: %s %.2f s", label, stage, seconds)
        return GenerationResult(frames, case.fps, timings, events)

    def prepare_pose(
        self,
        case: TestCase,
        timings: dict[str, float],
        events: list[CacheEvent],
        *,
        progress: bool = True,
        label: str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The pose stages: pose frames (1+F,3,H,W) uint8 and image_pixels (1,3,H,W) in [-1,1]."""
        video_path = Path(case.ref_video_path)
        image_path = Path(case.ref_image_path)
        image = fit_image(read_image(image_path), case.resolution)
        height, width = image.shape[:2]
        if self._caching():
            with stage_timer(timings, "digest"):
                image_digest = self._digest(image_path)
                video_digest = self._digest(_existing(video_path, "driving video"))
                stride = effective_stride(case.sample_stride, probe_video(video_path).avg_fps)
            detector = self._fingerprint("dwpose")
            image_key = stages.image_keypoints_key(image_digest, case.resolution, detector)
            video_key = stages.video_keypoints_key(video_digest, stride, detector)

        ref_pose = PoseSequence.from_tensors(
            self._stage(
                stages.IMAGE_KEYPOINTS,
                lambda: image_key,
                lambda: PoseSequence(
                    [extract_image_pose(image, self.dwpose, image_path=image_path)]
                ).to_tensors(),
                image_path,
                timings,
                events,
            )
        )[0]
        retarget = self.pose_retarget
        if retarget == GRAFT:  # before DWPose runs on the whole video
            check_graft_reference(ref_pose, image_path=image_path)
        video = VideoPoses.from_tensors(
            self._stage(
                stages.VIDEO_KEYPOINTS,
                lambda: video_key,
                lambda: extract_video_poses(
                    video_path,
                    case.sample_stride,
                    self.dwpose,
                    progress=progress,
                    desc=f"{label}: DWPose" if label else "DWPose",
                ).to_tensors(),
                video_path,
                timings,
                events,
            )
        )

        def draw() -> np.ndarray:
            return render_pose_frames(
                ref_pose,
                video,
                height,
                width,
                video_path=video_path,
                image_path=image_path,
                retarget=retarget,
            )

        if self._caching():
            # Drawing is slow even from cached keypoints; the drawn frames are kept compressed.
            packed = self._stage(
                stages.POSE_FRAMES,
                lambda: stages.pose_frames_key(video_key, image_key, retarget),
                lambda: pack_frames(draw()),
                video_path,
                timings,
                events,
            )
            with stage_timer(timings, "unpack"):
                drawn = unpack_frames(packed)
        else:
            with stage_timer(timings, stages.POSE_FRAMES):
                drawn = draw()
        # uint8 (1+F,3,H,W) view: the pipeline converts per chunk, no float copy of the video
        pose_frames = torch.from_numpy(drawn).permute(0, 3, 1, 2)
        return pose_frames, to_model_pixels(image[None])

    def reference_features(
        self,
        case: TestCase,
        image_pixels: torch.Tensor,
        timings: dict[str, float],
        events: list[CacheEvent],
    ) -> tuple[PIL.Image.Image, torch.Tensor, torch.Tensor]:
        """The reference image as the pipeline sees it, its CLIP embedding (1,D) and its VAE
        latent (1,4,H/8,W/8), through the cache unless pipeline features are not cached."""
        pipe = self.pipeline
        device = self.device
        height, width = image_pixels.shape[-2:]
        reference = published_reference_image(image_pixels)
        image_path = Path(case.ref_image_path)
        dtype_name = str(self.dtype).removeprefix("torch.")
        cache_features = self.cache_pipeline_features
        if self._caching() and cache_features:
            image_digest = self._digest(image_path)

        def clip() -> dict[str, torch.Tensor]:
            return {"image_embeds": pipe.encode_image(reference, device)}

        def vae() -> dict[str, torch.Tensor]:
            # The same first draw the pipeline makes, so a cached latent matches a fresh one.
            generator = torch.Generator(device=device).manual_seed(case.seed)
            pixels = pipe.prepare_image(reference, height, width, device)
            noise = pipe.draw_augmentation_noise(pixels.shape, generator, device, pixels.dtype)
            return {
                "latent": pipe.encode_vae_image(pixels + case.noise_aug_strength * noise, device)
            }

        embeddings = self._stage(
            stages.CLIP_EMBEDDINGS,
            lambda: stages.clip_embeddings_key(
                image_digest,
                case.resolution,
                self._fingerprint("image_encoder"),
                dtype_name,
                device.type,
            ),
            clip,
            image_path,
            timings,
            events,
            enabled=cache_features,
        )["image_embeds"]
        latent = self._stage(
            stages.VAE_LATENTS,
            lambda: stages.vae_latents_key(
                image_digest,
                case.resolution,
                self._fingerprint("vae"),
                dtype_name,
                device.type,
                case.noise_aug_strength,
                case.seed,
                device.type,
            ),
            vae,
            image_path,
            timings,
            events,
            enabled=cache_features,
        )["latent"]

        return reference, embeddings, latent

    def _run_pipeline(
        self,
        case: TestCase,
        pose_pixels: torch.Tensor,
        reference: PIL.Image.Image,
        embeddings: torch.Tensor,
        latent: torch.Tensor,
        timings: dict[str, float],
    ) -> np.ndarray:
        pipe = self.pipeline
        device = self.device
        height, width = pose_pixels.shape[-2:]
        generator = torch.Generator(device=device).manual_seed(case.seed)
        output = pipe(
            reference,
            image_pose=pose_pixels,
            height=height,
            width=width,
            num_frames=pose_pixels.shape[0],
            tile_size=case.num_frames,
            tile_overlap=case.frames_overlap,
            num_inference_steps=case.num_inference_steps,
            min_guidance_scale=case.guidance_scale,
            max_guidance_scale=case.guidance_scale,
            fps=PIPELINE_FPS,
            noise_aug_strength=case.noise_aug_strength,
            decode_chunk_size=DECODE_CHUNK_SIZE,
            generator=generator,
            output_type="pt",
            device=device,
            image_embeddings=embeddings,
            image_latents=latent,
            timings=timings,
        )
        video = (output.frames.cpu() * 255.0).to(torch.uint8)
        return video[0, 1:].permute(0, 2, 3, 1).numpy()


def pack_frames(frames: np.ndarray) -> dict[str, torch.Tensor]:
    """uint8 frames -> zstd bytes + shape. Drawn poses are mostly black, so they shrink ~50x
    and decompress far faster than they draw."""
    frames = np.ascontiguousarray(frames)
    packed = zstandard.ZstdCompressor(level=3, threads=-1).compress(frames.tobytes())
    return {
        "zstd": torch.frombuffer(bytearray(packed), dtype=torch.uint8),
        "shape": torch.tensor(frames.shape, dtype=torch.int64),
    }


def unpack_frames(tensors: Mapping[str, torch.Tensor]) -> np.ndarray:
    shape = tuple(int(x) for x in tensors["shape"].tolist())
    frames = np.empty(shape, dtype=np.uint8)
    view = memoryview(frames).cast("B")
    filled = 0
    with zstandard.ZstdDecompressor().stream_reader(tensors["zstd"].numpy().tobytes()) as reader:
        while filled < frames.nbytes and (count := reader.readinto(view[filled:])):
            filled += count
    if filled != frames.nbytes:
        raise ValueError(f"pose frames entry holds {filled} bytes, expected {frames.nbytes}")
    return frames


def _dwpose_device(device: torch.device) -> str:
    """CUDA for DWPose when ONNX Runtime can use it; otherwise the CPU, said once."""
    if device.type != "cuda":
        return "cpu"
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return f"cuda:{device.index}" if device.index is not None else "cuda"
    logger.warning(
        "DWPose runs on the CPU: this onnxruntime has no CUDA provider "
        "(pip uninstall onnxruntime && pip install onnxruntime-gpu)"
    )
    return "cpu"


def _stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise InputError(f"{what} {path} not found; check ref_video_path or --batch_folder")
    return path
