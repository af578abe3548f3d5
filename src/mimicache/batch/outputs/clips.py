"""The clips an output root holds, found from what runs leave behind (for ``mimicache score``
and ``mimicache grid``): the sidecars of a local output folder or of an object-storage output
root (searched through every sub-folder), or the rows of a ``results.jsonl``. A clip is a
finished job: its sidecar (inputs, parameters, pose settings, sweep; read, never rewritten)
and the mp4 beside it, whose frames ``read_clip`` gives (fetched first from a store). What a
command writes about them goes to the root (the folder, or the ``results.jsonl``'s folder)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from mimicache.batch.outputs.root import fetch_object, location
from mimicache.batch.reporting.results import RESULTS_FILE, read_results, result_rows
from mimicache.config import TestCase
from mimicache.errors import InputError, MimicacheError

if TYPE_CHECKING:  # numpy and PyAV load when a clip is read, not when the CLI starts
    import numpy as np
from mimicache.storage.faults import endpoint_of, fault_of
from mimicache.storage.objects import open_filesystem, remote_url

logger = logging.getLogger(__name__)

__all__ = ["Clip", "ClipSet", "find_clips", "read_clip"]

# The case values a sidecar leaves out take a run's defaults (every sidecar names them all).
_DEFAULTS = TestCase(ref_video_path=Path(), ref_image_path=Path())


@dataclass(frozen=True)
class Clip:
    """A finished job's mp4 (``video``) and its sidecar (``sidecar``: where it is, a path or
    URL; ``record``: what it holds); ``key``: its path under the root without the suffix
    (``videos/walk_20261206120000``), which names the clip in ``scores.jsonl`` wherever the
    root is moved."""

    key: str
    sidecar: str
    video: str
    record: dict[str, Any]

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).stem

    def case(self) -> TestCase:
        """The test case the clip was made from (an ``InputError`` naming the sidecar when its
        parameters are not a case)."""
        parameters = self.record.get("parameters")
        if not isinstance(parameters, dict):
            raise InputError(f"{self.sidecar}: the sidecar has no parameters")
        try:
            return _DEFAULTS.replace(**parameters)
        except MimicacheError as exc:
            raise InputError(f"{self.sidecar}: its parameters are not a test case: {exc}") from None

    @property
    def pose_settings(self) -> tuple[str | None, str | None]:
        """(pose retargeting, person) the clip's pose frames were made with (None: unknown,
        the engine's default)."""
        fields = self.record.get("result_fields") or {}
        people = self.record.get("people") or {}
        retarget = fields.get("pose_retarget") or self.record.get("pose_retarget")
        person = fields.get("person") or people.get("choice")
        return retarget, None if person is None else str(person)

    @property
    def quality(self) -> dict[str, Any] | None:
        """The score the run wrote in the sidecar (None: not scored then)."""
        found = self.record.get("quality")
        return found if isinstance(found, dict) else None


@dataclass
class ClipSet:
    """What a source holds: its ``root`` (a folder path or URL), the clips, and the sidecars
    that could not be used (location, reason)."""

    root: str
    clips: list[Clip] = field(default_factory=list)
    unusable: list[tuple[str, str]] = field(default_factory=list)


def find_clips(source: str | os.PathLike[str]) -> ClipSet:
    """The clips of an output folder, a ``results.jsonl`` or an object-storage output root.

    Raises:
        InputError: ``source`` is none of these (the message says what to pass).
    """
    text = os.fspath(source)
    url = remote_url(text)
    if url is not None:
        return _remote(url)
    path = Path(text).expanduser()
    if path.is_dir():
        return _from_files(str(path), _local_sidecars(path))
    if path.is_file() and path.suffix == ".jsonl":
        return _from_rows(str(path.parent), path, read_results(path))
    raise InputError(
        f"{text}: not an output folder, a {RESULTS_FILE} or an object-storage URL; pass the "
        "output folder of a run (or its results.jsonl)"
    )


def _local_sidecars(folder: Path) -> Iterable[tuple[str, bytes | None]]:
    for path in sorted(folder.rglob("*.json")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        try:
            yield str(path), path.read_bytes()
        except OSError as exc:
            logger.warning("cannot read %s: %s", path, exc)
            yield str(path), None


def _remote(url: str) -> ClipSet:
    fs, base = open_filesystem(url)
    base = base.rstrip("/")
    if base.endswith(".jsonl"):
        try:
            text = fs.cat_file(base)
        except FileNotFoundError:
            raise InputError(f"{url} does not exist (no such object)") from None
        except Exception as exc:
            raise _unreadable(url, fs, exc) from None
        rows = result_rows(text.decode("utf-8", errors="replace"), url)
        return _from_rows(url.rsplit("/", 1)[0], None, rows)
    try:
        paths = sorted(fs.glob(f"{base}/**/*.json"))
        contents = fs.cat(paths) if paths else {}
    except FileNotFoundError:
        paths, contents = [], {}
    except Exception as exc:
        raise _unreadable(url, fs, exc) from None
    found = [(fs.unstrip_protocol(p), contents.get(p)) for p in paths]
    return _from_files(url.rstrip("/"), found)


def _unreadable(url: str, fs: Any, exc: BaseException) -> InputError:
    """The store's fault behind ``exc`` (refused credentials, unreachable...) and what to do."""
    return InputError(f"{url}: {fault_of(exc).advice(url, endpoint_of(fs))}")


def _from_files(root: str, files: Iterable[tuple[str, bytes | None]]) -> ClipSet:
    clips = ClipSet(root)
    for where, data in files:
        record = _sidecar(data)
        if record is None:
            if data is None:
                clips.unusable.append((where, "cannot be read"))
            continue  # another JSON file: not ours
        if record.get("status") == "ok":
            clips.clips.append(_clip(root, where, record))
    return clips


def _from_rows(root: str, path: Path | None, rows: list[dict[str, Any]]) -> ClipSet:
    """The finished rows' sidecars (each read once; one that is gone is named, not fatal)."""
    clips = ClipSet(root)
    seen: set[str] = set()
    for row in rows:
        if row.get("status") not in ("ok", "skipped") or not row.get("output"):
            continue
        where = row.get("sidecar") or str(row["output"]).rsplit(".", 1)[0] + ".json"
        where = _beside(root, where) if path is not None else where
        if where in seen:
            continue
        seen.add(where)
        try:
            data = _read(where)
        except (OSError, MimicacheError) as exc:
            clips.unusable.append((where, f"the sidecar cannot be read ({exc})"))
            continue
        record = _sidecar(data)
        if record is None:
            clips.unusable.append((where, "is not a mimicache sidecar"))
        elif record.get("status") == "ok":
            clips.clips.append(_clip(root, where, record))
    return clips


def _beside(root: str, where: str) -> str:
    """A row's local sidecar as it is under ``root`` now: a ``results.jsonl`` copied or moved
    with its folder names the paths of where it was written."""
    if remote_url(where) is not None:
        return where
    parts = Path(where).parts
    for start in range(len(parts) - 1, 0, -1):  # the shortest tail that is under the root
        candidate = Path(root, *parts[start:])
        if candidate.is_file():
            return str(candidate)
    return where


def _read(where: str) -> bytes:
    url = remote_url(where)
    if url is None:
        return Path(where).read_bytes()
    fs, inner = open_filesystem(url)
    return fs.cat_file(inner)


def _sidecar(data: bytes | None) -> dict[str, Any] | None:
    """The sidecar in ``data``; None for anything else (another tool's JSON)."""
    if data is None:
        return None
    try:
        record = json.loads(data)
    except ValueError:
        return None
    keys = ("schema", "status", "job", "parameters")
    if isinstance(record, dict) and all(k in record for k in keys):
        return record
    return None


def _clip(root: str, where: str, record: dict[str, Any]) -> Clip:
    """The mp4 is the one beside the sidecar (the root may have moved since the run)."""
    stem = where[: -len(".json")]
    prefix = root.rstrip("/") + "/"
    normalised = where.replace(os.sep, "/")
    key = normalised[len(prefix) :] if normalised.startswith(prefix) else PurePosixPath(where).name
    return Clip(key.removesuffix(".json"), location(where) or where, stem + ".mp4", record)


def read_clip(video: str) -> np.ndarray:
    """(F, H, W, 3) uint8: every frame of a written clip (an object is fetched first).

    Raises:
        InputError: the mp4 is missing or cannot be decoded (the message names it).
    """
    if remote_url(video) is not None:
        with tempfile.TemporaryDirectory(prefix="mimicache-score-") as folder:
            local = Path(folder) / "clip.mp4"
            try:
                fetch_object(video, local)
            except FileNotFoundError:
                raise InputError(f"{video}: the clip's mp4 is missing") from None
            except Exception as exc:
                raise InputError(f"{video}: cannot fetch the clip ({exc})") from None
            return _decode(local, video)
    if not Path(video).is_file():
        raise InputError(f"{video}: the clip's mp4 is missing (its sidecar is there)")
    return _decode(Path(video), video)


def _decode(path: Path, shown: str) -> np.ndarray:
    import numpy as np

    from mimicache.media import iter_frames

    try:
        return np.stack(list(iter_frames(path, 1)))
    except InputError as exc:  # the reader speaks of driving videos: say which clip
        reason = str(exc).replace(str(path), "").strip(" :.")
        raise InputError(
            f"{shown}: the clip cannot be decoded ({reason}); it is damaged, run its job again"
        ) from None
