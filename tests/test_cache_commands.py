"""`mimicache cache ls | stats | verify | prune | clear`: parsing, output, exit codes."""

from __future__ import annotations

import argparse
import io
import os
import time
from pathlib import Path

import pytest
import torch

from mimicache.cache.store import FeatureStore
from mimicache.cli.cache import add_cache_commands, main, run_cache_command
from mimicache.storage.sizes import format_size
from tests.cache_helpers import make_key, simulate_read_only_mount


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mimicache")
    sub = parser.add_subparsers(dest="command", required=True)
    add_cache_commands(sub)
    return parser.parse_args(argv)


def run(argv: list[str], stdin: str | None = None, tty: bool = False) -> tuple[int, str, str]:
    args = parse(["cache", *argv])
    assert args.func is run_cache_command
    out, err = io.StringIO(), io.StringIO()
    inp = io.StringIO(stdin or "")
    inp.isatty = lambda: tty  # type: ignore[method-assign]
    code = run_cache_command(args, stdout=out, stderr=err, stdin=inp)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """A cache with two stages: two 1000-byte entries in stage_a, one in stage_b."""
    root = tmp_path / "cache"
    store = FeatureStore(root)
    for stage, video in (("stage_a", "a1"), ("stage_a", "a2"), ("stage_b", "b1")):
        store.get_or_compute(
            stage,
            make_key(video=video),
            lambda: {"x": torch.zeros(1000, dtype=torch.uint8)},
            subject=f"/data/{video}.mp4",
        )
    store.close()
    return root


def test_defaults_and_flags() -> None:
    args = parse(["cache", "ls"])
    assert (args.cache_command, args.feature_cache_dir, args.stage) == (
        "ls",
        "cache/features",
        None,
    )
    args = parse(["cache", "prune", "--max-size", "1.5GiB", "--older-than", "7", "--dry-run"])
    assert (args.max_size, args.older_than, args.dry_run) == (1_610_612_736, 7.0, True)
    args = parse(["cache", "clear", "--stage", "s", "--yes", "--feature_cache_dir", "/x"])
    assert (args.stage, args.yes, args.feature_cache_dir) == ("s", True, "/x")
    assert parse(["cache", "verify", "--fix"]).fix is True


@pytest.mark.parametrize("bad", [["--max-size", "lots"], ["--older-than", "-1"]])
def test_bad_values_are_usage_errors(bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(["cache", "prune", *bad])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid size 'lots'" in err or "--older-than must be >= 0" in err


def test_ls(cache: Path) -> None:
    code, out, _ = run(["ls", "--feature_cache_dir", str(cache)])
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "STAGE",
        "KEY",
        "SUBJECT",
        "/",
        "INPUTS",
        "PLATFORM",
        "SIZE",
        "CREATED",
        "LAST",
        "USED",
    ]
    sizes = {e.subject: format_size(e.size) for e in FeatureStore(cache).entries()}
    total = sum(e.size for e in FeatureStore(cache).entries())
    today = time.strftime("%Y-%m-%d")
    rows = [line.split() for line in lines[1:4]]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("stage_a", make_key(video="a2").digest[:12], "/data/a2.mp4"),
        ("stage_a", make_key(video="a1").digest[:12], "/data/a1.mp4"),
        ("stage_b", make_key(video="b1").digest[:12], "/data/b1.mp4"),
    ]
    # entries whose key has no platform group show "-"
    assert all(
        r[3] == "-" and " ".join(r[4:6]) == sizes[r[2]] and r[6] == r[8] == today for r in rows
    )
    assert lines[4] == f"3 entries, {format_size(total)} in {cache}"
    code, out, _ = run(["ls", "--stage", "stage_b", "--feature_cache_dir", str(cache)])
    assert code == 0 and "/data/b1.mp4" in out and "/data/a1.mp4" not in out
    assert out.splitlines()[-1].startswith("1 entry, ")
    code, out, _ = run(["ls", "--stage", "video_keypoints", "--feature_cache_dir", str(cache)])
    assert (code, out.strip()) == (0, f"No entries for stage 'video_keypoints' in {cache}")


def test_stats(cache: Path) -> None:
    sizes = {e.subject: e.size for e in FeatureStore(cache).entries()}
    a = sizes["/data/a1.mp4"] + sizes["/data/a2.mp4"]
    b = sizes["/data/b1.mp4"]
    code, out, _ = run(["stats", "--feature_cache_dir", str(cache)])
    assert code == 0
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["STAGE", "ENTRIES", "SIZE", "BYTES"]
    assert rows[1] == ["stage_a", "2", *format_size(a).split(), str(a)]
    assert rows[2] == ["stage_b", "1", *format_size(b).split(), str(b)]
    assert rows[3] == ["TOTAL", "3", *format_size(a + b).split(), str(a + b)]


def test_verify_and_fix(cache: Path) -> None:
    code, out, _ = run(["verify", "--feature_cache_dir", str(cache)])
    assert (code, out.strip()) == (0, f"3 entries OK in {cache}")
    bad = FeatureStore(cache).entry_path("stage_b", make_key(video="b1"))
    bad.write_bytes(bad.read_bytes()[:-10])
    code, out, _ = run(["verify", "--feature_cache_dir", str(cache)])
    assert code == 1
    assert f"corrupt: {bad.relative_to(cache)}:" in out and "[fixed]" not in out
    assert "cache verify --fix" in out and bad.exists()
    code, out, _ = run(["verify", "--fix", "--feature_cache_dir", str(cache)])
    assert code == 0 and "[fixed]" in out and "1 problem (1 fixed); 2 good entries" in out
    assert not bad.exists()
    assert run(["verify", "--feature_cache_dir", str(cache)])[0] == 0


def test_verify_finds_the_tag_write_a_kill_left_at_the_root(cache: Path) -> None:
    """A kill during the root's first write leaves the tag's temp file at the root."""
    dead = 2**22 + 7  # above the largest pid Linux allows: no process has it
    left = cache / f".CACHEDIR.TAG.{dead}.0badc0de.tmp"
    left.write_bytes(b"Signature: 8a477f59")
    live = cache / f".CACHEDIR.TAG.{os.getpid()}.cafef00d.tmp"  # a write in progress
    live.write_bytes(b"Signature: 8a4")
    code, out, _ = run(["verify", "--feature_cache_dir", str(cache)])
    assert code == 0 and left.name in out and live.name in out and "is gone" in out
    assert "2 leftover temp files (0 removed)" in out and left.exists()
    code, out, _ = run(["verify", "--fix", "--feature_cache_dir", str(cache)])
    assert not left.exists() and live.exists()
    live.unlink()
    code, out, _ = run(["verify", "--feature_cache_dir", str(cache)])
    assert (code, out.strip()) == (0, f"3 entries OK in {cache}")


def test_prune(cache: Path) -> None:
    store = FeatureStore(cache)
    store.get_or_compute("stage_a", make_key(video="a1"), lambda: {})  # a1: most recently used
    sizes = {e.subject: e.size for e in store.entries()}
    keep = sizes["/data/a1.mp4"] + sizes["/data/b1.mp4"]  # a2 is the least recently used
    limit = str(keep)
    code, out, _ = run(
        ["prune", "--max-size", limit, "--dry-run", "--feature_cache_dir", str(cache)]
    )
    assert code == 0
    assert out.startswith(f"Would remove stage_a {make_key(video='a2').digest[:12]} ")
    assert out.splitlines()[-1] == (
        f"Would remove 1 entry ({format_size(sizes['/data/a2.mp4'])}); 2 entries "
        f"({format_size(keep)}) would remain in {cache}"
    )
    assert len(store.entries()) == 3
    code, out, _ = run(["prune", "--max-size", limit, "--feature_cache_dir", str(cache)])
    assert code == 0 and "over the size limit" in out
    assert sorted(e.subject for e in store.entries()) == ["/data/a1.mp4", "/data/b1.mp4"]
    code, out, _ = run(["prune", "--older-than", "0", "--feature_cache_dir", str(cache)])
    assert code == 0 and out.splitlines()[-1].startswith("Removed 2 entries")
    assert store.entries() == []


def test_clear_asks_refuses_and_removes(cache: Path) -> None:
    argv = ["clear", "--feature_cache_dir", str(cache)]
    code, out, err = run(argv)  # no terminal: refuse
    assert code == 2 and "without --yes" in err and "3 entries" in err
    assert len(FeatureStore(cache).entries()) == 3
    code, out, _ = run(argv, stdin="n\n", tty=True)
    assert code == 1 and "[y/N]" in out and "Aborted" in out
    code, out, _ = run([*argv, "--stage", "stage_a"], stdin="y\n", tty=True)
    assert code == 0 and "Removed 2 entries" in out
    assert [e.stage for e in FeatureStore(cache).entries()] == ["stage_b"]
    code, out, _ = run([*argv, "--yes"])
    assert code == 0 and out.startswith("Removed 1 entry")
    assert FeatureStore(cache).entries() == [] and (cache / "CACHEDIR.TAG").exists()


def test_missing_dir_and_bad_stage(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for action in ("ls", "stats", "verify", "prune"):
        code, out, _ = run([action, "--feature_cache_dir", str(missing)])
        assert code == 0 and "No feature cache at" in out
    assert not missing.exists()
    (tmp_path / "file").write_text("x")
    code, _, err = run(["ls", "--feature_cache_dir", str(tmp_path / "file")])
    assert code == 2 and "not a directory" in err
    (tmp_path / "c").mkdir()
    code, _, err = run(["ls", "--stage", "../x", "--feature_cache_dir", str(tmp_path / "c")])
    assert code == 2 and err.startswith("error: invalid cache stage name")


def test_module_main(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "--feature_cache_dir", str(cache)]) == 0
    assert "TOTAL" in capsys.readouterr().out
    assert os.path.isdir(cache)


# --------------------------------------------------------------------------- faults (issue 8)


def test_prune_on_read_only_root_counts_only_what_was_removed(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulate_read_only_mount(monkeypatch, cache)
    code, out, err = run(["prune", "--max-size", "1KB", "--feature_cache_dir", str(cache)])
    assert code == 1
    assert "Removed stage_" not in out
    assert out.splitlines()[-1].startswith("Removed nothing; 3 entries (")
    assert "Cannot remove 3 entries" in err and "EROFS" in err
    monkeypatch.undo()
    assert len(FeatureStore(cache, write=False).entries()) == 3


def test_clear_on_read_only_root_removes_nothing_and_says_so(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulate_read_only_mount(monkeypatch, cache)
    code, out, err = run(["clear", "--yes", "--feature_cache_dir", str(cache)])
    assert code == 1
    assert out.strip() == f"Removed nothing from {cache}"
    assert "Cannot remove 3 entries" in err and "EROFS" in err
    monkeypatch.undo()
    assert len(FeatureStore(cache, write=False).entries()) == 3


def test_verify_on_read_only_root_reads_the_index(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulate_read_only_mount(monkeypatch, cache)
    code, out, err = run(["verify", "--feature_cache_dir", str(cache)])
    assert (code, out.strip(), err) == (0, f"3 entries OK in {cache}", "")
    code, out, _ = run(["verify", "--fix", "--feature_cache_dir", str(cache)])
    assert (code, out.strip()) == (0, f"3 entries OK in {cache}")


def test_verify_counts_only_good_entries(cache: Path) -> None:
    store = FeatureStore(cache)
    bad = [store.entry_path("stage_a", make_key(video=v)) for v in ("a1", "a2")]
    for path in bad:
        path.write_bytes(path.read_bytes()[:-10])
    code, out, _ = run(["verify", "--feature_cache_dir", str(cache)])
    assert code == 1
    assert f"2 problems (0 fixed); 1 good entry in {cache}" in out


@pytest.mark.parametrize("action", [["ls"], ["clear", "--yes"]])
def test_unknown_stage_is_rejected_with_the_stages(cache: Path, action: list[str]) -> None:
    code, out, err = run([*action, "--stage", "stage_c", "--feature_cache_dir", str(cache)])
    assert (code, out) == (2, "")
    assert err.startswith("error: unknown stage 'stage_c' (--stage); the stages are: ")
    assert "stage_a, stage_b" in err and "video_keypoints" in err and "vae_latents" in err
    assert len(FeatureStore(cache, write=False).entries()) == 3


def test_read_only_commands_never_create_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    where = tmp_path / "cache" / "features"
    code, out, _ = run(["stats"])
    assert code == 0
    assert out.splitlines()[-2].split() == ["TOTAL", "0", "0", "B", "0"]
    assert out.splitlines()[-1] == f"No feature cache at {where}"
    code, out, _ = run(["ls"])
    assert (code, out.strip()) == (0, f"No feature cache at {where}")
    code, out, _ = run(["verify"])
    assert (code, out.strip()) == (0, f"No feature cache at {where}")
    assert not (tmp_path / "cache").exists()
    # an existing cache without an index: looking at it writes nothing either
    root = tmp_path / "c"
    root.mkdir()
    for action in ("stats", "ls", "verify"):
        assert run([action, "--feature_cache_dir", str(root)])[0] == 0
    assert list(root.iterdir()) == []
