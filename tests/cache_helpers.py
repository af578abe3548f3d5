"""Helpers for the feature-cache tests (importable by spawned worker processes)."""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import torch

from mimicache.cache.store import FeatureStore, StageKey


def make_key(video: str = "v1", model: str = "m1", stride: int = 2) -> StageKey:
    return StageKey({"video": video}, {"detector": model}, {"stride": stride})


def sample_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "f32": torch.randn(3, 5, generator=g),
        "f16": torch.randn(4, 2, generator=g).half(),
        "u8": torch.randint(0, 256, (2, 3, 4), generator=g, dtype=torch.uint8),
        "i64": torch.randint(-(2**40), 2**40, (7,), generator=g, dtype=torch.int64),
    }


def concurrent_worker(root: str, counter: str, start_at: float) -> dict[str, list]:
    """Wait for a common start time, then get_or_compute one key; the compute appends a line
    to ``counter`` and is slow enough that the other processes must wait for it."""

    def compute() -> dict[str, torch.Tensor]:
        with open(counter, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)
        return sample_tensors(seed=os.getpid())  # a second compute would give other values

    store = FeatureStore(root)
    while time.time() < start_at:
        time.sleep(0.005)
    tensors, event = store.get_or_compute("stage_a", make_key(), compute, subject="/in/x.mp4")
    store.close()
    return {
        "hit": [event.hit],
        "reason": [event.reason],
        **{k: v.tolist() for k, v in tensors.items()},
    }


def count_lines(path: str | Path) -> int:
    p = Path(path)
    return len(p.read_text().splitlines()) if p.exists() else 0


def _erofs(*args: object, **kwargs: object) -> None:
    raise OSError(errno.EROFS, os.strerror(errno.EROFS))


def simulate_read_only_mount(monkeypatch: Any, root: str | Path) -> None:
    """Make ``root`` behave like a read-only mount (root ignores chmod, so tests fake it).

    Under ``root`` nothing can be created, replaced or removed, ``statvfs`` reports a read-only
    file system, and SQLite opens databases there only read-only (``mode=ro`` URIs), as it
    does on a real read-only mount where the -shm file cannot be created.
    """
    base = os.path.abspath(root)

    def inside(path: object) -> bool:
        try:
            return os.path.abspath(os.fsdecode(path)).startswith(base)  # type: ignore[arg-type]
        except TypeError:
            return False

    names = ("open", "mkdir", "replace", "rename", "unlink", "rmdir")
    real = {name: getattr(os, name) for name in names}
    real_statvfs, real_connect = os.statvfs, sqlite3.connect

    def ro_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if inside(path) and flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR | os.O_TRUNC):
            _erofs()
        return real["open"](path, flags, *args, **kwargs)

    def ro_mkdir(path: object, *args: object, **kwargs: object) -> None:
        if inside(path):
            if os.path.exists(path):  # type: ignore[arg-type]
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
            _erofs()
        real["mkdir"](path, *args, **kwargs)

    def guarded(name: str) -> Any:
        def call(path: object, *args: object, **kwargs: object) -> Any:
            if inside(path) or any(inside(a) for a in args) or "dir_fd" in kwargs:
                _erofs()
            return real[name](path, *args, **kwargs)

        return call

    def ro_statvfs(path: object) -> Any:
        st = real_statvfs(path)  # type: ignore[arg-type]
        if not inside(path):
            return st
        values = list(st)
        values[8] = st.f_flag | os.ST_RDONLY  # f_flag
        return os.statvfs_result(values)

    def ro_connect(database: object, *args: object, **kwargs: object) -> sqlite3.Connection:
        text = os.fsdecode(database)  # type: ignore[arg-type]
        if kwargs.get("uri") and "mode=ro" in text:
            return real_connect(database, *args, **kwargs)  # type: ignore[arg-type]
        if inside(text.removeprefix("file:").split("?")[0]):
            exc = sqlite3.OperationalError("unable to open database file")
            exc.sqlite_errorcode = sqlite3.SQLITE_CANTOPEN  # type: ignore[attr-defined]
            raise exc
        return real_connect(database, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", ro_open)
    monkeypatch.setattr(os, "mkdir", ro_mkdir)
    for name in ("replace", "rename", "unlink", "rmdir"):
        monkeypatch.setattr(os, name, guarded(name))
    monkeypatch.setattr(os, "statvfs", ro_statvfs)
    monkeypatch.setattr(sqlite3, "connect", ro_connect)
