"""Results the output store refused: a finished job's mp4 and sidecar kept on this machine
(``keep``) when its publication to an object-storage folder still fails after the retries,
and published by a later ``--resume`` instead of being computed again (``find_kept``,
``publish_kept``).

Kept files live under the staging area in a folder that mirrors the URL they were meant for
(``s3://b/out/jobs`` -> ``<staging>/unpublished/s3/b/out/jobs/``), so every run on this
machine finds them, whichever run kept them. Their sidecar is the job's "ok" sidecar plus an
``unpublished`` record (the folder URL, the name stem, the store's error); published, the
sidecar names the object and the local copies are removed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mimicache.batch.job import Job, JobResult
from mimicache.batch.outputs.publish import publish_output
from mimicache.batch.outputs.root import location, staging_base
from mimicache.errors import setting
from mimicache.storage.digests import bytes_digest
from mimicache.storage.faults import StoreError
from mimicache.storage.objects import remote_url

logger = logging.getLogger(__name__)

UNPUBLISHED = "unpublished"


def kept_folder(folder: str | Path) -> Path:
    """Where results meant for the URL folder ``folder`` are kept on this machine."""
    url = location(folder) or str(folder)
    protocol, _, rest = url.partition("://")
    parts = [p for p in rest.split("/") if p not in ("", ".", "..")]
    return staging_base() / UNPUBLISHED / protocol / Path(*parts)


def keep(
    folder: Path, stem: str, video: bytes, sidecar: Callable[[Path], bytes], error: StoreError
) -> Path:
    """Write a job's mp4 and sidecar (``sidecar(mp4 path)``: its "ok" sidecar's bytes) in
    ``kept_folder(folder)`` under the first free ``{stem}[_N]`` name, create-only, the
    sidecar with the ``unpublished`` record; the kept mp4's path. OSError when this machine
    cannot hold them either."""
    record = {"folder": location(folder), "stem": stem, "error": str(error)}

    def kept_sidecar(path: Path) -> bytes:
        data = json.loads(sidecar(path))
        data[UNPUBLISHED] = record
        return _json_bytes(data)

    return publish_output(kept_folder(folder), stem, video, kept_sidecar)


def kept_message(error: StoreError, kept: Path) -> str:
    """A kept job's error: the store's, then where its files are and how they get published."""
    return (
        f"not published: {error}; its mp4 and sidecar are kept on this machine in {kept.parent} "
        f"({kept.stem}.*): a run with {setting('resume', True)} publishes them"
    )


@dataclass(frozen=True)
class Kept:
    """A kept result: its mp4 on this machine and its sidecar's content."""

    video: Path
    data: dict[str, Any]


def find_kept(folders: Iterable[Path], keys: set[str]) -> dict[str, list[Kept]]:
    """The kept results meant for the URL folders among ``folders`` whose result key is in
    ``keys``, by key, oldest name first."""
    found: dict[str, list[Kept]] = {}
    for folder in sorted({f for f in folders if remote_url(f) is not None}):
        local = kept_folder(folder)
        for sidecar in sorted(local.glob("*.json")) if local.is_dir() else ():
            try:
                data = json.loads(sidecar.read_bytes())
            except (OSError, ValueError):
                continue
            if not isinstance(data, dict) or data.get("status") != "ok":
                continue
            record = data.get(UNPUBLISHED)
            video = sidecar.with_suffix(".mp4")
            mine = isinstance(record, dict) and record.get("folder") == location(folder)
            if mine and data.get("result_key") in keys and video.is_file():
                found.setdefault(data["result_key"], []).append(Kept(video, data))
    return found


def publish_kept(job: Job, key: Any, waiting: list[Kept]) -> JobResult | None:
    """Publish the first sound one of ``waiting`` (taken off the list) as ``job``'s result
    (``key``: its ``ResultKey``): "skipped" (done) with the object's URL, the local copies
    removed; "failed" with ``kept`` set when the store still refuses; None when none is left
    whose mp4 is what its sidecar records (the job is computed again)."""
    while waiting:
        result = _publish(job, key, waiting.pop(0))
        if result is not None:
            return result
    return None


def _publish(job: Job, key: Any, kept: Kept) -> JobResult | None:
    data = kept.data
    try:
        video = kept.video.read_bytes()
    except OSError as exc:
        logger.warning("%s: its kept result %s is unreadable (%s)", job.name, kept.video, exc)
        return None
    digest = bytes_digest(video)
    if len(video) != data.get("output_bytes") or digest != data.get("output_blake3"):
        logger.warning(
            "%s: its kept result %s is damaged; computing it again", job.name, kept.video
        )
        return None
    record = data[UNPUBLISHED]

    def sidecar(output: Path) -> bytes:
        published = {k: v for k, v in data.items() if k != UNPUBLISHED}
        published["output"] = location(output)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        published["published_late"] = {"kept": str(kept.video), "at": now}
        return _json_bytes(published)

    def ours(taken: bytes) -> bool:  # an earlier --resume published it, then stopped
        try:
            found = json.loads(taken)
        except ValueError:
            return False
        return (
            isinstance(found, dict)
            and found.get("result_key") == data.get("result_key")
            and found.get("output_blake3") == digest
        )

    folder = job.output_path.parent
    done = {"result_key": key, "output_bytes": len(video), "output_blake3": digest}
    try:
        output = publish_output(
            folder, str(record.get("stem") or job.base_stem), video, sidecar, ours
        )
    except StoreError as exc:
        message = kept_message(exc, kept.video)
        logger.error("%s: its kept result is still not published: %s", job.name, message)
        return JobResult(job, "failed", error=message, kept=kept.video, **done)
    for path in (kept.video, kept.video.with_suffix(".json")):
        path.unlink(missing_ok=True)
    logger.info(
        "%s: published the result an earlier run kept on this machine: %s -> %s",
        job.name,
        kept.video,
        location(output),
    )
    return JobResult(job, "skipped", output, **done)


def _json_bytes(data: dict[str, Any]) -> bytes:
    # ASCII escapes: a name that is not UTF-8 came back from JSON as lone surrogates
    return (json.dumps(data, indent=2, ensure_ascii=True, default=str) + "\n").encode("ascii")
