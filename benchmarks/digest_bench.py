"""File digest throughput (BLAKE3, mimicache.storage.digests.file_digest) and memo-hit latency.

    python benchmarks/digest_bench.py [--size 1GB] [--dir /tmp]

Writes a temp file of --size, evicts it from the page cache (posix_fadvise DONTNEED after
fsync), then measures: the first (cold) read, a read from the page cache, and the latency of a
digest-memo hit (stat + SQLite lookup). Targets (issue 5): >= 1 GB/s first read, < 1 ms hit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from mimicache.cache.digest_memo import DigestMemo
from mimicache.storage.digests import RACY_WINDOW_NS, file_digest
from mimicache.storage.sizes import format_size, parse_size


def evict(path: Path) -> bool:
    """Drop the file's pages from the page cache; False where the OS cannot."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1GB", help="file size (default 1GB)")
    parser.add_argument("--dir", default=None, help="where to write the temp file")
    parser.add_argument("--hits", type=int, default=2000, help="memo hits to time")
    args = parser.parse_args()
    size = parse_size(args.size)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "digest_bench.bin"
        block = os.urandom(16 << 20)
        with open(path, "wb") as f:
            left = size
            while left > 0:
                f.write(block[: min(left, len(block))])
                left -= len(block)
        cold = evict(path)
        print(f"file: {path} ({format_size(size)}), cpus: {os.cpu_count()}")

        t = time.perf_counter()
        digest = file_digest(path)
        first = time.perf_counter() - t
        note = "page cache evicted" if cold else "could not evict the page cache"
        print(f"first read     : {size / first / 1e9:6.2f} GB/s  ({first:.3f} s, {note})")

        runs = []
        for _ in range(3):
            t = time.perf_counter()
            assert file_digest(path) == digest
            runs.append(time.perf_counter() - t)
        warm = min(runs)
        print(f"page-cache read: {size / warm / 1e9:6.2f} GB/s  ({warm:.3f} s, best of 3)")

        memo = DigestMemo(Path(tmp) / "index.sqlite")
        time.sleep(RACY_WINDOW_NS / 1e9)
        assert file_digest(path, memo) == digest  # memoised now
        times = []
        for _ in range(args.hits):
            t = time.perf_counter()
            assert file_digest(path, memo) == digest
            times.append(time.perf_counter() - t)
        times.sort()
        p99 = times[int(len(times) * 0.99)]
        print(
            f"memo hit       : median {statistics.median(times) * 1e6:.0f} us, "
            f"p99 {p99 * 1e6:.0f} us, max {times[-1] * 1e6:.0f} us ({args.hits} hits)"
        )
        memo.close()


if __name__ == "__main__":
    main()
