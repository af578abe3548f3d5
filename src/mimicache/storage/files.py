"""Files that are never seen half-written, file locks, and the small facts about files.

``atomic_write(path, data)`` writes a temp file in the same folder, fsyncs it, gives it the
mode a plain ``open()`` would (0o666 minus the umask) and renames it over ``path``.
``key_lock(path)`` holds an exclusive file lock. Errors are OSError; ``errno_text`` names them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import filelock

__all__ = [
    "atomic_write",
    "current_umask",
    "errno_text",
    "key_lock",
    "printable",
    "remove",
    "tree_size",
    "try_lock",
    "user_cache_dir",
    "write_blocker",
]

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc)."""
    with (
        contextlib.suppress(OSError, ValueError),
        open("/proc/self/status", encoding="ascii", errors="replace") as f,
    ):
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:  # elsewhere: set and restore it (briefly visible to other threads)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def atomic_write(
    path: str | os.PathLike[str],
    data: bytes | bytearray | memoryview | Callable[[BinaryIO], object],
    *,
    temp_stem: str | None = None,
    overwrite: bool = True,
) -> bool:
    """Write ``data`` (bytes, or a function writing to a binary file) to ``path`` atomically.

    The temp file ``.<stem>.<pid>.<random>.tmp`` (``temp_stem`` defaults to the file's name)
    is private while written; before the rename it gets 0o666 & ~umask, like any new file.
    On failure the temp file is removed and the OSError raised; ``path`` is untouched.
    ``overwrite=False``: publish with a hard link, which fails when ``path`` exists (atomic on
    NFS too); the file there is kept and False returned. Where hard links are not supported
    (some FUSE mounts) it falls back to the rename. True when ``path`` now holds ``data``.
    """
    path = Path(path)
    # The temp name adds ~25 bytes to the stem: cut a long one so it still fits NAME_MAX (255).
    stem = os.fsdecode(os.fsencode(temp_stem or path.name)[:200])
    tmp = path.parent / f".{stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, 0o600)
    except FileNotFoundError:  # the folder was pruned away meanwhile: once more
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, flags, 0o600)
    try:
        try:
            _write_all(fd, data)
            os.fchmod(fd, 0o666 & ~current_umask())
            os.fsync(fd)
        finally:
            os.close(fd)
        published = True
        if overwrite:
            os.replace(tmp, path)
        elif _link(tmp, path):
            published = _already_there(tmp, path)
            os.unlink(tmp)
        elif path.exists():  # no hard links here: keep what is there all the same
            published = False
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable too (best effort)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return published


_NO_LINKS = frozenset(
    getattr(errno, name)
    for name in ("EPERM", "EOPNOTSUPP", "ENOTSUP", "ENOSYS", "EMLINK", "EXDEV")
    if hasattr(errno, name)
)


def _link(tmp: Path, path: Path) -> bool:
    """Hard-link ``tmp`` to ``path``: True when linked or when ``path`` exists (either way the
    temp file only has to go); False where links are not supported (rename instead)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        return True
    except OSError as exc:
        if exc.errno in _NO_LINKS:
            return False
        raise
    return True


def _already_there(tmp: Path, path: Path) -> bool:
    """After ``_link``: whether ``path`` is our temp file (linked) rather than another's."""
    try:
        return os.path.samefile(tmp, path)
    except OSError:
        return False


def _write_all(
    fd: int, data: bytes | bytearray | memoryview | Callable[[BinaryIO], object]
) -> None:
    if callable(data):
        with open(fd, "wb", closefd=False) as f:
            data(f)
        return
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


@contextlib.contextmanager
def key_lock(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the exclusive file lock ``path`` (created with its folder); ``on_wait`` is called
    once when another process holds it. Raises OSError when it cannot be created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        if on_wait is not None:
            on_wait()
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def try_lock(path: Path) -> Iterator[bool]:
    """Hold the file lock ``path`` if it is free: yields True, or False when someone holds it.
    Raises OSError when it cannot be created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def write_blocker(root: Path) -> OSError | None:
    """Why nothing can be written under the existing folder ``root`` (read-only file system,
    no permission), or None when writes may work."""
    try:
        read_only = bool(os.statvfs(root).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows): the first write will tell
        read_only = False
    if read_only:
        return OSError(errno.EROFS, os.strerror(errno.EROFS), str(root))
    if not os.access(root, os.W_OK):
        return OSError(errno.EACCES, os.strerror(errno.EACCES), str(root))
    return None


def remove(path: Path) -> str | None:
    """Remove a file or folder; None when it is gone, else why it is not (errno_text)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return errno_text(exc)
    return None


def tree_size(path: Path) -> int:
    """Bytes of the regular files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def errno_text(exc: BaseException) -> str:
    """``"EROFS: Read-only file system"`` for an OSError, the message otherwise."""
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return f"{name}: {exc.strerror or os.strerror(exc.errno)}"
    return str(exc) or type(exc).__name__


def printable(text: str) -> str:
    """``text`` safe to write as UTF-8: a file name that is not valid UTF-8 reaches us with
    surrogate escapes (``os.fsdecode``), which a UTF-8 encoder refuses; its raw bytes are
    shown as ``\\xff`` instead, so a log, a summary or a page names it instead of aborting."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no file name decoding makes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME``, else ``~/.cache``."""
    base = os.environ.get("XDG_CACHE_HOME")
    return Path(base) if base else Path.home() / ".cache"
