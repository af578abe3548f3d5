"""Driver time of a dataset manifest: reading + checking + planning its rows, and appending
``results.jsonl`` rows, per row, for each format.

    python benchmarks/manifest_bench.py [--rows 10000] [--repeats 3] [--workdir DIR]

Writes a manifest of --rows rows (two reference images, eight driving videos, per-row seed and
steps on every other row, an output_name on every tenth) as CSV, JSONL and Parquet, then times
``read_manifest`` + ``plan_manifest`` (median of --repeats), and ``ResultsLog.add`` of one done
job per row whose mp4 is 1 MB (BLAKE3 of the mp4 included). No model is loaded: this is the
driver's share of a batch, to set against the job itself (about 20 s on an H200).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
import time
from pathlib import Path

from mimicache.batch.job import JobResult
from mimicache.batch.planning.manifest import plan_manifest, read_manifest
from mimicache.batch.reporting.results import ResultsLog
from mimicache.config import TestCase


def write_rows(folder: Path, rows: int) -> list[dict]:
    for name in [*(f"ref{i}.png" for i in range(2)), *(f"v{i}.mp4" for i in range(8))]:
        (folder / name).write_bytes(b"x")
    out = []
    for n in range(rows):
        row = {"ref_image": f"ref{n % 2}.png", "video": f"v{n % 8}.mp4", "seed": None,
               "steps": None, "output_name": None}  # fmt: skip
        if n % 2:
            row.update(seed=n, steps=4 + n % 3)
        if n % 10 == 0:
            row["output_name"] = f"clip{n:06d}"
        out.append(row)
    return out


def save(rows: list[dict], path: Path) -> Path:
    if path.suffix == ".csv":
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".jsonl":
        lines = (json.dumps({k: v for k, v in r.items() if v is not None}) for r in rows)
        path.write_text("".join(line + "\n" for line in lines))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    folder = args.workdir or Path(tempfile.mkdtemp(prefix="manifest-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    rows = write_rows(folder, args.rows)
    defaults = TestCase(folder / "v0.mp4", folder / "ref0.png")
    print(f"{args.rows} rows; median of {args.repeats}")
    plan = None
    for suffix in (".csv", ".jsonl", ".parquet"):
        path = save(rows, folder / f"jobs{suffix}")
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            plan = plan_manifest(read_manifest(path, defaults), output_dir=folder / "out",
                                 timestamp="20260101000000")  # fmt: skip
            seconds.append(time.perf_counter() - start)
        assert not plan.rejected and len(plan.jobs) == args.rows
        per = statistics.median(seconds) / args.rows * 1e6
        print(f"read + plan {suffix[1:]:8s} {statistics.median(seconds):7.3f} s  {per:6.1f} us/row")
    assert plan is not None
    video = folder / "out.mp4"
    video.write_bytes(bytes(range(256)) * 4096)  # 1 MB
    log = ResultsLog(folder / "results.jsonl", run="20260101000000")
    results = [JobResult(job, "ok", video, {"total": 20.0}) for job in plan.jobs]
    start = time.perf_counter()
    for result in results:
        log.add(result)
    seconds = time.perf_counter() - start
    size = log.path.stat().st_size
    print(f"results.jsonl append   {seconds:7.3f} s  {seconds / len(results) * 1e6:6.1f} us/row "
          f"({size / len(results):.0f} bytes/row, 1 MB mp4 digested per row)")  # fmt: skip


if __name__ == "__main__":
    main()
