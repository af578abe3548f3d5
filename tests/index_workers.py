"""Worker processes that share one cache index (spawned by test_cache_index_concurrency)."""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from mimicache.cache.store import FeatureStore, StageKey

STAGE = "stage_a"


def key_of(name: str, i: int) -> StageKey:
    return StageKey({"video": f"{name}-{i}"}, {"detector": "m1"}, {"n": i})


def _tensors() -> dict[str, torch.Tensor]:
    return {"x": torch.arange(16, dtype=torch.float32)}


def write(store: FeatureStore, name: str, i: int) -> None:
    store.get_or_compute(STAGE, key_of(name, i), _tensors, subject=f"/in/{name}-{i}.mp4")


def first_user(root: str, digest_me: str, ready: Any, sibling_closed: Any, go: Any,
               n: int) -> None:  # fmt: skip
    """Write an entry, then digest a file: the digest memo is this process's second
    connection to index.sqlite. Then wait for a sibling to open, write and close, and
    write ``n`` entries (listing and pruning between them) beside a third process."""
    store = FeatureStore(root)
    write(store, "first", -1)
    store.file_digest(digest_me)
    ready.set()
    sibling_closed.wait(60)
    go.wait(60)
    for i in range(n):
        write(store, "first", i)
        store.entries()
        if i % 10 == 0:
            store.prune(max_size=1 << 40)  # selects nothing: only the reading and writing
    store.close()


def sibling(root: str, ready: Any, closed: Any) -> None:
    """Open, write one entry and close while the first user still holds its connections."""
    ready.wait(60)
    store = FeatureStore(root)
    write(store, "sibling", 0)
    store.close()
    closed.set()


def third(root: str, checked: Any, go: Any, n: int) -> None:
    """Open once the test has looked at the files the sibling left, then write beside the
    first user."""
    checked.wait(60)
    store = FeatureStore(root)
    go.set()
    for i in range(n):
        write(store, "third", i)
        store.entries()
    store.close()


def writes_until_killed(root: str, started: Any) -> None:
    """Write entries (each its own transaction) until the test kills this process."""
    store = FeatureStore(root)
    for i in range(100_000):
        write(store, "killed", i)
        if i == 3:
            started.set()
    time.sleep(60)


def wal_files(root: str) -> dict[str, int | None]:
    """The sizes of index.sqlite's -wal and -shm files (None where absent)."""
    found: dict[str, int | None] = {}
    for suffix in ("-wal", "-shm"):
        path = os.path.join(root, f"index.sqlite{suffix}")
        found[suffix] = os.path.getsize(path) if os.path.exists(path) else None
    return found


def fill_the_disk(root: str) -> dict[str, Any]:
    """Write entries until the disk is full, then more hits and misses, and exit without
    closing the store (as a run does): what is left of the -wal file, and the index's state."""
    import logging
    import sqlite3

    logging.basicConfig(level=logging.WARNING)
    store = FeatureStore(root)
    big = {"x": torch.randn(5000)}  # about 20 kB an entry
    full = 0
    for i in range(200):
        _, event = store.get_or_compute(STAGE, key_of("fill", i), lambda: big)
        full += event.bytes == 0  # not written: no room
        if full > 5:
            break
    for i in range(20):  # hits after the disk filled still record their last use
        store.get_or_compute(STAGE, key_of("fill", i % 3), lambda: big)
    conn = sqlite3.connect(os.path.join(root, "index.sqlite"))
    rows = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
    conn.close()
    return {"rows": rows, "full": full > 0}


def holds_a_read(db: str, reading: Any, release: Any) -> None:
    """Keep a read transaction open on the index (as a long ``cache verify`` does) until told."""
    import sqlite3

    conn = sqlite3.connect(db)
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    reading.set()
    release.wait(120)
    conn.rollback()
    conn.close()
