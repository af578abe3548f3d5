"""How an engine runs its cached stages: the job's keys (``JobKeys``), the platform in them,
whether a stage uses the cache, and ``run_stage`` (from the cache, decoded, or computed; timed
under the stage's name either way)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mimicache.cache import FeatureStore, StageKey, content_fact
from mimicache.config import TestCase
from mimicache.engine.fingerprints import ModelFingerprints, model_files
from mimicache.engine.platform import dwpose_platform, engine_platform, torch_platform
from mimicache.engine.record import JobRecord
from mimicache.engine.stages import JobKeys, Stage, compute_with_warnings, replay_warnings
from mimicache.storage.digests import file_digest

__all__ = ["StageRunner"]


class StageRunner:
    """The cache side of an engine (``MimicMotion``): what it needs of the engine is its
    models (``dwpose``, ``base_files``, ``ckpt_path``, ``device``, ``dtype``), its settings
    (``pose_retarget``, ``person``, ``cache_pipeline_features``), ``cache`` and
    ``fingerprints``."""

    cache: FeatureStore | None
    fingerprints: ModelFingerprints

    @property
    def model_files(self) -> dict[str, str]:
        return model_files(self.dwpose, self.base_files, self.ckpt_path)

    def platform(self) -> dict:
        """Where this engine computes now (threads read at the call): ``engine.platform``."""
        return engine_platform(self.device, self.dtype, self.dwpose)

    def key_platform(self, part: str) -> dict:
        """The platform of ``part`` ("models" or "dwpose") in the keys: none when the store
        reuses entries across platforms."""
        if self.cache is not None and self.cache.any_platform:
            return {}
        if part == "models":
            return torch_platform(self.device, self.dtype)
        d = self.dwpose
        return dwpose_platform(d.backend, d.device, d.threads)

    def keys(self, case: TestCase) -> JobKeys:
        """The job's cache keys, computed on first use."""
        memo = self.cache.memo if self.cache is not None else None
        return JobKeys(
            case,
            digest=self.cache.file_digest if self.cache is not None else file_digest,
            fact=functools.partial(content_fact, memo=memo),
            fingerprints=self.fingerprints,
            retarget=self.pose_retarget,
            dtype=self.dtype,
            device=self.device,
            person=self.person,
            pose_platform=lambda: self.key_platform("dwpose"),
            model_platform=lambda: self.key_platform("models"),
        )

    def uses_cache(self, stage: Stage) -> bool:
        """The one place that decides whether a stage reads and writes the cache."""
        on = self.cache is not None and self.cache.enabled
        return on and (self.cache_pipeline_features or not stage.pipeline_feature)

    def run_stage(
        self,
        stage: Stage,
        key: Callable[[], StageKey],
        compute: Callable[[], Any],
        subject: str | Path,
        record: JobRecord,
    ) -> Any:
        """One stage's value: from the cache (decoded) or ``compute()``d, timed under its
        name; ``key()`` is asked (timed as "digest") only when the stage uses the cache."""
        if not self.uses_cache(stage):
            with record.time(stage.name):
                return compute()
        with record.time("digest"):
            stage_key = key()
        with record.time(stage.name):
            tensors, event = self.cache.get_or_compute(
                stage.name,
                stage_key,
                lambda: compute_with_warnings(stage, compute),
                subject=str(subject),
            )
        record.events.append(event)
        tensors = replay_warnings(stage, tensors, hit=event.hit)
        with record.time("unpack"):
            return stage.decode(tensors)
