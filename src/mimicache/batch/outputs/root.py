"""The output root: a local folder, or an object-storage URL (``--output_dir s3://bucket/prefix``).

On a URL root each job's mp4 and sidecar are put create-only (``If-None-Match: *`` where the
store has it) under the first free ``{stem}[_N]`` name, by whichever process finished the job,
so nothing is ever overwritten and a name appears only with its whole content. The driver's
own files (the log, ``report.html``, ``results.jsonl``) are written in a local staging folder
and uploaded: ``results.jsonl`` after finished jobs (at most every ``UPLOAD_EVERY_S`` seconds,
so a crash keeps the rows of all but the last seconds; their sidecars are in the bucket in any
case) and everything at the end.

A store that fails is never a traceback: ``open_output_root`` proves before any work that an
object can be written and names what is wrong (``storage.faults``: no such bucket, refused
credentials, an endpoint that cannot be reached, throttling); a job's publication is retried
(``storage.faults.PUBLISH_RETRY``) and then kept on this machine (``unpublished``); an upload of
the driver's files that fails is a warning naming the local file, which stays where it is.

A job's output path is a ``Path`` of the URL (``Path("s3://b/p/x.mp4")`` reads ``s3:/b/p/x.mp4``);
``location`` gives the URL back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimicache.errors import OutputError, StorageError, setting
from mimicache.storage.faults import Retry, StoreError, endpoint_of, fault_of, with_retries
from mimicache.storage.fetch import input_url
from mimicache.storage.objects import local_cache_base, open_filesystem, put_new, remote_url

logger = logging.getLogger(__name__)

UPLOAD_EVERY_S = 2.0  # results.jsonl uploads at most this often during a run (then at the end)


def location(path: str | os.PathLike[str] | None) -> str | None:
    """``path`` as written in records: the URL of an object (or an HTTP input), else the
    path as it is."""
    if path is None:
        return None
    return input_url(path) or os.fspath(path)


def _filesystem(url: str, name: str = "output_dir") -> tuple[Any, str]:
    try:
        return open_filesystem(url)
    except StorageError as exc:  # names the extra to install
        raise OutputError(f"{setting(name, url)}: {str(exc).removeprefix(url + ': ')}") from None


def staging_base() -> Path:
    """This machine's folder of the driver's staged files and of the results kept unpublished."""
    return local_cache_base() / "staging"


def _store_error(url: str, fs: Any, exc: BaseException, name: str = "output_dir") -> OutputError:
    """``exc`` of the store at ``url`` as the one-line error found before any work (``name``:
    the setting that named the URL)."""
    return OutputError(f"{setting(name, url)}: {fault_of(exc).advice(url, endpoint_of(fs))}")


class Bucket:
    """An object-storage output folder as ``outputs.publish_output`` uses it: conditional
    (create-only) puts by name. Each call is retried while the store's fault may pass
    (``storage.faults.with_retries``); one that still fails raises ``StoreError``."""

    def __init__(self, url: str):
        self.fs, base = _filesystem(url)
        self.base = base.rstrip("/")
        self.url = url.rstrip("/")

    def path(self, name: str) -> Path:
        """The object's URL as a ``Path``."""
        return Path(self.fs.unstrip_protocol(f"{self.base}/{name}"))

    def _retried(self, action: Any, what: str) -> Any:
        return with_retries(action, what, self.url, self.fs)

    def put_new(self, name: str, data: bytes) -> bool:
        """Put ``data`` as ``name`` unless it exists; True when this call wrote it."""
        path = f"{self.base}/{name}"
        failed: list[BaseException] = []

        def attempt() -> bool:
            try:
                return put_new(self.fs, path, data)[0]
            except Exception as exc:
                failed.append(exc)
                raise

        wrote = self._retried(attempt, f"publish {name} to {self.url}")
        if not wrote and failed:
            # a failed try may have written it and lost the answer: then the bytes are ours
            return self._retried(lambda: self.fs.cat_file(path) == data, f"read {name} back")
        return wrote

    def read(self, name: str) -> bytes | None:
        def attempt() -> bytes | None:
            try:
                return self.fs.cat_file(f"{self.base}/{name}")
            except FileNotFoundError:
                return None

        return self._retried(attempt, f"check whether {name} is in {self.url}")

    def remove(self, name: str) -> None:
        """Remove ``name`` if it is there; a store that refuses is a warning (the object, an
        mp4 whose sidecar could not follow, is one no sidecar names)."""

        def attempt() -> None:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(f"{self.base}/{name}")

        try:
            self._retried(attempt, f"remove {name} from {self.url}")
        except StoreError as exc:
            logger.warning("%s; it stays, named by no sidecar", exc)


@dataclass
class OutputRoot:
    """Where a run's files go: ``folder`` is what jobs are planned under (a local folder, or
    the URL as a ``Path``); ``staging`` the local folder the driver writes its own files in
    (the folder itself for a local root); ``url`` None for a local root."""

    folder: Path
    staging: Path
    url: str | None = None
    _last_upload: float | None = None
    _between_off: bool = False  # an upload during the run failed: none until the end
    _gave_up: bool = False  # an upload failed after its retries: the others get one try

    @property
    def remote(self) -> bool:
        return self.url is not None

    def download(self, name: str) -> Path:
        """The staged copy of ``name`` (an earlier run's ``results.jsonl``), fetched from the
        URL root when it is there; the staged path either way. A store that cannot be read
        is an ``OutputError`` (the upload at the end would replace the rows it holds)."""
        staged = self.staging / name
        if self.url is not None:
            fs, base = _filesystem(self.url)
            try:
                fs.get_file(f"{base.rstrip('/')}/{name}", str(staged))
            except FileNotFoundError:
                pass
            except Exception as exc:
                raise _store_error(self.url, fs, exc) from None
        return staged

    def upload(self, staged: Path | None, *, every: float = 0.0) -> bool:
        """Copy a staged file to the URL root (nothing for a local root); False when it could
        not be uploaded (a warning names the local file, which stays). ``every``: an upload
        during the run, skipped when the last one is more recent than that, tried once and
        not again before the end of the run when it fails; at the end each upload is retried
        (``PUBLISH_RETRY``) unless an earlier one already failed after its retries."""
        if self.url is None or staged is None or not staged.is_file():
            return True
        now = time.monotonic()
        if every and (
            self._between_off or (self._last_upload is not None and now - self._last_upload < every)
        ):
            return True
        self._last_upload = now
        retry = Retry(tries=1) if every or self._gave_up else None  # None: PUBLISH_RETRY
        try:
            fs, base = _filesystem(self.url)
            target = f"{base.rstrip('/')}/{staged.name}"
            with_retries(
                lambda: fs.put_file(str(staged), target),
                f"upload {staged.name} to {self.url}",
                self.url,
                fs,
                retry,
            )
        except Exception as exc:  # every backend has its own errors: none fails the run
            if every:
                self._between_off = True
                later = " (tried again at the end of the run)"
            else:
                self._gave_up = True
                later = ""
            logger.warning("%s; it stays at %s%s", exc, staged, later)
            return False
        return True


def open_output_root(text: str | os.PathLike[str], *, name: str = "output_dir") -> OutputRoot:
    """The output root ``--output_dir`` (or the setting ``name``) names. A URL root is checked
    (the extra installed, an object can be written: an ``OutputError`` says what is wrong)
    and gets a fresh staging folder; a local one is checked by the caller as before."""
    url = remote_url(text)
    if url is None:
        return OutputRoot(Path(text), Path(text))
    fs, base = _filesystem(url, name)
    # an object written (and removed) proves what the run needs, and a failure says which of
    # bucket, credentials, endpoint or request rate is wrong before any GPU time is spent
    probe = f"{base.rstrip('/')}/.mimicache-write-check-{uuid.uuid4().hex}"
    try:
        put_new(fs, probe, b"")
    except Exception as exc:
        raise _store_error(url, fs, exc, name) from None
    try:
        fs.rm_file(probe)
    except Exception as exc:  # allowed to write, not to remove: harmless
        logger.debug("could not remove %s: %s", probe, exc)
    parent = staging_base()
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
    except Exception as exc:
        raise _store_error(url, fs, exc) from None
    return [(Path(fs.unstrip_protocol(p)), contents[p]) for p in paths if p in contents]


def object_size(path: str | os.PathLike[str]) -> int:
    """The size of the object at a URL path; FileNotFoundError when there is none, another
    OSError (saying why) when the store cannot tell."""
    url = remote_url(path)
    if url is None:
        raise FileNotFoundError(path)
    fs, inner = _filesystem(url)
    try:
        return int(fs.info(inner)["size"])
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise OSError(fault_of(exc).advice(url, endpoint_of(fs))) from None


def fetch_object(path: str | os.PathLike[str], target: Path) -> Path:
    """The object at a URL path copied to the local file ``target`` (e.g. a published mp4 for
    the report's thumbnails); the store's error as it raised it."""
    url = remote_url(path)
    if url is None:
        raise FileNotFoundError(path)
    fs, inner = _filesystem(url)
    fs.get_file(inner, str(target))
    return target
