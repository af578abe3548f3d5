"""A warm hit does only the work it needs: an entry file this process has checked is not read
and checked again while it is unchanged, hits are written to the index later and together
(and not again within a minute), digests and facts looked up once are not looked up again,
and an index already in WAL mode is opened without a trial database."""

from __future__ import annotations

import sqlite3

import pytest
import torch

from mimicache.cache import database, sharing
from mimicache.cache import entry as entry_mod
from mimicache.cache import index as index_mod
from mimicache.cache.digest_memo import DigestMemo, content_fact
from mimicache.cache.modes import CacheMode
from mimicache.cache.store import FeatureStore
from mimicache.storage import digests as hashing
from mimicache.storage.digests import file_digest
from tests.cache_helpers import make_key, sample_tensors

STAGE = "stage_a"


def _checks(monkeypatch) -> list[int]:
    """Counts the checksum checks of entry bytes (each full read of an entry makes one)."""
    calls: list[int] = []
    real = entry_mod._check

    def counted(data):
        calls.append(1)
        return real(data)

    monkeypatch.setattr(entry_mod, "_check", counted)
    return calls


def _compute(seed: int):
    return lambda: sample_tensors(seed)


def test_an_unchanged_entry_is_checked_once_per_process(tmp_path, monkeypatch):
    checks = _checks(monkeypatch)
    with FeatureStore(tmp_path) as writer:
        writer.get_or_compute(STAGE, make_key(), _compute(0))
    store = FeatureStore(tmp_path)
    first, a = store.get_or_compute(STAGE, make_key(), _compute(9))
    again, b = store.get_or_compute(STAGE, make_key(), _compute(9))
    assert a.hit and b.hit and len(checks) == 1  # the second hit read no file
    for name, tensor in sample_tensors(0).items():
        assert torch.equal(first[name], tensor) and torch.equal(again[name], tensor)
    again["f32"].add_(1)  # a caller changing its tensors changes nothing for the next
    assert torch.equal(store.get_or_compute(STAGE, make_key(), _compute(9))[0]["f32"],
                       sample_tensors(0)["f32"])  # fmt: skip

    # replaced on disk by another process (a refresh): read and checked again
    with FeatureStore(tmp_path, mode=CacheMode.REFRESH) as other:
        other.get_or_compute(STAGE, make_key(), _compute(1))
    replaced, c = store.get_or_compute(STAGE, make_key(), _compute(9))
    assert c.hit and len(checks) == 2 and torch.equal(replaced["f32"], sample_tensors(1)["f32"])

    # removed on disk: a miss, whatever this process kept
    store.entry_path(STAGE, make_key()).unlink()
    _, d = store.get_or_compute(STAGE, make_key(), _compute(2))
    assert not d.hit and d.reason == "absent"
    store.close()


def test_what_a_store_writes_it_reads_back_unchecked_and_the_size_is_capped(tmp_path, monkeypatch):
    checks = _checks(monkeypatch)
    with FeatureStore(tmp_path) as store:
        store.get_or_compute(STAGE, make_key(), _compute(0))
        _, hit = store.get_or_compute(STAGE, make_key(), _compute(0))
        assert hit.hit and checks == []
        entry = entry_mod.decode_entry(store.entry_path(STAGE, make_key()).read_bytes())
        assert store.kept.get(STAGE, make_key().digest)[1] == entry.metadata
    monkeypatch.setenv("MIMICACHE_MEMORY_CACHE", "0")
    with FeatureStore(tmp_path) as store:
        for _ in range(2):
            assert store.get_or_compute(STAGE, make_key(), _compute(0))[1].hit
        assert store.kept.bytes == 0
    assert len(checks) == 3  # the decode above, then both hits read the file
    size = store.entry_path(STAGE, make_key()).stat().st_size
    monkeypatch.setenv("MIMICACHE_MEMORY_CACHE", str(size * 3 // 2))  # room for one entry
    with FeatureStore(tmp_path) as store:
        for video in ("a", "b", "c"):
            store.get_or_compute(STAGE, make_key(video=video), _compute(0))
        assert store.kept.bytes == size
        kept = (STAGE, make_key(video="c").digest)
        assert list(store.kept._kept) == [kept]  # least recently used out first


def _last_used(store: FeatureStore, key) -> float:
    with sqlite3.connect(store.index_path) as conn:
        row = conn.execute(
            "SELECT last_used FROM entries WHERE stage=? AND key=?", (STAGE, key.digest)
        ).fetchone()
    return row[0]


def test_hits_are_written_later_together_and_once_a_minute(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(index_mod.time, "time", lambda: clock[0])
    monkeypatch.setattr(index_mod, "HIT_WRITE_DELAY_S", 3600.0)  # only uses write them here
    with FeatureStore(tmp_path) as writer:
        writer.get_or_compute(STAGE, make_key(), _compute(0))
    store = FeatureStore(tmp_path)
    clock[0] = 1010.0
    assert store.get_or_compute(STAGE, make_key(), _compute(0))[1].hit
    assert _last_used(store, make_key()) == 1000.0  # not written yet
    assert [e.last_used for e in store.entries()] == [1010.0]  # any use of the index writes it
    statements: list[str] = []
    store.index._conn.set_trace_callback(statements.append)
    clock[0] = 1050.0
    store.get_or_compute(STAGE, make_key(), _compute(0))
    store.entries()
    assert not any(s.startswith("UPDATE") for s in statements)  # within the minute: nothing
    clock[0] = 1080.0
    store.get_or_compute(STAGE, make_key(), _compute(0))
    store.close()  # closing writes what is pending
    assert _last_used(store, make_key()) == 1080.0

    # never closed: the process's exit writes it
    clock[0] = 1200.0
    store = FeatureStore(tmp_path)
    store.get_or_compute(STAGE, make_key(), _compute(0))
    index_mod._write_hits_at_exit()
    assert _last_used(store, make_key()) == 1200.0


def test_held_hits_are_written_by_a_hit_after_the_delay(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(index_mod.time, "time", lambda: clock[0])
    with FeatureStore(tmp_path) as writer:
        for video in ("a", "b"):
            writer.get_or_compute(STAGE, make_key(video=video), _compute(0))
    store = FeatureStore(tmp_path)
    clock[0] = 1100.0
    store.get_or_compute(STAGE, make_key(video="a"), _compute(0))
    clock[0] += index_mod.HIT_WRITE_DELAY_S / 2
    store.get_or_compute(STAGE, make_key(video="b"), _compute(0))
    assert _last_used(store, make_key(video="a")) == 1000.0  # both held
    clock[0] = 1100.0 + index_mod.HIT_WRITE_DELAY_S
    store.get_or_compute(STAGE, make_key(video="a", stride=9), _compute(0))  # a miss: now
    assert _last_used(store, make_key(video="a")) == 1100.0
    assert _last_used(store, make_key(video="b")) == 1100.0 + index_mod.HIT_WRITE_DELAY_S / 2
    store.index._pending.clear()  # what a held hit after the delay writes: itself, the rest
    clock[0] = 1200.0
    store.get_or_compute(STAGE, make_key(video="b"), _compute(0))
    clock[0] = 1200.0 + index_mod.HIT_WRITE_DELAY_S
    store.get_or_compute(STAGE, make_key(video="a"), _compute(0))
    assert _last_used(store, make_key(video="a")) == clock[0]
    assert _last_used(store, make_key(video="b")) == 1200.0
    store.close()


def test_a_digest_or_fact_looked_up_once_runs_no_more_sql(tmp_path, monkeypatch):
    monkeypatch.setattr(hashing, "RACY_WINDOW_NS", 0)
    file = tmp_path / "in.bin"
    file.write_bytes(b"x" * 100)
    memo = DigestMemo(tmp_path / "memo.sqlite")
    digest = file_digest(file, memo)
    assert content_fact(digest, "size", lambda: 100, memo) == 100
    again = DigestMemo(tmp_path / "memo.sqlite")  # another process: from SQLite, then memory
    statements: list[str] = []
    again._connection().set_trace_callback(statements.append)
    for _ in range(3):
        assert file_digest(file, again) == digest
        assert content_fact(digest, "size", lambda: pytest.fail("computed again"), again) == 100
    assert len([s for s in statements if s.startswith("SELECT")]) == 2
    memo.close()
    again.close()


def test_an_index_already_in_wal_mode_opens_without_a_trial(tmp_path, monkeypatch):
    db = tmp_path / "index.sqlite"
    first = database.connect_sqlite(db)
    first.execute("CREATE TABLE t (x)")
    first.close()
    monkeypatch.setattr(sharing, "_WAL_USABLE", {})
    trials: list[object] = []
    real_trial = sharing._try_wal
    monkeypatch.setattr(sharing, "_try_wal", lambda folder: trials.append(folder) or True)
    conn = database.connect_sqlite(db)
    assert database.journal_mode(conn) == "wal" and trials == []
    assert sharing.wal_usable(db)  # and the folder's verdict is known for the next one
    conn.close()

    # where the real database cannot be read in WAL mode, the trial decides as before
    monkeypatch.setattr(sharing, "_WAL_USABLE", {})
    monkeypatch.setattr(sharing, "_try_wal", lambda folder: trials.append(folder) or False)
    monkeypatch.setattr(database, "_reads", lambda conn: False)
    conn = database.connect_sqlite(db)
    assert trials == [tmp_path] and database.journal_mode(conn) == "delete"
    conn.close()
    assert real_trial(tmp_path)  # the real trial works in this folder
