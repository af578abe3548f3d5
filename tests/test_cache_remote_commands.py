"""`mimicache cache ls | stats | verify | prune | clear` on an s3:// root (moto's S3 server)."""

from __future__ import annotations

import time

import pytest
import torch

from mimicache.cache.remote import RemoteTier
from mimicache.cache.store import FeatureStore
from tests import s3_fixtures
from tests.cache_helpers import make_key
from tests.test_cache_commands import run

s3_server, s3_url = s3_fixtures.s3_server, s3_fixtures.s3_url  # fixtures

ENTRIES = (("stage_a", "a1"), ("stage_a", "a2"), ("stage_b", "b1"))


@pytest.fixture
def bucket(s3_url, tmp_path):
    """``s3_url`` holding three entries (oldest first, a second apart) and their keys."""
    keys = {}
    with FeatureStore(s3_url, local_dir=tmp_path / "local") as store:
        for i, (stage, video) in enumerate(ENTRIES):
            if i:
                time.sleep(1.1)  # object times have one-second resolution
            key = make_key(video=video)
            store.get_or_compute(
                stage,
                key,
                lambda: {"x": torch.zeros(1000, dtype=torch.uint8)},
                subject=f"/data/{video}.mp4",
            )
            keys[video] = key.digest
    return s3_url, keys


def _remote_keys(url: str) -> set[str]:
    tier = RemoteTier(url)
    tier.fs.invalidate_cache()
    return {p.rsplit("/", 1)[-1].split(".")[0] for p in tier.fs.find(tier.base)}


def test_ls_and_stats(bucket):
    url, keys = bucket
    code, out, _ = run(["ls", "--feature_cache_dir", url])
    assert code == 0
    for video, key in keys.items():
        assert key[:12] in out and f"/data/{video}.mp4" in out
    assert "3 entries" in out and url in out
    code, out, _ = run(["ls", "--feature_cache_dir", url, "--stage", "stage_b"])
    assert code == 0 and keys["b1"][:12] in out and keys["a1"][:12] not in out
    code, out, _ = run(["stats", "--feature_cache_dir", url])
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:] if line.strip()}
    assert code == 0 and rows["stage_a"] == "2" and rows["stage_b"] == "1" and rows["TOTAL"] == "3"


def test_unknown_stage_is_refused(bucket):
    url, _ = bucket
    code, _, err = run(["ls", "--feature_cache_dir", url, "--stage", "stage_x"])
    assert code == 2 and "unknown stage 'stage_x'" in err and "stage_a" in err


def test_verify_finds_and_fixes_damage(bucket):
    url, keys = bucket
    code, out, _ = run(["verify", "--feature_cache_dir", url])
    assert code == 0 and "3 entries OK" in out
    tier = RemoteTier(url)
    path = tier.entry_path("stage_a", keys["a1"])
    data = bytearray(tier.fs.cat_file(path))
    data[-1] ^= 1
    tier.fs.pipe_file(path, bytes(data))
    tier.fs.pipe_file(f"{tier.base}/v1/stage_a/zz/stray.txt", b"not an entry")
    code, out, _ = run(["verify", "--feature_cache_dir", url])
    assert code == 1 and "corrupt: " in out and "checksum mismatch" in out
    assert "orphan: v1/stage_a/zz/stray.txt" in out and "2 good entries" in out
    code, out, _ = run(["verify", "--feature_cache_dir", url, "--fix"])
    assert code == 0 and out.count("[fixed]") == 2
    assert _remote_keys(url) == {keys["a2"], keys["b1"]}
    code, out, _ = run(["verify", "--feature_cache_dir", url])
    assert code == 0 and "2 entries OK" in out


def test_prune_by_size_removes_the_oldest(bucket):
    url, keys = bucket
    size = len(RemoteTier(url).fs.cat_file(RemoteTier(url).entry_path("stage_b", keys["b1"])))
    code, out, _ = run(
        ["prune", "--feature_cache_dir", url, "--max-size", str(2 * size), "--dry-run"]
    )
    assert code == 0 and f"Would remove stage_a {keys['a1'][:12]}" in out
    assert _remote_keys(url) == set(keys.values())
    code, out, _ = run(["prune", "--feature_cache_dir", url, "--max-size", str(2 * size)])
    assert code == 0 and "2 entries" in out and "remain" in out
    assert _remote_keys(url) == {keys["a2"], keys["b1"]}


def test_prune_by_age(bucket):
    url, keys = bucket
    code, out, _ = run(["prune", "--feature_cache_dir", url, "--older-than", "1"])
    assert code == 0 and _remote_keys(url) == set(keys.values())
    time.sleep(1.1)
    code, out, _ = run(["prune", "--feature_cache_dir", url, "--older-than", "0"])
    assert code == 0 and "Removed 3 entries" in out and "older than 0 days" in out
    assert _remote_keys(url) == set()


def test_clear(bucket):
    url, keys = bucket
    code, _, err = run(["clear", "--feature_cache_dir", url])
    assert code == 2 and "without --yes" in err and _remote_keys(url) == set(keys.values())
    code, out, _ = run(["clear", "--feature_cache_dir", url, "--stage", "stage_a", "--yes"])
    assert code == 0 and "Removed 2 entries" in out
    assert _remote_keys(url) == {keys["b1"]}
    code, out, _ = run(["clear", "--feature_cache_dir", url, "--yes"])
    assert code == 0 and _remote_keys(url) == set()
    code, out, _ = run(["ls", "--feature_cache_dir", url])
    assert code == 0 and "No entries" in out
