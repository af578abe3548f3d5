"""The library speaks in its own settings; only the CLI names flags.

Lower layers name a setting with ``mimicache.errors.setting`` (``person='largest'``); the CLI's
``flag_words`` turns that into the flag (``--person largest``) wherever it prints or logs.
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

from mimicache.cli.console import FLAGS, call_command, flag_words
from mimicache.cli.main import build_parser
from mimicache.config import load_config
from mimicache.errors import ConfigError, setting

SRC = Path(__file__).resolve().parents[1] / "src" / "mimicache"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]+")

# (module, flag) -> why the literal may stay outside cli/
ALLOWED = {
    ("cache/store.py", "--fix"): "a whole command to run (`mimicache cache verify --fix`)",
    (
        "batch/executing/ray_executor.py",
        "--head",
    ): "Ray's own command (`ray start --head`), not ours",
}


def flag_literals(source: str) -> list[tuple[int, str]]:
    """(line, flag) of every string literal naming a ``--flag``; docstrings are prose."""
    tree = ast.parse(source)
    docs = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    # An option's field declares its flag (``Flag("--speed", help)``): that declaration is
    # where the CLI's spelling comes from, so its literals are the CLI's, not a message's.
    declared = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Flag"
        for inner in ast.walk(node)
    }
    return sorted(
        (node.lineno, flag)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if id(node) not in docs and id(node) not in declared
        for flag in FLAG.findall(node.value)
    )


def test_no_flag_names_outside_the_cli():
    found = sorted(
        f"{module}:{line} {flag}"
        for path in SRC.rglob("*.py")
        if (module := path.relative_to(SRC).as_posix()).split("/")[0] != "cli"
        for line, flag in flag_literals(path.read_text())
        if (module, flag) not in ALLOWED
    )
    assert found == []


def test_the_flag_scan_sees_literals_but_not_prose():
    source = (
        '"""Module prose may say --person."""\n'
        "def f(n):\n"
        '    """So may a docstring: --speed."""\n'
        '    raise ValueError(f"--person {n}: no such dancer")\n'
        'HINT = "use " + "--dwpose_backend torch"\n'
        'SPAN = "a range like 1--3 is not a flag"\n'
        'SPEED = option("exact", flag=Flag("--speed", "see --compile"))\n'
    )
    assert flag_literals(source) == [(4, "--person"), (5, "--dwpose_backend")]


def _options(parser: argparse.ArgumentParser) -> set[str]:
    options = set()
    for action in parser._actions:
        options.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options |= _options(sub)
    return options


def test_every_named_setting_has_a_real_flag():
    named = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "setting"
                and isinstance(node.args[0], ast.Constant)
            ):
                named.add(node.args[0].value)
    assert named and named <= set(FLAGS), sorted(named - set(FLAGS))
    assert set(FLAGS.values()) <= _options(build_parser())


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"{setting('person', '2')}: the video", "--person 2: the video"),
        (
            f"{setting('compile', True)} needs {setting('speed', 'fast')}",
            "--compile needs --speed fast",
        ),
        (f"{setting('batch_folder', Path('/a b'))} is missing", "--batch_folder '/a b' is missing"),
        (f"{setting('max_size', -5)} must not be negative", "--max-size -5 must not be negative"),
        ("dim=1 and stage='x' are not settings", "dim=1 and stage='x' are not settings"),
    ],
)
def test_flag_words_names_the_flag(text, shown):
    assert flag_words(text) == shown


def test_the_library_names_settings_and_the_cli_names_flags(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert "--" not in str(caught.value) and "inference_config='configs/test.yaml'" in str(
        caught.value
    )

    def command(args):
        load_config(args.inference_config)

    assert call_command(command, argparse.Namespace(inference_config=missing)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {missing}: config file not found")
    assert "(--inference_config configs/test.yaml by default)" in err
