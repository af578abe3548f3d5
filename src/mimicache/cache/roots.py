"""A cache root as the ``cache`` commands open it: a folder's store, or an object-storage
root's ``RemoteCache``, both ``admin.CacheAdmin``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from mimicache.cache.admin import CacheAdmin
from mimicache.cache.modes import CacheMode
from mimicache.cache.store import FeatureStore
from mimicache.storage.objects import remote_url

__all__ = ["open_admin"]


@contextlib.contextmanager
def open_admin(root: str | os.PathLike[str], *, writes: bool) -> Iterator[CacheAdmin]:
    """The cache at ``root``: a ``FeatureStore`` (read-only unless ``writes``: the commands
    never create entries) for a folder, a ``RemoteCache`` for an object-storage URL (its admin
    needs no local tier). Raises CacheError for a URL this build cannot open."""
    url = remote_url(root)
    if url is not None:
        from mimicache.cache.remote_admin import RemoteCache  # fsspec: only for a URL root

        yield RemoteCache(url)
        return
    mode = CacheMode.READ_WRITE if writes else CacheMode.READ_ONLY
    with FeatureStore(root, mode=mode) as store:
        yield store
