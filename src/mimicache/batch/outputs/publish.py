"""Output names: planned candidates ``{stem}[_N].mp4``, create-only publication of a job's
mp4 and JSON sidecar, the exclusive claim of a run's log name, and the checks that an output folder or log file is usable
before any work starts."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mimicache.errors import OutputError
from mimicache.storage.files import atomic_write
from mimicache.storage.objects import remote_url

# A file name may hold NAME_MAX (255) bytes on the usual Linux/macOS file systems; a stem is
# kept to STEM_MAX so that ``_NNNN`` and the longest suffix (``.json``) always fit.
NAME_MAX = 255
STEM_MAX = 200


def fit_stem(head: str, tail: str = "") -> str:
    """``head + tail``, or, when that is over ``STEM_MAX`` bytes, a readable prefix of ``head``
    plus ``-`` and an 8-hex digest of the whole of ``head`` and then ``tail`` (the timestamp and
    tags, kept whole so names still sort and tell runs apart). Two long heads that share a
    prefix get different digests. Bytes are counted as the file system sees them
    (``os.fsencode``), so undecodable names (surrogate escapes) are measured right."""
    if len(os.fsencode(head + tail)) <= STEM_MAX:
        return head + tail
    digest = hashlib.sha256(os.fsencode(head)).hexdigest()[:8]
    room = max(STEM_MAX - len(os.fsencode(tail)) - len(digest) - 1, 0)
    prefix = ""
    for char in head:  # whole characters only: never split a multi-byte one
        if len(os.fsencode(prefix + char)) > room:
            break
        prefix += char
    return f"{prefix}-{digest}{tail}"


def candidates(folder: Path, stem: str, suffix: str = ".mp4") -> Iterator[Path]:
    """``{folder}/{stem}{suffix}``, then ``{stem}_1{suffix}``, ``{stem}_2{suffix}``..."""
    yield folder / f"{stem}{suffix}"
    for n in itertools.count(1):
        yield folder / f"{stem}_{n}{suffix}"


def in_use(video: Path) -> bool:
    """The mp4 or its JSON sidecar exists."""
    return video.exists() or video.with_suffix(".json").exists()


def _claim(path: Path) -> bool:
    """Create ``path`` empty if nothing is there; False if something is."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except FileExistsError:
        return False
    return True


class _Folder:
    """A local output folder as ``publish_output`` uses it: create-only writes by name."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder

    def path(self, name: str) -> Path:
        return self.folder / name

    def put_new(self, name: str, data: bytes) -> bool:
        target = self.folder / name
        return atomic_write(target, data, temp_stem=Path(name).stem, overwrite=False)

    def read(self, name: str) -> bytes | None:
        try:
            return (self.folder / name).read_bytes()
        except OSError:
            return None

    def remove(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)


def _store(folder: Path) -> Any:
    """A local folder, or an object-storage folder (the same rule with conditional puts)."""
    url = remote_url(folder)
    if url is not None:
        from mimicache.batch.outputs.root import Bucket

        return Bucket(url)
    return _Folder(folder)


def publish_files(folder: Path, stem: str, files: dict[str, bytes]) -> dict[str, Path]:
    """Publish files that belong together (``{suffix: bytes}``, e.g. a grid's ``.mp4`` and
    ``.png``) create-only under the first ``{stem}[_N]`` free for all of them; their paths
    by suffix. A name taken meanwhile by another run moves them all to the next name; a put
    that fails removes the ones before it, so none stands without the others."""
    store = _store(folder)
    for n in itertools.count():
        name = f"{stem}_{n}" if n else stem
        put: list[str] = []
        try:
            for suffix, data in files.items():
                if not store.put_new(name + suffix, data):
                    break
                put.append(name + suffix)
            else:
                return {suffix: store.path(name + suffix) for suffix in files}
        finally:
            if len(put) < len(files):
                for done in put:
                    with contextlib.suppress(OSError):
                        store.remove(done)
    raise AssertionError("unreachable: the candidate names never run out")


def publish_output(
    folder: Path,
    stem: str,
    video: bytes | None,
    sidecar: Callable[[Path], bytes],
    ours: Callable[[bytes], bool] | None = None,
) -> Path:
    """Publish a finished job's files under the first free ``{stem}[_N]`` name; return the
    mp4 path (which a failed job, ``video`` None, leaves absent).

    Each file is put create-only (locally: written whole to a temp file, then linked; on an
    object-storage root: a conditional put), so a name appears only with its complete content
    and is never taken from a concurrent run: the mp4 first, then the sidecar
    ``sidecar(mp4_path)`` gives; when another run got that sidecar name meanwhile, our mp4 is
    removed again and the next name is tried. A write that fails (the folder became
    unwritable, the disk is full) raises OSError and leaves nothing under a real name.

    ``ours(sidecar_bytes)`` says whether a name already taken holds this very job's files,
    published by an earlier attempt whose answer was lost (its worker died just after): that
    name is returned as it is, so a retried job is published once.
    """
    store = _store(folder)
    for n in itertools.count():
        name = f"{stem}_{n}" if n else stem
        mp4, json_name = f"{name}.mp4", f"{name}.json"
        output = store.path(mp4)
        taken = store.read(json_name)
        if taken is not None or (video is not None and not store.put_new(mp4, video)):
            taken = taken if taken is not None else store.read(json_name)
            if ours is not None and taken is not None and ours(taken):
                return output
            continue
        try:
            published = store.put_new(json_name, sidecar(output))
        except BaseException:
            if video is not None:
                with contextlib.suppress(OSError):
                    store.remove(mp4)
            raise
        if published:
            return output
        if video is not None:
            store.remove(mp4)
    raise AssertionError("unreachable: the candidate names never run out")


def reserve_log(folder: Path, timestamp: str) -> Path:
    """``{folder}/{timestamp}.log``, or ``{timestamp}_N.log`` when a concurrent run has it."""
    folder.mkdir(parents=True, exist_ok=True)
    return next(p for p in candidates(folder, timestamp, ".log") if _claim(p))


def check_output_folder(folder: str | Path, what: str = "output folder") -> Path:
    """Create ``folder`` if needed and prove a file can be written in it, before any work.

    ``OutputError`` naming the path when a file is in the way or the folder is read-only,
    full or not permitted.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".mimicache-write-check."):
            pass
    except (FileExistsError, NotADirectoryError):
        raise OutputError(
            f"{what} {folder} cannot be used: a file is in the way (the path or one of its "
            "parents is a regular file). Choose another folder."
        ) from None
    except OSError as exc:
        raise OutputError(
            f"{what} {folder} is not writable ({exc.strerror or exc}). Choose a folder you "
            "can write to."
        ) from None
    return folder


def check_log_file(path: str | Path) -> Path:
    """The log file's folder is writable and the path, if it exists, is a file we can append to."""
    path = Path(path)
    check_output_folder(path.parent, "log folder")
    if path.is_dir():
        raise OutputError(f"log file {path} is a folder. Choose a file path for the log.")
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise OutputError(
            f"log file {path} cannot be written ({exc.strerror or exc}). Choose another path."
        ) from None
    return path
