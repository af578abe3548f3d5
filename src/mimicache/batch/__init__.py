"""Batch runs: plan (test cases x driving videos, output names), outputs (claims of the names
a run writes), outcome (a job's outcome and result), run (the loop that isolates each job's
failure, exit code), report (sidecars, summary table), cold_warm (the cache benchmark),
resume (result keys, ``--resume``), executor (the seam: plan in, results out), its
implementations local_executor and ray_executor (with workers), and executors (the registry
``--executor`` picks from). Every executor builds its engines from one ``EngineSpec``."""

from mimicache.lazy import lazy_exports

# name -> the module of this package that defines it; loaded on first use, so a command
# that needs one name (the CLI's tables, its output checks) does not load the rest.
_LAZY = {
    "JobResult": "outcome",
    "check_log_file": "outputs",
    "check_output_folder": "outputs",
    "publish_output": "outputs",
    "reserve_log": "outputs",
    "TIMESTAMP_FORMAT": "plan",
    "VIDEO_EXTENSIONS": "plan",
    "Job": "plan",
    "list_videos": "plan",
    "make_timestamp": "plan",
    "override_tag": "plan",
    "plan_jobs": "plan",
    "SIDECAR_SCHEMA": "report",
    "format_summary": "report",
    "write_sidecar": "report",
    "exit_code": "run",
    "run_jobs": "run",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


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
