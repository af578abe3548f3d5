"""README.md and the docs site's pages as a test: their Python blocks run on the tiny bundle,
every `mimicache` and original script command they show parses with the real parsers (every
long flag exactly, no abbreviation), and every flag of `run`, `bench` and `pose` is explained
in them (the command line reference lists all of them anyway, generated)."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from mimicache.cli import build_parser
from mimicache.cli.flags import ORIGINAL_SCRIPT_DEFAULTS, add_run_arguments
from tests.engine_fixtures import figure_video, reference_image, write_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PAGES = sorted((ROOT / "docs").glob("*.md"))
DOCS = README + "".join(page.read_text(encoding="utf-8") for page in PAGES)
SEED_SCRIPTS = ("inference_raw_batch_cache.py", "inference_raw_batch_turbo.py")


def blocks(language: str, text: str = DOCS) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


def commands() -> list[str]:
    """Each `mimicache ...` / original script line of the bash blocks, continuations joined and
    trailing comments dropped."""
    found = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line.startswith("mimicache ") or (
                line.startswith("python ") and line.split()[1] in SEED_SCRIPTS
            ):
                found.append(line)
    return found


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def _seed_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seed")
    add_run_arguments(parser, ORIGINAL_SCRIPT_DEFAULTS)
    return parser


def invocations(line: str) -> list[tuple[argparse.ArgumentParser, list[str]]]:
    """The argument lists a README line stands for: ``[...]`` optional parts included,
    ``...`` (the flags of the line above) dropped, ``a | b`` alternatives of the last
    sub-command, shell arithmetic as a number."""
    line = re.sub(r"\$\(\(.*?\)\)", "1", line).replace("[", " ").replace("]", " ")
    words = [w for w in shlex.split(line) if w != "..."]
    if words[0] == "python":
        return [(_seed_parser(), words[2:])]
    parser, path = build_parser(), []
    for word in words[1:]:
        if word not in _subparsers(parser):
            break
        path.append(word)
        parser = _subparsers(parser)[word]
    rest = words[1 + len(path) :]
    alternatives, current = [], []
    for word in rest:
        if word == "|":
            alternatives.append(current)
            current = []
        else:
            current.append(word)
    alternatives.append(current)
    first = [*path, *alternatives[0]]
    return [(build_parser(), first)] + [
        (build_parser(), [*path[:-1], *alt]) for alt in alternatives[1:]
    ]


def _leaf(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    while argv and argv[0] in _subparsers(parser):
        parser, argv = _subparsers(parser)[argv[0]], argv[1:]
    return parser


README_COMMANDS = commands()


def test_the_readme_shows_commands_to_check():
    shown = " ".join(README_COMMANDS)
    for command in ("mimicache run", "mimicache bench", "mimicache pose", "mimicache cache",
                    "mimicache ui", "inference_raw_batch_cache.py"):  # fmt: skip
        assert command in shown


@pytest.mark.parametrize("line", README_COMMANDS)
def test_every_readme_command_parses(line):
    for parser, argv in invocations(line):
        leaf = _leaf(parser, argv)
        unknown = [
            w.split("=")[0]
            for w in argv
            if w.startswith("-") and w.split("=")[0] not in leaf._option_string_actions
        ]
        assert not unknown, f"README: {line!r} uses {unknown}, which {leaf.prog} does not have"
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"README: {line!r} does not parse as {argv} (see the error above)")


def test_the_parse_check_catches_a_flag_that_does_not_exist():
    ((parser, argv),) = invocations("mimicache run --inference_config c.yaml --no_such_flag 1")
    with pytest.raises(SystemExit):
        parser.parse_args(argv)
    ((parser, argv),) = invocations("mimicache run --inference c.yaml")  # an abbreviation
    assert "--inference" not in _leaf(parser, argv)._option_string_actions


@pytest.mark.parametrize("command", ["run", "bench", "pose", "score", "grid"])
def test_every_flag_is_in_the_readme(command):
    parser = _subparsers(build_parser())[command]
    flags = [f for f in parser._option_string_actions if f not in ("-h", "--help")]
    missing = [f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", DOCS)]
    assert not missing, f"README.md and docs/ do not explain `mimicache {command}` {missing}"


def test_the_python_blocks_run_on_the_tiny_bundle(tiny_bundle, tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    image = reference_image(tmp_path / "ref.png")
    video = figure_video(tmp_path / "walk.mp4", frames=4)
    write_config(tmp_path / "configs" / "test.yaml", tiny_bundle, image, video)
    monkeypatch.chdir(tmp_path)
    python = list(dict.fromkeys(blocks("python")))  # a block shown on two pages runs once
    assert python, "README.md has no ```python block"
    namespace: dict = {}
    for code in python:
        exec(compile(code, "README.md", "exec"), namespace)
    # what the snippet's comments promise
    frames = namespace["result"].frames
    assert frames.dtype == np.uint8 and frames.shape == (4, 64, 64, 3)
    preview = namespace["preview"]
    assert preview.pose_frames.shape == (5, 64, 64, 3)
    # generate filled the keypoint entries; another person choice redraws the pose frames
    hits = {event.stage: event.hit for event in preview.cache_events}
    assert hits == {"image_keypoints": True, "video_keypoints": True, "pose_frames": False}
    assert (tmp_path / "cache" / "features").is_dir()
