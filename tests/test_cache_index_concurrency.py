"""Processes sharing one index.sqlite: opening, writing, listing, pruning and closing at
staggered times (and one killed mid-write) never damage it or lose a row.

POSIX advisory locks belong to a process and a file: closing *any* descriptor of the file
drops all of them. A process that opened and closed the database file itself while holding a
connection lost its locks, so a sibling closing its last connection believed it was the last
user, checkpointed and deleted the -wal and -shm files under it, and the next writes corrupted
the database. Real processes (spawn), because the locks are per process.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from mimicache.cache.store import FeatureStore
from tests import index_workers as w

N = 40  # entries each of the two long writers adds


def _rows(db: str) -> tuple[str, set[str]]:
    conn = sqlite3.connect(db)
    try:
        check = "; ".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check"))
        subjects = {r[0] for r in conn.execute("SELECT subject FROM entries")}
    finally:
        conn.close()
    return check, subjects


def test_processes_sharing_the_index_never_corrupt_it_or_lose_a_row(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    root = str(tmp_path / "cache")
    digest_me = tmp_path / "input.bin"
    digest_me.write_bytes(b"x" * 1000)
    ready, sibling_closed, checked, go = (ctx.Event() for _ in range(4))
    killed_started = ctx.Event()
    procs = {
        "first": ctx.Process(
            target=w.first_user, args=(root, str(digest_me), ready, sibling_closed, go, N)
        ),
        "sibling": ctx.Process(target=w.sibling, args=(root, ready, sibling_closed)),
        "third": ctx.Process(target=w.third, args=(root, checked, go, N)),
        "killed": ctx.Process(target=w.writes_until_killed, args=(root, killed_started)),
    }
    for name in ("first", "sibling", "third"):
        procs[name].start()
    try:
        assert sibling_closed.wait(120), "the sibling never closed"
        # The first process still holds its two connections: a sibling's close must not have
        # taken the WAL and its shared-memory index away from under them.
        left = w.wal_files(root)
        procs["killed"].start()
        assert killed_started.wait(120)
        checked.set()
        os.kill(procs["killed"].pid, signal.SIGKILL)  # mid-write, beside the two writers
        for name in ("first", "third"):
            procs[name].join(180)
    finally:
        checked.set()
        for p in procs.values():
            if p.is_alive():
                p.kill()
            p.join(10)
    assert [procs[n].exitcode for n in ("first", "sibling", "third")] == [0, 0, 0]
    assert procs["killed"].exitcode == -signal.SIGKILL
    check, subjects = _rows(os.path.join(root, "index.sqlite"))
    assert check == "ok"
    assert left["-shm"] is not None and left["-wal"] is not None, left
    wanted = {"/in/first--1.mp4", "/in/sibling-0.mp4"}
    wanted |= {f"/in/{name}-{i}.mp4" for name in ("first", "third") for i in range(N)}
    assert wanted - subjects == set()
    # what the killed process committed is there too, and the index takes new writes
    assert {f"/in/killed-{i}.mp4" for i in range(4)} <= subjects
    with FeatureStore(root) as store:
        w.write(store, "after", 0)
        assert len(store.entries()) == len(subjects) + 1
    assert _rows(os.path.join(root, "index.sqlite"))[0] == "ok"


_FILL = """
import json, sys
from tests.index_workers import fill_the_disk
print(json.dumps(fill_the_disk(sys.argv[1])))
"""


def test_a_run_on_a_nearly_full_disk_leaves_no_wal_file(tmp_path):
    """A 300 kB file system of its own (tmpfs in a user and mount namespace): the run fills it,
    and when its connections close at exit no -wal file is left behind."""
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (
        'mount -t tmpfs -o size=300k tmpfs "$1" && "$2" -c "$3" "$1/cache" && '
        'ls -l "$1/cache" >&2 && python_status="$(stat -c %s "$1/cache/index.sqlite-wal" '
        '2>/dev/null || echo absent)" && echo "wal=$python_status"'
    )
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh",
         str(disk), sys.executable, _FILL],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report, wal = done.stdout.strip().splitlines()[-2:]
    assert json.loads(report)["full"], done.stderr  # the disk did fill up
    assert json.loads(report)["rows"] > 0
    assert wal in ("wal=absent", "wal=0"), done.stderr


def test_closing_does_not_wait_for_another_process_reading(tmp_path):
    """The WAL truncation at close is best effort: a reader elsewhere makes it give up at once
    instead of holding this process's exit for the 30 s busy timeout."""
    ctx = multiprocessing.get_context("spawn")
    root = tmp_path / "cache"
    store = FeatureStore(root)
    w.write(store, "before", 0)
    reading, release = ctx.Event(), ctx.Event()
    reader = ctx.Process(target=w.holds_a_read, args=(str(root / "index.sqlite"), reading, release))
    reader.start()
    try:
        assert reading.wait(120)
        w.write(store, "during", 0)  # in the WAL, past the reader's snapshot
        started = time.monotonic()
        store.close()
        waited = time.monotonic() - started
    finally:
        release.set()
        reader.join(60)
    assert reader.exitcode == 0
    assert waited < 10, f"close waited {waited:.1f} s for the reader"
    assert _rows(str(root / "index.sqlite"))[0] == "ok"
