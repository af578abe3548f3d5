"""Batch runs: plan (test cases x driving videos, output names), outputs (claims of the names
a run writes), outcome (a job's outcome and result), run (the loop that isolates each job's
failure, exit code), report (sidecars, summary table), cold_warm (the cache benchmark),
resume (result keys, ``--resume``), executor (the seam: plan in, results out), its
implementations local_executor and ray_executor (with workers), and executors (the registry
``--executor`` picks from). Every executor builds its engines from one ``EngineSpec``."""

from mimicache.batch.outcome import JobResult
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
from mimicache.batch.run import exit_code, run_jobs

__all__ = [
    "SIDECAR_SCHEMA",
    "TIMESTAMP_FORMAT",
    "VIDEO_EXTENSIONS",
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
