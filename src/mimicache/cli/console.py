"""What every command shares with the terminal: logging to stderr (and a log file), the
error policy (a ``MimicacheError`` is printed as one ``error: ...`` line and exits 2), and the
one place where the library's setting names become flags (``speed='fast'`` -> ``--speed fast``).
"""

from __future__ import annotations

import argparse
import ast
import logging
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from mimicache.errors import MimicacheError

logger = logging.getLogger(__name__)

# The settings that messages name (mimicache.errors.setting) -> the flag that sets each one.
FLAGS = {
    "max_size": "--max-size",
    **{
        name: f"--{name}"
        for name in (
            "batch_folder",
            "cache_platform",
            "cols",
            "compile",
            "config",
            "decode_chunk_size",
            "device",
            "dwpose_backend",
            "executor",
            "force",
            "gpus_per_worker",
            "inference_config",
            "lcm_num_train_timesteps",
            "offload",
            "output_dir",
            "person",
            "plot",
            "pose_retarget",
            "ray_address",
            "resume",
            "rows",
            "scheduler",
            "scheduler_s_noise",
            "speed",
            "sweep",
            "sweep_limit",
        )
    },
}
_SETTING = re.compile(
    r"\b(?P<name>[a-z][a-z0-9_]*)=(?P<value>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[\w.+-]+)"
)


def flag_words(text: str) -> str:
    """``text`` with every setting the library names (``person='largest'``) as its flag
    (``--person largest``; ``compile=True``: ``--compile``)."""

    def as_flag(match: re.Match) -> str:
        flag = FLAGS.get(match["name"])
        if flag is None:
            return match[0]
        try:
            value = ast.literal_eval(match["value"])
        except (ValueError, SyntaxError):
            value = match["value"]
        return flag if value is True else f"{flag} {shlex.quote(str(value))}"

    return _SETTING.sub(as_flag, text)


class _FlagWords(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return flag_words(super().format(record))


class _Summaries(logging.Filter):
    """Keeps the cache's per-entry lines off the console (they are in the log file, and each
    job logs one line of them): the console reads as what the run does."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "cache_detail", False)


def setup_logging(
    verbose: bool,
    log_file: Path | None = None,
    *,
    bars: bool = True,
    cache_detail: bool = False,
) -> None:
    """Console (and file) logging; ``bars=False`` also turns off the model loaders' bars;
    ``cache_detail`` (or ``verbose``): every cache hit and miss on the console too."""
    if not bars:
        import diffusers.utils.logging
        import transformers.utils.logging

        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_mimicache", False):
            root.removeHandler(handler)
            handler.close()
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(_FlagWords("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    console.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not (verbose or cache_detail):
        console.addFilter(_Summaries())
    handlers: list[logging.Handler] = [console]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file, encoding="utf-8", errors="backslashreplace")
        to_file.setFormatter(_FlagWords("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        to_file.setLevel(logging.DEBUG)
        handlers.append(to_file)
    for handler in handlers:
        handler._mimicache = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    # Libraries' own chatter stays at warnings; diffusers warns on every deliberate VAE upcast.
    quiet = ("transformers", "httpx", "httpx2", "huggingface_hub", "filelock", "PIL", "urllib3")
    for name in (*quiet, "botocore", "aiobotocore", "s3fs", "fsspec", "asyncio"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("diffusers").setLevel(logging.ERROR)


def call_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``func(args)``'s exit code; a ``MimicacheError`` prints ``error: ...`` and gives 2, an
    interrupt 130, a closed output pipe (``| head``) 0."""
    try:
        return func(args)
    except MimicacheError as exc:
        logger.debug("traceback", exc_info=True)
        print(f"error: {flag_words(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
