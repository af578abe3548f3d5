"""Inference config: the published MimicMotion YAML schema plus mimicache's keys, validated.

The YAML layout (``configs/test.yaml``)::

    base_model_path: stabilityai/stable-video-diffusion-img2vid-xt-1-1   # hub id or local folder
    ckpt_path: models/MimicMotion_1-1.pth
    test_case:                      # one or more cases, each a mapping
      - ref_video_path: ...         # required
        ref_image_path: ...         # required
        num_frames: 72              # tile size of the tiled denoising, >= 2
        resolution: 576             # short side of the output, multiple of 8, >= 40
        frames_overlap: 6           # 0 <= overlap < num_frames
        num_inference_steps: 25
        noise_aug_strength: 0       # >= 0
        guidance_scale: 2.0         # >= 0
        sample_stride: 2
        fps: 15                     # frame rate of the written mp4
        seed: 42                    # 0 <= seed < 2**64
    batch:                          # optional (the seed scripts' key)
      video_folder: assets/videos   # or null
    dwpose:                         # optional (mimicache's key)
      det_model_path: models/DWPose/yolox_l.onnx
      pose_model_path: models/DWPose/dw-ll_ucoco_384.onnx
      backend: auto                 # auto | onnxruntime | torch

The file is read with OmegaConf, like the published scripts, so ``${...}`` interpolations work.
Relative paths resolve against the working directory at load time (the published scripts open
them relative to the working directory); loaded configs hold absolute paths.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mimicache.errors import ConfigError
from mimicache.media import long_side

__all__ = [
    "BATCH_KEYS",
    "DEFAULT_DWPOSE_DET_PATH",
    "DEFAULT_DWPOSE_POSE_PATH",
    "DWPOSE_KEYS",
    "TEST_CASE_KEYS",
    "TOP_LEVEL_KEYS",
    "InferenceConfig",
    "TestCase",
    "case_to_dict",
    "config_to_dict",
    "load_config",
]

DEFAULT_DWPOSE_DET_PATH = Path("models/DWPose/yolox_l.onnx")
DEFAULT_DWPOSE_POSE_PATH = Path("models/DWPose/dw-ll_ucoco_384.onnx")

TOP_LEVEL_KEYS = ("base_model_path", "ckpt_path", "test_case", "batch", "dwpose")
BATCH_KEYS = ("video_folder",)
DWPOSE_KEYS = ("det_model_path", "pose_model_path", "backend")
DWPOSE_BACKENDS = ("auto", "onnxruntime", "torch")

_PATH_FIELDS = ("ref_video_path", "ref_image_path")
_INT_FIELDS = (
    "num_frames",
    "resolution",
    "frames_overlap",
    "num_inference_steps",
    "sample_stride",
    "fps",
    "seed",
)
_FLOAT_FIELDS = ("noise_aug_strength", "guidance_scale")
TEST_CASE_KEYS = _PATH_FIELDS + _INT_FIELDS + _FLOAT_FIELDS

_MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed accepts unsigned 64-bit seeds

# A Hugging Face repo id: "name" or "namespace/name", letters, digits, "-", "_", ".".
_HUB_ID = re.compile(r"^(?!\.)[A-Za-z0-9_.\-]+(/(?!\.)[A-Za-z0-9_.\-]+)?$")


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
        problems = _check_case(values, prefix="")
        if problems:
            raise ConfigError(_join_problems(None, [(key, msg) for key, msg, _ in problems]))
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
    local folder, else a hub id ``str``."""

    base_model_path: str | Path
    ckpt_path: Path
    test_case: list[TestCase]
    batch_video_folder: Path | None = None
    dwpose_det_path: Path = DEFAULT_DWPOSE_DET_PATH
    dwpose_pose_path: Path = DEFAULT_DWPOSE_POSE_PATH
    dwpose_backend: str = "auto"
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
        out[f.name] = str(value) if isinstance(value, Path) else value
    return out


def config_to_dict(config: InferenceConfig) -> dict[str, Any]:
    """JSON/YAML-ready mapping in the config file's schema; ``load_config`` reads it back."""
    return {
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


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path, *, base_dir: str | Path | None = None) -> InferenceConfig:
    """Read and validate an inference config YAML.

    Relative paths in the file resolve against ``base_dir`` (default: the current working
    directory, as the published scripts do). Every problem found is reported in one
    ``ConfigError`` that names the file and the key.
    """
    shown = str(path)
    file = Path(path).expanduser()
    if not file.exists():
        raise ConfigError(
            f"{shown}: config file not found; pass an existing YAML file with "
            "--inference_config (default configs/test.yaml)"
        )
    if not file.is_file():
        raise ConfigError(f"{shown}: is not a file; pass a YAML file with --inference_config")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{shown}: cannot read the config file: {exc}") from exc

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{shown}: {_yaml_error_text(exc)}") from exc
    if node is not None and not isinstance(node, yaml.MappingNode):
        raise ConfigError(
            f"{shown}: the top level must be a mapping with base_model_path, ckpt_path and "
            "test_case"
        )
    try:
        loaded = OmegaConf.create(text) if node is not None else OmegaConf.create({})
    except yaml.YAMLError as exc:  # e.g. duplicate keys, found by OmegaConf's loader
        raise ConfigError(f"{shown}: {_yaml_error_text(exc)}") from exc
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{shown}: cannot read the config: {_first_line(exc)}") from exc
    try:
        raw = OmegaConf.to_container(loaded, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "a value"
        raise ConfigError(f"{shown}: {key} cannot be resolved: {_first_line(exc)}") from exc
    assert isinstance(raw, dict)

    root = Path(base_dir) if base_dir is not None else Path.cwd()
    lines = _line_map(node)
    problems: list[tuple[str, str, tuple]] = []
    config = _build_config(raw, root, problems)
    if problems:
        located = []
        for key, msg, loc in problems:
            line = lines.get(loc)
            located.append((key, f"{msg} (line {line})" if line else msg))
        raise ConfigError(_join_problems(shown, located))
    assert config is not None
    config.source_path = file.resolve()
    return config


def _build_config(
    raw: dict[Any, Any], root: Path, problems: list[tuple[str, str, tuple]]
) -> InferenceConfig | None:
    def add(key: str, msg: str, loc: tuple) -> None:
        problems.append((key, msg, loc))

    _check_unknown(raw, TOP_LEVEL_KEYS, "", (), add, nested_hint=TEST_CASE_KEYS)

    for key in ("base_model_path", "ckpt_path", "test_case"):
        if key not in raw:
            add(key, "is missing (required)", ())

    base_model: str | Path | None = None
    if "base_model_path" in raw:
        value = raw["base_model_path"]
        if _is_path_string(value):
            base_model = _base_model(value, root, add)
        else:
            add(
                "base_model_path",
                f"must be a hub id or a folder path, got {_show(value)}",
                ("base_model_path",),
            )

    ckpt: Path | None = None
    if "ckpt_path" in raw:
        value = raw["ckpt_path"]
        if _is_path_string(value):
            ckpt = _resolve_path(value, root)
        else:
            add("ckpt_path", f"must be a file path, got {_show(value)}", ("ckpt_path",))

    cases: list[TestCase] = []
    if "test_case" in raw:
        value = raw["test_case"]
        if isinstance(value, Mapping):
            add(
                "test_case",
                "must be a list of cases; start each case with '- ' (a YAML list item)",
                ("test_case",),
            )
        elif not isinstance(value, list):
            add("test_case", f"must be a list of cases, got {_show(value)}", ("test_case",))
        elif not value:
            add("test_case", "is empty; give at least one case", ("test_case",))
        else:
            for i, item in enumerate(value):
                case = _build_case(item, i, root, add)
                if case is not None:
                    cases.append(case)

    batch_folder: Path | None = None
    batch = raw.get("batch")
    if batch is not None:
        if not isinstance(batch, Mapping):
            add("batch", f"must be a mapping with video_folder, got {_show(batch)}", ("batch",))
        else:
            _check_unknown(batch, BATCH_KEYS, "batch.", ("batch",), add)
            folder = batch.get("video_folder")
            if folder is not None:
                if _is_path_string(folder):
                    batch_folder = _resolve_path(folder, root)
                else:
                    add(
                        "batch.video_folder",
                        f"must be a folder path or null, got {_show(folder)}",
                        ("batch", "video_folder"),
                    )

    det, pose, dwpose_backend = DEFAULT_DWPOSE_DET_PATH, DEFAULT_DWPOSE_POSE_PATH, "auto"
    dwpose = raw.get("dwpose")
    if dwpose is not None:
        if not isinstance(dwpose, Mapping):
            add(
                "dwpose",
                f"must be a mapping with det_model_path and pose_model_path, got {_show(dwpose)}",
                ("dwpose",),
            )
        else:
            _check_unknown(dwpose, DWPOSE_KEYS, "dwpose.", ("dwpose",), add)
            for key in DWPOSE_KEYS[:2]:
                if key in dwpose and not _is_path_string(dwpose[key]):
                    add(
                        f"dwpose.{key}",
                        f"must be an ONNX file path, got {_show(dwpose[key])}",
                        ("dwpose", key),
                    )
            if _is_path_string(dwpose.get("det_model_path")):
                det = Path(dwpose["det_model_path"])
            if _is_path_string(dwpose.get("pose_model_path")):
                pose = Path(dwpose["pose_model_path"])
            if dwpose.get("backend", "auto") in DWPOSE_BACKENDS:
                dwpose_backend = dwpose.get("backend", "auto")
            else:
                add(
                    "dwpose.backend",
                    f"must be one of {', '.join(DWPOSE_BACKENDS)}, got {_show(dwpose['backend'])}",
                    ("dwpose", "backend"),
                )

    if problems or base_model is None or ckpt is None:
        return None
    return InferenceConfig(
        base_model_path=base_model,
        ckpt_path=ckpt,
        test_case=cases,
        batch_video_folder=batch_folder,
        dwpose_det_path=_resolve_path(det, root),
        dwpose_pose_path=_resolve_path(pose, root),
        dwpose_backend=dwpose_backend,
    )


def _build_case(item: Any, index: int, root: Path, add) -> TestCase | None:
    prefix = f"test_case[{index}]"
    loc = ("test_case", index)
    if not isinstance(item, Mapping):
        add(prefix, f"must be a mapping of case keys, got {_show(item)}", loc)
        return None
    found: list[str] = []

    def counted(key: str, msg: str, where: tuple) -> None:
        found.append(key)
        add(key, msg, where)

    _check_unknown(item, TEST_CASE_KEYS, prefix + ".", loc, counted)
    for key in _PATH_FIELDS:
        if key not in item:
            counted(f"{prefix}.{key}", "is missing (required)", loc)
    for key, msg, _ in _check_case(item, prefix=prefix + "."):
        counted(key, msg, (*loc, key.rsplit(".", 1)[-1]))
    if found:
        return None
    values = {k: item[k] for k in TEST_CASE_KEYS if k in item}
    for key in _PATH_FIELDS:
        values[key] = _resolve_path(values[key], root)
    return TestCase(**values)


# --------------------------------------------------------------------------- validation


def _check_case(values: Mapping[str, Any], prefix: str) -> list[tuple[str, str, None]]:
    """Problems with the case fields present in ``values`` as (key, message, None)."""
    out: list[tuple[str, str, None]] = []

    def bad(name: str, msg: str) -> None:
        out.append((prefix + name, msg, None))

    for name in _PATH_FIELDS:
        if name in values and not _is_path_string(values[name]):
            bad(name, f"must be a file path, got {_show(values[name])}")

    ok_int: dict[str, int] = {}
    for name in _INT_FIELDS:
        if name not in values:
            continue
        value = values[name]
        if not _is_int(value):
            kind = (
                "a non-negative integer"
                if name in ("frames_overlap", "seed")
                else "a positive integer"
            )
            bad(name, f"must be {kind}, got {_show(value)}")
        else:
            ok_int[name] = value

    for name in ("num_inference_steps", "sample_stride", "fps"):
        if name in ok_int and ok_int[name] <= 0:
            bad(name, f"must be a positive integer, got {ok_int[name]}")
    if "num_frames" in ok_int and ok_int["num_frames"] < 2:
        bad(
            "num_frames",
            f"must be an integer >= 2 (the tile size: every tile holds the reference frame "
            f"and at least one driving frame), got {ok_int['num_frames']}",
        )
    if "resolution" in ok_int:
        res = ok_int["resolution"]
        if res <= 0:
            bad("resolution", f"must be a positive integer, got {res}")
        elif res % 8 or long_side(res) < 64:
            bad(
                "resolution",
                f"must be a multiple of 8 and at least 40, got {res}: the short side of the "
                "output is `resolution` and the long side int(resolution*16/9 // 64)*64, and "
                "the VAE and PoseNet latents are 1/8 of the pixel size (576 gives 576x1024)",
            )
    if "frames_overlap" in ok_int:
        overlap = ok_int["frames_overlap"]
        if overlap < 0:
            bad("frames_overlap", f"must be a non-negative integer, got {overlap}")
        elif (
            "num_frames" in ok_int and ok_int["num_frames"] >= 2 and overlap >= ok_int["num_frames"]
        ):
            bad(
                "frames_overlap",
                f"must be smaller than num_frames (the tile size, {ok_int['num_frames']}), "
                f"got {overlap}",
            )
    if "seed" in ok_int and not 0 <= ok_int["seed"] <= _MAX_SEED:
        bad("seed", f"must be an integer between 0 and 2**64-1, got {ok_int['seed']}")

    for name in _FLOAT_FIELDS:
        if name not in values:
            continue
        value = values[name]
        if not _is_number(value):
            bad(name, f"must be a number, got {_show(value)}")
        elif not math.isfinite(value):
            bad(name, f"must be a finite number, got {value}")
        elif value < 0:
            bad(name, f"must be >= 0, got {value}")
    return out


def _check_unknown(
    mapping: Mapping[Any, Any],
    known: tuple[str, ...],
    prefix: str,
    loc: tuple,
    add,
    nested_hint: tuple[str, ...] = (),
) -> None:
    for key in mapping:
        if key in known:
            continue
        name = str(key)
        if name in nested_hint:
            add(
                f"{prefix}{name}",
                "is a test case key; move it inside a test_case entry",
                (*loc, key),
            )
        else:
            add(f"{prefix}{name}", f"is not a known key; {_suggest(name, known)}", (*loc, key))


def _suggest(name: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return "known keys: " + ", ".join(known)


def _unknown_hint(name: str, known: tuple[str, ...]) -> str:
    return f"'{name}' ({_suggest(name, known)})"


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _is_path_string(value: Any) -> bool:
    return isinstance(value, (str, Path)) and bool(str(value).strip())


def _resolve_path(value: str | Path, root: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


def _base_model(value: str | Path, root: Path, add) -> str | Path | None:
    text = str(value)
    local = _resolve_path(text, root)
    if local.exists():
        if not local.is_dir():
            add(
                "base_model_path",
                f"{text} is a file; give the Stable Video Diffusion folder (with "
                "model_index.json) or a hub id",
                ("base_model_path",),
            )
            return None
        return local
    if _HUB_ID.match(text) and ".." not in text:
        return text
    add(
        "base_model_path",
        f"folder {local} does not exist and {text!r} is not a hub id "
        "(e.g. stabilityai/stable-video-diffusion-img2vid-xt-1-1)",
        ("base_model_path",),
    )
    return None


def _show(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, (bool, np.bool_)):
        return f"{str(bool(value)).lower()} (a boolean)"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _join_problems(shown: str | None, problems: list[tuple[str, str]]) -> str:
    head = f"{shown}: " if shown else ""
    if len(problems) == 1:
        key, msg = problems[0]
        return f"{head}{key} {msg}"
    lines = [f"{head}{len(problems)} problems:"]
    lines += [f"  {key} {msg}" for key, msg in problems]
    return "\n".join(lines)


def _yaml_error_text(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    detail = f"{problem} ({context})" if context else problem
    return f"YAML syntax error at {where}{detail}"


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _line_map(node: yaml.Node | None) -> dict[tuple, int]:
    """1-based line of every key/item of the composed YAML, by its path (keys, indices)."""
    out: dict[tuple, int] = {}

    def walk(n: yaml.Node, path: tuple) -> None:
        if isinstance(n, yaml.MappingNode):
            for key_node, value_node in n.value:
                key: Any = key_node.value
                sub = (*path, key)
                out.setdefault(sub, key_node.start_mark.line + 1)
                walk(value_node, sub)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                sub = (*path, i)
                out.setdefault(sub, item.start_mark.line + 1)
                walk(item, sub)

    if node is not None:
        walk(node, ())
    return out
