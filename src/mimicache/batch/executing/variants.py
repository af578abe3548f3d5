"""The engine a job runs on: the executor's loaded engine, or for a sweep variant that changes
an engine choice (``Job.engine``: the sampler and its settings, speed, pose retargeting,
person, decode chunk size) a variant on the same loaded models (``engine.build
.engine_variant``), made once per set of choices; each with the result keys ``--resume``
and the sidecars record (the variant's settings in them)."""

from __future__ import annotations

from typing import Any

from mimicache.batch.executing.resume import ResultKey, ResultKeys
from mimicache.batch.job import Job
from mimicache.engine.spec import EngineSpec

__all__ = ["EngineVariants"]


class EngineVariants:
    """``engine(job)`` and ``result_key(job)`` over one loaded engine built from ``spec``."""

    def __init__(self, engine: Any, spec: EngineSpec):
        self.base = engine
        self.spec = spec
        self._made: dict[str, tuple[Any, EngineSpec]] = {}
        self._keys: dict[str, ResultKeys] = {}

    def _variant(self, job: Job) -> tuple[str, Any, EngineSpec]:
        from mimicache.batch.planning.sweep import apply_engine_choices
        from mimicache.engine.build import engine_variant
        from mimicache.storage.json_values import canonical_json

        key = canonical_json(job.engine) if job.engine else ""
        if key not in self._made:
            if not job.engine:
                self._made[key] = (self.base, self.spec)
            else:
                spec = apply_engine_choices(self.spec, job.engine)
                self._made[key] = (engine_variant(self.base, **_choices(job.engine, spec)), spec)
        return key, *self._made[key]

    def engine(self, job: Job) -> Any:
        return self._variant(job)[1]

    def result_key(self, job: Job) -> ResultKey | None:
        from mimicache.engine.build import result_settings

        key, engine, spec = self._variant(job)
        if key not in self._keys:
            self._keys[key] = ResultKeys(engine, result_settings(spec, engine))
        return self._keys[key](job.case)


def _choices(changed: dict[str, Any], spec: EngineSpec) -> dict[str, Any]:
    """``engine_variant``'s keywords for the flag keys a variant sets (a scheduler setting's
    flag, ``scheduler_s_noise``, changes the whole ``scheduler``)."""
    from mimicache.batch.planning.sweep import engine_choice_field

    fields = {engine_choice_field(key) for key in changed}
    return {name: getattr(spec, name) for name in fields}
