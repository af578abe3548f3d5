"""What an executor's worker process holds: an ``EngineSpec`` (everything needed to load the
same engine as a local run, picklable), and the worker objects built from it: a generation
worker (the whole engine, loaded once, runs jobs and returns frames (F,H,W,3) uint8) and a
pose worker (DWPose only, fills the cache's pose entries ahead of the generation).

Workers never write outputs: they hand back an ``Outcome`` and the log records of the job,
and the driver writes files (``run.finish_job``) exactly as a local run does.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mimicache.batch.resume import ResultKey, ResultKeys
from mimicache.batch.run import Outcome, error_text
from mimicache.config import InferenceConfig, TestCase
from mimicache.errors import MimicacheError
from mimicache.pipeline.schedulers import SchedulerOptions

logger = logging.getLogger(__name__)

LogLine = tuple[str, int, str]  # logger name, level, message


@dataclass(frozen=True)
class EngineSpec:
    """How to load the engine and open the feature store: built once by the command line
    (the composition root) and used by every executor, so all of them load the same models.

    ``device`` "cpu", "cuda", "cuda:N" or None (CUDA when available); ``dtype`` "float32" /
    "float16" or None (the engine's default); ``dwpose_device`` None: the engine's choice. ``threads``: torch threads (None:
    leave as is)."""

    config: InferenceConfig
    device: str | None = None
    dtype: str | None = None
    cache_dir: Path | None = None  # None: no feature store at all
    cache_enabled: bool = True
    cache_force_refresh: bool = False
    cache_any_platform: bool = False  # reuse entries computed on another numeric platform
    cache_pipeline_features: bool = True
    scheduler: SchedulerOptions = field(default_factory=SchedulerOptions)
    pose_retarget: str | None = None
    person: str | None = None  # pose.person: "auto", "largest", "center" or "N"
    speed: str = "exact"  # see engine.speed.SpeedOptions
    compile: bool = False
    decode_chunk_size: int = 8
    offload: str = "none"
    dwpose_device: str | None = None
    threads: int | None = None
    verbose: bool = False

    def replace(self, **changes: Any) -> EngineSpec:
        import dataclasses

        return dataclasses.replace(self, **changes)

    def open_cache(self) -> Any:
        from mimicache.cache.store import FeatureStore

        if self.cache_dir is None:
            return None
        return FeatureStore(
            self.cache_dir,
            enabled=self.cache_enabled,
            force_refresh=self.cache_force_refresh,
            any_platform=self.cache_any_platform,
        )

    def torch_dtype(self) -> Any:
        import torch

        return None if self.dtype is None else getattr(torch, self.dtype)

    def build(self, cache: Any = None) -> Any:
        """The engine (``MimicMotion``), with ``cache`` or a store of its own."""
        from mimicache.engine import MimicMotion

        self._set_threads()
        return MimicMotion.from_config(
            self.config,
            device=self.device,
            dtype=self.torch_dtype(),
            cache=cache if cache is not None else self.open_cache(),
            cache_pipeline_features=self.cache_pipeline_features,
            scheduler=self.scheduler,
            pose_retarget=self.pose_retarget,
            person=self.person,
            dwpose_device=self.dwpose_device,
            speed=self.speed,
            compile=self.compile,
            decode_chunk_size=self.decode_chunk_size,
            offload=self.offload,
        )

    def build_pose(self) -> Any:
        """DWPose only (``MimicMotion.for_pose``) on ``dwpose_device`` (default the CPU)."""
        from mimicache.engine import MimicMotion

        self._set_threads()
        return MimicMotion.for_pose(
            self.config,
            device="cpu",
            cache=self.open_cache(),
            pose_retarget=self.pose_retarget,
            person=self.person,
            dwpose_device=self.dwpose_device or "cpu",
        )

    def result_settings(self, engine: Any) -> dict[str, Any]:
        """What the frames depend on beyond the case and the model files (see resume)."""
        return {
            "scheduler": self.scheduler,
            "dtype": str(engine.dtype).removeprefix("torch."),
            "device": engine.device.type,
            "pose_retarget": engine.pose_retarget,
            "person": engine.person,
            "speed": self.speed,
            "compile": self.compile,
            "decode_chunk_size": self.decode_chunk_size,
        }

    def _set_threads(self) -> None:
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)


@contextmanager
def captured_logs(level: int) -> Iterator[list[LogLine]]:
    """The records logged meanwhile (at ``level`` or above), for the driver to log again."""
    lines: list[LogLine] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            lines.append((record.name, record.levelno, text))

    handler = Collect(level)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(min(previous or logging.WARNING, level))
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def replay_logs(lines: list[LogLine], prefix: str = "") -> None:
    """Log a worker's records again in this process (console and the run's log file)."""
    for name, level, text in lines:
        logging.getLogger(name).log(level, "%s%s", prefix, text)


class GenerationWorker:
    """The whole engine, loaded once; ``run`` generates one job. A model that cannot be loaded
    is reported by ``info`` (a load error is the user's to fix, never retried)."""

    def __init__(self, spec: EngineSpec):
        self.spec = spec
        self.engine: Any = None
        self.load_error: str | None = None
        level = logging.DEBUG if spec.verbose else logging.INFO
        with captured_logs(level) as self.load_logs:
            try:
                self.engine = spec.build()
                self.keys = ResultKeys(self.engine, spec.result_settings(self.engine))
            except MimicacheError as exc:
                self.load_error = str(exc)
            except Exception as exc:
                logger.debug("model load failed", exc_info=True)
                self.load_error = error_text(exc)

    def info(self) -> dict[str, Any]:
        """pid, the load error (or None), the model files and pose mode, the load's logs."""
        engine = self.engine
        return {
            "pid": os.getpid(),
            "error": self.load_error,
            "model_files": engine.model_files if engine is not None else {},
            "pose_retarget": engine.pose_retarget if engine is not None else None,
            "logs": self.load_logs,
        }

    def pid(self) -> int:
        return os.getpid()

    def result_key(self, case: TestCase) -> ResultKey | None:
        return self.keys(case)

    def run(self, case: TestCase, label: str) -> tuple[Outcome, list[LogLine]]:
        """One job: its outcome (frames or the error text) and the records it logged."""
        level = logging.DEBUG if self.spec.verbose else logging.INFO
        with captured_logs(level) as lines:
            try:
                generated = self.engine.generate(case, progress=False, label=label)
            except MimicacheError as exc:
                logger.error("%s failed: %s", label, exc)
                return Outcome(error=error_text(exc)), lines
            except Exception as exc:  # a bug or out of memory: the job fails, the worker lives
                logger.exception("%s failed unexpectedly", label)
                return Outcome(error=error_text(exc)), lines
            outcome = Outcome(
                generated.frames,
                generated.fps,
                dict(generated.timings),
                list(generated.cache_events),
                result_key=self.keys(case),
                people=getattr(generated, "people", None),
                platform=dict(getattr(generated, "platform", {})),
            )
        return outcome, lines


class PoseWorker:
    """DWPose only: ``prepare`` runs a job's pose stages so their entries are in the cache
    when a generation worker asks (errors are left for the generation to report)."""

    def __init__(self, spec: EngineSpec):
        self.level = logging.DEBUG if spec.verbose else logging.INFO
        self.engine = spec.build_pose()

    def pid(self) -> int:
        return os.getpid()

    def prepare(self, case: TestCase) -> tuple[list[Any], float, list[LogLine]]:
        """The cache events of the job's pose stages, the seconds spent, the records logged."""
        from mimicache.engine import JobRecord

        start = time.perf_counter()
        record = JobRecord()
        with captured_logs(self.level) as lines:
            try:
                self.engine.prepare_pose(case, record, progress=False)
            except Exception as exc:  # the generation stage meets it again and reports it
                logger.debug("pose ahead of %s failed: %s", case.ref_video_path, exc)
        return record.events, time.perf_counter() - start, lines
