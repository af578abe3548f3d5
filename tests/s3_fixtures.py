"""An S3 endpoint for the tests: moto's server mode (the real S3 HTTP API on localhost).

``s3_server`` starts one ``ThreadedMotoServer`` on a free port per test session and points
the AWS environment (``AWS_ENDPOINT_URL``, dummy credentials) at it, so s3fs reaches it as it
would reach any S3 service; ``s3_url`` makes a fresh bucket per test and returns its URL.
``s3_proxy`` puts a real HTTP proxy in front of it (``FaultyEndpoint``) that refuses
credentials, throttles, fails or goes away on cue.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
from collections.abc import Callable, Iterator

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


_S3_ERRORS = {
    403: ("AccessDenied", "Access Denied"),
    500: ("InternalError", "We encountered an internal error. Please try again."),
    # S3's throttling answer (its SlowDown twin, whose wording s3fs retries on its own)
    503: ("ServiceUnavailable", "Service is unable to handle the request."),
}


class FaultyEndpoint:
    """A real HTTP proxy in front of the moto server that can turn bad on cue.

    ``fail(status, count=None, when=..., forwarded=False)``: answer ``status`` (403, 500,
    503, with S3's error body) to the next ``count`` requests that ``when(method, path)``
    selects (None: all of them, until ``heal``); ``forwarded``: after the store has done the
    request (its answer lost on the way back). ``cut_after(when)``: pass requests until one
    that ``when`` selects has been answered, then stop listening, so every later connection
    is refused as by a host that went away. ``requests`` lists the (method, path) of every
    request it got. Every answer closes its connection: no client keeps a socket across a
    change.
    """

    def __init__(self, upstream: str):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        self.upstream_url = upstream  # the moto server's endpoint
        self.upstream = urlsplit(upstream).netloc
        self.requests: list[tuple[str, str]] = []
        self._fault: tuple[int, int | None, Callable[[str, str], bool], bool] | None = None
        self._cut: Callable[[str, str], bool] | None = None
        self.down = False
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # answers "Expect: 100-continue" (botocore's PUTs)

            def log_message(self, *_):  # one line per request otherwise
                pass

            def _relay(self) -> None:
                self.close_connection = True
                if proxy.down:
                    return  # closed unanswered
                method, path = self.command, self.path
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy._lock:
                    proxy.requests.append((method, path))
                    status, forwarded = proxy._take_fault(method, path)
                if status is None:
                    self._answer(*proxy._forward(method, path, self.headers, body))
                else:
                    if forwarded:
                        proxy._forward(method, path, self.headers, body)
                    self._error(status)
                with proxy._lock:
                    cut = proxy._cut is not None and proxy._cut(method, path)
                if cut:
                    proxy._stop_listening()

            def _error(self, status: int) -> None:
                code, message = _S3_ERRORS[status]
                error = (
                    f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                    f"<Message>{message}</Message></Error>"
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(error)))
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(error)

            def _answer(self, response, data: bytes) -> None:
                self.send_response_only(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                length = response.getheader("Content-Length")
                if self.command != "HEAD" or length is None:
                    length = str(len(data))
                self.send_header("Content-Length", length)
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _forward(self, method: str, path: str, headers, body: bytes | None):
        import http.client

        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                if name.lower() != "expect":  # answered here already
                    conn.putheader(name, value)
            conn.endheaders(body)
            response = conn.getresponse()
            return response, response.read()
        finally:
            conn.close()

    def _take_fault(self, method: str, path: str) -> tuple[int | None, bool]:
        if self._fault is None:
            return None, False
        status, count, when, forwarded = self._fault
        if not when(method, path):
            return None, False
        if count is not None:
            self._fault = (status, count - 1, when, forwarded) if count > 1 else None
        return status, forwarded

    def fail(
        self,
        status: int,
        count: int | None = None,
        when: Callable[[str, str], bool] = lambda method, path: True,
        *,
        forwarded: bool = False,
    ) -> None:
        with self._lock:
            self._fault = (status, count, when, forwarded)

    def heal(self) -> None:
        with self._lock:
            self._fault = None

    def cut_after(self, when: Callable[[str, str], bool]) -> None:
        with self._lock:
            self._cut = when

    def _stop_listening(self) -> None:
        # a connection that slipped in meanwhile is dropped unanswered (``down``); closing
        # the socket then refuses every later one, as a host that went away does
        self.down = True
        self.server.shutdown()
        self.server.socket.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def s3_proxy(s3_server: str, monkeypatch) -> Iterator[FaultyEndpoint]:
    """A ``FaultyEndpoint`` the AWS environment points at for this test, with botocore's own
    retries off (``AWS_MAX_ATTEMPTS=1``) so that what the test sees is mimicache's handling;
    s3fs's cached clients are dropped before and after, so the change takes effect."""
    import s3fs

    proxy = FaultyEndpoint(s3_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield proxy
    finally:
        proxy.close()
        s3fs.S3FileSystem.clear_instance_cache()
