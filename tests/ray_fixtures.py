"""One local Ray cluster for the whole test session (starting one costs seconds)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    """A local cluster with 2 CPUs, no dashboard, no usage stats; shut down at the end. Its
    workers keep the environment it starts with, so the S3 endpoint's is set first, whichever
    test starts the cluster."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DISABLE_IMPORT_WARNING", "1")
    import ray

    # "local": without it ray.init joins any cluster that `ray start` left running here
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
