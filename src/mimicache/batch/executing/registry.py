"""The registry of executors: ``--executor NAME`` picks one here, and nowhere else is an
executor chosen by its name."""

from __future__ import annotations

from mimicache.batch.executing.executor import Executor
from mimicache.batch.executing.local_executor import LocalExecutor
from mimicache.batch.executing.ray_executor import RayExecutor

EXECUTORS: dict[str, type[Executor]] = {"local": LocalExecutor, "ray": RayExecutor}
DEFAULT_EXECUTOR = "local"
