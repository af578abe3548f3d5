"""The cache's contracts across versions and modules: format, file modes, modes, plans, imports."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mimicache.cache import CacheMode, FeatureStore, MissReason, StageKey
from mimicache.cache.database import cannot_write, sqlite_error_code
from mimicache.storage.files import atomic_write
from tests.cache_helpers import make_key, sample_tensors

OLD_ENTRY = Path(__file__).parent / "data" / "entry_v1_mimicache-0.1.0.safetensors"


def test_entry_written_by_mimicache_0_1_0_still_hits(tmp_path: Path) -> None:
    """The file was written by the first release's store; its key must still find it."""
    key = StageKey({"video": "0" * 64}, {"dwpose": "f" * 64}, {"effective_stride": 2, "code": 1})
    store = FeatureStore(tmp_path)
    path = store.entry_path("video_keypoints", key)
    assert path.relative_to(tmp_path).parts[:3] == ("v1", "video_keypoints", key.digest[:2])
    path.parent.mkdir(parents=True)
    shutil.copyfile(OLD_ENTRY, path)

    def compute() -> dict[str, torch.Tensor]:
        raise AssertionError("an entry of the old format must be read, not recomputed")

    tensors, event = store.get_or_compute("video_keypoints", key, compute, subject="/x.mp4")
    assert event.hit and event.bytes == OLD_ENTRY.stat().st_size
    assert torch.equal(tensors["keypoints"], torch.arange(24.0).reshape(2, 3, 4) / 8)
    assert torch.equal(tensors["frames"], torch.tensor([0, 2, 4]))
    (info,) = store.entries()
    assert (info.subject, info.inputs) == ("/data/dance.mp4", {"video": "0" * 64})
    assert store.verify().problems == []


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_get_the_umask_mode(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        store = FeatureStore(tmp_path / "cache")
        store.get_or_compute("stage_a", make_key(), lambda: sample_tensors())
        atomic_write(tmp_path / "by_writer.bin", lambda f: f.write(b"abc"))
        atomic_write(tmp_path / "by_bytes.bin", b"abc")
    finally:
        os.umask(old)
    files = [
        store.entry_path("stage_a", make_key()),
        tmp_path / "cache" / "CACHEDIR.TAG",
        store.index_path,
        *(tmp_path / "cache").rglob("*.lock"),
        tmp_path / "by_writer.bin",
        tmp_path / "by_bytes.bin",
    ]
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: mode for f in files}
    assert (tmp_path / "by_writer.bin").read_bytes() == b"abc"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["by_bytes.bin", "by_writer.bin", "cache"]


def test_failed_atomic_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def broken(f: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(target, broken)
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"] and target.read_bytes() == b"old"


@pytest.mark.parametrize(
    ("flags", "mode"),
    [
        ({}, CacheMode.READ_WRITE),
        ({"enabled": False}, CacheMode.OFF),
        ({"write": False}, CacheMode.READ_ONLY),
        ({"read": False}, CacheMode.REFRESH),
        ({"force_refresh": True}, CacheMode.REFRESH),
        ({"read": False, "write": False}, CacheMode.OFF),
    ],
)
def test_old_keywords_give_one_mode(
    tmp_path: Path, flags: dict[str, bool], mode: CacheMode
) -> None:
    store = FeatureStore(tmp_path, **flags)
    assert store.mode is mode
    assert (store.enabled, store.read, store.write) == (
        mode is not CacheMode.OFF,
        mode in (CacheMode.READ_ONLY, CacheMode.READ_WRITE),
        mode in (CacheMode.READ_WRITE, CacheMode.REFRESH),
    )


def test_modes_behave(tmp_path: Path) -> None:
    FeatureStore(tmp_path).get_or_compute("s", make_key(), lambda: sample_tensors(1))
    reasons = {}
    for mode in CacheMode:
        store = FeatureStore(tmp_path, mode=mode)
        _, ev = store.get_or_compute("s", make_key(), lambda: sample_tensors(2))
        _, new = store.get_or_compute("s", make_key(video="new"), lambda: sample_tensors(3))
        reasons[mode] = (ev.reason, new.bytes > 0)
    assert reasons == {
        CacheMode.OFF: ("disabled", False),
        CacheMode.READ_ONLY: ("hit", False),
        CacheMode.READ_WRITE: ("hit", True),
        CacheMode.REFRESH: ("forced", True),
    }


def test_miss_reasons_read_as_the_old_words() -> None:
    assert [str(r) for r in MissReason] == [
        "absent",
        "input changed",
        "model changed",
        "parameters changed",
        "computed on another platform",
        "only a strict entry (keyed by its platform), which cache_platform='any' never uses",
        "only an entry of cache_platform='any', which strict runs never use",
        "corrupt",
        "forced",
        "disabled",
    ]
    assert MissReason.INPUT_CHANGED == "input changed"
    assert f"{MissReason.CORRUPT}: {MissReason.FORCED:>8}" == "corrupt:   forced"


def _sqlite_error(tmp_path: Path, damage: bytes | None) -> sqlite3.Error:
    path = tmp_path / "db.sqlite"
    if damage is not None:
        path.write_bytes(damage)
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        conn.execute("SELECT * FROM sqlite_master").fetchall()
    except sqlite3.Error as exc:
        return exc
    raise AssertionError("no error")


def test_index_failures_are_classified_by_result_code(tmp_path: Path) -> None:
    missing = _sqlite_error(tmp_path, None)  # mode=ro on a missing file: cannot open
    garbage = _sqlite_error(tmp_path, b"not a database at all, certainly not" * 200)
    assert (sqlite_error_code(missing), cannot_write(missing)) == (sqlite3.SQLITE_CANTOPEN, True)
    assert (sqlite_error_code(garbage), cannot_write(garbage)) == (sqlite3.SQLITE_NOTADB, False)
    assert cannot_write(OSError(errno.EROFS, "Read-only file system"))


def test_plan_says_what_it_frees_and_execute_what_it_did(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    for v in ("a", "b", "c"):
        store.get_or_compute("s", make_key(video=v), lambda: {"x": torch.zeros(500)})
    plan = store.plan_prune(max_size=0)
    assert plan.expected_freed_size == sum(e.size for e in store.entries()) > 0
    stuck = store.entry_path("s", make_key(video="b"))
    real_unlink = os.unlink

    def unlink(path: object, *args: object, **kwargs: object) -> None:
        if os.fspath(path) == os.fspath(stuck):  # type: ignore[arg-type]
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        real_unlink(path, *args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "unlink", unlink)
        result = plan.execute()
    assert [f.removal.path for f in result.failed] == [stuck]
    assert result.failed[0].error.startswith("EBUSY: ")
    assert sorted(r.key for r in result.removed) == sorted(
        make_key(video=v).digest for v in ("a", "c")
    )
    assert result.freed_size == plan.expected_freed_size - stuck.stat().st_size
    assert [e.path for e in store.entries()] == [stuck]  # the index kept its row


def test_the_cache_needs_nothing_of_mimicache_but_errors_and_storage(tmp_path: Path) -> None:
    """With the top-level package's __init__ (which loads the engine) kept out, the cache
    still works and records the installed version."""
    src = Path(__file__).parents[1] / "src" / "mimicache"
    code = (
        "import sys, types, importlib.metadata, torch\n"
        "pkg = types.ModuleType('mimicache')\n"
        f"pkg.__path__ = [{str(src)!r}]\n"
        "sys.modules['mimicache'] = pkg\n"
        "from mimicache.cache import FeatureStore, StageKey\n"
        f"s = FeatureStore({str(tmp_path)!r})\n"
        "s.get_or_compute('s', StageKey({}, {}, {}), lambda: {'x': torch.zeros(1)})\n"
        "from safetensors import safe_open\n"
        "with safe_open(str(s.entries()[0].path), 'pt') as f:\n"
        "    version = f.metadata()['mimicache_version']\n"
        "outside = sorted(m for m in sys.modules if m.startswith('mimicache.') and\n"
        "                 not m.startswith(('mimicache.cache', 'mimicache.errors',\n"
        "                                   'mimicache.storage')))\n"
        "print(outside, version == importlib.metadata.version('mimicache'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[] True"
