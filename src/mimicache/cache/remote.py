"""The remote tier: cache entries on object storage (``s3://``, ``gs://``, ``az://``) via fsspec.

A store whose root is such a URL keeps a local disk tier on each machine in front of it (the
way sccache and Bazel's remote cache do): read local, then remote, then compute; a computed
entry goes to both. Remote objects are the same immutable, self-verifying entry files under
the same ``v<SCHEMA>/<stage>/<key[:2]>/<key>.safetensors`` names; they are published
create-only (a conditional put, ``If-None-Match: *``, where the store has one; elsewhere the
identical bytes of two writers make the race harmless). No SQLite and no locks live remotely.

fsspec and the protocol's library (s3fs, gcsfs, adlfs) are imported only when a URL is used;
credentials and endpoints come from each library's usual environment (for S3:
``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ...).

Environment: ``MIMICACHE_LOCAL_CACHE_DIR`` holds the local tiers (default
``$XDG_CACHE_HOME/mimicache/tiers``, one folder per remote URL); ``MIMICACHE_LOCAL_CACHE_SIZE``
caps each local tier (default 10GiB; least recently used entries go first).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import blake3

from mimicache.cache.entry import ENTRY_SUFFIX, SCHEMA, CorruptEntry, Entry, decode_entry
from mimicache.cache.keys import StageKey
from mimicache.cache.sharing import user_cache_dir
from mimicache.cache.sizes import parse_size
from mimicache.errors import CacheError

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_LOCAL_SIZE",
    "INSTALL_HINT",
    "DamagedRemote",
    "RemoteTier",
    "local_cache_base",
    "local_file_root",
    "local_tier_dir",
    "local_tier_size",
    "open_filesystem",
    "put_new",
    "remote_url",
]

DEFAULT_LOCAL_SIZE = 10 * 1024**3
"""Default cap of a local tier in bytes (sccache's default, too)."""

INSTALL_HINT = 'pip install "mimicache[s3]"'

# Protocols of object stores. ``Path("s3://b/p")`` collapses the double slash to "s3:/b/p",
# so one slash is accepted too; a scheme needs two letters (never a Windows drive letter).
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl"})
_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/+(.*)$")


class DamagedRemote(Exception):
    """A remote object that is not a sound entry of its stage and key; says why."""


def _split(root: str | os.PathLike[str]) -> tuple[str, str] | None:
    match = _URL_RE.match(os.fspath(root))
    return (match.group(1).lower(), match.group(2)) if match else None


def remote_url(
    root: str | os.PathLike[str], protocols: frozenset[str] = OBJECT_STORES
) -> str | None:
    """``root`` as a normalised URL (``s3://bucket/prefix``) when it names object storage
    (one of ``protocols``), else None (a local path, or a ``file://`` URL)."""
    parts = _split(root)
    if parts is None or parts[0] not in protocols:
        return None
    return f"{parts[0]}://{parts[1].rstrip('/')}"


def local_file_root(root: str | os.PathLike[str]) -> Path | None:
    """The path of a ``file://`` URL (``file:///data/cache`` -> ``/data/cache``), else None."""
    parts = _split(root)
    if parts is None or parts[0] != "file":
        return None
    return Path("/" + parts[1].lstrip("/"))


def open_filesystem(url: str) -> tuple[Any, str]:
    """(fsspec file system, path inside it) for ``url``; a CacheError names the extra to
    install when fsspec or the protocol's library is missing."""
    try:
        import fsspec

        return fsspec.core.url_to_fs(url)
    except ImportError as exc:
        raise CacheError(
            f"{url}: object storage needs the optional libraries ({exc}): {INSTALL_HINT} "
            "(gs:// also needs gcsfs, az:// adlfs)"
        ) from None


def local_cache_base() -> Path:
    """The folder of this machine's local tiers (and fetched inputs)."""
    base = os.environ.get("MIMICACHE_LOCAL_CACHE_DIR")
    folder = Path(base).expanduser() if base else user_cache_dir() / "mimicache" / "tiers"
    return folder.absolute()


def local_tier_dir(url: str) -> Path:
    """This machine's local tier for the remote ``url``: one folder per URL."""
    return local_cache_base() / blake3.blake3(url.encode()).hexdigest()[:24]


def local_tier_size(size: int | str | None = None) -> int:
    """The local tier's cap in bytes: ``size``, else ``MIMICACHE_LOCAL_CACHE_SIZE``, else
    DEFAULT_LOCAL_SIZE. A bad value raises CacheError carrying it."""
    if size is None:
        size = os.environ.get("MIMICACHE_LOCAL_CACHE_SIZE") or DEFAULT_LOCAL_SIZE
    return parse_size(size)


class RemoteTier:
    """Entry objects under ``url``: ``get`` (verified), ``publish`` (create-only).

    Errors other than a missing object (network, permissions) are logged once and switch the
    tier off for the rest of the process: the run goes on with the local tier.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.base = open_filesystem(url)
        self.base = self.base.rstrip("/")
        self.usable = True
        self._create_only = True  # until the store says it has no conditional put

    def __repr__(self) -> str:
        return f"RemoteTier({self.url!r})"

    def entry_path(self, stage: str, key: str) -> str:
        return f"{self.base}/v{SCHEMA}/{stage}/{key[:2]}/{key}{ENTRY_SUFFIX}"

    def _failed(self, action: str, exc: BaseException) -> None:
        if self.usable:
            logger.warning(
                "remote feature cache %s cannot be %s (%s: %s): going on with the local tier",
                self.url,
                action,
                type(exc).__name__,
                exc,
            )
        self.usable = False

    def get(self, stage: str, key: StageKey) -> tuple[Entry, bytes] | None:
        """The entry of ``stage``/``key`` and its bytes, or None when there is none (or the
        tier is off). Raises DamagedRemote for an object that fails verification."""
        if not self.usable:
            return None
        path = self.entry_path(stage, key.digest)
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            return None
        except Exception as exc:  # every backend has its own errors: none may fail a run
            self._failed("read", exc)
            return None
        try:
            return decode_entry(data, stage, key), data
        except CorruptEntry as exc:
            raise DamagedRemote(f"{self.fs.unstrip_protocol(path)}: {exc}") from None

    def publish(self, stage: str, key: str, data: bytes, *, replace: bool = False) -> bool:
        """Put the entry object unless one is there (``replace``: put it in any case, e.g.
        over a damaged one). True when this call wrote it."""
        if not self.usable:
            return False
        path = self.entry_path(stage, key)
        try:
            if replace:
                self.fs.pipe_file(path, data)
                return True
            # Without a conditional put two writers may both write: their bytes are equal.
            wrote, self._create_only = put_new(self.fs, path, data, conditional=self._create_only)
            return wrote
        except FileExistsError:
            return False
        except Exception as exc:
            self._failed("written", exc)
            return False


def put_new(fs: Any, path: str, data: bytes, *, conditional: bool = True) -> tuple[bool, bool]:
    """Put ``data`` at ``path`` unless an object is there: (whether this call wrote it,
    whether the store takes conditional puts). ``conditional`` False, or a store without them:
    check, then put (a narrow race remains)."""
    if conditional:
        try:
            fs.pipe_file(path, data, mode="create")
            return True, True
        except FileExistsError:
            return False, True
        except (TypeError, NotImplementedError, ValueError):
            pass  # this store has no conditional put
    if fs.exists(path):
        return False, False
    fs.pipe_file(path, data)
    return True, False
