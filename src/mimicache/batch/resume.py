"""``--resume``: a job whose result already exists is skipped. A result is named by its
*result key* (64 hex chars): the BLAKE3 of what the output frames depend on, built from the
same recipes as the cache keys (the job's pose-frame, CLIP and VAE keys hold the input digests
and those models' fingerprints) plus the generation parameters, the checkpoint's fingerprint,
the run settings (scheduler, dtype, device) and the code version. Sidecars record it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimicache.batch.plan import Job
from mimicache.batch.run import JobResult
from mimicache.cache import StageKey, file_digest, fingerprint_files
from mimicache.config import TestCase, case_to_dict
from mimicache.errors import MimicacheError

logger = logging.getLogger(__name__)

# The case's path fields: their content enters through the digests, not their names.
_PATH_FIELDS = ("ref_video_path", "ref_image_path")


class ResultKeys:
    """``keys(case)``: the result key of ``case`` run by ``engine`` (a loaded
    ``MimicMotion``) with ``settings`` (JSON-able values the engine does not hold, e.g. the
    scheduler options); None when an input cannot be read (such a job is never skipped)."""

    def __init__(self, engine: Any, settings: Mapping[str, Any]):
        self.engine = engine
        self.settings = dict(settings)
        self._checkpoint: str | None = None

    def checkpoint_fingerprint(self) -> str:
        """The MimicMotion checkpoint, the UNet config and the base scheduler files."""
        if self._checkpoint is None:
            engine = self.engine
            paths = {
                "checkpoint": engine.ckpt_path,
                "unet_config": engine.base_files.unet_config,
                "scheduler": engine.base_files.scheduler_dir,
            }
            store = engine.cache
            if store is not None and store.enabled:
                self._checkpoint = store.fingerprint(paths)
            else:
                self._checkpoint = fingerprint_files(paths)
        return self._checkpoint

    def __call__(self, case: TestCase) -> str | None:
        from mimicache import __version__

        try:
            keys = self.engine.keys(case)
            parameters = {k: v for k, v in case_to_dict(case).items() if k not in _PATH_FIELDS}
            key = StageKey(
                inputs={"pose_frames": keys.pose_frames.digest},
                models={
                    "checkpoint": self.checkpoint_fingerprint(),
                    "clip_embeddings": keys.clip_embeddings.digest,
                    "vae_latents": keys.vae_latents.digest,
                },
                params={
                    "case": parameters,
                    "settings": self.settings,
                    "code": __version__,
                },
            )
            return key.digest
        except (MimicacheError, OSError) as exc:
            logger.debug("no result key for %s: %s", case.ref_video_path, exc)
            return None


@dataclass(frozen=True)
class DoneResult:
    """An earlier run's finished job: its mp4 and its sidecar."""

    output: Path
    sidecar: Path


def find_done(folders: Iterable[Path], keys: set[str]) -> dict[str, list[DoneResult]]:
    """Earlier results in ``folders`` by result key (only keys in ``keys``): sidecars with
    status ok whose mp4 is there with the recorded size and BLAKE3 digest."""
    found: dict[str, list[DoneResult]] = {}
    for folder in sorted(set(folders)):
        if not folder.is_dir():
            continue
        for sidecar in sorted(folder.glob("*.json")):
            data = _read_json(sidecar)
            key = data.get("result_key")
            if data.get("status") != "ok" or key not in keys or not data.get("output"):
                continue
            video = sidecar.with_suffix(".mp4")
            if _intact(video, data):
                found.setdefault(key, []).append(DoneResult(video, sidecar))
    return found


def split_done(
    jobs: Sequence[Job], keys: Sequence[str | None]
) -> tuple[list[JobResult], list[Job]]:
    """(results "skipped" for the jobs whose result exists, the jobs still to run). An earlier
    result stands for one job only, so a plan asking twice for the same result runs it twice
    unless two earlier results exist."""
    wanted = {k for k in keys if k is not None}
    done = find_done((job.output_path.parent for job in jobs), wanted)
    skipped: list[JobResult] = []
    todo: list[Job] = []
    for job, key in zip(jobs, keys, strict=True):
        earlier = done.get(key) if key is not None else None
        if earlier:
            found = earlier.pop(0)
            logger.info("%s: skipped (done): %s", job.name, found.output)
            skipped.append(JobResult(job, "skipped", found.output))
        else:
            todo.append(job)
    return skipped, todo


def _intact(video: Path, data: dict[str, Any]) -> bool:
    try:
        if video.stat().st_size != data.get("output_bytes"):
            return False
        return file_digest(video) == data.get("output_blake3")
    except OSError:
        return False


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
