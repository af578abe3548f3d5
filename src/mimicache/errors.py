"""Errors a user can act on: each message names the file or flag and says what to do."""

from __future__ import annotations


class MimicacheError(Exception):
    """Base class; the CLI prints these without a traceback (``-v`` shows it)."""


class ModelLoadError(MimicacheError):
    """A model folder, checkpoint or ONNX file is missing, unreadable or does not match."""


class InputError(MimicacheError):
    """A reference image or driving video cannot be used (missing, corrupt, no person...)."""


class ConfigError(MimicacheError):
    """An inference config or command-line value is wrong."""


class CacheError(MimicacheError):
    """The feature cache cannot be used as asked (bad size string, unknown stage...)."""


class OutputError(MimicacheError):
    """An output folder or log file cannot be written (a file in the way, read-only, full)."""
