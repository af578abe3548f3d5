"""The optional extras (``pip install "mimicache[ray]"`` ...): what needs each, and the check a
command makes before any work, so a missing one is a one-line error, not a traceback after
the log file, the output folder or the models."""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass

from mimicache.batch.executing.registry import EXECUTORS
from mimicache.errors import MimicacheError
from mimicache.storage.objects import remote_url

S3 = frozenset({"s3"})  # the protocols the s3 extra serves

__all__ = ["EXTRAS", "Extra", "MissingExtra", "check_run_extras", "require", "url_paths"]


class MissingExtra(MimicacheError):
    """An optional library a command needs is not installed: the message names the pip line."""


@dataclass(frozen=True)
class Extra:
    """One extra of the package: its name in ``mimicache[...]`` and the modules it installs."""

    name: str
    modules: tuple[str, ...]

    @property
    def install(self) -> str:
        return f'pip install "mimicache[{self.name}]"'


EXTRAS = {
    "ray": Extra("ray", ("ray",)),
    "plot": Extra("plot", ("matplotlib",)),
    "ui": Extra("ui", ("gradio",)),
    "s3": Extra("s3", ("fsspec", "s3fs")),
    "pose": Extra("pose", ("pose_format",)),
}


def require(extra: str, feature: str) -> None:
    """Raise MissingExtra when a module of ``extra`` cannot be imported (``feature``: what the
    user asked for, as the message names it)."""
    wanted = EXTRAS[extra]
    for module in wanted.modules:
        try:
            importlib.import_module(module)
        except ImportError:
            raise MissingExtra(
                f"{feature} needs {module}, which is not installed: {wanted.install}"
            ) from None


def url_paths(args: argparse.Namespace) -> dict[str, str]:
    """flag -> value of every path flag given as an ``s3://`` URL."""
    flags = (
        *("feature_cache_dir", "inference_config", "batch_folder", "output_dir", "manifest"),
        *("ref_image", "video", "output"),
    )
    return {
        f"--{flag}": str(value)
        for flag in flags
        if (value := getattr(args, flag, None)) and remote_url(value, S3) is not None
    }


def check_run_extras(args: argparse.Namespace) -> None:
    """``run`` / ``bench`` / ``pose``: every extra their flags need is installed."""
    executor = getattr(args, "executor", None)
    if executor is not None and (extra := EXECUTORS[executor].extra) is not None:
        require(extra, f"--executor {executor}")
    if getattr(args, "plot", None):
        require("plot", "bench --plot")
    for flag, url in url_paths(args).items():
        require("s3", f"{flag} {url}")
