"""``mimicache pose``: preview the aligned skeleton before any GPU time is spent.

Writes ``{output}.mp4`` (driving frame | skeleton over the reference | skeleton alone, one
row per pose frame the pipeline would get), ``{output}.png`` (a contact sheet of every n-th
frame), ``{output}.log`` and ``{output}.report.html``. Only DWPose is loaded; the pose stages
go through the feature cache with the same keys as ``run``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mimicache.batch import check_log_file, check_output_folder
from mimicache.batch.outputs.publish import candidates
from mimicache.batch.reporting.html import report_path, write_report
from mimicache.batch.reporting.page import ReportRow
from mimicache.cli.console import setup_logging
from mimicache.cli.engine_flags import add_engine_flags, engine_spec
from mimicache.cli.extras import check_run_extras, require
from mimicache.config import (
    DEFAULT_DWPOSE_DET_PATH,
    DEFAULT_DWPOSE_POSE_PATH,
    InferenceConfig,
    TestCase,
    case_to_dict,
    check_dwpose_files,
    load_config,
)
from mimicache.errors import ConfigError, MimicacheError
from mimicache.media import write_video
from mimicache.storage.files import atomic_write

if TYPE_CHECKING:
    from mimicache.cache.store import FeatureStore
    from mimicache.engine import MimicMotion

logger = logging.getLogger(__name__)

# The case values a preview takes when neither a flag nor a config gives them: a run's.
DEFAULTS = TestCase(ref_video_path=Path(), ref_image_path=Path())


HELP = "preview the aligned skeleton of a reference image and a driving video"
DESCRIPTION = """\
Preview the pose frames a run would use (only DWPose is loaded): the driving frame, the skeleton
over the reference image and the skeleton alone, side by side, as an mp4, plus a PNG contact
sheet and report.html. Shares the feature cache with `run`: a preview makes a later run's pose
stages cache hits.
"""


def add_pose_command(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("pose", help=HELP, description=DESCRIPTION)
    io = parser.add_argument_group("inputs and outputs")
    io.add_argument("--ref_image", help="the reference image (default: the config's test case's)")
    io.add_argument("--video", help="the driving video (default: the config's test case's)")
    io.add_argument(
        "--output",
        help="the preview mp4; the contact sheet (.png), log (.log) and report (.report.html) "
        "go beside it (default: outputs/{video name}_pose.mp4)",
    )
    io.add_argument("--log_file", help="log file (default: beside the output, .log)")
    io.add_argument(
        "--inference_config",
        help="take the reference image, the video, resolution, sample_stride, fps, the DWPose "
        "model paths and the pose.* keys (retarget, person) from this config, as `run` does, "
        "so a later run on it hits every pose entry; flags override (default: none; the "
        "DWPose files under models/DWPose/)",
    )
    io.add_argument(
        "--case",
        type=int,
        default=0,
        metavar="N",
        help="which test case of --inference_config, counted from 0 (default: %(default)s)",
    )
    io.add_argument("--dwpose_det_path", help=f"detector ONNX (default: {DEFAULT_DWPOSE_DET_PATH})")
    io.add_argument("--dwpose_pose_path", help=f"pose ONNX (default: {DEFAULT_DWPOSE_POSE_PATH})")
    io.add_argument(
        "--export_pose",
        metavar="DIR",
        help="also write the driving video's and the target's keypoints as .pose files "
        "(pose-format) into DIR",
    )
    gen = parser.add_argument_group("pose frames (as in the run's test case)")
    gen.add_argument(
        "--resolution", type=int, help=f"(default: the config's, else {DEFAULTS.resolution})"
    )
    gen.add_argument(
        "--sample_stride", type=int, help=f"(default: the config's, else {DEFAULTS.sample_stride})"
    )
    gen.add_argument(
        "--fps", type=int, help=f"preview frame rate (default: the config's, else {DEFAULTS.fps})"
    )
    add_engine_flags(
        gen,
        ("pose_retarget", "person", "device", "dwpose_backend"),
        help_values={"pose_retarget": "published"},
    )
    add_engine_flags(
        parser.add_argument_group("feature cache"),
        ("cache_dir", "cache_enabled", "cache_force_refresh", "cache_platform"),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=pose_command)
    return parser


def pose_command(args: argparse.Namespace) -> int:
    """The preview of one image + video: 0 when written, 1 when the inputs gave no pose
    frames (the report says why), 2 (raised) for usage and setup errors."""
    check_run_extras(args)  # before the output folder, the log file and the models
    if args.export_pose:
        require("pose", "--export_pose")
        check_output_folder(args.export_pose, "--export_pose folder")
    config = _config(args)
    case = preview_case(args, config)
    check_dwpose_files(config.dwpose_det_path, config.dwpose_pose_path, how=_DWPOSE_FLAGS)
    requested = _output_path(args, case)
    check_output_folder(requested.parent)
    output = free_preview_name(requested, claim_log=not args.log_file)
    log_file = check_log_file(args.log_file) if args.log_file else output.with_suffix(".log")

    from mimicache.engine.preview import contact_sheet, pose_preview

    setup_logging(args.verbose, log_file, bars=not args.quiet and sys.stderr.isatty())
    logger.info("log file: %s", log_file)
    if output != requested:
        logger.info("%s is taken (an earlier preview): writing %s", requested, output.name)
    logger.info(
        "preview of %s with %s: resolution %d, sample stride %d%s",
        case.ref_video_path,
        case.ref_image_path,
        case.resolution,
        case.sample_stride,
        f" (test case {args.case} of {args.inference_config})" if args.inference_config else "",
    )
    engine, cache = _pose_engine(args, config)
    parameters = _parameters(case, engine, cache, log_file)
    if args.inference_config:
        parameters["config"] = f"{args.inference_config} (test case {args.case})"
    shown = ("ref_image_path", "ref_video_path", "resolution", "sample_stride", "fps")
    job = ReportRow(
        name=case.ref_video_path.stem,
        status="failed",
        parameters={k: v for k, v in case_to_dict(case).items() if k in shown},
    )
    sheet = output.with_suffix(".png")
    try:
        preview = pose_preview(engine, case, progress=not args.quiet)
        start = time.perf_counter()
        panels = preview.panels()
        write_video(output, panels, preview.fps)
        _save_png(contact_sheet(preview), sheet)
        preview.timings["write"] = time.perf_counter() - start
        exported = _export(args, engine, case, preview, output.stem)
    except MimicacheError as exc:
        logger.error("no preview: %s", exc)
        job.error = str(exc)
        _report(log_file, job, parameters, None)
        return 1
    job.status, job.output, job.frames = "ok", output, panels
    job.timings, job.cache_events = preview.timings, preview.cache_events
    if preview.people is not None:
        job.notes.append(f"people: {preview.people.summary()}")
    hits = sum(bool(getattr(e, "hit", False)) for e in preview.cache_events)
    # a hit of the drawn frames needs no keypoint stage: "1 of 1 needed"
    needed = f"{hits} of {len(preview.cache_events)} needed"
    cached = needed if cache.enabled else "none (cache off)"
    print(
        f"preview: {output} ({preview.num_frames} frames: the reference, then "
        f"{preview.num_frames - 1} sampled driving frames)\ncontact sheet: {sheet}\n"
        f"pose stages from the cache: {cached}; {preview.timings.get('total', 0.0):.2f} s"
    )
    for path in exported:
        print(f"keypoints: {path}")
    _report(log_file, job, parameters, sheet)
    return 0


def _pose_engine(args: argparse.Namespace, config) -> tuple[MimicMotion, FeatureStore]:
    """DWPose only, on the run's cache: a preview fills the entries a run then hits."""
    from mimicache.engine.build import build_pose_engine, resolve

    spec, cache = resolve(engine_spec(args, config))
    return build_pose_engine(spec, cache=cache), cache


def _parameters(case: TestCase, engine, cache, log_file: Path) -> dict:
    """The report's parameter table."""
    return {
        "command": "pose",
        "reference image": case.ref_image_path,
        "driving video": case.ref_video_path,
        "resolution": case.resolution,
        "sample stride": case.sample_stride,
        "pose retarget": engine.pose_retarget,
        "person": engine.person,
        "feature cache": cache.root if cache.enabled else "off",
        "log file": log_file,
    }


def preview_case(args: argparse.Namespace, config: InferenceConfig) -> TestCase:
    """The previewed pair and its pose settings: flag > the config's test case > ``run``'s
    defaults, so the preview's cache keys are the ones a run on the same config uses."""
    flags = {
        "ref_image_path": args.ref_image,
        "ref_video_path": args.video,
        "resolution": args.resolution,
        "sample_stride": args.sample_stride,
        "fps": args.fps,
    }
    if args.inference_config:
        cases = config.test_case
        if not 0 <= args.case < len(cases):
            raise ConfigError(
                f"--case {args.case}: {args.inference_config} has {len(cases)} test case(s); "
                f"pass --case 0 to {len(cases) - 1}"
            )
        return cases[args.case].replace(**flags)
    if args.case:
        raise ConfigError(f"--case {args.case} needs --inference_config (the cases are its)")
    if not (args.ref_image and args.video):
        raise ConfigError(
            "mimicache pose: pass --ref_image and --video, or --inference_config with a test "
            "case that names them"
        )
    return TestCase(ref_video_path=Path(args.video), ref_image_path=Path(args.ref_image)).replace(
        **flags
    )


_DWPOSE_FLAGS = {
    "detector": "--dwpose_det_path (or dwpose.det_model_path in --inference_config)",
    "pose": "--dwpose_pose_path (or dwpose.pose_model_path in --inference_config)",
}


def free_preview_name(requested: Path, *, claim_log: bool) -> Path:
    """The first ``{stem}[_N].mp4`` (as ``run`` names its outputs) whose preview files (mp4,
    contact sheet, report, and the log beside it) are all absent: a preview never replaces
    an earlier one. ``claim_log``: the log beside it is created exclusively, so previews
    started together take different names."""
    for path in candidates(requested.parent, requested.stem):
        log = path.with_suffix(".log")
        files = (path, path.with_suffix(".png"), report_path(log), log)
        if any(p.exists() for p in files):
            continue
        if claim_log:
            try:
                open(log, "x").close()
            except FileExistsError:
                continue
        return path
    raise AssertionError("unreachable: the candidate names never run out")


def _output_path(args: argparse.Namespace, case: TestCase) -> Path:
    if args.output:
        output = Path(args.output)
        return output if output.suffix.lower() == ".mp4" else output.with_suffix(".mp4")
    return Path("outputs") / f"{case.ref_video_path.stem}_pose.mp4"


def _config(args: argparse.Namespace) -> InferenceConfig:
    """The DWPose paths and pose keys: flags > the config (if given) > defaults (the
    DWPose backend flag goes through the engine spec)."""
    if args.inference_config:
        config = load_config(args.inference_config)
    else:
        config = InferenceConfig(base_model_path="", ckpt_path=Path(), test_case=[])
    changes: dict[str, Any] = {}
    if args.dwpose_det_path:
        changes["dwpose_det_path"] = Path(args.dwpose_det_path)
    if args.dwpose_pose_path:
        changes["dwpose_pose_path"] = Path(args.dwpose_pose_path)
    return config.replace(**changes)


def _export(args: argparse.Namespace, engine, case: TestCase, preview, stem: str) -> list[Path]:
    """``--export_pose``: the driving video's and the target's ``.pose`` files."""
    if not args.export_pose:
        return []
    from mimicache.engine.pose_export import export_poses

    size = preview.pose_frames.shape[1:3]
    return export_poses(engine, case, preview.targets, args.export_pose, stem, size=size)


def _save_png(image, path: Path) -> None:
    """Atomic, like the videos: a half-written sheet never replaces a good one."""
    atomic_write(path, lambda fh: image.save(fh, format="PNG"))


def _report(log_file: Path, job: ReportRow, parameters: dict, sheet: Path | None) -> None:
    images = [("Contact sheet", sheet)] if sheet is not None else []
    try:
        path = write_report(
            report_path(log_file),
            [job],
            title=f"mimicache pose: {job.name}",
            parameters=parameters,
            images=images,
        )
    except OSError as exc:
        logger.warning("could not write the report: %s", exc)
        return
    logger.info("report: %s", path)
