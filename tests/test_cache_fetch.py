"""Inputs by URL: fetched once into the local cache, keyed by content (moto's S3 server)."""

from __future__ import annotations

import logging
from pathlib import Path

import fsspec
import pytest

from mimicache.errors import StorageError
from mimicache.storage.digests import file_digest
from mimicache.storage.fetch import fetch, input_url
from tests import s3_fixtures
from tests.engine_fixtures import figure_video

s3_server, s3_url = s3_fixtures.s3_server, s3_fixtures.s3_url  # fixtures


def _upload(url: str, data: bytes) -> None:
    fs, path = fsspec.core.url_to_fs(url)
    fs.pipe_file(path, data)


def _downloads(caplog) -> int:
    return sum(r.getMessage().startswith("Fetched ") for r in caplog.records)


def test_urls_and_paths():
    assert input_url("s3://b/videos/walk.mp4") == "s3://b/videos/walk.mp4"
    assert input_url(Path("https://example.org/a.png")) == "https://example.org/a.png"
    assert input_url("clips/walk.mp4") is None
    assert fetch("clips/walk.mp4") == Path("clips/walk.mp4")
    assert fetch("file:///data/walk.mp4") == Path("/data/walk.mp4")


def test_fetched_once_keyed_by_content(s3_url, tmp_path, caplog):
    video = figure_video(tmp_path / "walk.mp4", frames=3)
    url = f"{s3_url}/inputs/walk.mp4"
    _upload(url, video.read_bytes())
    folder = tmp_path / "inputs"
    with caplog.at_level(logging.INFO, logger="mimicache.storage.fetch"):
        local = fetch(url, folder=folder)
        assert local.name == "walk.mp4" and local.is_relative_to(folder)
        assert local.read_bytes() == video.read_bytes()
        assert file_digest(local) == file_digest(video)  # the same cache keys as the local file
        assert _downloads(caplog) == 1
        inode = local.stat().st_ino
        # the same URL, the object unchanged: no second download
        assert fetch(Path(url), folder=folder) == local and local.stat().st_ino == inode
        assert _downloads(caplog) == 1
        # the object replaced: fetched again, under its new content
        other = figure_video(tmp_path / "other.mp4", frames=4, phase=0.3)
        _upload(url, other.read_bytes())
        again = fetch(url, folder=folder)
        assert _downloads(caplog) == 2
        assert again != local and again.read_bytes() == other.read_bytes()
        assert file_digest(again) == file_digest(other)
    assert not list(folder.glob(".fetch.*"))  # no temp files left


def test_missing_object_names_the_url(s3_url, tmp_path):
    with pytest.raises(StorageError, match=r"s3://.*/nothing\.png does not exist"):
        fetch(f"{s3_url}/nothing.png", folder=tmp_path)


def test_an_input_that_cannot_be_fetched_has_no_result_key(s3_url):
    """``--resume`` keys every job before any runs: a missing object gives that job no key
    (it is redone, and its run reports the error) instead of stopping the whole run."""
    from mimicache.batch.executing.resume import ResultKeys
    from mimicache.config import TestCase

    case = TestCase(ref_video_path=f"{s3_url}/gone.mp4", ref_image_path=f"{s3_url}/gone.png")
    assert ResultKeys(None, {})(case) is None  # fetched first: no engine is reached
