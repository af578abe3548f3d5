"""Inputs by URL: ``fetch(url)`` downloads an object once into this machine's cache, by content.

A reference image, driving video or manifest given as ``s3://``, ``gs://``, ``az://`` or
``http(s)://`` is downloaded to ``<folder>/<digest[:2]>/<digest>/<name>`` (``digest`` the
same ``file_digest`` a local file gets, so the cache keys of a fetched file equal those of the
same bytes on disk; ``name`` the object's own, so outputs are named after it). A record per
URL (``<folder>/urls/<url digest>.json``: ETag, size, digest) lets the next call with the
same URL, while the object's ETag and size are unchanged, return the file without a download.

Default folder: ``<local cache base>/inputs`` (``MIMICACHE_LOCAL_CACHE_DIR``, else
``$XDG_CACHE_HOME/mimicache/tiers``). Errors raise StorageError carrying the URL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

import blake3

from mimicache.errors import StorageError
from mimicache.storage.digests import file_digest
from mimicache.storage.files import atomic_write
from mimicache.storage.objects import (
    OBJECT_STORES,
    local_cache_base,
    local_file_root,
    open_filesystem,
    remote_url,
)

logger = logging.getLogger(__name__)

__all__ = ["INPUT_PROTOCOLS", "fetch", "input_url", "inputs_folder"]

INPUT_PROTOCOLS = OBJECT_STORES | {"http", "https"}


def input_url(value: str | os.PathLike[str]) -> str | None:
    """``value`` as a URL when it names a remote input (object storage or HTTP), else None."""
    return remote_url(value, INPUT_PROTOCOLS)


def inputs_folder() -> Path:
    """Where fetched inputs live by default (beside the local cache tiers)."""
    return local_cache_base() / "inputs"


def _version(info: dict[str, Any]) -> dict[str, Any]:
    """What says an object changed: its ETag (or the backend's equivalent) and size."""
    etag = next(
        (info[k] for k in ("ETag", "etag", "md5Hash", "content_md5", "generation") if info.get(k)),
        None,
    )
    return {"etag": str(etag) if etag is not None else None, "size": info.get("size")}


def fetch(url: str | os.PathLike[str], *, folder: str | os.PathLike[str] | None = None) -> Path:
    """The local file holding the object at ``url``, downloaded at most once per version.

    Args:
        url: ``s3://``, ``gs://``, ``az://``, ``http(s)://``; a path that is not a URL is
            returned unchanged (a ``file://`` URL as its path).
        folder: where downloads are kept (default: ``inputs_folder()``).

    Returns:
        The local file, named after the object and filed by its content digest (so its cache
        keys equal those of the same bytes on a local disk).

    Raises:
        StorageError: no such object, or it cannot be read (the message names the URL).
    """
    normalised = input_url(url)
    if normalised is None:
        return local_file_root(url) or Path(url)
    base = Path(folder).expanduser().absolute() if folder is not None else inputs_folder()
    fs, path = open_filesystem(normalised)
    try:
        version = _version(fs.info(path))
    except FileNotFoundError:
        raise StorageError(f"{normalised} does not exist (no such object)") from None
    except Exception as exc:
        raise StorageError(f"cannot read {normalised}: {type(exc).__name__}: {exc}") from None
    record_path = base / "urls" / f"{blake3.blake3(normalised.encode()).hexdigest()[:32]}.json"
    known = _known(record_path, version)
    if known is not None:
        logger.debug("%s: already fetched to %s", normalised, known)
        return known
    name = path.rstrip("/").rsplit("/", 1)[-1] or "input"
    local = _download(fs, path, normalised, base, name)
    record = {"url": normalised, **version, "path": str(local)}
    with contextlib.suppress(OSError):  # without the record the next call downloads again
        record_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(record_path, json.dumps(record, sort_keys=True).encode("utf-8"))
    return local


def _known(record_path: Path, version: dict[str, Any]) -> Path | None:
    """The file an earlier fetch of the same object version left, if it is still there."""
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        local = Path(record["path"])
        same = version["etag"] is not None and all(record.get(k) == v for k, v in version.items())
        if same and local.is_file() and local.stat().st_size == version["size"]:
            return local
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _download(fs: Any, path: str, url: str, base: Path, name: str) -> Path:
    """Download to a temp file, then move it under its content digest (kept if there)."""
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".fetch.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        try:
            fs.get_file(path, str(tmp))
        except Exception as exc:
            raise StorageError(f"cannot download {url}: {type(exc).__name__}: {exc}") from None
        digest = file_digest(tmp)
        final = base / digest[:2] / digest / name
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.is_file() and final.stat().st_size == tmp.stat().st_size:
            return final  # the same bytes, fetched before under another URL or version
        os.replace(tmp, final)
        logger.info("Fetched %s (%d bytes) to %s", url, final.stat().st_size, final)
        return final
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
