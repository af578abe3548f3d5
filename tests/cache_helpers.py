"""Helpers for the feature-cache tests (importable by spawned worker processes)."""

from __future__ import annotations

import os
import time
from pathlib import Path

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
