"""The local executor: the models loaded once in this process, the jobs run one after the
other by ``run.run_jobs`` (each job's failure isolated)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from mimicache.batch.executing.executor import ExecutorBase, Resume
from mimicache.batch.executing.job_loop import run_jobs
from mimicache.batch.executing.resume import split_done
from mimicache.batch.executing.variants import EngineVariants
from mimicache.batch.job import Job, JobResult
from mimicache.config import InferenceConfig

logger = logging.getLogger(__name__)


class LocalExecutor(ExecutorBase):
    """One process, one engine: ``load`` builds it (``run`` does when nobody did)."""

    in_process = True
    _variants: EngineVariants | None = None

    def load(self, job_count: int = 0) -> Any:
        """The engine (models loaded once) on the device the spec names, else the default."""
        if self.engine is not None:
            return self.engine
        from mimicache.engine.build import build_engine, resolve

        self.spec, self.cache = resolve(self.spec)
        spec = self.spec
        self.engine = engine = build_engine(spec, cache=self.cache)
        cache = self.cache
        logger.info(
            "%d job(s); device %s, %s; scheduler %s; pose retarget %s; person %s; speed %s%s; "
            "feature cache %s",
            job_count,
            engine.device,
            str(engine.dtype).removeprefix("torch."),
            spec.scheduler.name,
            spec.pose_retarget,
            engine.person,
            spec.speed,
            " + compile" if spec.compile else "",
            cache.root if cache is not None and cache.enabled else "off",
        )
        return engine

    def variants(self) -> EngineVariants:
        """The engine of each job (a sweep variant's on the same models) and its result key,
        as ``--resume`` and the sidecars record it."""
        if self._variants is None or self._variants.base is not self.engine:
            self._variants = EngineVariants(self.engine, self.spec)
        return self._variants

    def run(
        self, jobs: Sequence[Job], *, config: InferenceConfig, resume: Resume | None = None
    ) -> list[JobResult]:
        self.load(len(jobs))
        variants = self.variants()
        skipped: list[JobResult] = []
        todo = list(jobs)
        if resume is not None:
            keyed = [variants.result_key(job) for job in todo]
            skipped, todo = split_done(todo, keyed, resume.records)
        listener = self.on_result
        done = run_jobs(
            variants.base,
            todo,
            config=config,
            progress=self.progress,
            result_key=variants.result_key,
            on_result=None if listener is None else lambda result: listener(result, self),
            engine_for=variants.engine,
        )
        return sorted([*skipped, *done], key=lambda r: r.job.index)
