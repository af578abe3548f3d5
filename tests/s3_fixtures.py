"""An S3 endpoint for the tests: moto's server mode (the real S3 HTTP API on localhost).

``s3_server`` starts one ``ThreadedMotoServer`` on a free port per test session and points
the AWS environment (``AWS_ENDPOINT_URL``, dummy credentials) at it, so s3fs reaches it as it
would reach any S3 service; ``s3_url`` makes a fresh bucket per test and returns its URL.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
from collections.abc import Iterator

import pytest

_BUCKETS = itertools.count()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """The endpoint URL of a moto S3 server, with the AWS environment pointing at it."""

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield endpoint
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def s3_url(s3_server: str) -> str:
    """``s3://<a new bucket>/cache``: an empty prefix in a bucket of this test's own."""
    import fsspec

    bucket = f"mimicache-test-{os.getpid()}-{next(_BUCKETS)}"
    fs = fsspec.filesystem("s3")
    fs.mkdir(bucket)
    fs.invalidate_cache()
    return f"s3://{bucket}/cache"
