"""``results.jsonl`` at the output root: one JSON line per job (inputs, manifest row, parameters,
output, status, result key, per-stage timings, cache hits, platform, error, and ``kept``: where
a result the output store refused is kept on this machine), appended as each
job finishes so a crash keeps the finished rows, and completed at the end of the run with the
jobs that never reached the loop (skipped, bad manifest rows, interrupted). Every run appends;
``run`` tells the runs apart. ``read_results`` gives the rows back for ``--resume``."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from mimicache.batch.job import JobResult
from mimicache.batch.outputs.root import location
from mimicache.config import case_to_dict
from mimicache.storage.digests import file_digest
from mimicache.storage.json_values import to_json_value
from mimicache.storage.objects import remote_url

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
RESULTS_SCHEMA = 1
_INPUT_FIELDS = ("ref_image_path", "ref_video_path")


def result_row(result: JobResult, *, run: str) -> dict[str, Any]:
    """The JSON row of one job's result (``run``: the run's timestamp)."""
    job = result.job
    parameters = case_to_dict(job.case)
    key = result.result_key
    row: dict[str, Any] = {
        "schema": RESULTS_SCHEMA,
        "run": run,
        "index": job.index,
        "name": job.name,
        "case_index": job.case_index,
        "status": result.status,
        "ref_image": location(parameters.pop("ref_image_path")),
        "video": location(parameters.pop("ref_video_path")),
        "manifest": job.source,
        "sweep": job.sweep,  # {"id": the sweep's, "values": this variant's}; None: no sweep
        "parameters": parameters,
        "output": location(result.output),
        "result_key": None if key is None else key.digest,
        "result_fields": None if key is None else key.fields,  # --resume names what changed
        "timings": {str(k): float(v) for k, v in result.timings.items()},
        "cache_hits": cache_hits(result.cache_events),
        "platform": result.platform or None,
        "error": result.error,
        "quality": result.quality,
    }
    if job.source is not None and job.source.get("rejected"):
        # a bad row never built its case: the placeholder's inputs are not the row's
        values = job.source.get("values", {})
        row["ref_image"] = values.get("ref_image", values.get("ref_image_path"))
        row["video"] = values.get("video", values.get("ref_video_path"))
    if result.kept is not None:  # refused by the output store: on this machine, not published
        row["kept"] = str(result.kept)
        row["output_bytes"] = result.output_bytes
        row["output_blake3"] = result.output_blake3
    if result.done and result.output is not None:
        row["sidecar"] = location(result.output.with_suffix(".json"))
        # resume checks the mp4 against these, as it does with a sidecar's
        if result.output_blake3 is not None:  # as published: no read back
            row["output_bytes"] = result.output_bytes
            row["output_blake3"] = result.output_blake3
        elif remote_url(result.output) is None:
            try:
                row["output_bytes"] = result.output.stat().st_size
                row["output_blake3"] = file_digest(result.output)
            except OSError as exc:
                logger.warning("could not read %s back for results.jsonl: %s", result.output, exc)
    return to_json_value(row, canonical=False)


def cache_hits(events: Iterable[Any]) -> dict[str, bool]:
    """Stage -> whether it was a hit (a stage looked up twice, by the pose stage run ahead and
    by the job, is a hit when either look-up hit)."""
    hits: dict[str, bool] = {}
    for event in events:
        data = to_json_value(event, canonical=False)
        if isinstance(data, dict) and "stage" in data:
            stage = str(data["stage"])
            hits[stage] = hits.get(stage, False) or bool(data.get("hit"))
    return hits


class JsonLines:
    """Appends JSON rows to ``path`` (``results.jsonl``, ``scores.jsonl``), one line each, then
    calls ``after_write(path)``. A file that cannot be written is a warning, once: a record
    never fails the run it records."""

    def __init__(self, path: Path, *, after_write: Callable[[Path], None] | None = None):
        self.path = Path(path)
        self.after_write = after_write  # e.g. the upload of a URL root's staged copy
        self._started = False
        self._warned = False

    def append(self, row: dict[str, Any]) -> None:
        # one write per line on an O_APPEND descriptor: concurrent runs (shards) sharing the
        # output root never interleave inside a line on a local disk
        line = (json.dumps(row, ensure_ascii=True, default=str) + "\n").encode("ascii")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                if not self._started and _ends_mid_line(fd):
                    line = b"\n" + line  # a crash cut the last row short: never glue onto it
                os.write(fd, line)
                self._started = True
            finally:
                os.close(fd)
        except OSError as exc:
            if not self._warned:
                logger.warning("could not write %s: %s", self.path, exc)
                self._warned = True
        if self.after_write is not None:
            self.after_write(self.path)


class ResultsLog(JsonLines):
    """``results.jsonl``: ``add`` per finished job, ``finish`` at the end with every result
    of the run (rows not written yet are appended)."""

    def __init__(self, path: Path, *, run: str, after_write: Callable[[Path], None] | None = None):
        super().__init__(path, after_write=after_write)
        self.run = run
        self._written: set[int] = set()  # ids of the results already written

    def add(self, result: JobResult, *_: Any) -> None:
        """One finished job (also the Ray executor's ``on_result(result, executor)``)."""
        if id(result) in self._written:
            return
        self._written.add(id(result))
        self.append(result_row(result, run=self.run))

    def finish(self, results: Iterable[JobResult]) -> None:
        for result in results:
            self.add(result)


def _ends_mid_line(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def read_results(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``results.jsonl`` (none when it is missing); a line cut short by a crash,
    or any line that is not a JSON object, is skipped with a warning."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        logger.warning("could not read %s: %s", path, exc)
        return []
    return result_rows(text, path)


def result_rows(text: str, where: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a ``results.jsonl``'s text (``where`` names it in the warnings)."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        else:
            logger.warning("%s line %d is not a result row; skipped", where, number)
    return rows
