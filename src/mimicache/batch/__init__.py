"""Batch runs, in four rooms over one vocabulary (``job``: a ``Job`` and its ``JobResult``):

- ``planning``: the jobs of a run (test cases x driving videos, or a manifest's rows), their
  output names, inputs given by URL;
- ``outputs``: where results go (a folder or an object-storage root), create-only publication
  under a free name, results a refusing store left on this machine;
- ``executing``: the executor seam and its implementations (local, Ray with its workers),
  the job loop that isolates each job's failure, ``--resume``;
- ``reporting``: sidecars and the summary table, ``report.html``, ``results.jsonl``;

and ``bench``, the cold/warm benchmark and its chart. Every executor builds its engines from
one ``EngineSpec``."""

from mimicache.lazy import lazy_exports

# name -> the module of this package that defines it; loaded on first use, so a command
# that needs one name (the CLI's tables, its output checks) does not load the rest.
_LAZY = {
    "Job": "job",
    "JobResult": "job",
    "check_log_file": "outputs.publish",
    "check_output_folder": "outputs.publish",
    "publish_output": "outputs.publish",
    "reserve_log": "outputs.publish",
    "TIMESTAMP_FORMAT": "planning.plan",
    "VIDEO_EXTENSIONS": "planning.plan",
    "list_videos": "planning.plan",
    "make_timestamp": "planning.plan",
    "override_tag": "planning.plan",
    "plan_jobs": "planning.plan",
    "SIDECAR_SCHEMA": "reporting.report",
    "format_summary": "reporting.report",
    "write_sidecar": "reporting.report",
    "exit_code": "executing.job_loop",
    "run_jobs": "executing.job_loop",
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
