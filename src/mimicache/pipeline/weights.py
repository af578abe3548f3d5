"""Strict loading of the SVD base folder and the MimicMotion checkpoint into a pipeline.

A base model is a local diffusers folder, a hub id or ``hf://OWNER/REPO[@REVISION]`` (fetched
only when named, only the files inference needs); the checkpoint is a file or an
``hf://OWNER/REPO[@REVISION]/PATH`` reference (resolved through the hub cache). The
checkpoint's ``unet.*`` / ``pose_net.*`` keys must match exactly: a wrong file fails loudly
here instead of leaving a randomly initialised UNet.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKLTemporalDecoder
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import CLIPVisionModelWithProjection

try:  # transformers >= 5 names the torchvision-free processor explicitly
    from transformers import CLIPImageProcessorPil as _CLIPProcessor
except ImportError:  # pragma: no cover - older transformers
    from transformers import CLIPImageProcessor as _CLIPProcessor

from mimicache.config.hub import BASE_MODEL_PATTERNS, hub_error, hub_repo, local_file
from mimicache.errors import ModelLoadError
from mimicache.models.pose_net import PoseNet
from mimicache.models.unet import MimicMotionUNet
from mimicache.pipeline.clip import ImageEncoder
from mimicache.pipeline.mimicmotion import MimicMotionPipeline
from mimicache.pipeline.schedulers import SchedulerOptions, build_scheduler

logger = logging.getLogger(__name__)

_WEIGHT_NAMES = {
    "vae": "diffusion_pytorch_model",
    "image_encoder": "model",
}
_SHOWN_KEYS = 5


@dataclass
class BaseModelFiles:
    """Resolved files of a base model folder; ``variant`` is "fp16" when those files are used."""

    root: Path
    vae_weights: Path
    image_encoder_weights: Path
    variant: dict[str, str | None] = field(default_factory=dict)

    @property
    def unet_config(self) -> Path:
        return self.root / "unet" / "config.json"

    @property
    def scheduler_dir(self) -> Path:
        return self.root / "scheduler"


def _find_weights(root: Path, component: str) -> tuple[Path, str | None]:
    stem = _WEIGHT_NAMES[component]
    # The published loader reads the fp16 variant; prefer it so fp32 runs see the same values.
    for variant in ("fp16", None):
        for ext in ("safetensors", "bin"):
            name = f"{stem}.{variant}.{ext}" if variant else f"{stem}.{ext}"
            path = root / component / name
            if path.is_file():
                return path, variant
    raise ModelLoadError(
        f"{root / component}: no weights found (expected {stem}.fp16.safetensors or "
        f"{stem}.safetensors). Point base_model_path at a complete Stable Video Diffusion "
        "img2vid-xt-1-1 folder in diffusers layout."
    )


def resolve_base_model(base_model_path: str | Path) -> BaseModelFiles:
    """A local folder, or a hub id / ``hf://`` repository fetched (or taken from the local hub
    cache) on demand."""
    repo = hub_repo(base_model_path)
    root = _download(*repo) if repo is not None else Path(base_model_path).expanduser()
    if not root.exists():
        text = str(base_model_path)
        if text.count("/") != 1 or text.startswith((".", "/", "~")):
            raise ModelLoadError(
                f"base model folder {root} does not exist; set base_model_path in the config to "
                "a Stable Video Diffusion folder or a hub id such as "
                "stabilityai/stable-video-diffusion-img2vid-xt-1-1"
            )
        root = _download(text)
    for required in ("unet/config.json", "scheduler/scheduler_config.json"):
        if not (root / required).is_file():
            raise ModelLoadError(
                f"{root}: missing {required}; base_model_path must be a Stable Video Diffusion "
                "folder in diffusers layout"
            )
    vae, vae_variant = _find_weights(root, "vae")
    encoder, encoder_variant = _find_weights(root, "image_encoder")
    return BaseModelFiles(
        root, vae, encoder, {"vae": vae_variant, "image_encoder": encoder_variant}
    )


def _download(repo_id: str, revision: str | None = None) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(repo_id, revision=revision, allow_patterns=list(BASE_MODEL_PATTERNS))
        )
    except Exception as exc:  # offline, unknown repo, gated repo, network down
        reason = hub_error(exc, repo_id, repo_id)
        raise ModelLoadError(
            f"could not fetch base model {repo_id!r} from the hub: {reason}. Or set "
            "base_model_path to a local folder (`mimicache download` fetches one and writes a "
            "config that names it)."
        ) from exc


def check_model_paths(base_model_path: str | Path, ckpt_path: str | Path) -> BaseModelFiles:
    """What a command that loads the models later (the web UI, on its first run) checks at
    start: the base model resolves and the checkpoint file is there. ModelLoadError if not."""
    files = resolve_base_model(base_model_path)
    _checkpoint_file(ckpt_path)
    return files


def _checkpoint_file(path: str | Path) -> Path:
    path = local_file(path)  # a hub reference becomes the hub cache's file
    if not path.is_file():
        raise ModelLoadError(
            f"checkpoint {path} not found; set ckpt_path in the config to MimicMotion_1-1.pth "
            "(from the tencent/MimicMotion model repository)"
        )
    return path


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A MimicMotion checkpoint as a flat dict of tensors (.pth without pickled objects, or .safetensors)."""
    path = _checkpoint_file(path)
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
                state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelLoadError(_pickle_refusal(path, exc)) from exc
    except (RuntimeError, OSError, EOFError, SafetensorError, ValueError) as exc:
        raise ModelLoadError(
            f"checkpoint {path} could not be read ({type(exc).__name__}: {exc}); the file may be "
            "truncated or not a PyTorch/safetensors checkpoint. Download it again."
        ) from exc
    if isinstance(state, Mapping) and set(state) in ({"state_dict"}, {"module"}):
        state = next(iter(state.values()))
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ModelLoadError(f"checkpoint {path} is not a state dict of tensors")
    return dict(state)


def _pickle_refusal(path: Path, exc: Exception) -> str:
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    what = f" ({found.group(1)})" if found else ""
    target = path.with_suffix(".safetensors")
    return (
        f"checkpoint {path} holds code{what}, not only tensors, and was refused for safety: "
        "loading it would run that code. If you trust where the file comes from, convert it "
        "once to safetensors and set ckpt_path to the new file:\n"
        '  python -c "import torch; from safetensors.torch import save_file; '
        f"s = torch.load('{path}', map_location='cpu', weights_only=False); "
        "save_file({k: v.contiguous() for k, v in s.items() if isinstance(v, torch.Tensor)}, "
        f"'{target}')\""
    )


def _check_keys(path: Path, prefix: str, expected: Mapping, given: Mapping) -> list[str]:
    problems = []
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong = sorted(
        k for k in set(expected) & set(given) if tuple(expected[k].shape) != tuple(given[k].shape)
    )
    if missing:
        problems.append(
            f"{len(missing)} missing {prefix}* keys, e.g. {[prefix + k for k in missing[:_SHOWN_KEYS]]}"
        )
    if unexpected:
        problems.append(
            f"{len(unexpected)} unexpected {prefix}* keys, e.g. {[prefix + k for k in unexpected[:_SHOWN_KEYS]]}"
        )
    if wrong:
        shown = [
            f"{prefix}{k}: file {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
            for k in wrong[:_SHOWN_KEYS]
        ]
        problems.append(f"{len(wrong)} keys with the wrong shape, e.g. {shown}")
    return problems


def _split_checkpoint(path: Path, state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    parts: dict[str, dict] = {"unet.": {}, "pose_net.": {}}
    other = []
    for key, value in state.items():
        prefix = next((p for p in parts if key.startswith(p)), None)
        if prefix is None:
            other.append(key)
        else:
            parts[prefix][key[len(prefix) :]] = value
    if other:
        raise ModelLoadError(
            f"checkpoint {path}: {len(other)} keys are neither unet.* nor pose_net.*, e.g. "
            f"{sorted(other)[:_SHOWN_KEYS]}; this is not a MimicMotion checkpoint"
        )
    return parts["unet."], parts["pose_net."]


def checked_checkpoint(
    unet_config: Path | None, ckpt_path: str | Path
) -> tuple[MimicMotionUNet | None, PoseNet | None, dict, dict]:
    """The checkpoint read safely and compared strictly with the model built from ``unet_config``
    (on the meta device); ModelLoadError naming every mismatch. Without a config, only the
    reading and the unet./pose_net. split are checked. ``mimicache doctor`` runs the same checks."""
    ckpt_path = _checkpoint_file(ckpt_path)
    unet_state, pose_state = _split_checkpoint(ckpt_path, read_checkpoint(ckpt_path))
    if unet_config is None:
        return None, None, unet_state, pose_state
    config = json.loads(unet_config.read_text())
    # Built on the meta device: the checkpoint supplies every tensor, so no random init is wasted.
    with torch.device("meta"):
        unet = MimicMotionUNet.from_config(config)
        pose_net = PoseNet(noise_latent_channels=unet.config.block_out_channels[0])
    problems = _check_keys(ckpt_path, "unet.", unet.state_dict(), unet_state)
    problems += _check_keys(ckpt_path, "pose_net.", pose_net.state_dict(), pose_state)
    if problems:
        raise ModelLoadError(
            f"checkpoint {ckpt_path} does not match the MimicMotion model built from "
            f"{unet_config}: "
            + "; ".join(problems)
            + ". Use MimicMotion_1-1.pth with the SVD img2vid-xt-1-1 base model."
        )
    return unet, pose_net, unet_state, pose_state


def build_mimicmotion_modules(
    unet_config: Path, ckpt_path: str | Path, dtype: torch.dtype = torch.float32
) -> tuple[MimicMotionUNet, PoseNet]:
    """UNet from the base config + PoseNet, both filled strictly from the checkpoint."""
    unet, pose_net, unet_state, pose_state = checked_checkpoint(unet_config, ckpt_path)
    unet.load_state_dict({k: v.to(dtype) for k, v in unet_state.items()}, strict=True, assign=True)
    pose_net.load_state_dict(
        {k: v.to(dtype) for k, v in pose_state.items()}, strict=True, assign=True
    )
    return unet, pose_net


def _load_component(loader, files: BaseModelFiles, component: str, dtype):
    try:
        return loader.from_pretrained(
            str(files.root),
            subfolder=component,
            variant=files.variant[component],
            torch_dtype=dtype,
        )
    except Exception as exc:
        raise ModelLoadError(
            f"{files.root / component}: could not load ({type(exc).__name__}: {exc})"
        ) from exc


def load_pipeline(
    base_model_path: str | Path | BaseModelFiles,
    ckpt_path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    scheduler: SchedulerOptions | None = None,
) -> MimicMotionPipeline:
    """Load the MimicMotion pipeline, strictly.

    Args:
        base_model_path: the SVD img2vid-xt-1-1 folder (diffusers layout), a hub id, an
            ``hf://OWNER/REPO`` reference, or an already resolved ``BaseModelFiles``.
        ckpt_path: ``MimicMotion_1-1.pth`` (or ``.safetensors``, or an ``hf://`` reference):
            its ``unet.*`` and ``pose_net.*`` keys must match the model exactly.
        dtype: the models' dtype.
        device: where the pipeline is placed.
        scheduler: the sampler (default: the base model's Euler scheduler).

    Returns:
        The ``MimicMotionPipeline`` on ``device``.

    Raises:
        ModelLoadError: a file is missing, pickled, unreadable, or does not match the model
            (the message names the file and the keys).
    """
    if isinstance(base_model_path, BaseModelFiles):
        files = base_model_path
    else:
        files = resolve_base_model(base_model_path)
    unet, pose_net = build_mimicmotion_modules(files.unet_config, ckpt_path, dtype)
    vae = _load_component(AutoencoderKLTemporalDecoder, files, "vae", dtype)
    clip = load_image_encoder(files, dtype=dtype)
    pipeline = MimicMotionPipeline(
        vae=vae,
        image_encoder=clip.image_encoder,
        unet=unet,
        scheduler=build_scheduler(scheduler or SchedulerOptions(), files.scheduler_dir),
        feature_extractor=clip.feature_extractor,
        pose_net=pose_net,
    )
    pipeline.set_progress_bar_config(leave=False)
    return pipeline.to(device)


def load_image_encoder(
    files: BaseModelFiles,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> ImageEncoder:
    """SVD's CLIP image encoder and its preprocessor config alone (the pipeline's own, or
    for scoring clips without loading the UNet and the VAE), on ``device``.

    Raises:
        ModelLoadError: the encoder's weights or the preprocessor config cannot be read.
    """
    encoder = _load_component(CLIPVisionModelWithProjection, files, "image_encoder", dtype)
    try:
        feature_extractor = _CLIPProcessor.from_pretrained(str(files.root / "feature_extractor"))
    except Exception as exc:
        raise ModelLoadError(
            f"{files.root / 'feature_extractor'}: could not read the CLIP preprocessor config ({exc})"
        ) from exc
    return ImageEncoder(encoder.to(device), feature_extractor)
