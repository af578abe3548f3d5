"""Inputs by URL where the job runs: a case whose reference image or driving video is an
``s3://`` / ``gs://`` / ``az://`` / ``http(s)://`` URL keeps the URL in the plan (and in the
records); the process that generates it fetches the files into its own machine's local tier
just before (``cache.fetch``: once per object version, keyed by content), so on a cluster the
bytes go to the node that needs them and never through the driver."""

from __future__ import annotations

from mimicache.config import TestCase
from mimicache.storage.fetch import fetch, input_url


def fetched(case: TestCase) -> TestCase:
    """``case`` with its URL inputs replaced by local files (the case itself when it has
    none). A missing or unreadable object raises StorageError naming its URL."""
    image, video = case.ref_image_path, case.ref_video_path
    if input_url(image) is None and input_url(video) is None:
        return case
    return case.replace(ref_image_path=fetch(image), ref_video_path=fetch(video))
