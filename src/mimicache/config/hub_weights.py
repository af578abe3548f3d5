"""The weight files a real run needs: listed on the hub, fetched into a folder, verified, and
the config that points at them (what ``mimicache download`` does).

Under ``folder`` (``models/`` by default, so the default config paths find them)::

    stable-video-diffusion-img2vid-xt-1-1/   the base model's inference files, diffusers layout
    MimicMotion_1-1.pth
    DWPose/yolox_l.onnx, DWPose/dw-ll_ucoco_384.onnx

Each repository is listed once (``HfApi.model_info(files_metadata=True)``: its commit, each
file's size, the sha256 of LFS files and the git blob id of the others); each file is then
fetched at that commit by ``hf_hub_download(local_dir=...)``, and checked against the listing:
size, then sha256 (LFS) or git blob id. A file already complete at that commit is skipped
without a request (huggingface_hub's metadata under ``<folder>/.cache/huggingface``), and a
checked file is not read again while its size, mtime and inode hold
(``<folder>/.cache/mimicache/verified.json``). huggingface_hub resumes a transfer that a
network error cuts (a Range request, up to 5 tries); a run that is stopped starts its unfinished
file over (huggingface_hub 2.x discards partial files) and keeps every finished one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from mimicache.config.fields import (
    _PATH_FIELDS,
    DEFAULT_DWPOSE_DET_PATH,
    DEFAULT_DWPOSE_POSE_PATH,
    DWPOSE_HF_REPO,
)
from mimicache.config.hub import (
    BASE_MODEL_PATTERNS,
    BASE_MODEL_REPO,
    CHECKPOINT_FILE,
    CHECKPOINT_REPO,
    hub_error,
)
from mimicache.config.schema import TestCase
from mimicache.errors import ConfigError, ModelLoadError, setting
from mimicache.storage.digests import file_state
from mimicache.storage.files import atomic_write

PLACEHOLDER_IMAGE = "path/to/reference_image.png"
PLACEHOLDER_VIDEO = "path/to/driving_video.mp4"
_BASE_FOLDER = BASE_MODEL_REPO.split("/")[1]
# what resolve_base_model needs of a base folder besides the two weight files
_BASE_REQUIRED = ("unet/config.json", "scheduler/scheduler_config.json")
_CHUNK = 1 << 20
_RETRY = "run `mimicache download` again (finished files are kept)"


def base_model_files(names: list[str]) -> list[str]:
    """The files of a base model repository that inference reads, fp16 weights preferred.

    Args:
        names: every file of the repository (paths inside it).

    Returns:
        The names matching ``BASE_MODEL_PATTERNS``, without a full-precision weight file whose
        ``.fp16`` variant is there (the published loader reads the fp16 variant), sorted.
    """
    chosen = {n for n in names if any(fnmatch.fnmatch(n, p) for p in BASE_MODEL_PATTERNS)}
    return sorted(
        n
        for n in chosen
        if not (
            n.endswith(".safetensors") and n[: -len(".safetensors")] + ".fp16.safetensors" in chosen
        )
    )


def _base_selection(repo_id: str, commit: str, names: list[str]) -> list[str]:
    chosen = base_model_files(names)
    lacking = [f for f in _BASE_REQUIRED if f not in chosen]
    lacking += [
        f"{part}/ weights"
        for part in ("vae", "image_encoder")
        if not any(n.startswith(f"{part}/") and n.endswith(".safetensors") for n in chosen)
    ]
    if lacking:
        raise ModelLoadError(
            f"{repo_id} at commit {commit[:8]} lacks {', '.join(lacking)}: it is not a Stable "
            "Video Diffusion repository in diffusers layout"
        )
    return chosen


def _named(wanted: tuple[str, ...]):
    def select(repo_id: str, commit: str, names: list[str]) -> list[str]:
        missing = [n for n in wanted if n not in names]
        if missing:
            raise ModelLoadError(
                f"{repo_id} at commit {commit[:8]} has no {', '.join(missing)} "
                f"(see https://huggingface.co/{repo_id}/tree/main)"
            )
        return list(wanted)

    return select


# (repository, folder under the download folder, which of its files)
_REPOS = (
    (BASE_MODEL_REPO, _BASE_FOLDER, _base_selection),
    (CHECKPOINT_REPO, ".", _named((CHECKPOINT_FILE,))),
    (
        DWPOSE_HF_REPO,
        DEFAULT_DWPOSE_DET_PATH.parent.name,
        _named((DEFAULT_DWPOSE_DET_PATH.name, DEFAULT_DWPOSE_POSE_PATH.name)),
    ),
)


@dataclass(frozen=True)
class WeightFile:
    """One file to fetch: where it is on the hub, what the hub says it is, where it goes."""

    repo_id: str
    filename: str
    commit: str
    size: int | None
    sha256: str | None  # LFS files
    blob_id: str | None  # git blob id of the other files
    folder: Path  # the local folder the repository's files go to

    @property
    def path(self) -> Path:
        """Where the file goes: the repository's path under its local folder."""
        return self.folder / PurePosixPath(self.filename)

    @property
    def label(self) -> str:
        """``OWNER/REPO/PATH``, as messages name the file."""
        return f"{self.repo_id}/{self.filename}"

    def present(self) -> bool:
        """Whether a file of the listed size is in place (no hashing: for listings)."""
        return self.path.is_file() and self.size in (None, self.path.stat().st_size)


@dataclass(frozen=True)
class WeightsPlan:
    """What a download fetches, and where the config finds it (paths as ``folder`` reads)."""

    folder: Path
    files: tuple[WeightFile, ...]
    gated: tuple[str, ...]  # gated repositories among them

    @property
    def base_model(self) -> Path:
        """The base model's folder (``base_model_path``)."""
        return self.folder / _BASE_FOLDER

    @property
    def checkpoint(self) -> Path:
        """The MimicMotion checkpoint (``ckpt_path``)."""
        return self.folder / CHECKPOINT_FILE

    @property
    def dwpose(self) -> tuple[Path, Path]:
        """The detector and pose ONNX files (``dwpose.det_model_path``, ``pose_model_path``)."""
        folder = self.folder / DEFAULT_DWPOSE_DET_PATH.parent.name
        return folder / DEFAULT_DWPOSE_DET_PATH.name, folder / DEFAULT_DWPOSE_POSE_PATH.name

    @property
    def size(self) -> int:
        """Bytes of all the planned files."""
        return sum(f.size or 0 for f in self.files)


def plan_weights(folder: str | os.PathLike[str]) -> WeightsPlan:
    """List the three repositories on the hub and choose the files a run needs.

    Args:
        folder: where the files will go.

    Returns:
        The plan: every file with its commit, size and hash, in download order (the gated base
        model first, so a missing licence shows before gigabytes are fetched).

    Raises:
        ModelLoadError: offline, the hub unreachable or refusing, or a repository that lacks a
            needed file.
    """
    from huggingface_hub import HfApi, is_offline_mode

    if is_offline_mode():
        raise ModelLoadError(
            "mimicache download needs the hub, and HF_HUB_OFFLINE is set: unset it "
            "(or set HF_HUB_OFFLINE=0) and run the command again"
        )
    folder = Path(folder)
    api = HfApi()
    files: list[WeightFile] = []
    gated: list[str] = []
    for repo_id, sub, select in _REPOS:
        try:
            info = api.model_info(repo_id, files_metadata=True)
        except Exception as exc:  # every hub failure becomes one message
            raise hub_error(exc, repo_id, repo_id, retry=_RETRY) from exc
        siblings = {s.rfilename: s for s in info.siblings or []}
        commit = info.sha or "main"
        if info.gated:
            gated.append(repo_id)
        for name in select(repo_id, commit, sorted(siblings)):
            sibling = siblings[name]
            lfs = sibling.lfs
            files.append(
                WeightFile(
                    repo_id,
                    name,
                    commit,
                    size=lfs.size if lfs else sibling.size,
                    sha256=lfs.sha256 if lfs else None,
                    blob_id=None if lfs else sibling.blob_id,
                    folder=folder / sub if sub != "." else folder,
                )
            )
    return WeightsPlan(folder, tuple(files), tuple(gated))


def _identity(path: Path) -> tuple[int, ...] | None:
    try:
        return file_state(path.stat())
    except OSError:
        return None


class VerifiedFiles:
    """The files of a download folder already checked: their stat identity and the hash they
    matched, so a re-run does not read gigabytes again."""

    def __init__(self, folder: Path):
        self.file = folder / ".cache" / "mimicache" / "verified.json"
        try:
            known = json.loads(self.file.read_text())
        except (OSError, ValueError):
            known = None
        self.known: dict[str, list] = known if isinstance(known, dict) else {}

    def holds(self, path: Path, expected: str) -> bool:
        """Whether ``path`` matched ``expected`` and has not changed since."""
        entry = self.known.get(str(path.absolute()))
        return entry is not None and entry == [*(_identity(path) or ()), expected]

    def add(self, path: Path, expected: str) -> None:
        """Remember that ``path``, as it is now, matched ``expected``."""
        self.known[str(path.absolute())] = [*(_identity(path) or ()), expected]
        # the memo only saves time: without it, the next run hashes again
        with contextlib.suppress(OSError):
            atomic_write(self.file, json.dumps(self.known, indent=1).encode())


def _digest(path: Path, git_blob: bool) -> str:
    h = hashlib.sha1() if git_blob else hashlib.sha256()
    if git_blob:  # the id git gives the file's contents
        h.update(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify(file: WeightFile, local: Path, memo: VerifiedFiles) -> None:
    """Check a fetched file against the hub's listing: size, then sha256 or git blob id.

    Args:
        file: the planned file (what the hub lists).
        local: where it was written.
        memo: files checked before.

    Raises:
        ModelLoadError: a mismatch, naming the file; the damaged file is removed so that the
            next run fetches it again.
    """
    actual_size = local.stat().st_size
    problem = None
    if file.size is not None and actual_size != file.size:
        problem = f"it has {actual_size} bytes, the hub lists {file.size}"
    expected = file.sha256 or file.blob_id
    if problem is None and expected and not memo.holds(local, expected):
        kind = "sha256" if file.sha256 else "git blob id"
        actual = _digest(local, git_blob=file.sha256 is None)
        if actual != expected:
            problem = f"its {kind} is {actual[:16]}…, the hub lists {expected[:16]}…"
        else:
            memo.add(local, expected)
    if problem is None:
        return
    local.unlink(missing_ok=True)
    from huggingface_hub import constants

    raise ModelLoadError(
        f"{local} ({file.label} at commit {file.commit[:8]}) is damaged: {problem}. The file "
        "was removed: run `mimicache download` again to fetch it anew; if it fails the same "
        f"way, something between here and {constants.ENDPOINT} (a proxy or mirror) alters it"
    )


def fetch_file(file: WeightFile, memo: VerifiedFiles) -> bool:
    """Fetch one planned file (unless complete) and verify it.

    Args:
        file: the planned file.
        memo: files checked before.

    Returns:
        True when bytes were downloaded, False when the file was already complete.

    Raises:
        ModelLoadError: the hub refused or could not be reached, or the file is damaged.
    """
    from huggingface_hub import hf_hub_download

    before = _identity(file.path)
    try:
        local = Path(
            hf_hub_download(
                file.repo_id, file.filename, revision=file.commit, local_dir=file.folder
            )
        )
    except Exception as exc:  # every hub failure becomes one message
        # huggingface_hub's own size check of the bytes received (its partial file is gone)
        if isinstance(exc, OSError) and "Consistency check failed" in str(exc):
            raise ModelLoadError(
                f"{file.path}: the download of {file.label} ended at the wrong size "
                f"({str(exc).splitlines()[0]}); {_RETRY}"
            ) from exc
        raise hub_error(exc, file.label, file.repo_id, retry=_RETRY) from exc
    verify(file, local, memo)
    return _identity(local) != before


def example_cases(images: list[str], videos: list[str]) -> list[tuple[str, str]]:
    """The test cases of the written config.

    Args:
        images: the ``--ref_image`` values (placeholder when none).
        videos: the ``--video`` values (placeholder when none).

    Returns:
        (driving video, reference image) per case: pairs in order, or one of either side shared
        by all of the other.

    Raises:
        ConfigError: several of each, in different numbers.
    """
    images = images or [PLACEHOLDER_IMAGE]
    videos = videos or [PLACEHOLDER_VIDEO]
    if len(images) == len(videos):
        return list(zip(videos, images))
    if len(images) == 1:
        return [(video, images[0]) for video in videos]
    if len(videos) == 1:
        return [(videos[0], image) for image in images]
    raise ConfigError(
        f"{len(images)} reference images and {len(videos)} videos: give one of either, or as "
        "many of each (they are paired in order)"
    )


def real_config_text(plan: WeightsPlan, cases: list[tuple[str, str]]) -> str:
    """The YAML of a config that runs the downloaded weights.

    Args:
        plan: what was downloaded, and where.
        cases: (driving video, reference image) pairs (``example_cases``).

    Returns:
        The config's text: the model paths as ``plan.folder`` reads, one test case per pair
        with the published generation defaults.
    """
    defaults = {
        f.name: f.default for f in dataclasses.fields(TestCase) if f.name not in _PATH_FIELDS
    }
    det, pose = plan.dwpose
    data = {
        "base_model_path": str(plan.base_model),
        "ckpt_path": str(plan.checkpoint),
        "test_case": [
            {"ref_video_path": video, "ref_image_path": image, **defaults} for video, image in cases
        ],
        "dwpose": {"det_model_path": str(det), "pose_model_path": str(pose)},
    }
    header = (
        "# Written by `mimicache download`: the weights it fetched and the published generation\n"
        "# defaults. Relative paths resolve against the directory you run from.\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def check_config_target(path: Path, force: bool) -> None:
    """Refuse to go on when the config would replace a file without ``force`` (checked before
    any download, so a long download never ends without its config).

    Raises:
        ConfigError: ``path`` exists and ``force`` is not set.
    """
    if path.exists() and not force:
        raise ConfigError(
            f"{path} exists; pass {setting('force', True)} to replace it, or "
            f"{setting('config', 'OTHER.yaml')} to write another"
        )


def write_config(path: Path, text: str, force: bool) -> None:
    """Write the config atomically; never replaces an existing file unless ``force``.

    Args:
        path: the config file.
        text: its contents (``real_config_text``).
        force: replace an existing file.

    Raises:
        ConfigError: the file exists (and not ``force``), or cannot be written.
    """
    check_config_target(path, force)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        written = atomic_write(path, text.encode(), overwrite=force)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the config ({exc})") from exc
    if not written:  # created meanwhile by someone else
        check_config_target(path, force=False)
