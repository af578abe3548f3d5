"""Scoring one written clip (``ClipScorer``): DWPose and CLIP loaded once per process (here or
in a Ray worker), the clip's mp4 decoded (fetched first when it is an object), its poses from
the pose stages of the settings it was made with, then ``engine.scoring.score_written``; the
``.pose`` files when asked. One clip's failure is its row's error, never the others'."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mimicache.batch.job import error_text
from mimicache.batch.outputs.clips import Clip, read_clip
from mimicache.batch.planning.inputs import fetched
from mimicache.batch.reporting.results import cache_hits
from mimicache.engine.build import build_scoring_engine, engine_variant, resolve
from mimicache.engine.spec import EngineSpec
from mimicache.errors import MimicacheError

if TYPE_CHECKING:
    from mimicache.engine.engine import MimicMotion

logger = logging.getLogger(__name__)

__all__ = ["ClipScorer", "ScoreTask"]


@dataclass(frozen=True)
class ScoreTask:
    """One clip to score; ``export_dir``: where its ``.pose`` files go (None: none)."""

    clip: Clip
    export_dir: str | None = None


class ClipScorer:
    """The scoring engine of ``spec`` (``MimicMotion.for_scoring``) and, per pose setting a
    clip was made with, a variant on the same loaded models."""

    def __init__(self, spec: EngineSpec):
        spec, cache = resolve(spec)
        self.spec = spec
        self.engine = build_scoring_engine(spec, cache=cache)
        self._variants: dict[tuple[str | None, str | None], MimicMotion] = {}

    def engine_for(self, clip: Clip) -> MimicMotion:
        """The engine with the clip's pose retargeting and person (the models shared)."""
        settings = clip.pose_settings
        if settings not in self._variants:
            retarget, person = settings
            self._variants[settings] = engine_variant(
                self.engine, pose_retarget=retarget, person=person
            )
        return self._variants[settings]

    def score(self, task: ScoreTask) -> dict[str, Any]:
        """The clip's scores as a ``scores.jsonl`` row's own fields: ``status`` "ok" with
        ``quality``, ``timings``, ``cache_hits`` (and ``exported``), or "failed" with
        ``error``."""
        from mimicache.engine.pose_export import export_poses
        from mimicache.engine.scoring import score_written

        clip = task.clip
        start = time.perf_counter()
        try:
            engine = self.engine_for(clip)
            case = fetched(clip.case())  # inputs by URL: fetched to this machine
            frames = read_clip(clip.video)
            read = time.perf_counter() - start
            score, points, record = score_written(
                engine, case, frames, subject=clip.video, options=engine.settings.score
            )
            row: dict[str, Any] = {"status": "ok", "quality": score.to_dict()}
            if task.export_dir is not None:
                size = frames.shape[1:3]
                files = export_poses(
                    engine,
                    case,
                    record.targets,
                    task.export_dir,
                    clip.name,
                    size=size,
                    output=points,
                    record=record,
                )
                row["exported"] = [str(p) for p in files]
            row["timings"] = {"read": read, **record.timings}
            row["cache_hits"] = cache_hits(record.events)
        except MimicacheError as exc:
            row = {"status": "failed", "error": str(exc)}
        except Exception as exc:  # a bug or a runtime fault: this clip fails, the rest go on
            logger.debug("traceback", exc_info=True)
            row = {"status": "failed", "error": error_text(exc)}
        row.setdefault("timings", {})["total"] = time.perf_counter() - start
        return row
