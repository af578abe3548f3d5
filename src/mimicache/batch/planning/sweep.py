"""``--sweep KEY=V1,V2 ...``: the cartesian product of values over every job of a plan.

Keys are the test-case values (``seed``, ``num_inference_steps``, ``guidance_scale``,
``noise_aug_strength``, ``resolution``, ``num_frames``, ``frames_overlap``, ``sample_stride``,
``fps``) and the engine choices that change without reloading weights (``scheduler`` and its
settings, ``speed``, ``pose_retarget``, ``person``, ``decode_chunk_size``: ``Job.engine``, a
variant on the loaded models). A whole-number key takes ranges, ``1:8`` (both ends) or
``0:20:5``. Every value is checked, and the product counted, before anything loads.

Order: each job's variants run back to back, the values that change the cached features
(``resolution``, ``sample_stride``, ``pose_retarget``, ``person``) varying slowest, so every
variant after the first of its kind prepares from the cache.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mimicache.batch.job import Job
from mimicache.batch.planning.plan import fit_stem, override_tag
from mimicache.config.options import flag_fields
from mimicache.config.validation import check_case_values
from mimicache.engine.spec import VARIANT_CHOICES, EngineSpec
from mimicache.errors import ConfigError, MimicacheError, setting
from mimicache.storage.json_values import canonical_json

__all__ = [
    "CASE_KEYS",
    "ENGINE_KEYS",
    "SWEEP_LIMIT",
    "Sweep",
    "apply_engine_choices",
    "check_engine_choices",
    "engine_choice_field",
    "parse_sweep",
    "sweep_jobs",
]

SWEEP_LIMIT = 256
CASE_KEYS = (
    "seed",
    "num_inference_steps",
    "guidance_scale",
    "noise_aug_strength",
    "resolution",
    "num_frames",
    "frames_overlap",
    "sample_stride",
    "fps",
)
# flag key (as on the command line, without dashes) -> its field path in EngineSpec
_ENGINE_PATHS = {
    item.flag.key: item for item in flag_fields(EngineSpec) if item.path[0] in VARIANT_CHOICES
}
ENGINE_KEYS = tuple(_ENGINE_PATHS)
# the values that change cached features: vary them slowest
_FEATURE_KEYS = ("resolution", "sample_stride", "pose_retarget", "person")
_WHOLE_KEYS = (*(k for k in CASE_KEYS if k not in ("guidance_scale", "noise_aug_strength")),
               "decode_chunk_size", "lcm_num_train_timesteps")  # fmt: skip
_BOOL_WORDS = {"true": True, "false": False, "1": True, "0": False, "on": True, "off": False}


@dataclass(frozen=True)
class Sweep:
    """The swept keys and their values, in the order the variants run (``axes``)."""

    axes: tuple[tuple[str, tuple[Any, ...]], ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self.axes)

    @property
    def size(self) -> int:
        count = 1
        for _, values in self.axes:
            count *= len(values)
        return count

    @property
    def id(self) -> str:
        """Names the sweep in ``results.jsonl`` (the same for the same keys and values, so
        a resumed sweep keeps it)."""
        from mimicache.storage.digests import bytes_digest

        return bytes_digest(canonical_json([[k, list(v)] for k, v in self.axes]).encode())[:12]

    def variants(self) -> list[dict[str, Any]]:
        """Every combination, the first axis varying slowest."""
        keys = self.keys
        return [dict(zip(keys, values)) for values in itertools.product(*(v for _, v in self.axes))]


def parse_sweep(items: Sequence[str]) -> Sweep:
    """``KEY=V1,V2`` items as a ``Sweep``; ``ConfigError`` naming the key for an unknown or
    repeated key, a value of the wrong type, a range on a key that is not a whole number."""
    axes: dict[str, tuple[Any, ...]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not text.strip():
            raise ConfigError(f"{_named(item)}: write KEY=V1,V2 (e.g. seed=1,2 or seed=1:8)")
        if key not in CASE_KEYS and key not in _ENGINE_PATHS:
            raise ConfigError(
                f"{_named(key)}: not a key that can be swept; the keys: "
                f"{', '.join((*CASE_KEYS, *ENGINE_KEYS))}"
            )
        if key in axes:
            raise ConfigError(f"{_named(key)}: given twice; list its values once")
        values: list[Any] = []
        for part in text.split(","):
            values += _values(key, part.strip())
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"{_named(key)}: a value is listed twice ({text})")
        axes[key] = tuple(values)
    order = sorted(axes, key=lambda k: (k not in _FEATURE_KEYS, list(axes).index(k)))
    return Sweep(tuple((k, axes[k]) for k in order))


def _named(item: str) -> str:
    """A swept item as messages name it (the command line shows ``--sweep ITEM``)."""
    return setting("sweep", item)


def _values(key: str, text: str) -> list[Any]:
    if ":" in text:
        return _range(key, text)
    return [_value(key, text)]


def _range(key: str, text: str) -> list[int]:
    parts = text.split(":")
    if key not in _WHOLE_KEYS:
        raise ConfigError(f"{_named(key + '=' + text)}: a range needs a whole-number key")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (2, 3) or (len(numbers) == 3 and numbers[2] < 1):
        raise ConfigError(
            f"{_named(key + '=' + text)}: a range is FIRST:LAST (both included) or FIRST:LAST:STEP"
        )
    first, last, step = (*numbers, 1) if len(numbers) == 2 else numbers
    if last < first:
        raise ConfigError(f"{_named(key + '=' + text)}: the range ends before it starts")
    return [_value(key, str(n)) for n in range(first, last + 1, step)]


def _value(key: str, text: str) -> Any:
    """One value of ``key`` parsed and checked as the flag or the config would."""
    if key in CASE_KEYS:
        number: Any
        try:
            number = float(text) if key in ("guidance_scale", "noise_aug_strength") else int(text)
        except ValueError:
            kind = (
                "a number" if key in ("guidance_scale", "noise_aug_strength") else "a whole number"
            )
            raise ConfigError(f"{_named(key + '=' + text)}: {text!r} is not {kind}") from None
        try:  # alone: how it goes with the case's other values is checked per job
            check_case_values({key: number})
        except MimicacheError as exc:
            raise ConfigError(f"{_named(key + '=' + text)}: {exc}") from None
        return number
    item = _ENGINE_PATHS[key]
    flag = item.flag
    if item.is_bool:
        if text.lower() not in _BOOL_WORDS:
            raise ConfigError(f"{_named(key + '=' + text)}: write true or false")
        return _BOOL_WORDS[text.lower()]
    if flag.choices is not None and text not in flag.choices:
        raise ConfigError(f"{_named(key + '=' + text)}: choose from {', '.join(flag.choices)}")
    try:
        value = flag.type(text) if flag.type is not None else text
    except ValueError as exc:
        raise ConfigError(f"{_named(key + '=' + text)}: {exc}") from None
    if key == "decode_chunk_size" and value < 1:
        raise ConfigError(f"{_named(key + '=' + text)}: must be at least 1")
    return value


def engine_choice_field(key: str) -> str:
    """The ``EngineSpec`` field an engine key of a sweep sets (``scheduler_s_noise``:
    ``scheduler``)."""
    return _ENGINE_PATHS[key].path[0]


def apply_engine_choices(spec: EngineSpec, choices: Mapping[str, Any]) -> EngineSpec:
    """``spec`` with a variant's engine choices (flag keys: ``scheduler``,
    ``scheduler_s_noise``, ``speed``, ...) set."""
    for key, value in choices.items():
        path = _ENGINE_PATHS[key].path
        if len(path) == 1:
            spec = spec.replace(**{path[0]: value})
        else:
            nested = dataclasses.replace(getattr(spec, path[0]), **{path[1]: value})
            spec = spec.replace(**{path[0]: nested})
    return spec


def check_engine_choices(spec: EngineSpec, jobs: Iterable[Job]) -> None:
    """Whether every variant's engine choices go with the run's other settings (``speed=exact``
    does not go with ``--compile``), before any model loads.

    Raises:
        ConfigError: naming the first variant whose choices do not.
    """
    from mimicache.engine.build import engine_settings

    seen: set[str] = set()
    for job in jobs:
        key = canonical_json(job.engine)
        if not job.engine or key in seen:
            continue
        seen.add(key)
        try:
            engine_settings(apply_engine_choices(spec, job.engine))
        except MimicacheError as exc:
            shown = " ".join(f"{k}={v}" for k, v in job.engine.items())
            raise ConfigError(f"{_named(shown)}: {exc}") from None


def sweep_jobs(jobs: Iterable[Job], sweep: Sweep, *, limit: int = SWEEP_LIMIT) -> list[Job]:
    """Every job of the plan times every variant, renumbered in plan order: each job's
    variants back to back, its case and engine choices set, its name tagged with the values
    (``walk_20261206120000_seed1_g1.5``; ``Job.variant``), ``Job.sweep`` saying which
    (``{"id", "values", "base", "keys", "job"}``: ``job`` the plan position of the job the
    variant is of, which the grids group by).

    Raises:
        ConfigError: the product passes ``limit`` jobs (``--sweep_limit``), or a variant's
            case is not valid (e.g. an overlap not below the tile size).
    """
    jobs = list(jobs)
    variants = sweep.variants()
    total = len(jobs) * len(variants)
    if total > limit:
        sizes = " x ".join(f"{len(v)} {k}" for k, v in sweep.axes)
        raise ConfigError(
            f"the sweep makes {total} jobs ({len(jobs)} job(s) x {sizes}), more than "
            f"{setting('sweep_limit', limit)}; raise the limit or sweep fewer values"
        )
    out: list[Job] = []
    for job in jobs:
        for values in variants:
            case_values = {k: v for k, v in values.items() if k in CASE_KEYS}
            engine_values = {k: v for k, v in values.items() if k not in CASE_KEYS}
            try:
                case = job.case.replace(**case_values)
            except MimicacheError as exc:
                shown = " ".join(f"{k}={v}" for k, v in values.items())
                raise ConfigError(f"{_named(shown)}: {exc}") from None
            tag = override_tag(values)
            # from the planned name, whose _N tells apart the jobs of one video and second
            planned = job.output_path.stem
            stem = fit_stem(planned, f"_{tag}") if tag else planned
            out.append(
                dataclasses.replace(
                    job,
                    index=len(out),
                    case=case,
                    output_path=job.output_path.with_name(stem + job.output_path.suffix),
                    base_stem=stem,
                    engine={**job.engine, **engine_values},
                    sweep={
                        "id": sweep.id,
                        "values": dict(values),
                        "base": planned,
                        "keys": list(sweep.keys),
                        "job": job.index,
                    },
                    variant=tag,
                )
            )
    return out
