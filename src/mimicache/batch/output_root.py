"""The output root: a local folder, or an object-storage URL (``--output_dir s3://bucket/prefix``).

On a URL root each job's mp4 and sidecar are put create-only (``If-None-Match: *`` where the
store has it) under the first free ``{stem}[_N]`` name, by whichever process finished the job,
so nothing is ever overwritten and a name appears only with its whole content. The driver's
own files (the log, ``report.html``, ``results.jsonl``) are written in a local staging folder
and uploaded: ``results.jsonl`` after finished jobs (at most every ``UPLOAD_EVERY_S`` seconds,
so a crash keeps the rows of all but the last seconds; their sidecars are in the bucket in any
case) and everything at the end.

A job's output path is a ``Path`` of the URL (``Path("s3://b/p/x.mp4")`` reads ``s3:/b/p/x.mp4``);
``location`` gives the URL back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimicache.cache.fetch import input_url
from mimicache.cache.remote import local_cache_base, open_filesystem, put_new, remote_url
from mimicache.errors import CacheError, OutputError, setting

logger = logging.getLogger(__name__)

UPLOAD_EVERY_S = 2.0  # results.jsonl uploads at most this often during a run (then at the end)


def location(path: str | os.PathLike[str] | None) -> str | None:
    """``path`` as written in records: the URL of an object (or an HTTP input), else the
    path as it is."""
    if path is None:
        return None
    return input_url(path) or os.fspath(path)


def _filesystem(url: str) -> tuple[Any, str]:
    try:
        return open_filesystem(url)
    except CacheError as exc:  # names the extra to install
        raise OutputError(
            f"{setting('output_dir', url)}: {str(exc).removeprefix(url + ': ')}"
        ) from None


class Bucket:
    """An object-storage output folder as ``outputs.publish_output`` uses it: conditional
    (create-only) puts by name."""

    def __init__(self, url: str):
        self.fs, base = _filesystem(url)
        self.base = base.rstrip("/")

    def path(self, name: str) -> Path:
        """The object's URL as a ``Path``."""
        return Path(self.fs.unstrip_protocol(f"{self.base}/{name}"))

    def put_new(self, name: str, data: bytes) -> bool:
        """Put ``data`` as ``name`` unless it exists; True when this call wrote it."""
        return put_new(self.fs, f"{self.base}/{name}", data)[0]

    def read(self, name: str) -> bytes | None:
        try:
            return self.fs.cat_file(f"{self.base}/{name}")
        except FileNotFoundError:
            return None

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(f"{self.base}/{name}")


@dataclass
class OutputRoot:
    """Where a run's files go: ``folder`` is what jobs are planned under (a local folder, or
    the URL as a ``Path``); ``staging`` the local folder the driver writes its own files in
    (the folder itself for a local root); ``url`` None for a local root."""

    folder: Path
    staging: Path
    url: str | None = None
    _last_upload: float | None = None

    @property
    def remote(self) -> bool:
        return self.url is not None

    def download(self, name: str) -> Path:
        """The staged copy of ``name`` (an earlier run's ``results.jsonl``), fetched from the
        URL root when it is there; the staged path either way."""
        staged = self.staging / name
        if self.url is not None:
            fs, base = _filesystem(self.url)
            with contextlib.suppress(FileNotFoundError):
                fs.get_file(f"{base.rstrip('/')}/{name}", str(staged))
        return staged

    def upload(self, staged: Path | None, *, every: float = 0.0) -> None:
        """Copy a staged file to the URL root (nothing for a local root); ``every``: skip it
        when the last upload is more recent. A failed upload is a warning: the run goes on."""
        if self.url is None or staged is None or not staged.is_file():
            return
        now = time.monotonic()
        if every and self._last_upload is not None and now - self._last_upload < every:
            return
        self._last_upload = now
        try:
            fs, base = _filesystem(self.url)
            fs.put_file(str(staged), f"{base.rstrip('/')}/{staged.name}")
        except Exception as exc:  # every backend has its own errors: none fails the run
            logger.warning("could not upload %s to %s: %s", staged.name, self.url, exc)


def open_output_root(text: str | os.PathLike[str]) -> OutputRoot:
    """The output root ``--output_dir`` names. A URL root is checked (the extra installed,
    the bucket reachable) and gets a fresh staging folder; a local one is checked by the
    caller as before."""
    url = remote_url(text)
    if url is None:
        return OutputRoot(Path(text), Path(text))
    fs, base = _filesystem(url)
    bucket = base.split("/", 1)[0]
    try:
        reachable = fs.exists(bucket)
    except Exception as exc:
        raise OutputError(
            f"{setting('output_dir', url)}: the store cannot be reached ({type(exc).__name__}: "
            f"{exc}); check the endpoint and credentials (for S3: AWS_ENDPOINT_URL, "
            "AWS_ACCESS_KEY_ID...)"
        ) from None
    if not reachable:
        raise OutputError(
            f"{setting('output_dir', url)}: bucket {bucket} does not exist; create it"
        )
    parent = local_cache_base() / "staging"
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="run-", dir=parent))
    logger.debug("output root %s staged in %s", url, staging)
    return OutputRoot(Path(url), staging, url)


def object_sidecars(folder: str | os.PathLike[str]) -> list[tuple[Path, bytes]]:
    """The ``*.json`` objects directly under a URL folder, oldest name first, with their
    bytes (for ``--resume``); none when the folder is empty or missing."""
    url = remote_url(folder)
    if url is None:
        return []
    fs, base = _filesystem(url)
    try:
        paths = sorted(fs.glob(f"{base.rstrip('/')}/*.json"))
        contents = fs.cat(paths) if paths else {}
    except FileNotFoundError:
        return []
    return [(Path(fs.unstrip_protocol(p)), contents[p]) for p in paths if p in contents]


def object_size(path: str | os.PathLike[str]) -> int:
    """The size of the object at a URL path; FileNotFoundError when there is none."""
    url = remote_url(path)
    if url is None:
        raise FileNotFoundError(path)
    fs, inner = _filesystem(url)
    return int(fs.info(inner)["size"])
