"""Batch runs: plan (test cases x driving videos, output names), outputs (claims of the names
a run writes), outcome (a job's outcome and result), run (the loop that isolates each job's
failure, exit code), report (sidecars, summary table), cold_warm (the cache benchmark),
resume (result keys, ``--resume``), executor (the seam: plan in, results out), its
implementations local_executor and ray_executor (with workers), and executors (the registry
``--executor`` picks from). Every executor builds its engines from one ``EngineSpec``."""

import importlib

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


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"mimicache.batch.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mimicache.batch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


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
