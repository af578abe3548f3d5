"""One cache for many machines: entries are the same bytes from any writer and are never
replaced once published; the SQLite index moves per machine on a network file system, uses
the rollback journal where WAL cannot work, and is rebuilt from the entries."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest
import torch

from mimicache.cache import sharing
from mimicache.cache.database import connect_sqlite, journal_mode
from mimicache.cache.store import FeatureStore
from mimicache.storage.files import atomic_write
from tests.cache_helpers import make_key, sample_tensors

STAGE = "stage_a"


@pytest.fixture(autouse=True)
def fresh_wal_verdicts(monkeypatch):
    """Each test decides afresh whether WAL works in a folder."""
    monkeypatch.setattr(sharing, "_WAL_USABLE", {})
    for name in ("MIMICACHE_INDEX_DIR", "MIMICACHE_SHARED_CACHE", "MIMICACHE_SQLITE_WAL"):
        monkeypatch.delenv(name, raising=False)


def compute(seed: int = 0):
    calls: list[int] = []

    def run() -> dict[str, torch.Tensor]:
        calls.append(1)
        return sample_tensors(seed)

    return run, calls


def test_two_writers_of_one_entry_write_the_same_bytes(tmp_path):
    paths = []
    for name in ("machine_a", "machine_b"):
        with FeatureStore(tmp_path / name) as store:
            store.get_or_compute(STAGE, make_key(), compute()[0], subject="/data/in.mp4")
            paths.append(store.entry_path(STAGE, make_key()))
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_a_published_entry_is_never_replaced(tmp_path):
    path = tmp_path / "entry.safetensors"
    assert atomic_write(path, b"first", overwrite=False) is True
    inode = path.stat().st_ino
    assert atomic_write(path, b"second", overwrite=False) is False  # a later writer
    assert path.read_bytes() == b"first" and path.stat().st_ino == inode
    assert [p.name for p in tmp_path.iterdir()] == ["entry.safetensors"]  # no temp file left
    assert atomic_write(path, b"third") is True  # a refresh does replace it
    assert path.read_bytes() == b"third"


def test_a_root_whose_index_cannot_use_wal_still_works(tmp_path, caplog):
    root = tmp_path / "cache"
    root.mkdir()
    # SQLite cannot create WAL's shared-memory file here: in WAL mode every write would fail
    (root / "index.sqlite-shm").mkdir()
    caplog.set_level(logging.WARNING)
    run, calls = compute()
    with FeatureStore(root) as store:
        _, miss = store.get_or_compute(STAGE, make_key(), run, subject="/data/in.mp4")
        assert journal_mode(connect_sqlite(store.index_path)) == "delete"
    with FeatureStore(root) as store:
        tensors, hit = store.get_or_compute(STAGE, make_key(), run, subject="/data/in.mp4")
        _, changed = store.get_or_compute(STAGE, make_key(video="v2"), run, subject="/data/in.mp4")
        listed = store.entries()
    assert (miss.hit, miss.bytes > 0, hit.hit, changed.reason) == (
        False,
        True,
        True,
        "input changed",
    )
    assert len(calls) == 2 and torch.equal(tensors["f32"], sample_tensors()["f32"])
    assert sorted(e.subject for e in listed) == ["/data/in.mp4", "/data/in.mp4"]
    assert all(e.last_used >= e.created > 0 for e in listed)  # the index records them
    assert caplog.messages == []  # no "not writable", no "index unusable"
    assert not (root / "index.sqlite-wal").exists()


def test_an_index_left_in_wal_mode_where_wal_fails_is_set_aside(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    with FeatureStore(root) as store:  # written in WAL mode
        store.get_or_compute(STAGE, make_key(), compute()[0])
    monkeypatch.setenv("MIMICACHE_SQLITE_WAL", "0")
    (root / "index.sqlite-shm").unlink(missing_ok=True)
    (root / "index.sqlite-shm").mkdir()  # now WAL cannot work here
    with FeatureStore(root) as store:
        _, hit = store.get_or_compute(STAGE, make_key(), compute()[0])
        _, new = store.get_or_compute(STAGE, make_key(video="v9"), compute()[0])
        assert store.write and journal_mode(connect_sqlite(store.index_path)) == "delete"
        assert len(store.entries()) == 2  # the new index is rebuilt from the entries
    assert hit.hit and not new.hit and new.bytes > 0
    aside = [p.name for p in root.glob("index.sqlite.wal-unusable-*")]
    assert len([name for name in aside if not name.endswith("-wal")]) == 1


def test_a_root_on_a_network_file_system_keeps_its_index_per_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(sharing, "filesystem_type", lambda path: "nfs4")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    root = tmp_path / "shared"
    run, calls = compute()
    with FeatureStore(root) as store:
        store.get_or_compute(STAGE, make_key(), run, subject="/data/in.mp4")
        index = store.index_path
        assert journal_mode(connect_sqlite(index)) == "delete"  # not WAL on NFS
    assert index.parent.parent == tmp_path / "home-cache" / "mimicache" / "index"
    assert index.is_file() and sorted(p.name for p in root.iterdir()) == [
        "CACHEDIR.TAG", "locks", "v1",
    ]  # fmt: skip
    # another machine (another id): its own index, the same entries
    monkeypatch.setattr(sharing, "machine_id", lambda: "another-machine")
    with FeatureStore(root) as other:
        assert other.index_path != index
        _, event = other.get_or_compute(STAGE, make_key(), run, subject="/data/in.mp4")
        assert event.hit and len(calls) == 1
        assert [e.subject for e in other.entries()] == ["/data/in.mp4"]  # rebuilt from the entry


def test_index_dir_and_shared_mode_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("MIMICACHE_INDEX_DIR", str(tmp_path / "indexes"))
    root = tmp_path / "cache"
    assert sharing.index_folder(root).parent == tmp_path / "indexes"
    monkeypatch.delenv("MIMICACHE_INDEX_DIR")
    assert sharing.index_folder(root) == root  # a local disk: beside the entries
    monkeypatch.setenv("MIMICACHE_SHARED_CACHE", "1")
    assert sharing.index_folder(root) != root
    monkeypatch.setattr(sharing, "filesystem_type", lambda path: "fuse.s3fs")
    monkeypatch.setenv("MIMICACHE_SHARED_CACHE", "0")
    assert sharing.index_folder(root) == root
    assert sharing.is_network_filesystem(root)  # a mounted bucket


def test_filesystem_type_of_a_real_path():
    kind = sharing.filesystem_type(Path(__file__))
    assert isinstance(kind, str)
    if Path("/proc/self/mountinfo").exists():
        assert kind and sharing.filesystem_type("/proc") == "proc"


def test_without_file_locks_entries_are_still_written(tmp_path, monkeypatch, caplog):
    import mimicache.cache.store as store_mod

    def no_locks(*args, **kwargs):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(store_mod, "key_lock", no_locks)
    caplog.set_level(logging.WARNING)
    with FeatureStore(tmp_path / "cache") as store:
        for video in ("a", "b"):
            _, event = store.get_or_compute(STAGE, make_key(video=video), compute()[0])
            assert event.bytes > 0
        assert store.write and len(store.entries()) == 2
    assert len(caplog.messages) == 1 and "file locks are not supported" in caplog.messages[0]


def test_verify_on_a_shared_root_takes_other_machines_entries_as_good(tmp_path, monkeypatch):
    from mimicache.cache import admin

    monkeypatch.setenv("MIMICACHE_SHARED_CACHE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home"))
    root = tmp_path / "shared"
    with FeatureStore(root) as store:
        store.get_or_compute(STAGE, make_key(), compute()[0], subject="/data/in.mp4")
    monkeypatch.setattr(sharing, "machine_id", lambda: "another-machine")
    with FeatureStore(root) as other:
        report = admin.verify(other)
    assert report.errors == [] and report.good == 1


def test_the_wal_file_stays_bounded_over_many_writes(tmp_path):
    from mimicache.cache.database import WAL_SIZE_LIMIT

    conn = connect_sqlite(tmp_path / "index.sqlite")
    assert journal_mode(conn) == "wal"
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
    largest = 0
    for i in range(1500):  # about 6 MB of pages through the log
        conn.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (i % 50, b"x" * 4000))
        wal = tmp_path / "index.sqlite-wal"
        largest = max(largest, wal.stat().st_size if wal.exists() else 0)
    # bounded by the checkpoint interval (256 pages plus frame headers), not by what was written
    assert 0 < largest < 2 * WAL_SIZE_LIMIT
