"""Errors a user can act on: each message names the file or setting and says what to do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePath


class MimicacheError(Exception):
    """Base class; the CLI prints these without a traceback (``-v`` shows it)."""


class ModelLoadError(MimicacheError):
    """A model folder, checkpoint or ONNX file is missing, unreadable or does not match."""


class InputError(MimicacheError):
    """A reference image or driving video cannot be used (missing, corrupt, no person...)."""


class ConfigError(MimicacheError):
    """An inference config or command-line value is wrong."""


class StorageError(MimicacheError):
    """A file, URL or object store cannot be used as asked (a missing object, a library to
    install, a size that is not one)."""


class CacheError(StorageError):
    """The feature cache cannot be used as asked (unknown stage, bad metadata...)."""


class OutputError(MimicacheError):
    """An output folder or log file cannot be written (a file in the way, read-only, full)."""


def setting(name: str, value: object) -> str:
    """A setting as messages name it: the keyword argument that sets it (``speed='fast'``).

    The library speaks in its own arguments; the CLI shows the flag instead (``--speed fast``).
    """
    if isinstance(value, PurePath):
        value = str(value)
    return f"{name}={value!r}"


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what caused it (``raise ... from``) or was being handled, and so on."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
