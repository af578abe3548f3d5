"""Object stores (``s3://``, ``gs://``, ``az://``) through fsspec: which paths are URLs, the
file system of one, create-only puts, and this machine's folder for what they bring.

fsspec and the protocol's library (s3fs, gcsfs, adlfs) are imported only when a URL is used;
credentials and endpoints come from each library's usual environment (for S3:
``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ...).
``MIMICACHE_LOCAL_CACHE_DIR`` is this machine's folder for them (default
``$XDG_CACHE_HOME/mimicache/tiers``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mimicache.errors import StorageError
from mimicache.storage.files import user_cache_dir

__all__ = [
    "INSTALL_HINT",
    "OBJECT_STORES",
    "local_cache_base",
    "local_file_root",
    "open_filesystem",
    "put_new",
    "remote_url",
]

INSTALL_HINT = 'pip install "mimicache[s3]"'

# Protocols of object stores. ``Path("s3://b/p")`` collapses the double slash to "s3:/b/p",
# so one slash is accepted too; a scheme needs two letters (never a Windows drive letter).
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl"})
_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/+(.*)$")


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
    """(fsspec file system, path inside it) for ``url``; a StorageError names the extra to
    install when fsspec or the protocol's library is missing."""
    try:
        import fsspec

        return fsspec.core.url_to_fs(url)
    except ImportError as exc:
        raise StorageError(
            f"{url}: object storage needs the optional libraries ({exc}): {INSTALL_HINT} "
            "(gs:// also needs gcsfs, az:// adlfs)"
        ) from None


def local_cache_base() -> Path:
    """The folder of this machine's local tiers (and fetched inputs)."""
    base = os.environ.get("MIMICACHE_LOCAL_CACHE_DIR")
    folder = Path(base).expanduser() if base else user_cache_dir() / "mimicache" / "tiers"
    return folder.absolute()


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
