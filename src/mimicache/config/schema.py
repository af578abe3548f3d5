"""The config's value objects: ``TestCase`` (one job's parameters) and ``InferenceConfig``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimicache.config.fields import (
    _FLOAT_FIELDS,
    _INT_FIELDS,
    _PATH_FIELDS,
    DEFAULT_DWPOSE_DET_PATH,
    DEFAULT_DWPOSE_POSE_PATH,
    TEST_CASE_KEYS,
)
from mimicache.config.hub import HubFile
from mimicache.config.validation import (
    _resolve_path,
    _unknown_hint,
    check_case_values,
)
from mimicache.errors import ConfigError
from mimicache.storage.fetch import input_url

# --------------------------------------------------------------------------- value objects


@dataclass
class TestCase:
    """One reference image + driving video and the generation parameters (published names).

    Construction coerces str paths to ``Path`` and ints to float for the float fields, and
    validates every value (``ConfigError``), so ``replace`` overrides are checked too.
    """

    __test__ = False  # not a pytest test class, despite the name

    ref_video_path: Path
    ref_image_path: Path
    num_frames: int = 72
    resolution: int = 576
    frames_overlap: int = 6
    num_inference_steps: int = 25
    noise_aug_strength: float = 0.0
    guidance_scale: float = 2.0
    sample_stride: int = 2
    fps: int = 15
    seed: int = 42

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        check_case_values(values)
        for name in _PATH_FIELDS:
            setattr(self, name, Path(getattr(self, name)))
        for name in _INT_FIELDS:
            setattr(self, name, int(getattr(self, name)))
        for name in _FLOAT_FIELDS:
            setattr(self, name, float(getattr(self, name)))

    def replace(self, **overrides: Any) -> TestCase:
        """A copy with ``overrides`` applied; ``None`` values are ignored (flag not given).

        Relative path overrides resolve against the working directory. Unknown names and
        invalid values raise ``ConfigError``.
        """
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = [k for k in given if k not in TEST_CASE_KEYS]
        if unknown:
            raise ConfigError(
                "; ".join(
                    f"cannot override unknown test case key {_unknown_hint(k, TEST_CASE_KEYS)}"
                    for k in unknown
                )
            )
        for name in _PATH_FIELDS:
            if name in given and isinstance(given[name], (str, Path)) and str(given[name]):
                given[name] = _resolve_path(given[name], Path.cwd())
        return dataclasses.replace(self, **given)

    @property
    def tile_size(self) -> int:
        """Frames per denoising tile (the published script passes ``num_frames``)."""
        return self.num_frames


@dataclass
class InferenceConfig:
    """A loaded inference config. ``base_model_path`` is a ``Path`` when it names an existing
    local folder, else a hub id ``str`` (or ``hf://OWNER/REPO[@REVISION]``). ``ckpt_path`` and
    the DWPose files are paths or ``HubFile`` references (``hf://...``), which become local
    files of the hub cache when used as paths (``Path(ref)``). ``pose_retarget`` /
    ``pose_person`` None: not set in the file (the command's default applies); ``pose_person``
    is canonical ("auto", "largest", "center" or a whole number as text)."""

    base_model_path: str | Path
    ckpt_path: Path | HubFile
    test_case: list[TestCase]
    batch_video_folder: Path | None = None
    dwpose_det_path: Path | HubFile = DEFAULT_DWPOSE_DET_PATH
    dwpose_pose_path: Path | HubFile = DEFAULT_DWPOSE_POSE_PATH
    dwpose_backend: str = "auto"
    pose_retarget: str | None = None
    pose_person: str | None = None
    score_frames: int | str | None = None  # None: not set (the command's default)
    score_thresholds: dict[str, float] = dataclasses.field(default_factory=dict)
    source_path: Path | None = None

    @property
    def base_model_is_local(self) -> bool:
        return isinstance(self.base_model_path, Path)

    def replace(self, **changes: Any) -> InferenceConfig:
        return dataclasses.replace(self, **changes)


def case_to_dict(case: TestCase) -> dict[str, Any]:
    """JSON-ready mapping of a case in the YAML schema (paths as strings)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(case):
        value = getattr(case, f.name)
        # an input by URL is kept as a Path, which reads "s3:/b/k": write the URL back
        out[f.name] = (input_url(value) or str(value)) if isinstance(value, Path) else value
    return out


def config_to_dict(config: InferenceConfig) -> dict[str, Any]:
    """JSON/YAML-ready mapping in the config file's schema; ``load_config`` reads it back."""
    out: dict[str, Any] = {
        "base_model_path": str(config.base_model_path),
        "ckpt_path": str(config.ckpt_path),
        "test_case": [case_to_dict(case) for case in config.test_case],
        "batch": {
            "video_folder": None
            if config.batch_video_folder is None
            else str(config.batch_video_folder)
        },
        "dwpose": {
            "det_model_path": str(config.dwpose_det_path),
            "pose_model_path": str(config.dwpose_pose_path),
            "backend": config.dwpose_backend,
        },
    }
    pose = {"retarget": config.pose_retarget, "person": config.pose_person}
    if any(value is not None for value in pose.values()):
        out["pose"] = {key: value for key, value in pose.items() if value is not None}
    score = {"frames": config.score_frames, "thresholds": config.score_thresholds or None}
    if any(value is not None for value in score.values()):
        out["score"] = {key: value for key, value in score.items() if value is not None}
    return out
