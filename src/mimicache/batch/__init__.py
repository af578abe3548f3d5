"""Batch runs: plan (test cases x driving videos, output names), outputs (claims of the names
a run writes), run (the loop that isolates each job's failure, exit code), report (sidecars,
summary table), cold_warm (the cache benchmark), resume (result keys, ``--resume``),
workers (the engine spec every executor loads from) and ray_executor (``--executor ray``).
The local loop gets an already-loaded engine; only Ray's workers load models themselves."""

from mimicache.batch.outputs import (
    check_log_file,
    check_output_folder,
    publish_output,
    reserve_log,
)
from mimicache.batch.plan import (
    TIMESTAMP_FORMAT,
    VIDEO_EXTENSIONS,
    Job,
    list_videos,
    make_timestamp,
    override_tag,
    plan_jobs,
)
from mimicache.batch.report import SIDECAR_SCHEMA, format_summary, write_sidecar
from mimicache.batch.run import JobResult, exit_code, run_jobs
from mimicache.batch.workers import EngineSpec

__all__ = [
    "SIDECAR_SCHEMA",
    "TIMESTAMP_FORMAT",
    "VIDEO_EXTENSIONS",
    "EngineSpec",
    "Job",
    "JobResult",
    "check_log_file",
    "check_output_folder",
    "exit_code",
    "format_summary",
    "list_videos",
    "make_timestamp",
    "override_tag",
    "plan_jobs",
    "publish_output",
    "reserve_log",
    "run_jobs",
    "write_sidecar",
]
