"""The plan of a run: jobs = test cases x driving videos, each with the output name planned
for it (``{video_stem}_{timestamp}[_{tag}][_N].mp4``). Pure file-system reads; nothing is
written and no model is loaded."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from mimicache.batch.job import Job
from mimicache.batch.outputs.publish import candidates, fit_stem, in_use
from mimicache.config import InferenceConfig, TestCase
from mimicache.errors import InputError, setting
from mimicache.media import link_fault

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi")
TIMESTAMP_FORMAT = "%Y%m%d%H%M%S"


def make_timestamp(now: datetime | None = None) -> str:
    """``YYYYmmddHHMMSS`` of ``now`` (default: the local time now), as the original scripts name
    their outputs."""
    return (now or datetime.now()).strftime(TIMESTAMP_FORMAT)


def list_videos(folder: str | Path) -> list[Path]:
    """The driving videos directly inside ``folder``, sorted by name.

    Extensions in ``VIDEO_EXTENSIONS`` (any case); hidden files (leading dot) and
    sub-folders are skipped. A broken or looping symbolic link with a video name is listed:
    its job fails saying so, where skipping it would lose a video without a word.
    ``InputError`` if the folder is missing or holds no video.
    """
    path = Path(folder)
    if not path.exists():
        raise InputError(f"{setting('batch_folder', path)} does not exist; pass a folder of videos")
    if not path.is_dir():
        raise InputError(
            f"{setting('batch_folder', path)} is not a folder; pass a folder of videos"
        )
    videos = [
        entry
        for entry in path.iterdir()
        if not entry.name.startswith(".")
        and entry.suffix.lower() in VIDEO_EXTENSIONS
        and (entry.is_file() or link_fault(entry) is not None)
    ]
    if not videos:
        raise InputError(
            f"batch folder {path} holds no video file ({', '.join(VIDEO_EXTENSIONS)}, any "
            "case; hidden files are skipped)"
        )
    return sorted(videos, key=lambda p: p.name)


def plan_jobs(
    config: InferenceConfig,
    *,
    batch_folder: str | Path | None,
    output_dir: str | Path,
    timestamp: str,
    tag: str = "",
) -> list[Job]:
    """The jobs of one run, in order.

    Without ``batch_folder``: every test case as written, output
    ``{output_dir}/{video_stem}_{timestamp}.mp4``. With it: every test case x every video of
    the folder (case-major; the case's ``ref_video_path`` replaced by the video), output
    ``{output_dir}/{basename(batch_folder)}/{video_stem}_{timestamp}.mp4``. ``tag`` (see
    ``override_tag``) is appended to the stem as ``_{tag}``. A name that exists on disk (mp4 or
    its json sidecar) or is already planned gets ``_1``, ``_2``... The caller passes
    ``config.batch_video_folder`` when the command line gave no folder.
    """
    out = Path(output_dir)
    pairs: list[tuple[int, TestCase]] = []
    if batch_folder is None:
        pairs = list(enumerate(config.test_case))
        target = out
    else:
        folder = Path(batch_folder)
        videos = list_videos(folder)
        name = folder.resolve().name if folder.name in ("", ".", "..") else folder.name
        target = out / name
        for case_index, case in enumerate(config.test_case):
            pairs += [(case_index, case.replace(ref_video_path=video)) for video in videos]

    taken: set[Path] = set()
    jobs = []
    suffix = f"_{tag}" if tag else ""
    for index, (case_index, case) in enumerate(pairs):
        # A long video name is shortened here, before any work, not when its name is claimed.
        stem = fit_stem(case.ref_video_path.stem, f"_{timestamp}{suffix}")
        output = next(p for p in candidates(target, stem) if p not in taken and not in_use(p))
        taken.add(output)
        jobs.append(Job(index, case_index, case, case.ref_video_path, output, stem))
    return jobs


# The name part of each value a command line or a sweep sets: "seed1_steps8_g1.5_lcm".
_TAG_LABELS = {
    "seed": "seed",
    "num_inference_steps": "steps",
    "guidance_scale": "g",
    "noise_aug_strength": "aug",
    "resolution": "res",
    "num_frames": "tile",
    "frames_overlap": "overlap",
    "sample_stride": "stride",
    "fps": "fps",
    "scheduler": "",
    "speed": "",
    "pose_retarget": "",
    "person": "person",
    "decode_chunk_size": "dchunk",
    "lcm_num_train_timesteps": "lcmT",
}
_TAG_WORDS = {"AnimateLCM_SVD": "lcm", "EulerDiscreteScheduler": "euler"}


def override_tag(overrides: dict[str, Any]) -> str:
    """A name part for the values a command line overrode or a sweep variant sets, so runs of
    a sweep that start in the same second get names that tell them apart: ``{"seed": 1,
    "num_inference_steps": 8}`` -> ``"seed1_steps8"``. ``None`` values are skipped; a
    scheduler setting is named by its flag (``scheduler_s_noise0.5``); an unknown key is an
    error."""
    parts = []
    for key, value in overrides.items():
        if value is None:
            continue
        if key in _TAG_LABELS:
            label = _TAG_LABELS[key]
        elif key.startswith("scheduler_"):
            label = key
        else:
            raise ValueError(f"no name label for override {key!r}")
        text = _TAG_WORDS.get(value, value) if isinstance(value, str) else value
        if isinstance(value, bool):
            text = "on" if value else "off"
        parts.append(f"{label}{text}")
    return "_".join(parts)


def shard_jobs(jobs: Sequence[Job], shard: int, shards: int) -> list[Job]:
    """Shard ``shard`` of ``shards`` (1-based, ``--shard K/N``): the jobs whose plan index is
    ``shard - 1`` modulo ``shards``. The plan is the same for the same config and folder, so
    every process of a job array gets a fixed share, each job in exactly one shard, and the
    shards differ by at most one job (round robin keeps the cases of a sweep spread out)."""
    if not 1 <= shard <= shards:
        raise ValueError(f"shard {shard}/{shards}: K must be between 1 and N")
    return [job for job in jobs if job.index % shards == shard - 1]
