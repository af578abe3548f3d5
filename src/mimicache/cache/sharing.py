"""Caches shared by machines: where the SQLite index lives and which journal mode it uses.

Entries are plain immutable files and safe on any file system. SQLite is not: its WAL mode
needs shared memory that network file systems do not share between hosts, and its locks
there are unreliable. So when the cache root is on a network file system (NFS, Lustre, SMB,
a FUSE-mounted bucket, ...) the index and the digest memo go to a per-machine folder,
``$XDG_CACHE_HOME/mimicache/index/<root+machine digest>/`` (default ``~/.cache``), and a
database whose folder cannot hold WAL's files uses the rollback journal instead.
Both are rebuilt from the entries when missing.

Environment: ``MIMICACHE_INDEX_DIR`` puts the per-machine folders there (and always uses
them); ``MIMICACHE_SHARED_CACHE=1``/``0`` forces or forbids the per-machine index;
``MIMICACHE_SQLITE_WAL=0`` never uses WAL.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sqlite3
import threading
from functools import lru_cache
from pathlib import Path

import blake3

from mimicache.storage.files import user_cache_dir

__all__ = [
    "NETWORK_FILESYSTEMS",
    "filesystem_type",
    "index_folder",
    "is_network_filesystem",
    "machine_id",
    "wal_allowed",
    "wal_known",
    "wal_usable",
    "wal_works",
]

# Mount types (``/proc/self/mountinfo``) whose files other hosts see: SQLite's WAL and locks
# are unsafe there. FUSE mounts (s3fs, gcsfuse, sshfs, ...) are all treated as remote.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs", "nfs4", "lustre", "cifs", "smb", "smb2", "smb3", "smbfs", "9p", "ceph",
        "glusterfs", "gpfs", "beegfs", "panfs", "afs", "ocfs2", "gfs2", "virtiofs", "wekafs",
        "orangefs", "pvfs2", "davfs", "ncpfs", "cvfs", "fuse",
    }
)  # fmt: skip


def _mounts() -> list[tuple[str, str]]:
    """(mount point, file system type) of this process's mounts; [] where unknown."""
    found = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields, tail = left.split(), right.split()
                if len(fields) >= 5 and tail:
                    point = fields[4].replace("\\040", " ").replace("\\011", "\t")
                    found.append((point, tail[0]))
    except OSError:
        return []
    return found


def filesystem_type(path: str | os.PathLike[str]) -> str:
    """The type of the file system holding ``path`` (its nearest existing folder), e.g.
    "ext4", "nfs4", "fuse.s3fs"; "" when it cannot be told (not Linux). Read once per
    folder and process: a store asks it of its root, then of its index's folder."""
    target = Path(os.path.realpath(path))
    while not target.exists() and target != target.parent:
        target = target.parent
    return _mount_type(str(target))


@lru_cache(maxsize=256)
def _mount_type(target: str) -> str:
    best, kind = "", ""
    text = target
    for point, fstype in _mounts():
        inside = text == point or text.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fstype
    return kind


def is_network_filesystem(path: str | os.PathLike[str]) -> bool:
    kind = filesystem_type(path)
    return kind in NETWORK_FILESYSTEMS or kind.split(".")[0] in NETWORK_FILESYSTEMS


@lru_cache(maxsize=1)
def machine_id() -> str:
    """This machine's id (``/etc/machine-id``), else its host name."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        with contextlib.suppress(OSError):
            text = Path(path).read_text(encoding="ascii").strip()
            if text:
                return text
    return socket.gethostname()


def index_folder(root: Path) -> Path:
    """Where the index of the cache at ``root`` (absolute) lives: ``root`` itself, or a
    per-machine folder keyed by the root and this machine when the root is shared."""
    chosen = os.environ.get("MIMICACHE_INDEX_DIR")
    forced = os.environ.get("MIMICACHE_SHARED_CACHE")
    if not chosen and (forced == "0" or (forced != "1" and not is_network_filesystem(root))):
        return root
    base = Path(chosen).expanduser() if chosen else user_cache_dir() / "mimicache" / "index"
    name = blake3.blake3(f"{root}\0{machine_id()}".encode()).hexdigest()[:24]
    return base.absolute() / name


_WAL_LOCK = threading.Lock()
_WAL_USABLE: dict[str, bool] = {}


def _wal_refused(db_path: Path) -> bool:
    """WAL switched off, or its shared-memory path taken by something other than a file."""
    shm = Path(f"{db_path}-shm")
    return os.environ.get("MIMICACHE_SQLITE_WAL") == "0" or (shm.exists() and not shm.is_file())


def wal_allowed(db_path: Path) -> bool:
    """Whether WAL may be tried for ``db_path`` at all: not refused, not on a network file
    system (whether it works there is ``wal_usable``'s question)."""
    return not _wal_refused(db_path) and not is_network_filesystem(db_path.parent)


def wal_usable(db_path: Path) -> bool:
    """Whether SQLite's WAL can be used for ``db_path``: not refused, not on a network file
    system, and known to work in its folder: a trial database there works in WAL mode (its
    shared memory file can be created and mapped), or the real one was opened in it
    (``wal_works``). Decided once per folder and process."""
    if _wal_refused(db_path):
        return False
    folder = db_path.parent
    with _WAL_LOCK:
        if str(folder) not in _WAL_USABLE:
            _WAL_USABLE[str(folder)] = not is_network_filesystem(folder) and _try_wal(folder)
        return _WAL_USABLE[str(folder)]


def wal_known(folder: Path) -> bool:
    """Whether this process has already decided if WAL works in ``folder``."""
    with _WAL_LOCK:
        return str(folder) in _WAL_USABLE


def wal_works(folder: Path) -> None:
    """A database in ``folder`` was opened and read in WAL mode: WAL works there, no trial."""
    with _WAL_LOCK:
        _WAL_USABLE.setdefault(str(folder), True)


def _try_wal(folder: Path) -> bool:
    trial = folder / f".mimicache-wal-trial.{os.getpid()}.{secrets.token_hex(4)}.sqlite"
    try:
        conn = sqlite3.connect(trial, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=OFF")  # a throwaway file: no fsync, a few ms
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            conn.execute("CREATE TABLE t (x)")
            conn.execute("INSERT INTO t VALUES (1)")
            return str(mode).lower() == "wal"
        finally:
            conn.close()
    except (sqlite3.Error, OSError):
        return False
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(OSError):
                os.unlink(f"{trial}{suffix}")
