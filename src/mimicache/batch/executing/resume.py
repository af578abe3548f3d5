"""``--resume``: a job whose result already exists is skipped. A result is named by its
*result key* (64 hex chars): the BLAKE3 of what the output frames depend on, built from the
same recipes as the cache keys (the job's pose-frame, CLIP and VAE keys hold the input digests
and those models' fingerprints) plus the generation parameters, the checkpoint's fingerprint,
the run settings (scheduler, dtype, device) and the code version. Sidecars record it and its
fields, so a job that is redone can be logged with why: no sidecar, which field changed, or a
missing or damaged mp4."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimicache.batch.job import Job, JobResult
from mimicache.batch.outputs.root import location, object_sidecars, object_size
from mimicache.batch.outputs.unpublished import find_kept, publish_kept
from mimicache.batch.planning.inputs import fetched
from mimicache.cache import StageKey, fingerprint_files
from mimicache.config import TestCase, case_to_dict
from mimicache.engine.stage_names import PIPELINE_STAGES, POSE_FRAMES
from mimicache.errors import MimicacheError
from mimicache.storage.digests import file_digest
from mimicache.storage.objects import remote_url

logger = logging.getLogger(__name__)

# The case's path fields: their content enters through the digests, not their names.
_PATH_FIELDS = ("ref_video_path", "ref_image_path")


@dataclass(frozen=True)
class ResultKey:
    """A result key (``digest``) and the flat fields it was built from (``fields``: input and
    model digests, the case's parameters, ``settings.*``, ``code``), kept in the sidecar so a
    later ``--resume`` can name the field that changed."""

    digest: str
    fields: dict[str, Any]


class ResultKeys:
    """``keys(case)``: the ``ResultKey`` of ``case`` run by ``engine`` (a loaded
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

    def __call__(self, case: TestCase) -> ResultKey | None:
        """The result key of ``case``; None when an input cannot be read or fetched."""
        from mimicache import __version__

        try:
            case = fetched(case)  # a URL input keyed by its bytes (no-op for local files)
            keys = self.engine.keys(case)
            parameters = {k: v for k, v in case_to_dict(case).items() if k not in _PATH_FIELDS}
            key = StageKey(
                inputs={POSE_FRAMES: getattr(keys, POSE_FRAMES).digest},
                models={
                    "checkpoint": self.checkpoint_fingerprint(),
                    **{name: getattr(keys, name).digest for name in PIPELINE_STAGES},
                },
                params={
                    "case": parameters,
                    "settings": self.settings,
                    "code": __version__,
                },
            )
        except (MimicacheError, OSError) as exc:
            logger.debug("no result key for %s: %s", case.ref_video_path, exc)
            return None
        fields = {
            **key.inputs,
            **key.models,
            **parameters,
            **{f"settings.{k}": v for k, v in self.settings.items()},
            "code": __version__,
        }
        return ResultKey(key.digest, _as_json(fields))


@dataclass(frozen=True)
class _Found:
    """An earlier run's finished job: its mp4 (as checked: its size and BLAKE3 digest), its
    sidecar."""

    output: Path
    sidecar: Path
    output_bytes: int | None = None
    output_blake3: str | None = None
    quality: dict[str, Any] | None = None  # its score, as the earlier run recorded it


def find_done(
    earlier: Iterable[tuple[Path, dict[str, Any]]], keys: set[str]
) -> tuple[dict[str, list[_Found]], dict[Path, str | None]]:
    """The ``earlier`` results (``_earlier``: sidecars and ``results.jsonl`` rows) by result
    key, only keys in ``keys`` and only those whose mp4 is there with the recorded size and
    BLAKE3 digest (an mp4 that both name counts once); and what is wrong with each mp4 checked
    (None: nothing), so that no mp4 is read twice."""
    found: dict[str, list[_Found]] = {}
    damage: dict[Path, str | None] = {}
    for sidecar, data in earlier:
        key = data.get("result_key")
        video = Path(data["output"])
        if key not in keys or video in damage:
            continue
        damage[video] = _damage(video, data)
        if damage[video] is None:
            quality = data.get("quality") if isinstance(data.get("quality"), dict) else None
            done = _Found(
                video, sidecar, data.get("output_bytes"), data.get("output_blake3"), quality
            )
            found.setdefault(key, []).append(done)
    return found, damage


def split_done(
    jobs: Sequence[Job],
    keys: Sequence[ResultKey | None],
    records: Iterable[Mapping[str, Any]] = (),
) -> tuple[list[JobResult], list[Job]]:
    """(results of the jobs not to run, the jobs still to run). Earlier results are found by
    their sidecars and by ``records`` (``results.jsonl`` rows): such a job is "skipped". An
    earlier result stands for one job only, so a plan asking twice for the same result runs
    it twice unless two earlier results exist. A result an earlier run kept on this machine
    because the output store refused it (``unpublished``) is published now: "skipped" too, or
    "failed" when the store still refuses. Each job to run is logged with why it is redone."""
    digests = [k.digest if k is not None else None for k in keys]
    folders = {job.output_path.parent for job in jobs}
    sidecars = _earlier(folders, records)
    wanted = {d for d in digests if d is not None}
    done, damage = find_done(sidecars, wanted)
    kept = find_kept(folders, wanted)
    skipped: list[JobResult] = []
    todo: list[Job] = []
    for job, key, digest in zip(jobs, keys, digests, strict=True):
        earlier = done.get(digest) if digest is not None else None
        if earlier:
            found = earlier.pop(0)
            logger.info("%s: skipped (done): %s", job.name, location(found.output))
            skipped.append(
                JobResult(
                    job,
                    "skipped",
                    found.output,
                    result_key=key,
                    output_bytes=found.output_bytes,
                    output_blake3=found.output_blake3,
                    quality=found.quality,
                )
            )
            continue
        published = publish_kept(job, key, kept.get(digest, [])) if digest is not None else None
        if published is not None:
            skipped.append(published)
            continue
        logger.info("%s: %s", job.name, redo_reason(job, key, sidecars, damage, records))
        todo.append(job)
    return skipped, todo


def redo_reason(
    job: Job,
    key: ResultKey | None,
    sidecars: list[tuple[Path, dict]],
    damage: Mapping[Path, str | None],
    records: Iterable[Mapping[str, Any]] = (),
) -> str:
    """Why ``job`` runs, as one phrase for the log: it never finished before ("not finished:
    ...", ``records`` say whether an earlier run was interrupted or failed), or its earlier
    result cannot stand ("runs again: ..."; ``damage``: what ``find_done`` found wrong with
    the mp4s it checked)."""
    if key is None:
        return "runs: no result key (an input cannot be read)"
    mine = [
        (sidecar, data)
        for sidecar, data in sidecars
        if sidecar.parent == job.output_path.parent
        and isinstance(data.get("job"), dict)
        and data["job"].get("name") == job.name
        and data["job"].get("case_index") == job.case_index
    ]
    if not mine:
        return "not finished: " + _unfinished(job, records)
    return "runs again: " + _why_again(job, key, mine, damage)


def _unfinished(job: Job, records: Iterable[Mapping[str, Any]]) -> str:
    """What an earlier run left of a job that has no result: interrupted, failed, or nothing."""
    rows = [
        r for r in records if r.get("name") == job.name and r.get("case_index", 0) == job.case_index
    ]
    last = rows[-1] if rows else None
    if last is not None and last.get("status") == "interrupted":
        return f"the run of {last.get('run', 'an earlier run')} was interrupted before it"
    if last is not None and last.get("status") == "failed":
        return f"it failed in {last.get('run', 'an earlier run')} ({last.get('error')})"
    return f"no earlier result in {location(job.output_path.parent)}"


def _why_again(
    job: Job,
    key: ResultKey,
    mine: list[tuple[Path, dict]],
    damage: Mapping[Path, str | None],
) -> str:
    same = [(s, d) for s, d in mine if d.get("result_key") == key.digest]
    for _, data in same:
        video = Path(data["output"])
        wrong = damage[video] if video in damage else _damage(video, data)
        if wrong is not None:
            return wrong
    if same:  # intact, but it stands for an earlier job of this plan with the same result
        earlier = location(same[0][0].with_suffix(".mp4"))
        return f"its earlier result {earlier} stands for another job"
    sidecar, data = mine[-1]
    recorded = data.get("result_fields")
    if not isinstance(recorded, dict):
        return f"the result key differs from {sidecar}'s (it records no key fields)"
    changes = [
        f"{name} {_short(recorded.get(name))} -> {_short(key.fields.get(name))}"
        for name in sorted(set(recorded) | set(key.fields))
        if recorded.get(name) != key.fields.get(name)
    ]
    return "changed since " + sidecar.name + ": " + (", ".join(changes) or "the result key")


def _earlier(
    folders: Iterable[Path], records: Iterable[Mapping[str, Any]]
) -> list[tuple[Path, dict[str, Any]]]:
    """The ok sidecars in ``folders``, then the ``results.jsonl`` rows of done jobs whose
    mp4 is in one of them, in a sidecar's shape (the sidecar's path beside the mp4)."""
    folders = set(folders)
    found = _ok_sidecars(folders)
    for row in records:
        output = row.get("output")
        if row.get("status") not in ("ok", "skipped") or not isinstance(output, str) or not output:
            continue
        video = Path(output)
        if video.parent in folders:  # another plan's outputs are not this plan's results
            job = {"name": row.get("name"), "case_index": row.get("case_index", 0)}
            found.append((video.with_suffix(".json"), {**row, "job": job}))
    return found


def _ok_sidecars(folders: Iterable[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """The sidecars with status ok (and an output) in ``folders``, oldest name first."""
    found = []
    for folder in sorted(set(folders)):
        if remote_url(folder) is not None:  # a URL root: its sidecar objects
            for sidecar, raw in object_sidecars(folder):
                data = _parse_json(raw)
                if data.get("status") == "ok" and data.get("output"):
                    found.append((sidecar, data))
            continue
        if not folder.is_dir():
            continue
        for sidecar in sorted(folder.glob("*.json")):
            data = _read_json(sidecar)
            if data.get("status") == "ok" and data.get("output"):
                found.append((sidecar, data))
    return found


def _damage(video: Path, data: dict[str, Any]) -> str | None:
    """What is wrong with an earlier result's mp4, None when it is as its sidecar records.
    An object's bytes are not read back: a create-only put publishes it whole or not at all,
    so its size tells an object that is there from one that is not."""
    remote = remote_url(video) is not None
    named = location(video)
    try:
        size = object_size(video) if remote else video.stat().st_size
        if size == 0:
            return f"the mp4 {named} is empty"
        if size != data.get("output_bytes"):
            recorded = data.get("output_bytes")
            return f"the mp4 {named} is damaged ({size} bytes, its sidecar says {recorded})"
        if not remote and file_digest(video) != data.get("output_blake3"):
            return f"the mp4 {named} is damaged (its BLAKE3 digest differs from the sidecar's)"
    except FileNotFoundError:
        return f"the mp4 {named} is missing"
    except OSError as exc:
        return f"the mp4 {named} is unreadable ({exc.strerror or exc})"
    return None


def _short(value: Any) -> str:
    """A digest as its first 12 hex chars; other values as JSON."""
    if isinstance(value, str) and len(value) == 64:
        return value[:12]
    return json.dumps(value)


def _as_json(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` as it reads back from a sidecar (tuples as lists...), so fields compare equal."""
    return json.loads(json.dumps(value, default=str))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return _parse_json(path.read_bytes())
    except OSError:
        return {}


def _parse_json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError too
        return {}
    return value if isinstance(value, dict) else {}
