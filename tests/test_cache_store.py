"""FeatureStore: hits, misses and their reasons, round trips, faults, concurrency, admin."""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import filelock
import pytest
import torch
from safetensors import safe_open

from mimicache.cache import digest_memo as digests_mod
from mimicache.cache import index as index_mod
from mimicache.cache.entry import tensor_checksum
from mimicache.cache.store import CacheEvent, FeatureStore, StageKey
from mimicache.errors import CacheError, StorageError
from mimicache.storage.sizes import format_size, parse_size
from tests.cache_helpers import (
    concurrent_worker,
    count_lines,
    make_key,
    sample_tensors,
    simulate_read_only_mount,
)

STAGE = "stage_a"


class Counter:
    """A compute function that counts its calls and returns fixed tensors."""

    def __init__(self, tensors: dict[str, torch.Tensor] | None = None) -> None:
        self.calls = 0
        self.tensors = tensors if tensors is not None else sample_tensors()

    def __call__(self) -> dict[str, torch.Tensor]:
        self.calls += 1
        return self.tensors


def get(
    store: FeatureStore,
    key: StageKey,
    compute: Callable[[], dict[str, torch.Tensor]] | None = None,
    subject: str | None = "/data/in.mp4",
    stage: str = STAGE,
) -> tuple[dict[str, torch.Tensor], CacheEvent]:
    return store.get_or_compute(stage, key, compute or Counter(), subject=subject)


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        raw_a, raw_b = (t.reshape(-1).contiguous().view(torch.uint8) for t in (a[name], b[name]))
        assert torch.equal(raw_a, raw_b), name


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def only_entry(store: FeatureStore) -> Path:
    (entry,) = store.entries()
    return entry.path


# --------------------------------------------------------------------------- basics


def test_layout_tag_index_and_metadata(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "cache")
    key = make_key()
    _, ev = store.get_or_compute(
        STAGE, key, Counter(), subject="/data/in.mp4", metadata={"video_name": "in.mp4"}
    )
    root = tmp_path / "cache"
    path = root / "v1" / STAGE / key.digest[:2] / f"{key.digest}.safetensors"
    assert path.is_file() and ev.bytes == path.stat().st_size
    assert (
        (root / "CACHEDIR.TAG")
        .read_text()
        .startswith("Signature: 8a477f597d28d172789f06886806bc55")
    )
    assert (root / "index.sqlite").is_file()
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["stage"] == STAGE and meta["key"] == key.digest
    assert meta["fields"] == key.canonical
    assert meta["subject"] == "/data/in.mp4" and meta["video_name"] == "in.mp4"
    assert meta["checksum"] == tensor_checksum(sample_tensors())
    # no write time in the file (two writers write the same bytes): the index keeps it
    assert meta["mimicache_version"] and "created" not in meta
    assert store.entries()[0].created <= time.time()
    with pytest.raises(CacheError, match="metadata"):
        store.get_or_compute(STAGE, make_key("other"), Counter(), metadata={"stage": "x"})
    with pytest.raises(CacheError, match="stage name"):
        store.get_or_compute("../evil", key, Counter())


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {
        **sample_tensors(1),
        "bf16": torch.randn(3, 3).bfloat16(),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
        "nan_inf": torch.tensor([float("nan"), float("inf"), -0.0]),
        "transposed": base.t(),  # not contiguous
        "view_of_base": base[1:3],  # shares storage with "transposed"
    }
    store = FeatureStore(tmp_path)
    miss, ev1 = get(store, make_key(), Counter(tensors))
    hit, ev2 = get(store, make_key())
    assert (ev1.hit, ev2.hit) == (False, True)
    assert_same(miss, tensors)
    assert_same(hit, tensors)
    for t in (*miss.values(), *hit.values()):
        assert t.device.type == "cpu" and t.is_contiguous()


def test_reasons_and_log_messages(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mimicache.cache.store")
    store = FeatureStore(tmp_path)
    subject = "/data/in.mp4"
    seq = [
        (make_key(), "absent"),
        (make_key(), "hit"),
        (make_key(video="v2"), "input changed"),
        (make_key(video="v2", model="m2"), "model changed"),
        (make_key(video="v2", model="m2", stride=3), "parameters changed"),
        (make_key(video="v2", model="m2", stride=3), "hit"),
        (make_key(), "hit"),  # the original entry is still there
    ]
    for key, reason in seq:
        _, ev = get(store, key, subject=subject)
        assert (ev.reason, ev.hit, ev.stage, ev.key) == (reason, reason == "hit", STAGE, key.digest)
        assert ev.seconds >= 0 and ev.bytes > 0
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == f"Cache miss for {STAGE} ({subject}): absent; computing"
    assert messages[1].startswith(f"Loaded cached features for {STAGE} ({subject}) in ")
    assert messages[1].endswith(" ms")
    assert messages[2] == f"Cache miss for {STAGE} ({subject}): input changed; computing"
    # a key unseen for another subject is simply absent; no subject: absent
    assert get(store, make_key(video="v9"), subject="/data/other.mp4")[1].reason == "absent"
    assert get(store, make_key(video="v8"), subject=None)[1].reason == "absent"
    # an entry removed after use: absent again (not "changed")
    store.clear()
    assert get(store, make_key(), subject=subject)[1].reason == "absent"
    # another store on the same root (next run) remembers subjects
    assert get(FeatureStore(tmp_path), make_key(stride=5))[1].reason == "parameters changed"


def test_force_refresh_recomputes_and_overwrites(tmp_path: Path) -> None:
    get(FeatureStore(tmp_path), make_key(), Counter(sample_tensors(1)))
    forced = FeatureStore(tmp_path, force_refresh=True)
    compute = Counter(sample_tensors(2))
    tensors, ev = get(forced, make_key(), compute)
    assert (ev.hit, ev.reason, compute.calls) == (False, "forced", 1)
    tensors, ev = get(FeatureStore(tmp_path), make_key())
    assert ev.hit
    assert_same(tensors, sample_tensors(2))


def test_disabled_never_touches_disk(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    store = FeatureStore(root, enabled=False)
    compute = Counter()
    for _ in range(2):
        tensors, ev = get(store, make_key(), compute)
        assert (ev.hit, ev.reason, ev.bytes) == (False, "disabled", 0)
    assert compute.calls == 2 and not root.exists()
    assert_same(tensors, sample_tensors())
    assert store.entries() == [] and store.stats() == {} and store.prune(0) == []


def test_read_only_and_write_only_modes(tmp_path: Path) -> None:
    get(FeatureStore(tmp_path), make_key())
    ro = FeatureStore(tmp_path, write=False)
    assert get(ro, make_key())[1].hit
    _, ev = get(ro, make_key(video="new"))
    assert (ev.hit, ev.reason, ev.bytes) == (False, "input changed", 0)
    assert len(FeatureStore(tmp_path).entries()) == 1
    wo = FeatureStore(tmp_path, read=False)
    compute = Counter(sample_tensors(3))
    _, ev = get(wo, make_key(), compute)
    assert (ev.hit, ev.reason, compute.calls) == (False, "forced", 1)
    assert_same(get(FeatureStore(tmp_path), make_key())[0], sample_tensors(3))
    # a read-only store on a missing root warns and computes
    missing = FeatureStore(tmp_path / "missing", write=False)
    assert get(missing, make_key())[1].reason == "disabled"
    assert not (tmp_path / "missing").exists()


def test_compute_error_propagates_and_releases_lock(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)

    def boom() -> dict[str, torch.Tensor]:
        raise RuntimeError("model exploded")

    with pytest.raises(RuntimeError, match="exploded"):
        get(store, make_key(), boom)
    assert get(store, make_key())[1].reason == "absent"  # not deadlocked, nothing stored
    with pytest.raises(TypeError, match="dict of tensors"):
        get(store, make_key(video="x"), lambda: [torch.zeros(1)])  # type: ignore[arg-type, return-value]


# --------------------------------------------------------------------------- corruption


def _corrupt_and_reload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Callable[[Path], None]
) -> None:
    store = FeatureStore(tmp_path)
    get(store, make_key())
    path = only_entry(store)
    damage(path)
    caplog.set_level(logging.INFO, logger="mimicache.cache.store")
    compute = Counter()
    tensors, ev = get(store, make_key(), compute)
    assert (ev.hit, ev.reason, compute.calls) == (False, "corrupt", 1)
    assert_same(tensors, sample_tensors())
    assert any("corrupt" in m and str(path) in m for m in warnings_of(caplog))
    # rewritten: the next read is a clean hit with the right values
    tensors, ev = get(store, make_key())
    assert ev.hit
    assert_same(tensors, sample_tensors())
    assert store.verify().problems == []


def test_truncated_entry_recovers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def truncate(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 7])

    _corrupt_and_reload(tmp_path, caplog, truncate)


def test_empty_entry_recovers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _corrupt_and_reload(tmp_path, caplog, lambda p: p.write_bytes(b""))


@pytest.mark.parametrize("where", ["data", "header"])
def test_bit_flipped_entry_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    def flip(path: Path) -> None:
        data = bytearray(path.read_bytes())
        # the last data byte, or a character of the key digest in the header metadata
        key_at = data.index(make_key().digest.encode())
        pos = len(data) - 3 if where == "data" else key_at + 5
        data[pos] ^= 0x01
        path.write_bytes(bytes(data))

    _corrupt_and_reload(tmp_path, caplog, flip)


def test_entry_of_another_key_is_corrupt(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    get(store, make_key(video="a"))
    src = only_entry(store)
    dst = store.entry_path(STAGE, make_key(video="b"))
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())
    _, ev = get(store, make_key(video="b"), subject=None)
    assert ev.reason == "corrupt"


# --------------------------------------------------------------------------- faults


def test_four_processes_compute_once(tmp_path: Path) -> None:
    root, counter = str(tmp_path / "cache"), str(tmp_path / "computes.txt")
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 2.0  # after every worker has imported torch
    with ctx.Pool(4) as pool:
        results = pool.starmap(concurrent_worker, [(root, counter, start_at)] * 4)
    assert count_lines(counter) == 1
    assert sorted(r["hit"][0] for r in results) == [False, True, True, True]
    assert sorted(r["reason"][0] for r in results) == ["absent", "hit", "hit", "hit"]
    first = results[0]
    for r in results[1:]:
        assert {k: v for k, v in r.items() if k not in ("hit", "reason")} == {
            k: v for k, v in first.items() if k not in ("hit", "reason")
        }
    assert len(FeatureStore(root).entries()) == 1


def _raise(code: int) -> Callable[..., None]:
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    return fail


def test_read_only_root_warns_once_and_runs_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = FeatureStore(tmp_path / "cache")
    monkeypatch.setattr(os, "replace", _raise(errno.EROFS))
    monkeypatch.setattr(os, "link", _raise(errno.EROFS))  # entries are published by a link
    caplog.set_level(logging.INFO, logger="mimicache.cache.store")
    for i in range(3):
        tensors, ev = get(store, make_key(video=f"v{i}"), Counter(sample_tensors(i)))
        assert (ev.hit, ev.bytes) == (False, 0)
        assert_same(tensors, sample_tensors(i))
    (message,) = warnings_of(caplog)
    assert message == (
        f"feature cache at {tmp_path / 'cache'} is not writable "
        "(EROFS: Read-only file system): read-only: entries are read, nothing new is written"
    )
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and "v1" in p.parts] == []
    # nothing is read when refreshing: then it really runs without caching
    caplog.clear()
    get(FeatureStore(tmp_path / "cache", force_refresh=True), make_key())
    (message,) = warnings_of(caplog)
    assert message.endswith("(EROFS: Read-only file system): running without caching")


def test_fully_read_only_root_reads_entries_and_warns_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Like a read-only mount: nothing can be created (entries, locks, temp files, index)."""
    get(FeatureStore(tmp_path), make_key())
    real_open = os.open

    def ro_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    def ro_mkdir(path: object, *args: object, **kwargs: object) -> None:
        if os.path.exists(path):  # type: ignore[arg-type]
            raise FileExistsError(errno.EEXIST, "exists")
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    def ro_sqlite(*args: object, **kwargs: object) -> None:
        exc = sqlite3.OperationalError("unable to open database file")
        exc.sqlite_errorcode = sqlite3.SQLITE_CANTOPEN  # type: ignore[attr-defined]
        raise exc

    monkeypatch.setattr(os, "open", ro_open)
    monkeypatch.setattr(os, "mkdir", ro_mkdir)
    monkeypatch.setattr(os, "replace", _raise(errno.EROFS))
    monkeypatch.setattr(index_mod, "connect_sqlite", ro_sqlite)
    monkeypatch.setattr(digests_mod, "connect_sqlite", ro_sqlite)
    caplog.set_level(logging.INFO)
    store = FeatureStore(tmp_path)
    tensors, ev = get(store, make_key())
    assert ev.hit
    assert_same(tensors, sample_tensors())
    for i in range(2):
        tensors, ev = get(store, make_key(video=f"new{i}"), Counter(sample_tensors(i)))
        assert (ev.hit, ev.reason, ev.bytes) == (False, "absent", 0)
        assert_same(tensors, sample_tensors(i))
    (message,) = warnings_of(caplog)
    assert "is not writable" in message and "read-only: entries are read" in message
    assert [e.path for e in store.entries()] == [store.entry_path(STAGE, make_key())]


def test_enospc_during_write_warns_once_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = FeatureStore(tmp_path)
    get(store, make_key(video="before"))  # an entry that stays readable
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        if len(data) > 100:
            real_write(fd, bytes(data[:100]))  # a partial temp file, then the disk is full
            return 100
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    caplog.set_level(logging.WARNING, logger="mimicache.cache.store")
    for i in range(3):
        tensors, ev = get(store, make_key(video=f"v{i}"), Counter(sample_tensors(i)))
        assert (ev.hit, ev.reason, ev.bytes) == (False, "input changed", 0)  # vs "before"
        assert_same(tensors, sample_tensors(i))
    assert len(warnings_of(caplog)) == 1 and "ENOSPC" in warnings_of(caplog)[0]
    assert list(tmp_path.rglob("*.tmp")) == []
    assert get(store, make_key(video="before"))[1].hit  # reads still work


def test_root_that_cannot_be_created(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    caplog.set_level(logging.WARNING, logger="mimicache.cache.store")
    store = FeatureStore(blocker / "cache")
    for i in range(2):
        tensors, ev = get(store, make_key(video=f"v{i}"))
        assert (ev.hit, ev.reason) == (False, "disabled")
        assert_same(tensors, sample_tensors())
    (message,) = warnings_of(caplog)
    assert "is not writable" in message and "running without caching" in message


def test_leftover_temp_file_is_ignored_and_pruned(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    key = make_key()
    path = store.entry_path(STAGE, key)
    path.parent.mkdir(parents=True)
    stale = path.parent / f".{key.digest}.12345.deadbeef.tmp"
    stale.write_bytes(b"half-written garbage")
    fresh = path.parent / f".{key.digest}.12346.cafebabe.tmp"
    fresh.write_bytes(b"a write in progress")
    hour_ago = time.time() - 2 * 3600
    os.utime(stale, (hour_ago, hour_ago))
    _, ev = get(store, key)
    assert ev.reason == "absent"
    assert get(store, key)[1].hit
    assert [e.path for e in store.entries()] == [path]
    assert store.prune(dry_run=True)[0].path == stale and stale.exists()
    removed = store.prune()
    assert [(r.kind, r.path) for r in removed] == [("temp", stale)]
    assert not stale.exists() and fresh.exists() and path.exists()


def test_lost_index_still_hits_and_reindexes(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    get(store, make_key(), subject="/data/in.mp4")
    store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tmp_path / 'index.sqlite'}{suffix}").unlink(missing_ok=True)
    store = FeatureStore(tmp_path)
    tensors, ev = get(store, make_key())
    assert ev.hit
    assert_same(tensors, sample_tensors())
    (entry,) = store.entries()
    assert entry.subject == "/data/in.mp4" and entry.inputs == {"video": "v1"}
    assert store.verify().problems == []


def test_broken_index_is_survived_and_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with FeatureStore(tmp_path) as first:  # closed: no connection checkpoints over the garbage
        get(first, make_key())
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp_path / 'index.sqlite'}{suffix}").unlink(missing_ok=True)
    (tmp_path / "index.sqlite").write_bytes(b"garbage" * 1000)
    caplog.set_level(logging.WARNING)
    store = FeatureStore(tmp_path)
    assert get(store, make_key())[1].hit
    assert get(store, make_key(video="x"))[1].reason == "absent"  # no subject memory
    assert any("index" in m for m in warnings_of(caplog))
    problems = store.verify(fix=True).problems
    assert problems[0].kind == "index" and problems[0].fixed
    assert len(store.entries()) == 2 and store.verify().problems == []
    assert len(list(tmp_path.glob("index.sqlite.broken-*"))) == 1
    # `cache verify --fix` in a fresh process: the broken index is found before anything else
    store.close()
    (tmp_path / "index.sqlite").write_bytes(b"garbage" * 1000)
    fresh = FeatureStore(tmp_path)
    problems = fresh.verify(fix=True).problems
    assert (problems[0].kind, problems[0].fixed) == ("index", True)
    assert all(p.kind in ("index", "unindexed") and p.fixed for p in problems)
    assert len(fresh.entries()) == 2 and fresh.verify().problems == []


def test_read_only_mount_reads_every_entry_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with FeatureStore(tmp_path) as writer:
        get(writer, make_key(), subject="/data/in.mp4")
    simulate_read_only_mount(monkeypatch, tmp_path)
    caplog.set_level(logging.INFO)
    store = FeatureStore(tmp_path)
    tensors, ev = get(store, make_key(), subject="/data/in.mp4")
    assert ev.hit
    assert_same(tensors, sample_tensors())
    _, ev = get(store, make_key(stride=7), Counter(sample_tensors(4)), subject="/data/in.mp4")
    assert (ev.hit, ev.reason, ev.bytes) == (False, "parameters changed", 0)  # index still read
    (message,) = warnings_of(caplog)
    assert message == (
        f"feature cache at {tmp_path} is not writable (EROFS: Read-only file system): "
        "read-only: entries are read, nothing new is written"
    )
    monkeypatch.undo()
    assert len(list(tmp_path.rglob("*.safetensors"))) == 1


def _flip_index_byte(root: Path, offset: int) -> None:
    for suffix in ("-wal", "-shm"):
        assert not Path(f"{root / 'index.sqlite'}{suffix}").exists()
    data = bytearray((root / "index.sqlite").read_bytes())
    data[offset] ^= 0xFF
    (root / "index.sqlite").write_bytes(bytes(data))


def test_damaged_index_page_is_found_and_rebuilt_by_verify(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with FeatureStore(tmp_path) as first:
        for i in range(3):
            get(first, make_key(video=f"v{i}"), subject=f"/data/{i}.mp4")
    _flip_index_byte(tmp_path, 4096)  # the header of the second page (the entries table)
    caplog.set_level(logging.WARNING)
    with FeatureStore(tmp_path) as run:
        assert get(run, make_key(video="v0"))[1].hit
    assert any("malformed" in m and "verify --fix" in m for m in warnings_of(caplog))
    store = FeatureStore(tmp_path)
    problems = store.verify().problems
    assert problems[0].kind == "index" and "malformed" in problems[0].detail
    assert not problems[0].fixed
    fixed = store.verify(fix=True).problems
    assert (fixed[0].kind, fixed[0].fixed) == ("index", True)
    assert all(p.fixed for p in fixed)
    store.close()
    caplog.clear()
    with FeatureStore(tmp_path) as run:
        assert all(get(run, make_key(video=f"v{i}"))[1].hit for i in range(3))
        assert run.verify().problems == []
    assert warnings_of(caplog) == []


def test_verify_reports_fresh_temp_files_and_fix_removes_abandoned_ones(
    tmp_path: Path,
) -> None:
    store = FeatureStore(tmp_path)
    get(store, make_key())
    folder = only_entry(store).parent
    gone, busy = make_key(video="gone").digest, make_key(video="busy").digest
    abandoned = folder / f".{gone}.4242.0badc0de.tmp"  # its writer was killed a minute ago
    abandoned.write_bytes(b"half an entry")
    writing = folder / f".{busy}.4243.cafef00d.tmp"  # its writer still holds the key's lock
    writing.write_bytes(b"an entry being written")
    lock_path = tmp_path / "locks" / STAGE / f"{busy}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    holder = filelock.FileLock(str(lock_path))
    holder.acquire()
    try:
        problems = store.verify().problems
        assert sorted((p.kind, p.path) for p in problems) == sorted(
            [("leftover temp file", abandoned), ("leftover temp file", writing)]
        )
        assert all(p.leftover and not p.fixed for p in problems)
        fixed = {p.path: p.fixed for p in store.verify(fix=True).problems}
        assert fixed == {abandoned: True, writing: False}
        assert not abandoned.exists() and writing.exists()
    finally:
        holder.release()
    assert [p.path for p in store.verify(fix=True).problems if p.fixed] == [writing]
    assert store.verify().problems == [] and len(store.entries()) == 1


# --------------------------------------------------------------------------- admin


def _set_last_used(root: Path, stage: str, key: str, when: float) -> None:
    with sqlite3.connect(root / "index.sqlite") as conn:
        conn.execute("UPDATE entries SET last_used=? WHERE stage=? AND key=?", (when, stage, key))


def test_entries_stats_and_lru_prune(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    keys = {name: make_key(video=name) for name in ("a", "b", "c")}
    for name, key in keys.items():
        get(store, key, Counter({"x": torch.zeros(1000, dtype=torch.uint8)}), subject=name)
    size = store.entries()[0].size
    now = time.time()
    for name, age in (("a", 10), ("b", 30), ("c", 20)):  # b is least recently used, then c
        _set_last_used(tmp_path, STAGE, keys[name].digest, now - age)
    assert [e.subject for e in store.entries()] == ["a", "c", "b"]
    assert store.stats() == {STAGE: (3, 3 * size)}
    get(store, keys["b"])  # a hit makes b the most recently used
    assert store.entries()[0].subject == "b"
    planned = store.prune(max_size=size + 1, dry_run=True)
    assert [r.key for r in planned] == [keys["c"].digest, keys["a"].digest]
    assert len(store.entries()) == 3
    removed = store.prune(max_size=size + 1)
    assert [r.key for r in removed] == [keys["c"].digest, keys["a"].digest]
    assert all(r.reason == "over the size limit" for r in removed)
    assert [e.subject for e in store.entries()] == ["b"]
    with sqlite3.connect(tmp_path / "index.sqlite") as conn:
        assert conn.execute("SELECT key FROM entries").fetchall() == [(keys["b"].digest,)]
    assert store.prune(max_size=size) == []
    assert store.verify().problems == []


def test_prune_older_than(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    get(store, make_key(video="old"), subject="old")
    get(store, make_key(video="new"), subject="new")
    _set_last_used(tmp_path, STAGE, make_key(video="old").digest, time.time() - 10 * 86400)
    removed = store.prune(older_than_days=7)
    assert [r.key for r in removed] == [make_key(video="old").digest]
    assert "7 days" in removed[0].reason
    assert [e.subject for e in store.entries()] == ["new"]
    assert store.prune(max_size=0)[0].key == make_key(video="new").digest
    assert store.entries() == [] and store.stats() == {}


def test_verify_finds_and_fixes(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    get(store, make_key(video="good"))
    get(store, make_key(video="bad"))
    bad = store.entry_path(STAGE, make_key(video="bad"))
    data = bytearray(bad.read_bytes())
    data[-1] ^= 0x80
    bad.write_bytes(bytes(data))
    orphan = bad.parent / "notes.txt"
    orphan.write_text("stray")
    temp = bad.parent / f".{'0' * 64}.1.ab.tmp"
    temp.write_bytes(b"x")
    os.utime(temp, (0, 0))
    problems = store.verify().problems
    assert sorted(p.kind for p in problems) == ["corrupt", "leftover temp file", "orphan"]
    corrupt = next(p for p in problems if p.kind == "corrupt")
    assert corrupt.path == bad and "checksum" in corrupt.detail and not corrupt.fixed
    assert bad.exists()  # verify without --fix changes nothing
    fixed = store.verify(fix=True).problems
    assert all(p.fixed for p in fixed) and len(fixed) == 3
    assert not bad.exists() and not orphan.exists() and not temp.exists()
    assert store.verify().problems == []
    assert [e.key for e in store.entries()] == [make_key(video="good").digest]


def test_clear_by_stage_and_all(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    get(store, make_key(video="a"), stage="stage_a")
    get(store, make_key(video="b"), stage="stage_b")
    get(store, make_key(video="c"), stage="stage_b")
    removed = store.clear("stage_b")
    assert sorted(r.stage for r in removed) == ["stage_b", "stage_b"]
    assert store.stats() == {"stage_a": (1, store.entries()[0].size)}
    entry = store.entries()[0].path
    debris = entry.parent / f".{'f' * 64}.4242.0badc0de.tmp"  # a killed writer's temp file
    debris.write_bytes(b"half-written")
    removed = store.clear()
    assert sorted((r.kind, r.stage) for r in removed) == [("entry", "stage_a"), ("temp", None)]
    assert not debris.exists()
    assert store.entries() == [] and (tmp_path / "CACHEDIR.TAG").exists()
    assert get(store, make_key(video="a"), stage="stage_a")[1].reason == "absent"


def test_same_key_in_two_stages_is_two_entries(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    get(store, make_key(), Counter(sample_tensors(1)), stage="one")
    get(store, make_key(), Counter(sample_tensors(2)), stage="two")
    assert_same(get(store, make_key(), stage="one")[0], sample_tensors(1))
    assert_same(get(store, make_key(), stage="two")[0], sample_tensors(2))


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("123", 123),
        ("0", 0),
        ("500M", 500_000_000),
        ("10GB", 10_000_000_000),
        ("10gb", 10_000_000_000),
        ("1.5GiB", 1_610_612_736),
        ("2 KiB", 2048),
        ("1k", 1000),
        ("3TB", 3 * 10**12),
        ("100B", 100),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "-5", "10XB", "1..5G", "GB", "5 i", "1e3"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(StorageError, match="invalid size"):
        parse_size(text)


def test_format_size() -> None:
    assert format_size(0) == "0 B"
    assert format_size(999) == "999 B"
    assert format_size(1500) == "1.5 kB"
    assert format_size(2_500_000_000) == "2.5 GB"


def test_a_subject_of_any_name_never_fails_the_call(tmp_path: Path) -> None:
    """A name that is not UTF-8 (surrogate escapes) or holds a lone surrogate is escaped for
    the index and the entry, not an error."""
    store = FeatureStore(tmp_path)
    for n, subject in enumerate(["/data/bad\udcff.mp4", "/data/lone\ud800.mp4"]):
        _, ev = get(store, make_key(video=f"s{n}"), subject=subject)
        assert not ev.hit and ev.subject.startswith("/data/") and "\\" in ev.subject
        ev.subject.encode("utf-8")  # escaped: it can go into SQLite and JSON
        assert get(store, make_key(video=f"s{n}"), subject=subject)[1].hit
