"""README's first steps, as written: each command it shows there runs here, and prints what the
README says it prints (numbers, versions and sizes aside). `mimicache doctor` runs on the
repository's own `configs/test.yaml` before any weight is there; `mimicache download` runs
against a hub served on localhost (tests/hub_server.py), with the README's own arguments; the
demo's lines are checked where the demo runs (test_cli)."""

from __future__ import annotations

import itertools
import re
import shlex
import shutil
from pathlib import Path

from mimicache.cli.main import main
from tests.hub_server import FakeHub, real_repos
from tests.test_download import TOKEN, _point_hub_at

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def first_steps() -> list[tuple[str, str]]:
    """(command, the output the README shows for it) in the "First steps" section: each
    ```bash block's last command and the ```text block after it."""
    section = README.split("## First steps", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```(\w+)\n(.*?)^```", section, flags=re.M | re.S)
    pairs = []
    for (kind, body), (after, shown) in itertools.pairwise(blocks):
        if kind == "bash" and after == "text":
            command = [line for line in body.splitlines() if line.strip()][-1]
            pairs.append((re.sub(r"\s+#.*$", "", command).strip(), shown))
    return pairs


def normal(line: str) -> str:
    """A line with its sizes as "…", its other numbers (versions, seconds) as "N", its spaces
    collapsed: what stays the same from one machine and one run to the next."""
    line = re.sub(r"\d+(\.\d+)?\s?(B|kB|MB|GB|TB)\b", "…", line)
    line = re.sub(r"\d+(\.\d+)*", "N", line)
    return " ".join(line.split())


def assert_shown(shown: str, printed: str) -> None:
    """Every line the README shows is printed, in its order; "..." stands for lines left out."""
    lines = [normal(x) for x in printed.splitlines() if x.strip()]
    at = 0
    for want in (normal(x) for x in shown.splitlines() if x.strip()):
        if want == "...":
            continue
        assert want in lines[at:], f"README shows {want!r}; printed:\n{printed}"
        at = lines.index(want, at) + 1


def test_the_readme_shows_first_steps_with_their_output():
    commands = [command for command, _ in first_steps()]
    assert commands[:3] == [
        "bash .ci/run",  # the block of the two set-up commands, the demo's output after it
        "mimicache doctor",
        "mimicache download --ref_image me.png --video sign.mp4",
    ]


def test_doctor_prints_what_the_readme_shows(tmp_path, monkeypatch, capsys):
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)  # a clone before any weight or input is there
    # online as a new user is, with an empty hub cache (nothing is fetched: doctor only looks)
    _point_hub_at(monkeypatch, "http://127.0.0.1:9", tmp_path / "hf-home")
    [(command, shown)] = [(c, s) for c, s in first_steps() if c.startswith("mimicache doctor")]
    assert main(shlex.split(command)[1:]) == 1  # a run would fail: the weights are missing
    assert_shown(shown, capsys.readouterr().out)


def test_download_prints_what_the_readme_shows(tmp_path, monkeypatch, capsys):
    [(command, shown)] = [(c, s) for c, s in first_steps() if c.startswith("mimicache download")]
    argv = shlex.split(command)[1:]
    hub = FakeHub(real_repos(tmp_path / "dwpose"), token=TOKEN).start()
    try:
        _point_hub_at(monkeypatch, hub.endpoint, tmp_path / "hf-home")
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        work = tmp_path / "clone"
        work.mkdir()
        monkeypatch.chdir(work)
        for name in (argv[argv.index("--ref_image") + 1], argv[argv.index("--video") + 1]):
            (work / name).write_bytes(b"an input")
        assert main(argv) == 0
        printed = capsys.readouterr().out
    finally:
        from huggingface_hub import close_session

        close_session()
        hub.stop()
    assert_shown(shown, printed)
    assert (work / "configs" / "real.yaml").is_file()


def test_the_comparison_catches_a_line_the_command_does_not_print():
    shown = "ok    torch          2.13.0+cpu (CPU-only build)\n...\nwrote configs/real.yaml\n"
    printed = "ok torch 2.14.1+cpu (CPU-only build)\nother\nwrote configs/real.yaml\n"
    assert_shown(shown, printed)  # versions differ, the line is the same
    try:
        assert_shown(shown, printed.replace("wrote", "kept"))
    except AssertionError:
        return
    raise AssertionError("a missing line passed")
