"""``load_config``: read a YAML config with OmegaConf, validate every key, report them all."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mimicache.config.fields import (
    _PATH_FIELDS,
    BATCH_KEYS,
    DEFAULT_DWPOSE_DET_PATH,
    DEFAULT_DWPOSE_POSE_PATH,
    DWPOSE_BACKENDS,
    DWPOSE_KEYS,
    DWPOSE_PATH_KEYS,
    POSE_KEYS,
    RETARGET_MODES,
    SCORE_KEYS,
    TEST_CASE_KEYS,
    TOP_LEVEL_KEYS,
)
from mimicache.config.hub import HubFile
from mimicache.config.schema import (
    InferenceConfig,
    TestCase,
)
from mimicache.config.validation import (
    _base_model,
    _check_case,
    _check_unknown,
    _first_line,
    _is_path_string,
    _join_problems,
    _line_map,
    _model_file,
    _resolve_path,
    _show,
    _yaml_error_text,
    person_choice,
)
from mimicache.errors import ConfigError, setting

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
            f"{shown}: config file not found; pass an existing YAML file "
            f"({setting('inference_config', 'configs/test.yaml')} by default)"
        )
    if not file.is_file():
        raise ConfigError(f"{setting('inference_config', shown)} is not a file; pass a YAML file")
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
    # OmegaConf (with its grammar parser) loads here, when a config is read, not at start-up.
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

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
    """The config, or None when ``problems`` (every one found, with its key) is not empty."""

    def add(key: str, msg: str, loc: tuple) -> None:
        problems.append((key, msg, loc))

    _check_unknown(raw, TOP_LEVEL_KEYS, "", (), add, nested_hint=TEST_CASE_KEYS)
    for key in ("base_model_path", "ckpt_path", "test_case"):
        if key not in raw:
            add(key, "is missing (required)", ())
    base_model, ckpt = _model_paths(raw, root, add)
    cases = _cases_section(raw.get("test_case"), root, add) if "test_case" in raw else []
    batch_folder = _batch_section(raw.get("batch"), root, add)
    det, pose, dwpose_backend = _dwpose_section(raw.get("dwpose"), root, add)
    retarget, person = _pose_section(raw.get("pose"), add)
    score_frames, thresholds = _score_section(raw.get("score"), add)
    if problems or base_model is None or ckpt is None or det is None or pose is None:
        return None
    return InferenceConfig(
        base_model_path=base_model,
        ckpt_path=ckpt,
        test_case=cases,
        batch_video_folder=batch_folder,
        dwpose_det_path=det,
        dwpose_pose_path=pose,
        dwpose_backend=dwpose_backend,
        pose_retarget=retarget,
        pose_person=person,
        score_frames=score_frames,
        score_thresholds=thresholds,
    )


def _model_paths(raw: Mapping, root: Path, add) -> tuple[str | Path | None, Path | HubFile | None]:
    """``base_model_path`` (hub id, ``hf://`` repository or folder) and ``ckpt_path`` (a file
    or an ``hf://`` file reference); None where missing or bad."""
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
    ckpt: Path | HubFile | None = None
    if "ckpt_path" in raw:
        value = raw["ckpt_path"]
        if _is_path_string(value):
            ckpt = _model_file(value, root, "ckpt_path", ("ckpt_path",), add)
        else:
            add("ckpt_path", f"must be a file path, got {_show(value)}", ("ckpt_path",))
    return base_model, ckpt


def _cases_section(value: Any, root: Path, add) -> list[TestCase]:
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
        built = (_build_case(item, i, root, add) for i, item in enumerate(value))
        return [case for case in built if case is not None]
    return []


def _batch_section(batch: Any, root: Path, add) -> Path | None:
    """``batch.video_folder`` (None when the section or the key is absent or null)."""
    if batch is None:
        return None
    if not isinstance(batch, Mapping):
        add("batch", f"must be a mapping with video_folder, got {_show(batch)}", ("batch",))
        return None
    _check_unknown(batch, BATCH_KEYS, "batch.", ("batch",), add)
    folder = batch.get("video_folder")
    if folder is None:
        return None
    if not _is_path_string(folder):
        add(
            "batch.video_folder",
            f"must be a folder path or null, got {_show(folder)}",
            ("batch", "video_folder"),
        )
        return None
    return _resolve_path(folder, root)


def _dwpose_section(
    dwpose: Any, root: Path, add
) -> tuple[Path | HubFile | None, Path | HubFile | None, str]:
    """The two ONNX files (defaults where absent; paths resolved, hub references kept; None
    when malformed) and the backend."""
    det: Path | HubFile | None = _resolve_path(DEFAULT_DWPOSE_DET_PATH, root)
    pose: Path | HubFile | None = _resolve_path(DEFAULT_DWPOSE_POSE_PATH, root)
    backend = "auto"
    if dwpose is None:
        return det, pose, backend
    if not isinstance(dwpose, Mapping):
        add(
            "dwpose",
            f"must be a mapping with det_model_path and pose_model_path, got {_show(dwpose)}",
            ("dwpose",),
        )
        return det, pose, backend
    _check_unknown(dwpose, DWPOSE_KEYS, "dwpose.", ("dwpose",), add)
    for key in DWPOSE_PATH_KEYS:
        if key in dwpose and not _is_path_string(dwpose[key]):
            add(
                f"dwpose.{key}",
                f"must be an ONNX file path, got {_show(dwpose[key])}",
                ("dwpose", key),
            )
    if _is_path_string(dwpose.get("det_model_path")):
        key, loc = "dwpose.det_model_path", ("dwpose", "det_model_path")
        det = _model_file(dwpose["det_model_path"], root, key, loc, add)
    if _is_path_string(dwpose.get("pose_model_path")):
        key, loc = "dwpose.pose_model_path", ("dwpose", "pose_model_path")
        pose = _model_file(dwpose["pose_model_path"], root, key, loc, add)
    if dwpose.get("backend", "auto") in DWPOSE_BACKENDS:
        backend = dwpose.get("backend", "auto")
    else:
        add(
            "dwpose.backend",
            f"must be one of {', '.join(DWPOSE_BACKENDS)}, got {_show(dwpose['backend'])}",
            ("dwpose", "backend"),
        )
    return det, pose, backend


def _pose_section(pose: Any, add) -> tuple[str | None, str | None]:
    """``pose.retarget`` and ``pose.person`` (None where the section or the key is absent)."""
    if pose is None:
        return None, None
    if not isinstance(pose, Mapping):
        add("pose", f"must be a mapping with retarget, got {_show(pose)}", ("pose",))
        return None, None
    _check_unknown(pose, POSE_KEYS, "pose.", ("pose",), add)
    return _retarget_key(pose, add), _person_key(pose, add)


def _score_section(score: Any, add) -> tuple[int | str | None, dict[str, float]]:
    """``score.frames`` (a whole number >= 2 or "all"; None when absent) and
    ``score.thresholds`` (names of ``quality.score.DEFAULT_THRESHOLDS`` to numbers >= 0)."""
    if score is None:
        return None, {}
    if not isinstance(score, Mapping):
        add(
            "score", f"must be a mapping with frames and thresholds, got {_show(score)}", ("score",)
        )
        return None, {}
    _check_unknown(score, SCORE_KEYS, "score.", ("score",), add)
    frames = score.get("frames")
    if (
        frames is not None
        and frames != "all"
        and not (isinstance(frames, int) and not isinstance(frames, bool) and frames >= 2)
    ):
        add(
            "score.frames",
            f"must be a whole number >= 2 or all, got {_show(frames)}",
            ("score", "frames"),
        )
        frames = None
    thresholds = score.get("thresholds") or {}
    if not isinstance(thresholds, Mapping):
        add(
            "score.thresholds",
            f"must be a mapping of name: value, got {_show(thresholds)}",
            ("score", "thresholds"),
        )
        return frames, {}
    from mimicache.config.thresholds import check_thresholds

    try:
        check_thresholds(thresholds)
    except ConfigError as exc:
        add("score.thresholds", str(exc), ("score", "thresholds"))
        return frames, {}
    return frames, {str(k): float(v) for k, v in thresholds.items()}


def _retarget_key(pose: Mapping, add) -> str | None:
    if "retarget" not in pose:
        return None
    value = pose["retarget"]
    if isinstance(value, str) and value in RETARGET_MODES:
        return value
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, RETARGET_MODES, n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
    add(
        "pose.retarget",
        f"must be one of: {', '.join(RETARGET_MODES)}; got {_show(value)}{hint}",
        ("pose", "retarget"),
    )
    return None


def _person_key(pose: Mapping, add) -> str | None:
    if pose.get("person") is None:
        return None
    try:
        return person_choice(pose["person"])
    except ValueError as exc:
        add("pose.person", str(exc), ("pose", "person"))
        return None


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
