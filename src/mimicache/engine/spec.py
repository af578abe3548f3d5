"""``EngineSpec``: every engine option once, with its default, its type, its help and its
flag; the command line generates its flags from these fields, and every place that builds an
engine (``engine.build``) reads one spec. Importing this module loads no torch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimicache.config import DWPOSE_BACKENDS, RETARGET_MODES, InferenceConfig, person_choice
from mimicache.config.fields import OFFLOADS, SPEEDS
from mimicache.config.options import Flag, option
from mimicache.config.sampler import SchedulerOptions

DEFAULT_CACHE_DIR = "cache/features"
CACHE_PLATFORMS = ("strict", "any")
# The engine choices a variant may change on loaded models (the others prepare the models:
# compilation, offload, the device and dtype need a new engine).
VARIANT_CHOICES = ("scheduler", "pose_retarget", "person", "speed", "decode_chunk_size")


def score_frames_arg(text: str) -> int | str:
    """``--score_frames``: a whole number >= 2, or "all" / "auto" (``ValueError`` saying
    why not)."""
    if text in ("all", "auto"):
        return text
    value = positive_int(text)
    if value < 2:
        raise ValueError("score at least 2 frames (or all)")
    return value


def score_threshold_arg(text: str) -> tuple[str, float]:
    """``--score_threshold NAME=VALUE``: one threshold of the clip scores' verdict."""
    from mimicache.config.thresholds import parse_thresholds
    from mimicache.errors import ConfigError

    try:
        ((name, value),) = parse_thresholds([text]).items()
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return name, value


def positive_int(text: str) -> int:
    """A whole number >= 1 (``ValueError`` saying why not)."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise ValueError("must be at least 1")
    return value


@dataclass(frozen=True)
class EngineSpec:
    """How to load the engine and open the feature store: one value, built once by a command
    and handed to every executor and worker, so all of them load the same models the same way.

    Each field is one option; ``config`` gives the model files and the pose defaults. Fields
    whose default is None mean "the config's value, else the engine's default"."""

    config: InferenceConfig
    float16: bool = option(
        True,
        flag=Flag(
            "--no_use_float16",
            "run in float32 on CUDA too (CPU always runs float32)",
            invert=True,
        ),
    )
    device: str | None = option(
        None, flag=Flag("--device", "cpu, cuda or cuda:N (default: cuda when available)")
    )
    dwpose_backend: str | None = option(
        None,
        flag=Flag(
            "--dwpose_backend",
            "DWPose runtime (default: the config's dwpose.backend, else auto: ONNX Runtime "
            "when it has the device's provider, otherwise PyTorch)",
            choices=DWPOSE_BACKENDS,
        ),
    )
    pose_retarget: str | None = option(
        None,
        flag=Flag(
            "--pose_retarget",
            "pose frames after the published rescale: 'published' as is, or 'graft' (the seed "
            "scripts' step: the reference keeps its body, arms, hands and face follow the "
            "video); overrides the config's pose.retarget (default: the config's value, else "
            "{pose_retarget})",
            choices=RETARGET_MODES,
        ),
    )
    person: str | None = option(
        None,
        flag=Flag(
            "--person",
            "which person of the driving video drives the pose: 'auto' (published: everyone "
            "drawn), 'largest', 'center' (nearest the frame centre), or N (0 = the first to "
            "appear, left to right within a frame); people are tracked across frames. "
            "Overrides the config's pose.person (default: the config's value, else auto)",
            type=person_choice,
            metavar="auto|largest|center|N",
        ),
    )
    scheduler: SchedulerOptions = option(SchedulerOptions)
    speed: str = option(
        SPEEDS[0],
        flag=Flag(
            "--speed",
            "exact: the published computation; fast: batched UNet and decode calls and the "
            "fastest kernels, equal up to float rounding (default: %(default)s)",
            choices=SPEEDS,
        ),
    )
    compile: bool = option(
        False,
        flag=Flag(
            "--compile",
            "torch.compile the UNet and VAE decoder once per run (needs --speed fast; the "
            "first job of each shape pays the compile time)",
        ),
    )
    # the published script decodes 8 frames at a time
    decode_chunk_size: int = option(
        8,
        flag=Flag(
            "--decode_chunk_size",
            "frames per VAE decode: the temporal decoder's window, so it changes the frames; "
            "lower needs less GPU memory (default: %(default)s, as published)",
            type=int,
        ),
    )
    offload: str = option(
        OFFLOADS[0],
        flag=Flag(
            "--offload",
            "keep models on the CPU until used: model (each whole model, modest slow-down) or "
            "sequential (layer by layer, least memory, slow); needs accelerate "
            "(default: %(default)s)",
            choices=OFFLOADS,
        ),
    )
    threads: int | None = option(
        None,
        flag=Flag(
            "--threads",
            "torch CPU threads per process (per worker with ray; default: torch's own "
            "locally, a worker's CPUs with ray). Results on the CPU are bit-identical across "
            "executors at the same thread count",
            type=positive_int,
        ),
    )
    cache_dir: Path | str | None = option(
        DEFAULT_CACHE_DIR,
        flag=Flag("--feature_cache_dir", "(default: %(default)s)"),
    )  # None: no feature store at all
    cache_enabled: bool = option(
        True, flag=Flag("--disable_feature_cache", "no cache reads, no cache writes", invert=True)
    )
    cache_force_refresh: bool = option(
        False,
        flag=Flag("--feature_cache_force_refresh", "recompute every entry and overwrite it"),
    )
    cache_platform: str = option(
        CACHE_PLATFORMS[0],
        flag=Flag(
            "--cache_platform",
            "strict (default): entries are keyed by the numeric platform that computed them "
            "(device model, dtype, library versions, CPU threads), so a warm run equals an "
            "uncached one bit for bit; any: keys leave the platform out, so every run with "
            "'any' (on any machine, device or thread count) shares its entries, accepting "
            "drift in the last bits",
            choices=CACHE_PLATFORMS,
        ),
    )
    cache_pipeline_features: bool = option(
        True,
        flag=Flag(
            "--disable_pipeline_feature_cache",
            "cache only the pose stages, not the CLIP/VAE features",
            invert=True,
        ),
    )
    score: bool = option(
        True,
        flag=Flag(
            "--no_score",
            "do not score the clips (pose fidelity per body part, identity, flicker)",
            invert=True,
        ),
    )
    score_frames: int | str | None = option(
        None,
        flag=Flag(
            "--score_frames",
            "frames of each clip the scores look at: N evenly spaced, or all (default: the "
            "config's score.frames, else 16 where DWPose runs on the CPU and all on a GPU)",
            type=score_frames_arg,
            metavar="N|all",
        ),
    )
    score_thresholds: tuple[tuple[str, float], ...] = option(
        (),
        flag=Flag(
            "--score_threshold",
            "a verdict threshold over the config's score.thresholds and the defaults, e.g. "
            "right_hand=0.2 identity=0.7 (names: body, left_hand, right_hand, face, "
            "hand_recall, identity, flicker)",
            type=score_threshold_arg,
            metavar="NAME=VALUE",
            many=True,
        ),
    )
    dwpose_device: str | None = option(None, help="where DWPose runs (None: the engine's choice)")
    verbose: bool = option(False, help="workers log at DEBUG")

    def replace(self, **changes: Any) -> EngineSpec:
        return dataclasses.replace(self, **changes)

    @property
    def dtype(self) -> str | None:
        """ "float32" when float16 is refused, else None (the engine's default)."""
        return None if self.float16 else "float32"

    @property
    def cache_any_platform(self) -> bool:
        """Entries computed on another numeric platform are reused."""
        return self.cache_platform == "any"

    def engine_config(self) -> InferenceConfig:
        """The config with the spec's overrides of its keys applied (the DWPose backend)."""
        if self.dwpose_backend is None:
            return self.config
        return self.config.replace(dwpose_backend=self.dwpose_backend)
