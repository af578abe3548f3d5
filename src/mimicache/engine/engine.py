"""MimicMotion: models loaded once, ``generate(case)`` runs the cached stages and the pipeline.

A job's frames are (F,H,W,3) uint8 with the reference frame dropped, exactly what the
published script writes. Each stage goes through the feature cache when one is given; with
or without it the same code computes each value, so a hit never changes a result.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

from mimicache.cache import FeatureStore
from mimicache.config import DEFAULT_PERSON, InferenceConfig, TestCase, person_choice
from mimicache.engine.fingerprints import ModelFingerprints
from mimicache.engine.loaded import (
    LoadedModels,
    load_models,
    load_pose_models,
    load_scoring_models,
)
from mimicache.engine.progress import ProgressLog
from mimicache.engine.record import (
    GenerationResult,
    JobRecord,
    ProgressEvent,
    ProgressObserver,
    published_reference_image,
)
from mimicache.engine.scoring import score_job
from mimicache.engine.settings import EngineSettings
from mimicache.engine.speed import BatchPlanner
from mimicache.engine.stage_runner import StageRunner
from mimicache.engine.stages import (
    CACHED_STAGES,
    CLIP_EMBEDDINGS_STAGE,
    POSE_FRAMES,
    VAE_LATENTS_STAGE,
    JobKeys,
    replay_warnings,
)
from mimicache.pipeline import StageTimer
from mimicache.pipeline.clip import ImageEncoder
from mimicache.pose.preprocess import (
    DrawnPose,
    ReferenceImage,
    log_people,
    pose_steps,
    to_model_pixels,
)
from mimicache.pose.retarget import PUBLISHED, check_mode

logger = logging.getLogger(__name__)

# The published script passes fps=7 to the pipeline whatever the config says; the config's fps
# only sets the written video's frame rate.
PIPELINE_FPS = 7


class MimicMotion(StageRunner):
    """The loaded models plus an optional feature cache; ``generate()`` runs one job.

    Build one with ``from_config`` (or ``for_pose``: DWPose alone, for the pose stages and
    previews), or from ``LoadedModels`` and ``EngineSettings`` (a variant on loaded models)."""

    def __init__(
        self,
        models: LoadedModels,
        settings: EngineSettings | None = None,
        *,
        cache: FeatureStore | None = None,
        observer: ProgressObserver | None = None,
    ):
        """``settings`` None: the published defaults. ``observer`` receives each job's
        ``ProgressEvent``s (``engine.record``)."""
        settings = settings or EngineSettings()
        self.models = models
        self.settings = settings.replace(
            pose_retarget=check_mode(settings.pose_retarget or PUBLISHED),
            person=person_choice(settings.person or DEFAULT_PERSON),
        )
        self.cache = cache
        self.observer = observer
        self.fingerprints = ModelFingerprints(models.dwpose, models.base_files, lambda: self.cache)
        self.batch_planner = BatchPlanner(
            models.pipeline, settings.speed_options, models.device, models.dtype
        )

    # What the engine has loaded and how it computes, by name.
    pipeline = property(lambda self: self.models.pipeline)

    @property
    def image_encoder(self) -> ImageEncoder | None:
        """CLIP as SVD uses it: the pipeline's, or one loaded alone to score clips."""
        if self.models.encoder is not None:
            return self.models.encoder
        pipe = self.models.pipeline
        return None if pipe is None else ImageEncoder(pipe.image_encoder, pipe.feature_extractor)

    dwpose = property(lambda self: self.models.dwpose)
    base_files = property(lambda self: self.models.base_files)
    ckpt_path = property(lambda self: self.models.ckpt_path)
    device = property(lambda self: self.models.device)
    dtype = property(lambda self: self.models.dtype)
    pose_retarget = property(lambda self: self.settings.pose_retarget)
    person = property(lambda self: self.settings.person)
    speed = property(lambda self: self.settings.speed_options)
    cache_pipeline_features = property(lambda self: self.settings.cache_pipeline_features)

    @classmethod
    def from_config(
        cls,
        config: InferenceConfig,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        cache: FeatureStore | None = None,
        settings: EngineSettings | None = None,
        observer: ProgressObserver | None = None,
        **options: Any,
    ) -> MimicMotion:
        """Load the models of ``config`` and return the engine.

        Args:
            config: the inference config (base model, checkpoint, DWPose files, pose keys).
            device: where the models run (default: CUDA when available, else the CPU).
            dtype: the models' dtype (default: float16 on CUDA, float32 elsewhere).
            cache: the feature store the stages read and write (None: no cache).
            settings: how the engine computes (``EngineSettings``); or give its fields as
                keywords instead (``speed="fast"``, ``pose_retarget="graft"``, ...:
                ``EngineSettings.of``). Pose settings left None come from the config.
            observer: receives each job's progress events.

        Returns:
            The engine, its models prepared for the speed options once (offload hooks,
            channels-last, compilation).

        Raises:
            ModelLoadError: a model file is missing or does not match the model.
            ConfigError: an option has a value the engine does not know.
        """
        settings = _settings(settings, options)
        models, settings = load_models(config, settings, device, dtype)
        return cls(models, settings, cache=cache, observer=observer)

    @classmethod
    def for_pose(
        cls,
        config: InferenceConfig,
        *,
        device: str | torch.device | None = None,
        cache: FeatureStore | None = None,
        settings: EngineSettings | None = None,
        **options: Any,
    ) -> MimicMotion:
        """DWPose only (no SVD or MimicMotion weights are read): ``prepare_pose`` and
        ``pose_preview`` share the cache entries of ``generate`` (with the same DWPose device,
        e.g. a CPU stage filling the cache ahead of the generation); ``generate`` refuses.

        Args and Raises as ``from_config`` (only the pose settings matter here).
        """
        models, settings = load_pose_models(config, _settings(settings, options), device)
        return cls(models, settings, cache=cache)

    @classmethod
    def for_scoring(
        cls,
        config: InferenceConfig,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        cache: FeatureStore | None = None,
        settings: EngineSettings | None = None,
        **options: Any,
    ) -> MimicMotion:
        """DWPose and SVD's CLIP image encoder alone, to score clips written before
        (``engine.scoring.score_written``) with the cache entries ``generate`` uses; no UNet,
        VAE or checkpoint is read and ``generate`` refuses. Args and Raises as ``from_config``.
        """
        models, settings = load_scoring_models(config, _settings(settings, options), device, dtype)
        return cls(models, settings, cache=cache)

    # -- one job --------------------------------------------------------------------------------
    def generate(
        self,
        case: TestCase,
        *,
        progress: bool = True,
        label: str | None = None,
        observer: ProgressObserver | None = None,
    ) -> GenerationResult:
        """Generate one job's video.

        Args:
            case: the test case: reference image, driving video and generation values.
            progress: labelled bars on a terminal, one log line per stage when stderr is not
                a terminal; False: neither.
            label: the bars' and lines' label (default: the video's name).
            observer: this job's progress events (default: the engine's observer).

        Returns:
            The ``GenerationResult``: ``frames`` (F,H,W,3) uint8 with the reference frame
            dropped, ``timings`` per stage, ``cache_events``, who was seen (``people``),
            ``platform`` and the poses drawn (``targets``).

        Raises:
            InputError: an input cannot be used (missing, corrupt, no person).
            RuntimeError: the engine holds no pipeline (``for_pose``, ``for_scoring``).
        """
        tell = observer or self.observer or _ignore
        record = JobRecord(self.device)
        label = label or Path(case.ref_video_path).stem
        bars = progress and _stderr_is_terminal()
        if progress and not bars:  # a log file, CI, Slurm: plain lines instead of bars
            tell = ProgressLog(then=tell)
        if self.pipeline is None:
            raise RuntimeError(
                "this MimicMotion holds no pipeline (MimicMotion.for_pose or for_scoring); "
                "load it with MimicMotion.from_config to generate videos"
            )
        self.pipeline.set_progress_bar_config(
            disable=not bars, desc=f"{label}: denoise", leave=False
        )
        start = time.perf_counter()
        tell(ProgressEvent(label, "preprocess"))
        keys = self.keys(case)
        with record.time("preprocess"):
            # 1-4. both keypoint sets, the drawn pose frames (the image read only on a miss)
            pose_frames, image = self.prepare_pose(
                case, record, keys=keys, progress=bars, label=label
            )
        with record.time("pipeline"):
            # 5-6. the reference image's CLIP embedding and VAE latent
            embeddings, latent = self.reference_features(case, image, record, keys=keys)
            # 7. tiled denoising and decoding
            frames = self.run_pipeline(
                case, pose_frames, embeddings, latent, record, on_step=tell, label=label
            )
        # 8. the clip's scores against the poses it was asked for (a failure only warns)
        score = score_job(self, case, frames, record, label, embeddings)
        if self.cache is not None:
            self.cache.flush()  # the job's hits, in one transaction, now that it is done
        record.timings["total"] = time.perf_counter() - start
        tell(ProgressEvent(label, "done"))
        if progress:
            record.log_cache(label)
        if progress and not bars:
            record.log_stages(label)
        return GenerationResult(
            frames,
            case.fps,
            record.timings,
            record.events,
            record.people,
            self.platform(),
            record.targets,
            score,
        )

    def prepare_pose(
        self,
        case: TestCase,
        record: JobRecord,
        *,
        keys: JobKeys | None = None,
        progress: bool = True,
        label: str | None = None,
    ) -> tuple[torch.Tensor, ReferenceImage]:
        """The pose stages: pose frames (1+F,3,H,W) uint8 and the fitted reference image.

        ``record.people`` gets who was seen in the video and who drives the pose,
        ``record.targets`` the poses drawn. When the drawn frames are cached (with both),
        nothing else is read: no keypoints."""
        keys = keys or self.keys(case)
        image = ReferenceImage(Path(case.ref_image_path), case.resolution)
        looked: dict[str, float] = {}  # a look-up that missed: counted once the steps ran
        drawn = self._cached_drawing(keys, Path(case.ref_video_path), record, looked)
        if drawn is None:
            # Steps 1-4 of generate(), in pose_steps' order; each cached one through run_stage.
            pose = pose_steps(
                case.ref_video_path,
                case.ref_image_path,
                case.resolution,
                case.sample_stride,
                self.dwpose,
                retarget=self.pose_retarget,
                person=self.person,
                progress=progress,
                desc=f"{label}: DWPose" if label else "DWPose",
                run_step=lambda step, compute, subject: self.run_stage(
                    CACHED_STAGES[step], lambda: getattr(keys, step), compute, subject, record
                ),
            )
            drawn, image = DrawnPose(pose.frames, pose.people, pose.targets), pose.image
        for name, seconds in looked.items():  # after the steps, so timings keep the run order
            record.timings[name] = record.timings.get(name, 0.0) + seconds
        record.people, record.targets = drawn.people, drawn.targets
        # uint8 (1+F,3,H,W) view: the pipeline converts per chunk, no float copy of the video
        return torch.from_numpy(drawn.frames).permute(0, 3, 1, 2), image

    def _cached_drawing(
        self, keys: JobKeys, video: Path, record: JobRecord, looked: dict[str, float]
    ) -> DrawnPose | None:
        """The drawn pose frames and who drives them when the cache holds both (a full hit needs
        no keypoint stage); else None, the steps run, and ``looked`` holds this look-up's time."""
        stage = CACHED_STAGES[POSE_FRAMES]
        if not self.uses_cache(stage) or not self.cache.mode.reads:
            return None
        with record.time("digest"):
            key = keys.pose_frames
        with StageTimer(looked, stage.name, self.device):
            found = self.cache.get(stage.name, key, subject=str(video))
        if found is None:
            return None
        with record.time("unpack"):
            drawn = stage.decode(found[0])
        if drawn.people is None:  # an entry without the report: the steps make it
            return None
        record.timings[stage.name] = looked.pop(stage.name)
        replay_warnings(stage, found[0], hit=True)
        log_people(drawn.people, video)
        record.events.append(found[1])
        return drawn

    def reference_features(
        self,
        case: TestCase,
        image: ReferenceImage,
        record: JobRecord,
        *,
        keys: JobKeys | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference image's CLIP embedding (1,D) and VAE latent (1,4,H/8,W/8), through the
        cache unless pipeline features are not cached; the image is read only on a miss."""
        keys = keys or self.keys(case)
        pipe, device = self.pipeline, self.device
        reference = functools.cache(lambda: published_reference(image))
        # 5. CLIP embedding                                          [clip_embeddings]
        embeddings = self.reference_embedding(case, image, record, keys=keys, reference=reference)
        image_path = Path(case.ref_image_path)
        # 6. VAE latent of the augmented image, from the seed's own first draw [vae_latents]
        latent = self.run_stage(
            VAE_LATENTS_STAGE,
            lambda: keys.vae_latents,
            lambda: pipe.encode_reference_latent(
                reference(),
                *image.size,
                case.noise_aug_strength,
                pipe.make_generator(case.seed, device),
                device,
            ),
            image_path,
            record,
        )
        return embeddings, latent

    def reference_embedding(
        self,
        case: TestCase,
        image: ReferenceImage,
        record: JobRecord,
        *,
        keys: JobKeys | None = None,
        reference: Callable[[], PIL.Image.Image] | None = None,
    ) -> torch.Tensor:
        """The reference image's CLIP embedding (1,D) [clip_embeddings]; ``reference`` gives
        the published reference image when the caller makes it anyway."""
        keys = keys or self.keys(case)
        encoder, make = self.image_encoder, reference or (lambda: published_reference(image))
        return self.run_stage(
            CLIP_EMBEDDINGS_STAGE,
            lambda: keys.clip_embeddings,
            lambda: encoder.encode_image(make(), self.device),
            Path(case.ref_image_path),
            record,
        )

    def run_pipeline(
        self,
        case: TestCase,
        pose_frames: torch.Tensor,
        embeddings: torch.Tensor,
        latent: torch.Tensor,
        record: JobRecord,
        *,
        on_step: ProgressObserver | None = None,
        label: str = "",
    ) -> np.ndarray:
        """Denoise and decode: (F,H,W,3) uint8 frames, the reference frame dropped."""
        pipe, device = self.pipeline, self.device
        height, width = pose_frames.shape[-2:]
        options = self.speed
        output = pipe(
            image=None,  # its embedding and latent are given
            image_pose=pose_frames,
            height=height,
            width=width,
            num_frames=pose_frames.shape[0],
            tile_size=case.tile_size,
            tile_overlap=case.frames_overlap,
            num_inference_steps=case.num_inference_steps,
            min_guidance_scale=case.guidance_scale,
            max_guidance_scale=case.guidance_scale,
            fps=PIPELINE_FPS,
            noise_aug_strength=case.noise_aug_strength,
            decode_chunk_size=options.decode_chunk_size,
            generator=pipe.make_generator(case.seed, device),
            output_type="pt",
            device=device,
            image_embeddings=embeddings,
            image_latents=latent,
            timings=record.timings,
            speed=options.speed,
            batch_plan=self.batch_planner.plan(case, pose_frames.shape),
            on_step=lambda done, total: (on_step or _ignore)(
                ProgressEvent(label, "denoise", done, total)
            ),
        )
        video = (output.frames.cpu() * 255.0).to(torch.uint8)
        return video[0, 1:].permute(0, 2, 3, 1).numpy()


def published_reference(image: ReferenceImage) -> PIL.Image.Image:
    """The reference image as the published script hands it to the pipeline."""
    return published_reference_image(to_model_pixels(image.pixels[None]))


def _settings(settings: EngineSettings | None, options: dict[str, Any]) -> EngineSettings:
    if settings is not None and options:
        raise TypeError(f"give settings or its fields as keywords, not both: {sorted(options)}")
    return settings if settings is not None else EngineSettings.of(**options)


def _ignore(event: ProgressEvent) -> None:
    """No one follows this job's progress."""


def _stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())
