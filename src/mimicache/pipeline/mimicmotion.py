"""MimicMotionPipeline: (reference image, pose frames (N,3,H,W) in [-1,1]) -> video frames
(B,N,3,H,W) in [0,1], as the published pipeline, read top to bottom; precomputed
``image_embeddings``/``image_latents`` skip the encoders, never the random draws."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import PIL.Image
import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.models import AutoencoderKLTemporalDecoder
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPVisionModelWithProjection

from mimicache.pipeline.clip import clip_embeddings
from mimicache.pipeline.fast import (
    EXACT,
    FAST,
    BatchPlan,
    check_speed,
    decode_groups,
    kernel_choice,
    plan_batches,
)
from mimicache.pipeline.tiles import batched, tile_indices, tile_passes, tile_weights, unet_passes
from mimicache.pipeline.timing import StageTimer

if TYPE_CHECKING:  # pipeline.weights builds this pipeline; import the classes for hints only
    from mimicache.models.pose_net import PoseNet
    from mimicache.models.unet import MimicMotionUNet


@dataclass
class MimicMotionPipelineOutput(BaseOutput):
    frames: torch.Tensor | np.ndarray | list


class MimicMotionPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "image_encoder->pose_net->unet->vae"

    def __init__(
        self,
        vae: AutoencoderKLTemporalDecoder,
        image_encoder: CLIPVisionModelWithProjection,
        unet: MimicMotionUNet,
        scheduler,
        feature_extractor,
        pose_net: PoseNet,
    ):
        super().__init__()
        self.register_modules(
            vae=vae,
            image_encoder=image_encoder,
            unet=unet,
            scheduler=scheduler,
            feature_extractor=feature_extractor,
            pose_net=pose_net,
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    # -- stage 1: CLIP --------------------------------------------------------------------------
    @torch.no_grad()
    def encode_image(self, image, device: torch.device | str) -> torch.Tensor:
        """Reference image (PIL) -> CLIP ``image_embeds`` (1,D) in the encoder's dtype (a
        tensor is taken as already normalised for the encoder)."""
        if isinstance(image, torch.Tensor):
            dtype = next(self.image_encoder.parameters()).dtype
            return self.image_encoder(image.to(device=device, dtype=dtype)).image_embeds
        pixels = self.image_processor.numpy_to_pt(self.image_processor.pil_to_numpy(image))
        return clip_embeddings(self.image_encoder, self.feature_extractor, pixels, device)

    # -- stage 2: VAE ---------------------------------------------------------------------------
    def prepare_image(self, image, height: int, width: int, device) -> torch.Tensor:
        """Reference image -> (1,3,H,W) float32 in [-1,1] on ``device``."""
        return self.image_processor.preprocess(image, height=height, width=width).to(device)

    @staticmethod
    def make_generator(seed: int, device: torch.device | str) -> torch.Generator:
        """The generator of one call, seeded as the published script seeds it."""
        return torch.Generator(device=device).manual_seed(seed)

    def draw_augmentation_noise(
        self, height: int, width: int, generator, device: torch.device | str
    ) -> torch.Tensor:
        """The generator's FIRST draw: (1,3,H,W) float32 noise for the reference image. Every
        call makes it, whether or not the latent comes precomputed, so the draws that follow
        (the initial latents, the sampler's noise) never depend on a cache."""
        return randn_tensor((1, 3, height, width), generator=generator, device=device)

    def encode_reference_latent(
        self, image, height: int, width: int, noise_aug_strength: float, generator, device
    ) -> torch.Tensor:
        """(1,4,H/8,W/8): the VAE latent of the noise-augmented reference image, using the
        generator's first draw exactly as ``__call__`` does (a fresh ``make_generator(seed)``
        gives the latent of that seed's call)."""
        pixels = self.prepare_image(image, height, width, device)
        noise = self.draw_augmentation_noise(height, width, generator, device)
        return self.encode_vae_image(pixels + noise_aug_strength * noise, device)

    @torch.no_grad()
    def encode_vae_image(self, image: torch.Tensor, device) -> torch.Tensor:
        """Augmented image (1,3,H,W) -> latent distribution mode (1,4,H/8,W/8), unscaled."""
        needs_upcasting = self.vae.dtype == torch.float16 and self.vae.config.force_upcast
        if needs_upcasting:
            self.vae.to(dtype=torch.float32)
        try:
            image = image.to(device=device, dtype=self.vae.dtype)
            return self.vae.encode(image).latent_dist.mode()
        finally:
            if needs_upcasting:
                self.vae.to(dtype=torch.float16)

    # -- stage 3: pose --------------------------------------------------------------------------
    @torch.no_grad()
    def encode_pose(self, image_pose: torch.Tensor, device, chunk_size: int) -> torch.Tensor:
        """Pose frames (N,3,H,W) -> pose latents (N,C,H/8,W/8), each frame exactly once.

        Frames are float in [-1,1], or uint8 in [0,255] converted here per chunk with the
        published ``x / 127.5 - 1`` in float32, so the whole video never exists as floats.
        PoseNet is per-frame, so its output does not depend on which tile a frame is in; chunks
        only bound the activation memory.
        """
        dtype = next(self.pose_net.parameters()).dtype
        latents = []
        for start in range(0, image_pose.shape[0], max(1, chunk_size)):
            chunk = image_pose[start : start + chunk_size].to(device).contiguous()
            if chunk.dtype == torch.uint8:
                chunk = chunk.float() / 127.5 - 1
            latents.append(self.pose_net(chunk.to(dtype)))
        return torch.cat(latents)

    # -- stage 4: denoising ---------------------------------------------------------------------
    def added_time_ids(
        self, fps: int, motion_bucket_id: int, noise_aug_strength: float, dtype, device
    ) -> torch.Tensor:
        ids = [fps, motion_bucket_id, noise_aug_strength]
        expected = self.unet.add_embedding.linear_1.in_features
        if self.unet.config.addition_time_embed_dim * len(ids) != expected:
            raise ValueError(
                f"UNet expects an added time embedding of {expected} values; "
                "its addition_time_embed_dim does not fit the three SVD time ids"
            )
        return torch.tensor([ids], dtype=dtype, device=device)

    def prepare_latents(
        self,
        tile_size: int,
        num_frames: int,
        height: int,
        width: int,
        dtype,
        device,
        generator,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Initial noise (1,tile,4,h,w) — the second draw — repeated along frames and cut to N."""
        shape = (
            1,
            tile_size,
            self.unet.config.in_channels // 2,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        else:
            latents = latents.to(device)
        latents = latents * self.scheduler.init_noise_sigma
        return latents.repeat(1, num_frames // tile_size + 1, 1, 1, 1)[:, :num_frames]

    def _step_kwargs(self, generator) -> dict:
        params = set(inspect.signature(self.scheduler.step).parameters)
        return {"generator": generator} if "generator" in params else {}

    @torch.no_grad()
    def denoise(
        self,
        latents: torch.Tensor,
        image_latents: torch.Tensor,
        image_embeddings: torch.Tensor,
        pose_latents: torch.Tensor,
        added_time_ids: torch.Tensor,
        timesteps: torch.Tensor,
        guidance_scale: torch.Tensor | None,
        tiles: list[list[int]],
        generator=None,
        *,
        speed: str = EXACT,
        unet_batch: int = 1,
        on_step: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Tiled denoising over all timesteps; ``on_step(done, total)`` after each tile's
        conditional pass (total = steps x tiles).

        latents (1,N,4,h,w); image_latents (1,N,4,h,w); image_embeddings (1,1,D);
        pose_latents (N,C,h,w); guidance_scale (1,N,1,1,1) or None for no guidance passes.
        ``exact`` makes one UNet call per pass; ``fast`` puts ``unet_batch`` passes (a tile's
        guidance pair, then further tiles) into one call. Predictions are accumulated in the
        same order either way.
        """
        # One loop over steps and tiles: splitting it would scatter the order of the UNet
        # calls and the scheduler steps, which the published results depend on.
        if check_speed(speed) == EXACT and unet_batch != 1:
            raise ValueError(f"speed 'exact' makes one UNet pass per call, got {unet_batch=}")
        num_frames = latents.shape[1]
        guided = guidance_scale is not None
        weight = tile_weights(len(tiles[0]), device=latents.device)
        zero_latents = torch.zeros_like(image_latents) if guided else None
        zero_embeddings = torch.zeros_like(image_embeddings) if guided else None
        passes = tile_passes(tiles, guided)
        step_kwargs = self._step_kwargs(generator)
        total, done = len(timesteps) * len(tiles), 0
        with self.progress_bar(total=total) as progress:
            for t in timesteps:
                scaled = self.scheduler.scale_model_input(
                    torch.cat([latents] * 2) if guided else latents, t
                )
                cond_input = torch.cat([scaled[-1:], image_latents], dim=2)
                uncond_input = torch.cat([scaled[:1], zero_latents], dim=2) if guided else None
                cond_pred = torch.zeros_like(image_latents)
                uncond_pred = torch.zeros_like(image_latents) if guided else None
                count = image_latents.new_zeros((num_frames,))
                w = weight[:, None, None, None]
                for group in batched(passes, unet_batch):
                    preds = unet_passes(
                        self.unet,
                        group,
                        t,
                        inputs=(uncond_input, cond_input),
                        embeddings=(zero_embeddings, image_embeddings),
                        pose_latents=pose_latents,
                        added_time_ids=added_time_ids,
                        zero_pose=speed == FAST,
                    )
                    for unet_pass, pred in zip(group, preds):
                        idx = unet_pass.frames
                        if not unet_pass.conditional:
                            uncond_pred[:, idx] += pred * w
                            continue
                        cond_pred[:, idx] += pred * w
                        count[idx] += weight
                        progress.update()
                        done += 1
                        if on_step is not None:
                            on_step(done, total)
                cond_pred.div_(count[:, None, None, None])
                if guided:
                    uncond_pred.div_(count[:, None, None, None])
                    noise_pred = uncond_pred + guidance_scale * (cond_pred - uncond_pred)
                else:
                    noise_pred = cond_pred
                latents = self.scheduler.step(
                    noise_pred, t, latents, **step_kwargs, return_dict=False
                )[0]
        return latents

    # -- stage 5: decode ------------------------------------------------------------------------
    @torch.no_grad()
    def decode_latents(
        self,
        latents: torch.Tensor,
        decode_chunk_size: int = 8,
        *,
        speed: str = EXACT,
        decode_batch: int = 1,
    ) -> torch.Tensor:
        """Latents (B,N,4,h,w) -> frames (B,3,N,H,W) float32, roughly in [-1,1], on the CPU.

        Frames are decoded in chunks of ``decode_chunk_size``; the temporal decoder mixes the
        frames of a chunk, so a chunk's result depends on where chunks start. ``fast`` decodes
        ``decode_batch`` full chunks in one call as a batch of short videos (each still its own
        chunk); a shorter last chunk is decoded alone.
        """
        batch, num_frames = latents.shape[:2]
        latents = (1 / self.vae.config.scaling_factor) * latents.flatten(0, 1)
        takes_frames = "num_frames" in inspect.signature(self.vae.forward).parameters
        frames = []
        for group in decode_groups(latents.shape[0], decode_chunk_size, speed, decode_batch):
            kwargs = {"num_frames": group.chunk} if takes_frames else {}
            chunk = latents[group.start : group.stop].to(self.vae.dtype)
            frames.append(self.vae.decode(chunk, **kwargs).sample.cpu())
        video = torch.cat(frames).reshape(batch, num_frames, *frames[0].shape[1:])
        return video.permute(0, 2, 1, 3, 4).float()

    def postprocess_video(self, video: torch.Tensor, output_type: str = "pt"):
        """(B,3,N,H,W) in [-1,1] -> per-video frames in [0,1] (pt: (B,N,3,H,W))."""
        outputs = [
            self.image_processor.postprocess(v.permute(1, 0, 2, 3), output_type) for v in video
        ]
        if output_type == "pt":
            return torch.stack(outputs)
        if output_type == "np":
            return np.stack(outputs)
        return outputs

    # -- the whole call -------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        image: PIL.Image.Image | list | torch.Tensor | None,
        image_pose: torch.Tensor,
        height: int = 576,
        width: int = 1024,
        num_frames: int | None = None,
        tile_size: int = 16,
        tile_overlap: int = 4,
        num_inference_steps: int = 25,
        min_guidance_scale: float = 1.0,
        max_guidance_scale: float = 3.0,
        fps: int = 7,
        motion_bucket_id: int = 127,
        noise_aug_strength: float = 0.02,
        decode_chunk_size: int | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        device: str | torch.device | None = None,
        image_embeddings: torch.Tensor | None = None,
        image_latents: torch.Tensor | None = None,
        timings: dict[str, float] | None = None,
        speed: str = EXACT,
        batch_plan: BatchPlan | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> MimicMotionPipelineOutput | tuple:
        """The published pipeline call. Its arguments (``height``, ``width``, ``num_frames``,
        ``tile_size``, ``tile_overlap``, the guidance, ``decode_chunk_size``, ``generator``,
        ...) work as the published pipeline takes them; these differ or are added:

        Args:
            image: the reference image (PIL); None when ``image_embeddings`` and
                ``image_latents`` are both given (precomputed, e.g. by the feature cache).
            image_pose: the pose frames (1+F,3,H,W) in [-1, 1], frame 0 the reference pose.
            timings: receives seconds per stage (clip, vae_encode, pose_net, denoise, decode).
            speed: "exact" (the published computation) or "fast" (batched calls, faster
                kernels; float rounding differs).
            batch_plan: fast's batch sizes (default: planned from the free memory).
            on_step: ``on_step(done, total)`` after each UNet pass (see ``denoise``).

        Returns:
            The frames, (1,1+F,3,H,W) in [0, 1] for "pt", in a ``MimicMotionPipelineOutput``
            (a tuple when ``return_dict`` is False).
        """
        # Long on purpose: the published call read top to bottom in numbered steps, as a
        # diffusers pipeline's __call__ is; each step's work is a method of its own.
        check_speed(speed)
        device = torch.device(device) if device is not None else self._execution_device
        num_frames = num_frames if num_frames is not None else image_pose.shape[0]
        decode_chunk_size = decode_chunk_size or num_frames
        if height % 8 or width % 8:
            raise ValueError(f"height and width must be divisible by 8, got {height} and {width}")
        if image is None and (image_embeddings is None or image_latents is None):
            raise ValueError("pass the reference image, or both image_embeddings and image_latents")
        if image_pose.shape[0] != num_frames:
            raise ValueError(
                f"image_pose holds {image_pose.shape[0]} frames but num_frames is {num_frames}"
            )
        guided = max(min_guidance_scale, max_guidance_scale) > 1.0

        # 1. CLIP embedding (1,1,D)
        if image_embeddings is None:
            with StageTimer(timings, "clip", device):
                image_embeddings = self.encode_image(image, device)
        image_embeddings = image_embeddings.to(device).reshape(1, 1, -1)
        dtype = image_embeddings.dtype

        # 2. VAE latent of the noise-augmented image; the noise is the generator's first draw
        if image_latents is None:
            with StageTimer(timings, "vae_encode", device):
                image_latents = self.encode_reference_latent(
                    image, height, width, noise_aug_strength, generator, device
                )
        else:
            self.draw_augmentation_noise(height, width, generator, device)
        image_latents = image_latents.to(device=device, dtype=dtype)
        image_latents = image_latents.unsqueeze(1).repeat(1, num_frames, 1, 1, 1)

        # 3. pose latents, once per frame for the whole call
        tile_size = min(tile_size, num_frames)
        with StageTimer(timings, "pose_net", device):
            pose_latents = self.encode_pose(image_pose, device, chunk_size=tile_size)

        # 4. conditioning, timesteps, initial noise (the generator's second draw)
        added_time_ids = self.added_time_ids(
            fps - 1, motion_bucket_id, noise_aug_strength, dtype, device
        )
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        latents = self.prepare_latents(
            tile_size, num_frames, height, width, dtype, device, generator, latents
        )
        guidance = None
        if guided:
            guidance = torch.linspace(min_guidance_scale, max_guidance_scale, num_frames)
            guidance = guidance.to(device, latents.dtype)[None, :, None, None, None]

        # 5. tiled denoising
        tiles = tile_indices(num_frames, tile_size, tile_overlap)
        if batch_plan is None:
            batch_plan = plan_batches(
                speed,
                device,
                dtype,
                tiles,
                latents.shape,
                self.vae_scale_factor,
                decode_chunk_size,
                guided,
            )
        with StageTimer(timings, "denoise", device), kernel_choice(speed, device):
            latents = self.denoise(
                latents,
                image_latents,
                image_embeddings,
                pose_latents,
                added_time_ids,
                timesteps,
                guidance,
                tiles,
                generator=generator,
                speed=speed,
                unet_batch=batch_plan.unet_batch,
                on_step=on_step,
            )

        # 6. decode
        if output_type == "latent":
            frames = latents
        else:
            with StageTimer(timings, "decode", device), kernel_choice(speed, device):
                video = self.decode_latents(
                    latents, decode_chunk_size, speed=speed, decode_batch=batch_plan.decode_batch
                )
                frames = self.postprocess_video(video, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (frames,)
        return MimicMotionPipelineOutput(frames=frames)
