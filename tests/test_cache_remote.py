"""The feature cache on object storage: a local tier in front of an S3 bucket (moto's server)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import mimicache
from mimicache.cache.entry import decode_entry
from mimicache.cache.remote import RemoteTier
from mimicache.cache.store import CacheMode, FeatureStore
from mimicache.errors import CacheError
from mimicache.storage.objects import local_file_root, remote_url
from tests import s3_fixtures
from tests.cache_helpers import make_key, sample_tensors

s3_server, s3_url = s3_fixtures.s3_server, s3_fixtures.s3_url  # fixtures
STAGE = "video_keypoints"


def _remote_bytes(url: str, stage: str, key: str) -> bytes:
    tier = RemoteTier(url)
    return tier.fs.cat_file(tier.entry_path(stage, key))


def _compute_never() -> dict[str, torch.Tensor]:
    raise AssertionError("computed although the remote tier has the entry")


def test_urls_are_told_from_paths():
    assert remote_url("s3://bucket/prefix/") == "s3://bucket/prefix"
    # argparse values pass through Path(), which folds the double slash
    assert remote_url(Path("s3://bucket/prefix")) == "s3://bucket/prefix"
    assert remote_url("gs://b") == "gs://b"
    assert remote_url("cache/features") is None
    assert remote_url("/abs/s3:/x") is None
    assert remote_url("file:///data/cache") is None
    assert local_file_root("file:///data/cache") == Path("/data/cache")
    assert local_file_root(Path("file:///data/cache")) == Path("/data/cache")
    assert local_file_root("cache/features") is None


def test_file_url_root_is_a_local_store(tmp_path):
    with FeatureStore(f"file://{tmp_path}/c") as store:
        assert store.tiers is None and store.root == tmp_path / "c"
        _, ev = store.get_or_compute(STAGE, make_key(), sample_tensors)
    assert not ev.hit and store.entry_path(STAGE, make_key()).is_file()


def test_computed_entry_lands_in_both_tiers(s3_url, tmp_path, monkeypatch):
    key = make_key()
    gets = []
    real_get = RemoteTier.get
    monkeypatch.setattr(RemoteTier, "get", lambda self, *a: gets.append(a) or real_get(self, *a))
    with FeatureStore(s3_url, local_dir=tmp_path / "a") as store:
        assert store.url == s3_url and store.root == tmp_path / "a"
        tensors, ev = store.get_or_compute(STAGE, key, sample_tensors)
    assert not ev.hit and ev.reason == "absent"
    assert len(gets) == 1  # a miss asks the bucket once (the lock's re-check is local)
    local = (tmp_path / "a").joinpath(store.entry_path(STAGE, key).relative_to(store.root))
    remote = _remote_bytes(s3_url, STAGE, key.digest)
    assert local.read_bytes() == remote
    decoded = decode_entry(remote, STAGE, key).tensors
    assert all(torch.equal(decoded[n], tensors[n]) for n in tensors)


def test_fresh_local_tier_hits_the_remote_tier(s3_url, tmp_path):
    key = make_key()
    with FeatureStore(s3_url, local_dir=tmp_path / "a") as store:
        first, _ = store.get_or_compute(STAGE, key, sample_tensors)
    with FeatureStore(s3_url, local_dir=tmp_path / "b") as store:
        second, ev = store.get_or_compute(STAGE, key, _compute_never)
        assert ev.hit and ev.bytes == len(_remote_bytes(s3_url, STAGE, key.digest))
        assert store.entry_path(STAGE, key).is_file()  # kept locally: next read is local
        assert [e.key for e in store.entries()] == [key.digest]
    assert first.keys() == second.keys()
    assert all(torch.equal(first[n], second[n]) for n in first)


def test_read_only_store_reads_the_remote_tier(s3_url, tmp_path):
    key = make_key()
    with FeatureStore(s3_url, local_dir=tmp_path / "a") as store:
        first, _ = store.get_or_compute(STAGE, key, sample_tensors)
    with FeatureStore(s3_url, local_dir=tmp_path / "b", mode=CacheMode.READ_ONLY) as store:
        second, ev = store.get_or_compute(STAGE, key, _compute_never)
        assert ev.hit and torch.equal(first["f16"], second["f16"])
        assert not store.entry_path(STAGE, key).exists()  # read-only: nothing written


def test_damaged_remote_entry_is_a_miss_with_a_warning(s3_url, tmp_path, caplog):
    key = make_key()
    with FeatureStore(s3_url, local_dir=tmp_path / "a") as store:
        store.get_or_compute(STAGE, key, sample_tensors)
    tier = RemoteTier(s3_url)
    good = tier.fs.cat_file(tier.entry_path(STAGE, key.digest))
    damaged = bytearray(good)
    damaged[-1] ^= 0xFF
    tier.fs.pipe_file(tier.entry_path(STAGE, key.digest), bytes(damaged))
    calls = []

    def compute():
        calls.append(1)
        return sample_tensors()

    with caplog.at_level(logging.WARNING), FeatureStore(s3_url, local_dir=tmp_path / "b") as store:
        assert store.get(STAGE, key) is None  # a job asks for the hit alone first (pose_frames)
        tensors, ev = store.get_or_compute(STAGE, key, compute)
    assert calls == [1] and not ev.hit and ev.reason == "corrupt"
    damaged_words = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(damaged_words) == 1 and "checksum" in damaged_words[0]  # one warning per object
    assert torch.equal(tensors["f32"], sample_tensors()["f32"])
    # the recomputed entry replaced the damaged object
    assert tier.fs.cat_file(tier.entry_path(STAGE, key.digest)) == good


def test_publication_is_create_only(s3_url):
    tier = RemoteTier(s3_url)
    assert tier.publish(STAGE, "ab" * 32, b"first") is True
    assert tier.publish(STAGE, "ab" * 32, b"other") is False  # If-None-Match: * refused it
    assert tier.fs.cat_file(tier.entry_path(STAGE, "ab" * 32)) == b"first"
    assert tier.usable


def test_two_writers_race_harmlessly(s3_url, tmp_path):
    key = make_key(video="raced")
    start = threading.Barrier(2)
    results: dict[int, dict[str, torch.Tensor]] = {}

    def writer(i: int) -> None:
        with FeatureStore(s3_url, local_dir=tmp_path / f"w{i}") as store:
            start.wait()
            results[i], _ = store.get_or_compute(STAGE, key, sample_tensors)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    remote = _remote_bytes(s3_url, STAGE, key.digest)
    for i in range(2):
        local = tmp_path / f"w{i}" / "v1" / STAGE / key.digest[:2] / f"{key.digest}.safetensors"
        assert local.read_bytes() == remote  # the two writers' bytes are identical
        assert torch.equal(results[i]["i64"], sample_tensors()["i64"])
    assert decode_entry(remote, STAGE, key)


def test_local_tier_size_cap_evicts_least_recently_used(s3_url, tmp_path):
    keys = [make_key(video=f"v{i}") for i in range(4)]
    with FeatureStore(s3_url, local_dir=tmp_path / "a") as probe:
        probe.get_or_compute(STAGE, keys[0], sample_tensors)
        size = probe.entries()[0].size
    cap = int(size * 2.5)
    with FeatureStore(s3_url, local_dir=tmp_path / "b", local_max_size=cap) as store:
        for k in keys:
            store.get_or_compute(STAGE, k, sample_tensors)
        local = {e.key for e in store.entries()}
        assert sum(e.size for e in store.entries()) <= cap
    assert keys[-1].digest in local and keys[0].digest not in local and len(local) == 2
    for k in keys:  # the remote tier keeps them all
        assert _remote_bytes(s3_url, STAGE, k.digest)


def test_bad_local_cap_names_the_value(s3_url, tmp_path):
    with pytest.raises(CacheError, match="'lots'"):
        FeatureStore(s3_url, local_dir=tmp_path / "a", local_max_size="lots")


def test_missing_extra_is_one_line_naming_the_install(tmp_path):
    code = (
        "import sys; sys.modules['s3fs'] = None\n"  # as if s3fs were not installed
        "from mimicache.cli import main\n"
        "sys.exit(main(['cache', 'ls', '--feature_cache_dir', 's3://bucket/prefix']))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(mimicache.__file__).parents[1])}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env=env,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install "mimicache[s3]"' in lines[0]
    assert "s3://bucket/prefix" in lines[0] and "--feature_cache_dir" in lines[0]


def test_the_installer_installs_the_object_storage_extra(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    text = (repo / "pyproject.toml").read_text()
    s3 = re.search(r"^s3 = \[(.*)\]$", text, re.M)
    test = re.search(r"^test = \[(.*)\]$", text, re.M)
    assert s3 and re.findall(r'"([a-z0-9]+)>=', s3.group(1)) == ["fsspec", "s3fs"]
    assert test and '"moto[server]>=' in test.group(1)
    env = {**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"}  # no nvidia-smi: CPU build
    done = subprocess.run(
        ["bash", str(repo / "scripts" / "install.sh"), "--dry-run"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    line = next(x for x in done.stdout.splitlines() if "pip install" in x and "-e" in x)
    assert "s3" in line.split("[", 1)[1].split("]")[0].split(",")


def test_unusable_bucket_warns_once_and_the_run_goes_on(s3_server, tmp_path, caplog):
    url = "s3://no-such-bucket-for-mimicache/cache"
    with caplog.at_level(logging.WARNING), FeatureStore(url, local_dir=tmp_path / "a") as store:
        for i in range(3):
            tensors, ev = store.get_or_compute(STAGE, make_key(video=f"v{i}"), sample_tensors)
            assert not ev.hit and torch.equal(tensors["u8"], sample_tensors()["u8"])
        assert len(store.entries()) == 3  # the local tier still caches
    warnings = [r.getMessage() for r in caplog.records if "no-such-bucket" in r.getMessage()]
    assert len(warnings) == 1 and "going on with the local tier" in warnings[0]
