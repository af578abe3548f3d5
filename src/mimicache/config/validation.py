"""Checks of config values, with the messages that name the key (and line), and YAML helpers."""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mimicache.config.fields import (
    _FLOAT_FIELDS,
    _HUB_ID,
    _INT_FIELDS,
    _MAX_SEED,
    _PATH_FIELDS,
    DEFAULT_DWPOSE_DET_PATH,
    DEFAULT_DWPOSE_POSE_PATH,
    DWPOSE_HF_REPO,
    PERSON_MODES,
)
from mimicache.config.hub import HubFile, hub_file, hub_repo, is_hub_reference, local_file
from mimicache.errors import ConfigError, ModelLoadError
from mimicache.storage.fetch import input_url

# --------------------------------------------------------------------------- model files

_DWPOSE_FILES = {
    "detector": ("det_model_path", DEFAULT_DWPOSE_DET_PATH),
    "pose": ("pose_model_path", DEFAULT_DWPOSE_POSE_PATH),
}


def check_dwpose_files(
    det_model_path: str | Path, pose_model_path: str | Path, how: Mapping[str, str] | None = None
) -> None:
    """Raise ModelLoadError naming the first of the two DWPose ONNX files that is not there,
    where to download it and how to give its path: ``how[role]`` ("detector", "pose"), by
    default the config key. A path check only: it runs before anything is loaded (a hub
    reference is resolved here: fetched into the hub cache unless it is there)."""
    for role, path in (("detector", det_model_path), ("pose", pose_model_path)):
        path = local_file(path)
        if path.is_file():
            continue
        key, default = _DWPOSE_FILES[role]
        give = (how or {}).get(role) or f"dwpose.{key} in the config"
        raise ModelLoadError(
            f"DWPose {role} model not found: {path}. Download '{default.name}' from the "
            f"Hugging Face repo {DWPOSE_HF_REPO} (https://huggingface.co/{DWPOSE_HF_REPO}) "
            f"into {path.parent}/, or give its path with {give}."
        )


# --------------------------------------------------------------------------- validation


def check_case_values(values: Mapping[str, Any]) -> None:
    """``ConfigError`` naming each test-case value of ``values`` that is not valid; each is
    checked against the others given, never against defaults."""
    problems = _check_case(values, prefix="")
    if problems:
        raise ConfigError(_join_problems(None, [(key, msg) for key, msg, _ in problems]))


def _check_case(values: Mapping[str, Any], prefix: str) -> list[tuple[str, str, None]]:
    """Problems with the case fields present in ``values`` as (key, message, None)."""
    out: list[tuple[str, str, None]] = []

    def bad(name: str, msg: str) -> None:
        out.append((prefix + name, msg, None))

    for name in _PATH_FIELDS:
        if name in values and not _is_path_string(values[name]):
            bad(name, f"must be a file path, got {_show(values[name])}")

    ok_int = _check_int_types(values, bad)
    _check_int_ranges(ok_int, bad)
    _check_floats(values, bad)
    return out


def _check_int_types(values: Mapping[str, Any], bad) -> dict[str, int]:
    """The integer fields that are integers; the others reported."""
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
    return ok_int


def _check_int_ranges(ok_int: Mapping[str, int], bad) -> None:
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
        from mimicache.media import long_side

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


def _check_floats(values: Mapping[str, Any], bad) -> None:
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


def person_choice(value: Any) -> str:
    """The canonical person choice ("auto", "largest", "center" or a whole number as text, e.g.
    "1") of a config or flag value; ``ValueError`` with the choices otherwise."""
    if _is_int(value) and value >= 0:
        return str(int(value))
    if isinstance(value, str):
        text = value.strip().lower()
        if text in PERSON_MODES:
            return text
        if text.isdigit():
            return str(int(text))
    raise ValueError(
        f"must be one of {', '.join(PERSON_MODES)} or a person number (0 = the first person "
        f"to appear, 1 = the second, ...); got {_show(value)}"
    )


def _unknown_hint(name: str, known: tuple[str, ...]) -> str:
    return f"'{name}' ({_suggest(name, known)})"


def _is_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if type(value).__module__ != "numpy":  # numpy loads only for its own values
        return False
    import numpy as np

    return isinstance(value, np.bool_)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not _is_bool(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not _is_bool(value)


def _is_path_string(value: Any) -> bool:
    return isinstance(value, (str, Path)) and bool(str(value).strip())


def _resolve_path(value: str | Path, root: Path) -> Path:
    if input_url(value) is not None:  # an input by URL: fetched where the job runs
        return Path(value)
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


def _model_file(value: str | Path, root: Path, key: str, loc: tuple, add) -> Path | HubFile | None:
    """A model file's path (resolved like any path), or its hub reference as written (resolved
    to the hub cache when the file is used); None with a problem added when malformed."""
    try:
        ref = hub_file(value)
    except ConfigError as exc:
        add(key, str(exc), loc)
        return None
    return ref if ref is not None else _resolve_path(value, root)


def _base_model(value: str | Path, root: Path, add) -> str | Path | None:
    text = str(value)
    if is_hub_reference(text):  # hf://OWNER/REPO[@REVISION]: kept as written
        try:
            hub_repo(text)
        except ConfigError as exc:
            add("base_model_path", str(exc), ("base_model_path",))
            return None
        return text.rstrip("/")
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
    if _is_bool(value):
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
