"""``mimicache download``: the weights a real run needs, from the hub into a folder, verified,
and a config that points at them.

Fetches the Stable Video Diffusion img2vid-xt-1-1 files inference reads (gated: accept the
licence, `hf auth login`), ``MimicMotion_1-1.pth`` and the two DWPose ONNX files; each file is
checked against the hub's listing (size, sha256). A re-run skips what is complete; see
``mimicache.config.hub_weights`` for what is resumed. Exit 0 when everything is in place and the
config is written, 2 on any problem (one ``error:`` line that says what to do).
"""

from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path

from mimicache.cli.console import call_command, setup_logging
from mimicache.cli.fmt import format_size, plural, text_table
from mimicache.errors import ConfigError

DEFAULT_FOLDER = "models/"
DEFAULT_CONFIG = "configs/real.yaml"


HELP = "fetch the SVD, MimicMotion and DWPose weights from the hub and write a config"
DESCRIPTION = """\
Fetch every weight file a real run needs from the Hugging Face hub into --dir (only the files
inference reads), verify each against the hub's size and sha256, and write a config naming them.
A re-run fetches only what is missing. The SVD repository is gated: accept its licence on the
hub and log in (hf auth login) first.
"""


def add_download_command(commands) -> None:
    """Register ``download`` on the sub-command parsers ``commands``."""
    download = commands.add_parser("download", help=HELP, description=DESCRIPTION)
    download.add_argument(
        "--dir", default=DEFAULT_FOLDER, help="where the weights go (default: %(default)s)"
    )
    download.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        metavar="OUT.yaml",
        help="the config to write (default: %(default)s; never replaced without --force)",
    )
    download.add_argument(
        "--ref_image",
        action="append",
        default=[],
        metavar="IMG",
        help="reference image of the config's test case (repeat for several cases)",
    )
    download.add_argument(
        "--video",
        action="append",
        default=[],
        metavar="VID",
        help="driving video of the config's test case (repeat for several cases)",
    )
    download.add_argument("--force", action="store_true", help="replace an existing --config")
    download.add_argument(
        "--dry-run",
        "--dry_run",
        dest="dry_run",
        action="store_true",
        help="list what would be fetched, with sizes; fetch and write nothing",
    )
    download.add_argument("-v", "--verbose", action="store_true")
    download.set_defaults(func=download_command)


def download_main(argv) -> int:
    """``mimicache download ARGV`` alone (tests and scripts).

    Returns:
        The exit code (0, or 2 with one ``error:`` line).
    """
    parser = argparse.ArgumentParser(prog="mimicache")
    add_download_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["download", *argv])
    return call_command(args.func, args)


def _check_inputs(images: list[str], videos: list[str]) -> None:
    from mimicache.storage.fetch import input_url

    for flag, values in (("--ref_image", images), ("--video", videos)):
        for value in values:
            if input_url(value) is None and not Path(value).expanduser().is_file():
                raise ConfigError(f"{flag} {value}: no such file")


def download_command(args: argparse.Namespace) -> int:
    """Plan, fetch and verify the weights, then write the config; print what happened.

    Returns:
        0 (problems raise a MimicacheError, which the CLI prints and exits 2 on).

    Raises:
        ConfigError: a bad --ref_image / --video, or --config exists without --force.
        ModelLoadError: the hub refused or could not be reached, or a file is damaged.
    """
    from mimicache.config.hub_weights import (
        VerifiedFiles,
        check_config_target,
        example_cases,
        fetch_file,
        plan_weights,
        real_config_text,
        write_config,
    )

    setup_logging(args.verbose)
    # huggingface_hub 2.x speaks through httpx2, which logs every request at INFO
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    config = Path(args.config)
    cases = example_cases(args.ref_image, args.video)
    _check_inputs(args.ref_image, args.video)
    if not args.dry_run:
        check_config_target(config, args.force)  # before gigabytes are fetched
    plan = plan_weights(Path(args.dir))
    if args.dry_run:
        print(dry_run_text(plan, config, args.force))
        return 0
    print(f"{plural(len(plan.files), 'file')}, {format_size(plan.size)}, into {plan.folder}/")
    memo = VerifiedFiles(plan.folder)
    fetched = []
    for file in plan.files:
        size = format_size(file.size or 0)
        missing = not file.present()
        if missing:  # announced first: without a terminal there is no bar while it downloads
            print(f"  fetching {size:>9}  {file.label}", flush=True)
        got = fetch_file(file, memo)
        if got:
            fetched.append(file)
        if not got or not missing:
            print(f"  {'fetched' if got else 'have':<8} {size:>9}  {file.label}", flush=True)
    write_config(config, real_config_text(plan, cases), args.force)
    print(summary_text(plan, fetched, config, placeholders=not (args.ref_image and args.video)))
    return 0


def dry_run_text(plan, config: Path, force: bool) -> str:
    """The ``--dry-run`` report.

    Args:
        plan: the planned files (``plan_weights``).
        config: the config that would be written.
        force: whether an existing config would be replaced.

    Returns:
        A table of the files (have or fetch, size, file, where it goes), the total to fetch, a
        note for a gated repository without a token, and what happens to the config.
    """
    from huggingface_hub import get_token

    rows = [("", "size", "file", "to")]
    missing = [f for f in plan.files if not f.present()]
    for file in plan.files:
        status = "have" if file not in missing else "fetch"
        rows.append((status, format_size(file.size or 0), file.label, str(file.path)))
    lines = [
        text_table(rows),
        "",
        f"would fetch {plural(len(missing), 'file')}, "
        f"{format_size(sum(f.size or 0 for f in missing))} "
        f"({plural(len(plan.files), 'file')}, {format_size(plan.size)} in all)",
    ]
    for repo in plan.gated:
        if get_token() is None and any(f.repo_id == repo for f in missing):
            lines.append(
                f"note: {repo} is gated and no hub token is set: accept its licence at "
                f"https://huggingface.co/{repo}, then `hf auth login`"
            )
    if config.exists() and not force:
        lines.append(f"{config} exists: pass --force to replace it, or --config OTHER.yaml")
    else:
        lines.append(f"would write {config}")
    return "\n".join(lines)


def summary_text(plan, fetched: list, config: Path, *, placeholders: bool) -> str:
    """The closing report.

    Args:
        plan: the planned files.
        fetched: those whose bytes were downloaded by this run.
        config: the config written.
        placeholders: whether its test case still has placeholder inputs.

    Returns:
        What was fetched, the total size, the config, what to fill in, the next commands.
    """
    done = len(plan.files) - len(fetched)
    lines = [
        "",
        f"fetched {plural(len(fetched), 'file')} ({format_size(sum(f.size or 0 for f in fetched))})"
        f", {done} already complete; {plan.folder}/ holds {format_size(plan.size)} of weights",
        f"wrote {config}",
    ]
    if placeholders:
        lines.append(
            f"before running, set ref_image_path and ref_video_path of test_case in {config} "
            "to your reference image and driving video (or write the config again with "
            "--ref_image IMG --video VID --force)"
        )
    quoted = shlex.quote(str(config))
    lines += [
        "next:",
        f"  mimicache doctor --inference_config {quoted}",
        f"  mimicache run --inference_config {quoted}",
    ]
    return "\n".join(lines)
