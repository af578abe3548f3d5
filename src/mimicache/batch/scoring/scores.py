"""``scores.jsonl``: the scores ``mimicache score`` adds to an output root, one JSON row per clip
it scored (or re-judged), appended; the last row of a clip is its current score (a run's own
score, in the sidecar, until then). Which clips need work: one scored by the same scorer over
the same frames keeps its score (re-judged when the thresholds differ, nothing computed)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mimicache.batch.outputs.clips import Clip
from mimicache.quality.score import SCORER, ClipScore, scored_frames

__all__ = [
    "SCORES_FILE",
    "SCORES_SCHEMA",
    "ScoreWork",
    "current_scores",
    "plan_scores",
    "score_row",
]

SCORES_FILE = "scores.jsonl"
SCORES_SCHEMA = 1


def score_row(clip: Clip, fields: Mapping[str, Any], *, run: str) -> dict[str, Any]:
    """A ``scores.jsonl`` row: the clip (its key under the root, sidecar, mp4 and the mp4's
    digest as the sidecar records it) and ``fields`` (status, quality or error, timings...)."""
    return {
        "schema": SCORES_SCHEMA,
        "run": run,
        "clip": clip.key,
        "name": clip.name,
        "sidecar": clip.sidecar,
        "output": clip.video,
        "output_blake3": clip.record.get("output_blake3"),
        **fields,
    }


def current_scores(clips: Iterable[Clip], rows: Iterable[Mapping[str, Any]]) -> dict[str, dict]:
    """Clip key -> its current score (``ClipScore.to_dict()``): the last scored row for the
    same mp4 (its digest, where both name one), else the sidecar's."""
    latest: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        if isinstance(row.get("quality"), dict) and row.get("clip"):
            latest[str(row["clip"])] = row
    out = {}
    for clip in clips:
        row = latest.get(clip.key)
        digest = clip.record.get("output_blake3")
        if row is not None and (not digest or row.get("output_blake3") in (None, digest)):
            out[clip.key] = dict(row["quality"])
        elif clip.quality is not None:
            out[clip.key] = dict(clip.quality)
    return out


@dataclass
class ScoreWork:
    """What a ``score`` command does: the clips to score, the new verdicts of scores judged
    under other thresholds (clip, score), and the clips whose score stands (clip, score)."""

    todo: list[Clip] = field(default_factory=list)
    rejudged: list[tuple[Clip, dict]] = field(default_factory=list)
    kept: list[tuple[Clip, dict]] = field(default_factory=list)


def plan_scores(
    clips: Iterable[Clip],
    current: Mapping[str, Mapping[str, Any]],
    *,
    frames: int | str | None,
    thresholds: Mapping[str, float],
    force: bool = False,
) -> ScoreWork:
    """Sort the clips: scored before by ``SCORER`` over the frames ``frames`` asks for
    (``ScoreOptions.frames``: "auto" accepts any) keeps its score, re-judged when its
    thresholds differ; the others (all with ``force``) are scored."""
    work = ScoreWork()
    for clip in clips:
        found = current.get(clip.key)
        if force or found is None or not _same_measure(found, frames):
            work.todo.append(clip)
        elif dict(found.get("thresholds") or {}) != dict(thresholds):
            work.rejudged.append((clip, ClipScore.from_dict(found).judge(thresholds).to_dict()))
        else:
            work.kept.append((clip, dict(found)))
    return work


def _same_measure(score: Mapping[str, Any], frames: int | str | None) -> bool:
    if score.get("scorer") != SCORER:
        return False
    if frames == "auto":
        return True
    count = int(score.get("clip_frames") or 0)
    limit = None if frames in (None, "all") else int(frames)
    return count > 0 and list(score.get("frames") or []) == scored_frames(count, limit)
