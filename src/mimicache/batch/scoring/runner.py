"""Scoring many clips: here (``ClipScorer`` in this process) or spread over Ray actors that each
load DWPose and CLIP once (``--executor ray``, laid out as ``run``'s workers, without pose
workers). Each row is handed to ``on_row`` as it comes; a worker that dies fails its clip and
is restarted for the others."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from mimicache.batch.executing.executor import ExecutorSettings
from mimicache.batch.executing.workers import LogLine, captured_logs, replay_logs
from mimicache.batch.job import error_text
from mimicache.batch.scoring.scorer import ClipScorer, ScoreTask
from mimicache.engine.spec import EngineSpec
from mimicache.errors import MimicacheError

logger = logging.getLogger(__name__)

__all__ = ["ScoreWorker", "score_clips"]

RowListener = Callable[[ScoreTask, dict[str, Any]], None]


def score_clips(
    tasks: Sequence[ScoreTask],
    spec: EngineSpec,
    *,
    executor: str = "local",
    settings: ExecutorSettings | None = None,
    on_row: RowListener,
) -> None:
    """Score every task; ``on_row(task, row)`` in this process as each finishes.

    Raises:
        MimicacheError: the models cannot be loaded, or the Ray cluster cannot be reached.
    """
    if not tasks:
        return
    if executor == "ray":
        _on_ray(tasks, spec, settings or ExecutorSettings(), on_row)
        return
    scorer = ClipScorer(spec)
    for number, task in enumerate(tasks, start=1):
        logger.info("[%d/%d] %s: scoring", number, len(tasks), task.clip.name)
        on_row(task, scorer.score(task))


class ScoreWorker:
    """A Ray actor: ``ClipScorer`` loaded once; a load error is reported by ``info``."""

    def __init__(self, spec: EngineSpec):
        level = logging.DEBUG if spec.verbose else logging.INFO
        self.level = level
        self.scorer: ClipScorer | None = None
        self.error: str | None = None
        with captured_logs(level) as self.load_logs:
            try:
                self.scorer = ClipScorer(spec)
            except MimicacheError as exc:
                self.error = str(exc)
            except Exception as exc:
                self.error = error_text(exc)

    def info(self) -> dict[str, Any]:
        return {"error": self.error, "logs": self.load_logs}

    def score(self, task: ScoreTask) -> tuple[dict[str, Any], list[LogLine]]:
        with captured_logs(self.level) as lines:
            row = self.scorer.score(task)  # type: ignore[union-attr]
        return row, lines


def _on_ray(
    tasks: Sequence[ScoreTask],
    spec: EngineSpec,
    settings: ExecutorSettings,
    on_row: RowListener,
) -> None:
    import ray

    from mimicache.batch.executing.ray_executor import (
        actor_spec,
        connect,
        started,
        worker_layout,
    )

    connected = connect(settings.address)
    try:
        layout = worker_layout(spec, settings, pose=False)
        workers = min(layout.workers, len(tasks))
        actor = ray.remote(ScoreWorker).options(
            num_cpus=layout.worker_cpus,
            num_gpus=layout.gpus_per_worker,
            max_restarts=-1,
            max_task_retries=0,
        )
        worker_spec = actor_spec(spec, layout.gpus_per_worker, layout.worker_cpus)
        actors = [actor.remote(worker_spec) for _ in range(workers)]
        started(actors)
        logger.info(
            "Ray: %d scoring worker(s) (%g GPU, %g CPU each)",
            workers,
            layout.gpus_per_worker,
            layout.worker_cpus,
        )
        _spread(tasks, actors, on_row)
    finally:
        if connected:
            ray.shutdown()


def _spread(tasks: Sequence[ScoreTask], actors: list[Any], on_row: RowListener) -> None:
    """One task at a time to each idle actor, rows handed on as they come."""
    import ray
    from ray.exceptions import RayActorError

    queue = list(enumerate(tasks, start=1))
    queue.reverse()
    busy: dict[Any, tuple[ScoreTask, Any]] = {}
    idle = list(actors)
    while queue or busy:
        while queue and idle:
            number, task = queue.pop()
            actor = idle.pop()
            logger.info("[%d/%d] %s: scoring", number, len(tasks), task.clip.name)
            busy[actor.score.remote(task)] = (task, actor)
        done, _ = ray.wait(list(busy), num_returns=1)
        task, actor = busy.pop(done[0])
        idle.append(actor)  # restarted by Ray if it died
        try:
            row, lines = ray.get(done[0])
        except RayActorError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "it died"
            row, lines = {"status": "failed", "error": f"the scoring worker died ({reason})"}, []
        replay_logs(lines, prefix=f"{task.clip.name}: ")
        on_row(task, row)
