"""What an object store's failure means, and the retries of one that may pass.

A failure is sorted into a ``Fault`` by what the store answered, whatever the library
(s3fs/botocore, gcsfs, adlfs) and however it wrapped the answer: ``missing`` (no such
bucket), ``denied`` (401/403: the credentials are refused), ``unreachable`` (no connection,
a timeout), ``throttled`` (429, 503, SlowDown), ``server`` (another 5xx) or ``other``. Each
kind has its own advice (``Fault.advice``): what the user should do.

Retries: two layers. Each request is first retried by the store's library as its
environment configures it: botocore's "legacy" mode (its default today) makes 5 attempts on a
connection error, a 5xx or throttling, waiting a random 0 to 2^(n-1) s before the n-th retry
(about 7 s in all on average); its "standard" mode 3 attempts; ``AWS_RETRY_MODE`` and
``AWS_MAX_ATTEMPTS`` choose. s3fs adds its own few tries on SlowDown. A store operation that
still fails with a fault that may pass (``unreachable``, ``throttled``, ``server``) is then
tried again by ``with_retries``: ``PUBLISH_RETRY`` is 3 tries in all, waiting 2 s and then
6 s, so an outage of about half a minute passes unnoticed before a job's files are kept on
this machine instead. ``missing``, ``denied`` and ``other`` are not retried: waiting does not
change them.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from mimicache.errors import OutputError, exception_chain

logger = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT = frozenset({"unreachable", "throttled", "server"})

_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "AccountProblem",
        "ExpiredToken",
        "Forbidden",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "Unauthorized",
    }
)
_THROTTLED_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "RequestThrottled",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequests",
        "TooManyRequestsException",
    }
)
# the classes every library raises for a connection that failed or timed out, by name, so
# that none of them has to be imported (and each protocol's library is optional)
_UNREACHABLE_TYPES = frozenset(
    {
        "ClientConnectionError",  # aiohttp (gcsfs, adlfs, s3fs under botocore)
        "ConnectTimeoutError",  # botocore
        "ConnectionError",  # botocore's and Python's
        "FSTimeoutError",  # fsspec
        "HTTPClientError",  # botocore: the connection closed or broke mid-request
        "ReadTimeoutError",
        "ServiceRequestError",  # azure
        "TimeoutError",
    }
)


@dataclass(frozen=True)
class Retry:
    """``tries`` in all; ``waits[i]`` seconds before try ``i + 2`` (the last repeats)."""

    tries: int = 3
    waits: tuple[float, ...] = (2.0, 6.0)

    def wait(self, retry: int) -> float:
        return self.waits[min(retry, len(self.waits) - 1)] if self.waits else 0.0


PUBLISH_RETRY = Retry()


@dataclass(frozen=True)
class Fault:
    """What the store's failure was: ``kind`` (see the module's docstring) and ``detail``
    (the store's own words, e.g. ``403 AccessDenied: Access Denied``)."""

    kind: str
    detail: str

    @property
    def transient(self) -> bool:
        return self.kind in TRANSIENT

    def advice(self, url: str, endpoint: str | None = None) -> str:
        """What is wrong with the store at ``url`` (a bucket URL) and what to do."""
        bucket = url.split("://", 1)[-1].split("/", 1)[0]
        where = f"at {endpoint}" if endpoint else "named by the environment"
        if self.kind == "missing":
            return (
                f"bucket {bucket} does not exist ({self.detail}); create it (for S3: "
                f"aws s3 mb s3://{bucket}) or name another bucket"
            )
        if self.kind == "denied":
            return (
                f"the store refuses these credentials for bucket {bucket} ({self.detail}); "
                "check them (for S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE) and "
                f"that they may read and write under {url}"
            )
        if self.kind == "unreachable":
            return (
                f"the store {where} cannot be reached ({self.detail}); check the endpoint "
                "(for S3: AWS_ENDPOINT_URL) and the network"
            )
        if self.kind == "throttled":
            return (
                f"the store is throttling requests ({self.detail}); try again later, or run "
                "fewer jobs at once"
            )
        if self.kind == "server":
            return f"the store fails with a server error ({self.detail}); try again later"
        return (
            f"the store cannot be used ({self.detail}); check the endpoint and credentials "
            "(for S3: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID...)"
        )


class StoreError(OutputError):
    """A store operation failed for good (after the retries a ``transient`` fault gets);
    ``fault`` says why."""

    def __init__(self, message: str, fault: Fault):
        super().__init__(message)
        self.fault = fault


def _status(exc: BaseException) -> tuple[int | None, str, str]:
    """(HTTP status, the store's error code, its message) of an answer, when ``exc`` carries
    one (botocore's ``response``, gcsfs' ``code``, azure's ``status_code``)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):
        error = response["Error"]
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        return status, str(error.get("Code") or ""), str(error.get("Message") or "")
    for name in ("status_code", "code", "status"):
        value = getattr(exc, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value < 600:
            return value, "", str(getattr(exc, "message", "") or exc)
    return None, "", ""


def fault_of(exc: BaseException) -> Fault:
    """What ``exc``, raised by a store operation, says about the store."""
    for cause in exception_chain(exc):  # the store's answer first: it says the most
        status, code, message = _status(cause)
        if status is None and not code:
            continue
        detail = " ".join(str(p) for p in (status, code if code != str(status) else "") if p)
        detail = f"{detail}: {message}" if message else detail
        if code == "NoSuchBucket":
            return Fault("missing", detail)
        if code in _DENIED_CODES or status in (401, 403):
            return Fault("denied", detail)
        if code in _THROTTLED_CODES or status in (429, 503):
            return Fault("throttled", detail)
        if status is not None and status >= 500:
            return Fault("server", detail)
        return Fault("other", detail)
    for cause in exception_chain(exc):
        names = {kind.__name__ for kind in type(cause).__mro__}
        detail = f"{type(cause).__name__}: {cause}"
        if names & _UNREACHABLE_TYPES:
            return Fault("unreachable", detail)
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, PermissionError):
        return Fault("denied", detail)
    if isinstance(exc, FileNotFoundError):  # a put into a bucket that is not there
        return Fault("missing", detail)
    if isinstance(exc, OSError) and exc.errno == errno.EBUSY:
        return Fault("throttled", detail)
    if isinstance(exc, OSError) and exc.errno == getattr(errno, "EREMOTEIO", -1):
        return Fault("server", detail)
    return Fault("other", detail)


def endpoint_of(fs: Any) -> str | None:
    """The endpoint an fsspec file system talks to, when it says (s3fs does)."""
    try:
        return str(fs.s3.meta.endpoint_url)
    except Exception:  # not connected yet, or not S3
        kwargs = getattr(fs, "client_kwargs", None) or {}
        return kwargs.get("endpoint_url")


def with_retries(
    action: Callable[[], T], what: str, url: str, fs: Any = None, retry: Retry | None = None
) -> T:
    """``action()``, tried again while it fails with a transient fault (``retry``, default
    ``PUBLISH_RETRY``); a ``StoreError`` naming ``what`` (e.g. "publish clip.mp4 to
    s3://b/out") and the advice when it still fails. KeyboardInterrupt passes through."""
    retry = retry or PUBLISH_RETRY
    for attempt in range(1, retry.tries + 1):
        try:
            return action()
        except Exception as exc:
            fault = fault_of(exc)
            if not fault.transient or attempt == retry.tries:
                tries = f" (tried {attempt} times)" if attempt > 1 else ""
                message = f"could not {what}{tries}: {fault.advice(url, endpoint_of(fs))}"
                raise StoreError(message, fault) from exc
            wait = retry.wait(attempt - 1)
            logger.warning(
                "could not %s (%s); trying again in %.0f s (%d of %d)",
                what,
                fault.detail,
                wait,
                attempt + 1,
                retry.tries,
            )
            time.sleep(wait)
    raise AssertionError("unreachable: the last try returns or raises")
