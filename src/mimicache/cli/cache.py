"""``mimicache cache ls | stats | verify | prune | clear``: look at and tidy the feature cache.

``add_cache_commands(subparsers)`` registers the ``cache`` sub-command on an argparse
sub-parser set; ``run_cache_command(args)`` runs the parsed command and returns an exit code
(0 ok, 1 problems left / files that could not be removed / aborted, 2 usage error or
refusal). Only parsing and printing live here; the work is the cache's ``CacheAdmin`` (a
local root's store, or an object-storage root's ``RemoteCache``), from ``open_admin``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from mimicache.cache.admin import CacheAdmin
from mimicache.cache.layout import Layout, check_stage
from mimicache.cache.removal import Removal, RemovalFailure
from mimicache.cache.roots import open_admin
from mimicache.cli.console import flag_words
from mimicache.cli.fmt import plural, size_arg, text_table
from mimicache.engine.platform import describe
from mimicache.engine.spec import DEFAULT_CACHE_DIR
from mimicache.engine.stage_names import STAGES
from mimicache.errors import CacheError, MimicacheError
from mimicache.storage.objects import remote_url
from mimicache.storage.sizes import format_size

__all__ = ["DEFAULT_CACHE_DIR", "add_cache_commands", "main", "run_cache_command"]


def _days_arg(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of days {text!r}") from None
    if not days >= 0:
        raise argparse.ArgumentTypeError(f"--older-than must be >= 0 days (got {text!r})")
    return days


def add_cache_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``cache`` (with ls, stats, verify, prune, clear) on ``subparsers``.

    Every action takes ``--feature_cache_dir`` (default ``cache/features``). The parsed
    namespace has ``cache_command`` and ``func=run_cache_command``.
    """
    cache = subparsers.add_parser(
        "cache",
        help="inspect and tidy the feature cache",
        description="Inspect and tidy the feature cache (--feature_cache_dir).",
    )
    cache.set_defaults(func=run_cache_command, cache_command=None)
    actions = cache.add_subparsers(dest="cache_command", metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--feature_cache_dir",
            "--feature-cache-dir",
            dest="feature_cache_dir",
            default=DEFAULT_CACHE_DIR,
            help=f"cache directory, or an object-storage URL such as s3://bucket/prefix "
            f"(default: {DEFAULT_CACHE_DIR})",
        )
        p.set_defaults(func=run_cache_command, cache_command=name)
        return p

    p = action("ls", "list entries: stage, subject/inputs, size, created, last used")
    p.add_argument("--stage", help="only this stage")
    action("stats", "entries and bytes per stage, and the total")
    p = action("verify", "check every entry's checksum and the index")
    p.add_argument("--fix", action="store_true", help="remove bad entries, repair the index")
    p = action(
        "prune",
        "remove stale temp files, then entries unused for --older-than days, then least "
        "recently used entries until the cache fits --max-size",
    )
    p.add_argument(
        "--max-size",
        "--max_size",
        dest="max_size",
        type=size_arg,
        metavar="SIZE",
        help="keep at most this much, e.g. 10GB, 500M, 1.5GiB",
    )
    p.add_argument(
        "--older-than",
        "--older_than",
        dest="older_than",
        type=_days_arg,
        metavar="DAYS",
        help="remove entries not used for more than DAYS days",
    )
    p.add_argument(
        "--dry-run",
        "--dry_run",
        dest="dry_run",
        action="store_true",
        help="only show what would be removed",
    )
    p = action("clear", "remove all entries (or one stage's)")
    p.add_argument("--stage", help="only this stage")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    return cache


# --------------------------------------------------------------------------- output helpers


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _shorten(text: str, width: int = 60) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def _summary(removals: list[Removal]) -> str:
    parts = []
    kinds = (("entry", "entry"), ("temp", "temp file"), ("orphan", "stray file"))
    for kind, word in (*kinds, ("old", "old-format folder")):
        items = [r for r in removals if r.kind == kind]
        if items:
            word = "entries" if kind == "entry" and len(items) != 1 else word
            count = f"{len(items)} {word}" if kind == "entry" else plural(len(items), word)
            parts.append(f"{count} ({format_size(sum(r.size for r in items))})")
    return ", ".join(parts) if parts else "nothing"


def _print_failures(failed: list[RemovalFailure], err: TextIO) -> None:
    """One line per distinct error: what could not be removed, why, and one example."""
    by_error: dict[str, list[RemovalFailure]] = {}
    for f in failed:
        by_error.setdefault(f.error, []).append(f)
    for error, items in by_error.items():
        print(
            f"Cannot remove {_summary([f.removal for f in items])}: {error} "
            f"(first: {items[0].removal.path})",
            file=err,
        )


# --------------------------------------------------------------------------- the actions


def _ls(store: CacheAdmin, args: argparse.Namespace, out: TextIO) -> int:
    entries = store.entries(args.stage)
    if not entries:
        where = f" for stage {args.stage!r}" if args.stage else ""
        print(f"No entries{where} in {store.root}", file=out)
        return 0
    rows = [("STAGE", "KEY", "SUBJECT / INPUTS", "PLATFORM", "SIZE", "CREATED", "LAST USED")]
    for e in entries:
        what = e.subject or ",".join(f"{k}={v}" for k, v in sorted(e.inputs.items())) or "-"
        rows.append(
            (
                e.stage,
                e.key[:12],
                _shorten(str(what)),
                describe(e.platform()),
                format_size(e.size),
                _when(e.created),
                _when(e.last_used),
            )
        )
    print(text_table(rows, right=(4,)), file=out)
    total = sum(e.size for e in entries)
    noun = "entry" if len(entries) == 1 else "entries"
    print(f"{len(entries)} {noun}, {format_size(total)} in {store.root}", file=out)
    return 0


def _stats(store: CacheAdmin, args: argparse.Namespace, out: TextIO) -> int:
    stats = store.stats()
    rows = [("STAGE", "ENTRIES", "SIZE", "BYTES")]
    for stage in sorted(stats):
        count, size = stats[stage]
        rows.append((stage, str(count), format_size(size), str(size)))
    count = sum(c for c, _ in stats.values())
    size = sum(s for _, s in stats.values())
    rows.append(("TOTAL", str(count), format_size(size), str(size)))
    print(text_table(rows, right=(1, 2, 3)), file=out)
    print(f"Feature cache at {store.root}", file=out)
    return 0


def _verify(store: CacheAdmin, args: argparse.Namespace, out: TextIO) -> int:
    report = store.verify(fix=args.fix)
    for p in report.problems:
        where = store.relative(p.path)
        state = " [fixed]" if p.fixed else ""
        print(f"{p.kind}: {where}: {p.detail}{state}", file=out)
    errors, leftovers = report.errors, report.leftovers
    noun = "entry" if report.good == 1 else "entries"
    left = [p for p in errors if not p.fixed]
    extra = ""
    if leftovers:
        removed = sum(p.fixed for p in leftovers)
        extra = f"; {plural(len(leftovers), 'leftover temp file')} ({removed} removed)"
    if not errors:
        print(f"{report.good} {noun} OK in {store.root}{extra}", file=out)
        return 0
    fixed = len(errors) - len(left)
    print(
        f"{plural(len(errors), 'problem')} ({fixed} fixed); {report.good} good {noun} "
        f"in {store.root}{extra}",
        file=out,
    )
    if left:
        print("Run `mimicache cache verify --fix` to repair.", file=out)
        return 1
    return 0


def _prune(store: CacheAdmin, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    plan = store.plan_prune(args.max_size, args.older_than)
    if args.dry_run:
        removals, failed = plan.removals, []
    else:
        result = plan.execute()
        removals, failed = result.removed, result.failed
    verb = "Would remove" if args.dry_run else "Removed"
    for r in removals:
        what = f"{r.stage} {r.key[:12]}" if r.kind == "entry" and r.key else str(r.path)
        print(f"{verb} {what} ({format_size(r.size)}): {r.reason}", file=out)
    _print_failures(failed, err)
    stats = store.stats()
    count = sum(c for c, _ in stats.values())
    size = sum(s for _, s in stats.values())
    if args.dry_run:
        size -= sum(r.size for r in removals if r.kind == "entry")
        count -= sum(1 for r in removals if r.kind == "entry")
    noun = "entry" if count == 1 else "entries"
    print(
        f"{verb} {_summary(removals)}; {count} {noun} ({format_size(size)}) "
        f"{'would remain' if args.dry_run else 'remain'} in {store.root}",
        file=out,
    )
    return 1 if failed else 0


def _clear(
    store: CacheAdmin,
    args: argparse.Namespace,
    out: TextIO,
    stdin: TextIO,
    err: TextIO,
) -> int:
    plan = store.plan_clear(args.stage)
    entries = [r for r in plan.removals if r.kind == "entry"]
    what = f"stage {args.stage!r} of " if args.stage else ""
    if not args.yes:
        size = format_size(sum(r.size for r in entries))
        noun = "entry" if len(entries) == 1 else "entries"
        question = (
            f"Remove {len(entries)} {noun} ({size}) from {what}the feature cache at {store.root}?"
        )
        if not (hasattr(stdin, "isatty") and stdin.isatty()):
            print(
                f"Refusing to clear {what}the feature cache at {store.root} without --yes "
                f"(no terminal to confirm on): {len(entries)} {noun}, {size}.",
                file=err,
            )
            return 2
        print(f"{question} [y/N] ", end="", file=out, flush=True)
        answer = stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            print("Aborted; nothing removed.", file=out)
            return 1
    result = plan.execute()
    print(f"Removed {_summary(result.removed)} from {what}{store.root}", file=out)
    _print_failures(result.failed, err)
    return 1 if result.failed else 0


def _check_stage_arg(stage: str | None, stage_names: Sequence[str]) -> None:
    """Reject a ``--stage`` that names no stage (a typo would otherwise match nothing)."""
    if stage is None:
        return
    check_stage(stage)
    known = sorted(set(STAGES) | set(stage_names))
    if stage not in known:
        raise CacheError(f"unknown stage {stage!r} (--stage); the stages are: {', '.join(known)}")


def _no_cache(action: str, root: Path, out: TextIO) -> int:
    """A missing root: an empty report naming the path (and nothing created)."""
    if action == "stats":
        rows = [("STAGE", "ENTRIES", "SIZE", "BYTES"), ("TOTAL", "0", format_size(0), "0")]
        print(text_table(rows, right=(1, 2, 3)), file=out)
    print(f"No feature cache at {root.absolute()}", file=out)
    return 0


def run_cache_command(
    args: argparse.Namespace,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Run the ``cache`` action in ``args``; returns the exit code."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    action = getattr(args, "cache_command", None)
    if action is None:
        print("usage: mimicache cache {ls,stats,verify,prune,clear} ...", file=err)
        return 2
    raw = getattr(args, "feature_cache_dir", DEFAULT_CACHE_DIR)
    local = remote_url(raw) is None
    root = Path(raw).expanduser()
    if local and root.exists() and not root.is_dir():
        print(f"error: {root} is not a directory (--feature_cache_dir)", file=err)
        return 2
    if local and not root.is_dir():
        if getattr(args, "stage", None) is not None:
            try:
                _check_stage_arg(args.stage, Layout(root.absolute()).stage_names())
            except MimicacheError as exc:
                print(f"error: {flag_words(str(exc))}", file=err)
                return 2
        return _no_cache(action, root, out)
    # Admin commands never create entries; write access is needed only to change things.
    writes = action in ("prune", "clear") or (action == "verify" and args.fix)
    try:
        with open_admin(raw, writes=writes) as store:
            if getattr(args, "stage", None) is not None:
                _check_stage_arg(args.stage, store.stage_names())
            return _dispatch(action, store, args, out, err, stdin)
    except MimicacheError as exc:
        where = "" if local else " (--feature_cache_dir)"
        print(f"error: {flag_words(str(exc))}{where}", file=err)
        return 2


def _dispatch(
    action: str,
    store: CacheAdmin,
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
    stdin: TextIO | None,
) -> int:
    if action == "ls":
        return _ls(store, args, out)
    if action == "stats":
        return _stats(store, args, out)
    if action == "verify":
        return _verify(store, args, out)
    if action == "prune":
        return _prune(store, args, out, err)
    if action == "clear":
        return _clear(store, args, out, stdin or sys.stdin, err)
    print(f"error: unknown cache action {action!r}", file=err)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mimicache.cache.commands ACTION ...`` (the same as ``mimicache cache``)."""
    parser = argparse.ArgumentParser(prog="mimicache")
    add_cache_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["cache", *(sys.argv[1:] if argv is None else argv)])
    return run_cache_command(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
