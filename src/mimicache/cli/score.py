"""``mimicache score PATH_OR_URL``: score clips that exist (an output folder, its
``results.jsonl`` or an object-storage output root) without generating anything.

Each clip's sidecar gives its inputs, parameters and pose settings; only DWPose and CLIP are
loaded. The scores are appended to ``scores.jsonl`` at the root (sidecars are never
rewritten), with ``score_{timestamp}.log`` and ``score_{timestamp}.report.html`` beside it; a
clip already scored by the same scorer over the same frames is skipped (re-judged, nothing
computed, when the thresholds differ).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mimicache.cli.console import flag_words, setup_logging
from mimicache.cli.engine_flags import add_engine_flags, engine_spec
from mimicache.cli.extras import require
from mimicache.cli.scale import add_scale_arguments, check_executor_flags, executor_settings
from mimicache.errors import ConfigError, InputError

if TYPE_CHECKING:  # loaded when the command runs, not when the CLI starts
    from mimicache.batch.outputs.clips import Clip, ClipSet
    from mimicache.batch.scoring.scorer import ScoreTask
    from mimicache.config import InferenceConfig
    from mimicache.engine.spec import EngineSpec

logger = logging.getLogger(__name__)

_SOURCE = "PATH_OR_URL"


HELP = "score clips that exist (an output folder, results.jsonl or s3:// root)"
DESCRIPTION = """\
Score written clips without generating: pose fidelity per body part against the poses each clip
was made from, identity against the reference, flicker, and a verdict. Reads each clip's sidecar
(inputs, parameters, pose settings) and loads only DWPose and CLIP; appends the scores to
scores.jsonl at the root and writes a log and a report beside it (sidecars are never rewritten).
A clip already scored by the same scorer over the same frames is skipped; with other thresholds
it is re-judged without computing anything.
"""


def add_score_command(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("score", help=HELP, description=DESCRIPTION)
    parser.add_argument(
        "source",
        metavar=_SOURCE,
        help="an output folder (searched with its sub-folders), its results.jsonl, or an "
        "object-storage output root (s3://bucket/prefix)",
    )
    io = parser.add_argument_group("inputs and outputs")
    io.add_argument(
        "--inference_config",
        help="the config whose base model (CLIP) and DWPose files score the clips (default: "
        "the config the clips' sidecars name)",
    )
    io.add_argument(
        "--export_pose",
        metavar="DIR",
        help="also write .pose files (pose-format) into DIR: each clip's driving, target and "
        "output keypoints; scores every frame of every clip, scored before or not",
    )
    io.add_argument(
        "--force", action="store_true", help="score every clip again, even one already scored"
    )
    io.add_argument("--log_file", help="log file (default: score_{timestamp}.log at the root)")
    models = parser.add_argument_group("models")
    add_engine_flags(models, ("float16", "device", "dwpose_backend"))
    scores = parser.add_argument_group("clip scores")
    add_engine_flags(scores, ("score_frames", "score_thresholds"))
    cache = parser.add_argument_group("feature cache")
    add_engine_flags(cache, ("cache_dir", "cache_enabled", "cache_force_refresh", "cache_platform"))
    add_scale_arguments(parser, jobs=False)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=score_command)
    return parser


def score_command(args: argparse.Namespace) -> int:
    """0 when every clip has a score, 1 when some could not be scored (the others were), 2
    (raised) for usage and setup errors."""
    from mimicache.batch import make_timestamp, reserve_log
    from mimicache.batch.outputs.clips import find_clips
    from mimicache.batch.outputs.publish import check_log_file, check_output_folder
    from mimicache.batch.outputs.root import open_output_root
    from mimicache.batch.reporting.results import JsonLines, read_results
    from mimicache.batch.scoring.scores import (
        SCORES_FILE,
        current_scores,
        plan_scores,
        score_row,
    )
    from mimicache.quality.score import SCORER

    _check_flags(args)
    timestamp = make_timestamp()
    found = find_clips(args.source)
    root = open_output_root(found.root, name=_SOURCE)
    if not root.remote:
        check_output_folder(root.folder)
    log_file = (
        check_log_file(args.log_file)
        if args.log_file
        else reserve_log(root.staging, f"score_{timestamp}")
    )
    setup_logging(args.verbose, log_file, bars=not args.quiet and sys.stderr.isatty())
    logger.info("log file: %s", log_file)
    spec = engine_spec(args, _config(args, found), cache_enabled=not args.disable_feature_cache)
    options = _score_options(spec)
    log = JsonLines(root.download(SCORES_FILE), after_write=lambda p: root.upload(p, every=2.0))
    current = current_scores(found.clips, read_results(log.path))
    work = plan_scores(
        found.clips,
        current,
        frames=options.frames,
        thresholds=options.thresholds,
        force=args.force or args.export_pose is not None,  # exporting reads every clip
    )
    logger.info(
        "%d clip(s) in %s: %d to score, %d to re-judge, %d already scored by %s",
        len(found.clips),
        found.root,
        len(work.todo),
        len(work.rejudged),
        len(work.kept),
        SCORER,
    )
    outcome: dict[str, tuple[str, dict[str, Any]]] = {}  # clip key -> (what happened, row)
    for clip, quality in work.rejudged:
        row = score_row(clip, {"status": "rejudged", "quality": quality}, run=timestamp)
        log.append(row)
        outcome[clip.key] = ("re-judged", row)
    for clip, quality in work.kept:
        outcome[clip.key] = ("kept", {"status": "ok", "quality": quality})

    def record(task: ScoreTask, fields: dict[str, Any]) -> None:
        row = score_row(task.clip, fields, run=timestamp)
        log.append(row)
        outcome[task.clip.key] = ("scored" if fields["status"] == "ok" else "failed", row)
        _log_row(task.clip, row)

    _score(args, spec, work.todo, record)
    summary = _summary(found, outcome)
    print(flag_words(summary))
    report = _report(log_file, found, outcome, spec, args)
    left = [p for p in (log.path, report, log_file) if p is not None and not root.upload(p)]
    if left:
        print(f"not uploaded to {root.url}; on this machine: {', '.join(map(str, left))}")
    failed = any(what == "failed" for what, _ in outcome.values()) or found.unusable
    return 1 if failed else 0


def _check_flags(args: argparse.Namespace) -> None:
    """Before the root is touched: the executor's flags, the extras, ``--export_pose``'s
    folder (and every frame scored for it)."""
    from mimicache.batch.outputs.publish import check_output_folder

    check_executor_flags(args)
    if args.executor == "ray":
        require("ray", "--executor ray")
    if args.export_pose:
        require("pose", "--export_pose")
        if args.score_frames not in (None, "all"):
            raise ConfigError(
                "--export_pose writes every frame's keypoints, so it scores every frame: "
                f"drop --score_frames {args.score_frames}"
            )
        args.score_frames = "all"
        check_output_folder(args.export_pose, "--export_pose folder")


def _config(args: argparse.Namespace, found: ClipSet) -> InferenceConfig:
    """``--inference_config``, else the one config the clips name (clips made with configs
    that load other models are scored one config at a time)."""
    from mimicache.config import load_config

    if args.inference_config:
        return load_config(args.inference_config)
    if not found.clips:
        raise InputError(
            f"{args.source}: no finished clip found (no sidecar of a finished job); pass the "
            "--output_dir of a run"
        )
    named = sorted(
        {str(c.record["config_file"]) for c in found.clips if c.record.get("config_file")}
    )
    missing = [n for n in named if not Path(n).is_file()]
    if not named or missing:
        what = (
            f"{missing[0]} (named by the clips) no longer exists"
            if missing
            else ("the clips' sidecars name no config")
        )
        raise ConfigError(
            f"{what}; pass --inference_config with the config the clips were made with"
        )
    configs = [load_config(n) for n in named]
    models = {(c.base_model_path, c.dwpose_det_path, c.dwpose_pose_path) for c in configs}
    if len(models) > 1:
        raise ConfigError(
            f"the clips were made with {len(named)} configs that load other models "
            f"({', '.join(named)}); score them one config at a time with --inference_config"
        )
    return configs[0]


def _score_options(spec: EngineSpec):
    from mimicache.engine.build import engine_settings

    return engine_settings(spec.replace(score=True)).score


def _score(args: argparse.Namespace, spec: EngineSpec, clips: list[Clip], record) -> None:
    from mimicache.batch.scoring.runner import score_clips
    from mimicache.batch.scoring.scorer import ScoreTask

    tasks = [ScoreTask(clip, args.export_pose) for clip in clips]
    score_clips(
        tasks,
        spec.replace(score=True, verbose=args.verbose),
        executor=args.executor,
        settings=executor_settings(args),
        on_row=record,
    )


def _log_row(clip: Clip, row: dict[str, Any]) -> None:
    if row["status"] != "ok":
        logger.error("%s: no score: %s", clip.key, row.get("error"))
        return
    quality = row["quality"]
    reasons = quality.get("reasons") or []
    logger.info(
        "%s: %s%s (%.2f s)",
        clip.key,
        quality.get("verdict"),
        f": {'; '.join(reasons)}" if reasons else "",
        row.get("timings", {}).get("total", 0.0),
    )


def _summary(found: ClipSet, outcome: dict[str, tuple[str, dict[str, Any]]]) -> str:
    from mimicache.batch.reporting.report import text_table
    from mimicache.quality.score import SCORER

    rows = [("#", "clip", "score", "quality", "seconds", "first reason / error")]
    for number, clip in enumerate(found.clips, start=1):
        what, row = outcome.get(clip.key, ("failed", {"error": "not scored"}))
        quality = row.get("quality") or {}
        reasons = quality.get("reasons") or []
        seconds = row.get("timings", {}).get("total")
        detail = row.get("error") or (reasons[0] if reasons else "")
        rows.append(
            (
                str(number),
                clip.key,
                what,
                quality.get("verdict", "-"),
                "-" if seconds is None else f"{seconds:.2f}",
                detail if len(detail) <= 80 else detail[:77] + "...",
            )
        )
    counts = {
        w: sum(1 for x, _ in outcome.values() if x == w)
        for w in ("scored", "re-judged", "kept", "failed")
    }
    suspect = sum(
        1 for _, r in outcome.values() if (r.get("quality") or {}).get("verdict") == "suspect"
    )
    line = (
        f"{len(found.clips)} clip(s): {counts['scored']} scored, {counts['re-judged']} re-judged, "
        f"{counts['kept']} kept (already scored by {SCORER}), {counts['failed']} failed; "
        f"{suspect} suspect"
    )
    unusable = [f"{where}: {why}" for where, why in found.unusable]
    parts = [text_table(rows, right=(0, 4)), line] if found.clips else [line]
    if unusable:
        parts.append("not clips:\n  " + "\n  ".join(unusable))
    return "\n".join(parts)


def _report(
    log_file: Path,
    found: ClipSet,
    outcome: dict[str, tuple[str, dict[str, Any]]],
    spec: EngineSpec,
    args: argparse.Namespace,
) -> Path | None:
    from mimicache.batch.reporting.html import report_path, write_report
    from mimicache.batch.reporting.page import ReportRow
    from mimicache.quality.score import SCORER

    rows = []
    for clip in found.clips:
        what, row = outcome.get(clip.key, ("failed", {"error": "not scored"}))
        parameters = dict(clip.record.get("parameters") or {})
        rows.append(
            ReportRow(
                name=clip.key,
                status="failed" if what == "failed" else "ok",
                output=Path(clip.video),
                timings=dict(row.get("timings") or {}),
                error=row.get("error"),
                parameters=parameters,
                notes=[f"score: {what}"],
                quality=row.get("quality"),
            )
        )
    parameters = {
        "command": "score",
        "source": args.source,
        "scorer": SCORER,
        "config": spec.config.source_path,
        "score frames": args.score_frames or "auto",
        "feature cache": spec.cache_dir if spec.cache_enabled else "off",
        "executor": args.executor,
    }
    try:
        path = write_report(
            report_path(log_file),
            rows,
            title=f"mimicache score: {len(found.clips)} clip(s)",
            parameters=parameters,
        )
    except OSError as exc:
        logger.warning("could not write the report: %s", exc)
        return None
    logger.info("report: %s", path)
    return path
