"""Keys: canonical JSON, key digests, memoised file digests, model fingerprints."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import blake3
import numpy as np
import pytest
import torch

from mimicache.cache import digest_memo as digests
from mimicache.cache.digest_memo import DigestMemo
from mimicache.cache.keys import StageKey, fingerprint_files, key_digest
from mimicache.storage import digests as hashing
from mimicache.storage.digests import file_digest
from mimicache.storage.json_values import canonical_json


@pytest.fixture
def no_racy_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Freshly written test files may be memoised at once."""
    monkeypatch.setattr(hashing, "RACY_WINDOW_NS", 0)


@pytest.fixture
def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = hashing._hash_fd

    def counting(fd: int, size: int) -> str:
        calls.append(size)
        return real(fd, size)

    monkeypatch.setattr(hashing, "_hash_fd", counting)
    return calls


# --------------------------------------------------------------------------- canonical JSON


def test_canonical_json_sorted_compact_and_typed() -> None:
    obj = {"b": 1, "a": [Path("/x/y.mp4"), (1, 2)], "c": {"z": None, "y": True}}
    assert canonical_json(obj) == '{"a":["/x/y.mp4",[1,2]],"b":1,"c":{"y":true,"z":null}}'
    assert canonical_json({"b": 1, "a": 2}) == canonical_json({"a": 2, "b": 1})


def test_canonical_json_stable_numbers() -> None:
    assert canonical_json({"s": 1.0}) == canonical_json({"s": 1}) == '{"s":1}'
    assert canonical_json(-0.0) == "0"
    assert canonical_json(0.1) == "0.1"
    assert canonical_json(1e-7) == "1e-07"
    assert canonical_json(float("nan")) == '"NaN"'
    assert canonical_json(np.float64(0.25)) == "0.25"
    assert canonical_json(np.int64(7)) == "7"
    assert canonical_json(torch.tensor(3)) == "3"
    assert canonical_json(torch.float16) == '"torch.float16"'
    assert canonical_json({3, 1, 2}) == "[1,2,3]"
    assert canonical_json("ü") == '"ü"'


def test_canonical_json_rejects_unknown_types() -> None:
    with pytest.raises(TypeError, match="cannot encode"):
        canonical_json({"x": object()})


def test_key_digest_is_hex_blake3_of_canonical_json() -> None:
    fields = {"inputs": {"video": "abc"}, "params": {"stride": 2}}
    digest = key_digest(fields)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert digest == blake3.blake3(canonical_json(fields).encode()).hexdigest()
    assert digest == key_digest({"params": {"stride": 2.0}, "inputs": {"video": "abc"}})
    assert digest != key_digest({"inputs": {"video": "abc"}, "params": {"stride": 3}})
    key = StageKey({"video": "abc"}, {"dwpose": "f"}, {"stride": 2.0}, {"threads": 2})
    assert key.digest == key_digest(key.fields())


# --------------------------------------------------------------------------- file digests


def test_file_digest_is_blake3_of_bytes_and_path_independent(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    a, b = tmp_path / "a.bin", tmp_path / "sub" / "other_name.mp4"
    b.parent.mkdir()
    a.write_bytes(data)
    b.write_bytes(data)
    expected = blake3.blake3(data).hexdigest()
    memo = DigestMemo(tmp_path / "memo.sqlite")
    assert file_digest(a) == expected
    assert file_digest(a, memo) == expected
    assert file_digest(b, memo) == expected
    (tmp_path / "empty").write_bytes(b"")
    assert file_digest(tmp_path / "empty") == blake3.blake3(b"").hexdigest()


def test_file_digest_large_file_path_overlaps_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hashing, "_THREADED_MIN", 1 << 16)
    monkeypatch.setattr(hashing, "_CHUNK", 1 << 16)
    data = os.urandom(1_000_003)  # many chunks, last one partial
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert file_digest(path) == blake3.blake3(data).hexdigest()


def test_file_digest_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        file_digest(tmp_path / "nope.mp4", DigestMemo(tmp_path / "memo.sqlite"))


def test_memo_hit_does_not_reread(
    tmp_path: Path, no_racy_window: None, count_reads: list[int]
) -> None:
    path = tmp_path / "video.mp4"
    path.write_bytes(b"x" * 1000)
    memo = DigestMemo(tmp_path / "memo.sqlite")
    first = file_digest(path, memo)
    assert count_reads == [1000]
    for _ in range(3):
        assert file_digest(path, memo) == first
    assert count_reads == [1000]
    # a new memo object on the same database (another run) still hits
    assert file_digest(path, DigestMemo(tmp_path / "memo.sqlite")) == first
    assert count_reads == [1000]


def test_content_facts_are_memoised_by_digest(tmp_path: Path) -> None:
    """A fact of some bytes is computed once per index; another file with the same bytes
    shares it; a read-only index from before facts were kept computes it and still memoises
    digests."""
    import sqlite3

    calls: list[str] = []

    def fps(value: float):
        return lambda: calls.append("probe") or value

    memo = DigestMemo(tmp_path / "memo.sqlite")
    assert digests.content_fact("ab" * 32, "video.avg_fps", fps(29.97), memo) == 29.97
    assert digests.content_fact("ab" * 32, "video.avg_fps", fps(1.0), memo) == 29.97
    again = DigestMemo(tmp_path / "memo.sqlite")  # another run
    assert digests.content_fact("ab" * 32, "video.avg_fps", fps(1.0), again) == 29.97
    assert digests.content_fact("cd" * 32, "video.avg_fps", fps(25.0), again) == 25.0
    assert calls == ["probe", "probe"]
    assert digests.content_fact("ab" * 32, "video.avg_fps", fps(24.0)) == 24.0  # no memo

    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as conn:
        conn.execute(digests._MEMO_SCHEMA)
    path = tmp_path / "v.bin"
    path.write_bytes(b"v" * 100)
    DigestMemo(old).store(path.stat(), "ff" * 32)  # a writer keeps it; then it goes read-only
    with sqlite3.connect(old) as conn:
        conn.execute("DROP TABLE content_facts")
    read_only = DigestMemo(old, read_only=True)
    assert digests.content_fact("ab" * 32, "video.avg_fps", fps(30.0), read_only) == 30.0
    assert read_only.lookup(path.stat()) == "ff" * 32


def test_replaced_file_with_restored_mtime_is_noticed(
    tmp_path: Path, count_reads: list[int]
) -> None:
    path = tmp_path / "ref.png"
    path.write_bytes(b"A" * 4096)
    old = path.stat()
    time.sleep(hashing.RACY_WINDOW_NS / 1e9 + 0.01)  # no longer "racy": the digest is memoised
    memo = DigestMemo(tmp_path / "memo.sqlite")
    digest_a = file_digest(path, memo)
    assert file_digest(path, memo) == digest_a
    assert len(count_reads) == 1
    # rewrite in place (same inode, same size) and put the old mtime back
    with open(path, "r+b") as f:
        f.write(b"B" * 4096)
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    new = path.stat()
    assert (new.st_ino, new.st_size, new.st_mtime_ns) == (old.st_ino, old.st_size, old.st_mtime_ns)
    digest_b = file_digest(path, memo)
    assert digest_b != digest_a
    assert digest_b == blake3.blake3(b"B" * 4096).hexdigest()
    # replaced by a new file renamed over it, old mtime restored
    tmp = tmp_path / "new.png"
    tmp.write_bytes(b"C" * 4096)
    os.utime(tmp, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(tmp, path)
    assert file_digest(path, memo) == blake3.blake3(b"C" * 4096).hexdigest()
    assert len(count_reads) == 3


def test_racy_fresh_file_is_not_memoised(tmp_path: Path, count_reads: list[int]) -> None:
    path = tmp_path / "fresh.bin"
    path.write_bytes(b"fresh")
    memo = DigestMemo(tmp_path / "memo.sqlite")
    file_digest(path, memo)
    file_digest(path, memo)  # written < RACY_WINDOW_NS ago: may still change in the same tick
    assert len(count_reads) == 2


def test_unusable_memo_db_just_computes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, no_racy_window: None
) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"data")
    (tmp_path / "dir.sqlite").mkdir()  # a directory where the database should be
    bad = tmp_path / "notadb.sqlite"
    bad.write_bytes(b"this is not a sqlite database" * 100)
    for db in (tmp_path / "dir.sqlite", bad, tmp_path / "missing" / "memo.sqlite"):
        memo = DigestMemo(db)
        with caplog.at_level(logging.WARNING, logger="mimicache.cache.digest_memo"):
            caplog.clear()
            assert file_digest(path, memo) == blake3.blake3(b"data").hexdigest()
            assert file_digest(path, memo) == blake3.blake3(b"data").hexdigest()
        assert len([r for r in caplog.records if "memo" in r.getMessage()]) == 1


# --------------------------------------------------------------------------- fingerprints


def _model(folder: Path, weights: bytes = b"w" * 100) -> Path:
    (folder / "vae").mkdir(parents=True)
    (folder / "vae" / "config.json").write_text('{"latent_channels": 4}')
    (folder / "vae" / "model.safetensors").write_bytes(weights)
    return folder


def test_fingerprint_depends_on_content_names_and_extra(tmp_path: Path) -> None:
    a = _model(tmp_path / "a")
    b = _model(tmp_path / "elsewhere" / "b")  # same model in another place
    files_a = [a / "vae" / "model.safetensors", a / "vae" / "config.json"]
    files_b = [b / "vae" / "config.json", b / "vae" / "model.safetensors"]
    fp = fingerprint_files(files_a)
    assert len(fp) == 64
    assert fingerprint_files(files_b) == fp  # order and location do not matter
    assert fingerprint_files([a / "vae"]) == fingerprint_files([b / "vae"])
    assert fingerprint_files(files_a, extra={"dtype": "fp16"}) != fp
    assert fingerprint_files(files_a, extra={"dtype": "fp16"}) == fingerprint_files(
        files_b, extra={"dtype": "fp16"}
    )
    (b / "vae" / "model.safetensors").write_bytes(b"w" * 99 + b"x")
    assert fingerprint_files(files_b) != fp
    # roles name the files explicitly: swapping roles changes the fingerprint
    det, pose = tmp_path / "det.onnx", tmp_path / "pose.onnx"
    det.write_bytes(b"det")
    pose.write_bytes(b"pose")
    by_role = fingerprint_files({"det": det, "pose": pose}, memo=DigestMemo(tmp_path / "m.db"))
    assert by_role == fingerprint_files({"pose": pose, "det": det})
    assert by_role != fingerprint_files({"det": pose, "pose": det})


def test_fingerprint_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fingerprint_files([tmp_path / "missing.onnx"])
