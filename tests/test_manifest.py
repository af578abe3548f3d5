"""Jobs from a manifest (CSV, JSONL, Parquet): per-row values over the config's first test case,
paths against the manifest's folder, a bad row named by its row number and failed alone."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from mimicache.batch.outputs.root import location
from mimicache.batch.planning.manifest import plan_manifest, read_manifest, resolve_local
from mimicache.config import InferenceConfig, TestCase
from mimicache.errors import InputError

ROWS = [
    {"ref_image": "ref.png", "video": "clips/a.mp4", "seed": 7, "steps": 8},
    {"ref_image": "ref.png", "video": "clips/b.mp4", "guidance": 1.5, "output_name": "b_named"},
    {"ref_image": "ref.png", "video": "clips/a.mp4", "resolution": 128, "fps": 24},
]


@pytest.fixture
def folder(tmp_path):
    """A dataset folder: ref.png and clips/{a,b}.mp4 (their bytes are never read here)."""
    root = tmp_path / "data"
    (root / "clips").mkdir(parents=True)
    for name in ("ref.png", "clips/a.mp4", "clips/b.mp4"):
        (root / name).write_bytes(b"x")
    return root


def _config(tmp_path: Path) -> InferenceConfig:
    """Two cases: only the first gives the manifest's defaults."""
    first = TestCase(tmp_path / "x.mp4", tmp_path / "x.png", seed=1, num_inference_steps=3)
    second = TestCase(tmp_path / "y.mp4", tmp_path / "y.png", seed=99, num_inference_steps=50)
    return InferenceConfig("b", tmp_path / "c.pth", [first, second])


def write_manifest(path: Path, rows: list[dict]) -> Path:
    """``rows`` as CSV (empty cells for absent keys), JSONL or Parquet, by ``path``'s suffix."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    if path.suffix == ".csv":
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        # every column in every row: pyarrow takes the schema from the first row alone
        pq.write_table(pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows]), path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_each_format_gives_the_rows_values_over_the_first_cases(folder, tmp_path, suffix):
    manifest = write_manifest(folder / f"jobs{suffix}", ROWS)
    defaults = _config(tmp_path).test_case[0]
    read = read_manifest(manifest, defaults)
    assert [row.error for row in read.rows] == [None, None, None]
    cases = [row.case for row in read.rows]
    assert [c.ref_video_path for c in cases] == [
        folder / "clips/a.mp4",
        folder / "clips/b.mp4",
        folder / "clips/a.mp4",
    ]
    assert {c.ref_image_path for c in cases} == {folder / "ref.png"}
    assert [(c.seed, c.num_inference_steps) for c in cases] == [(7, 8), (1, 3), (1, 3)]
    assert [c.guidance_scale for c in cases] == [2.0, 1.5, 2.0]
    assert [(c.resolution, c.fps) for c in cases] == [(576, 15), (576, 15), (128, 24)]

    plan = plan_manifest(read, output_dir=tmp_path / "out", timestamp="T")
    assert plan.rejected == []
    out = tmp_path / "out" / "jobs"
    assert [j.output_path for j in plan.jobs] == [
        out / "a_T_seed7_steps8.mp4",
        out / "b_named.mp4",
        out / "a_T.mp4",
    ]
    assert [j.index for j in plan.jobs] == [0, 1, 2]
    assert plan.jobs[1].source == {
        "path": str(manifest),
        "row": 2,
        "values": {k: v for k, v in ROWS[1].items()}
        if suffix != ".csv"
        else {k: str(v) for k, v in ROWS[1].items()},
    }


def test_relative_paths_start_at_the_manifests_folder_not_the_working_one(
    folder, tmp_path, monkeypatch
):
    manifest = write_manifest(folder / "jobs.csv", ROWS[:1])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    read = read_manifest(Path("..") / "data" / "jobs.csv", _config(tmp_path).test_case[0])
    assert read.rows[0].case.ref_video_path == folder / "clips/a.mp4"
    assert manifest.exists()


BAD_ROWS = [
    ({"ref_image": "ref.png"}, "video is missing"),
    ({"ref_image": "ref.png", "video": "clips/a.mp4", "seed": "seven"}, "seed must be"),
    ({"ref_image": "ref.png", "video": "clips/a.mp4", "sed": 3}, "unknown column 'sed'"),
    ({"ref_image": "ref.png", "video": "clips/gone.mp4"}, "not found"),
    ({"ref_image": "ref.png", "video": "clips/a.mp4", "steps": 0}, "num_inference_steps must"),
    ({"ref_image": "ref.png", "video": "clips/b.mp4", "output_name": "b_named"}, "duplicate"),
    ({"ref_image": "ref.png", "video": "clips/b.mp4", "output_name": "../up"}, "inside the"),
]


def test_each_bad_row_is_named_by_its_number_and_fails_alone(folder, tmp_path):
    manifest = folder / "jobs.jsonl"
    rows = [ROWS[1], *(row for row, _ in BAD_ROWS), ROWS[0]]
    text = "".join(json.dumps(row) + "\n" for row in rows)
    manifest.write_text(text + "\n[1, 2]\n{not json\n")  # a blank line, then two broken rows
    read = read_manifest(manifest, _config(tmp_path).test_case[0])
    plan = plan_manifest(read, output_dir=tmp_path / "out", timestamp="T")
    assert [j.index for j in plan.jobs] == [0, len(rows) - 1]
    failed = {r.job.index + 1: r.error for r in plan.rejected}
    assert sorted(failed) == [*range(2, len(rows)), len(rows) + 1, len(rows) + 2]
    for number, (_, expected) in enumerate(BAD_ROWS, start=2):
        assert failed[number].startswith(f"{manifest} row {number} (line {number}): ")
        assert expected in failed[number]
        assert "\n" not in failed[number]
    assert "(row 1 has it)" in failed[7]
    assert "did you mean 'seed'?" in failed[4]
    # rows keep counting data rows; the blank line moves the line numbers on by one
    assert failed[len(rows) + 1].startswith(
        f"{manifest} row {len(rows) + 1} (line {len(rows) + 2})"
    )
    assert "JSON object" in failed[len(rows) + 1] and "not valid JSON" in failed[len(rows) + 2]
    assert {r.status for r in plan.rejected} == {"failed"}
    assert all(r.job.source["rejected"] for r in plan.rejected)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_row_that_is_not_utf8_fails_alone_named_by_row_and_line(folder, tmp_path, suffix):
    path = write_manifest(folder / f"jobs{suffix}", [ROWS[0], ROWS[1], ROWS[0]])
    lines = path.read_bytes().splitlines(keepends=True)
    bad = 2 + (suffix == ".csv")  # the second data row (after the CSV's header)
    lines[bad - 1] = lines[bad - 1].replace(b"b.mp4", b"b\xe9.mp4")  # Latin-1, not UTF-8
    path.write_bytes(b"".join(lines))
    read = read_manifest(path, _config(tmp_path).test_case[0])
    plan = plan_manifest(read, output_dir=tmp_path / "out", timestamp="T")
    assert [j.index for j in plan.jobs] == [0, 2]
    [rejected] = plan.rejected
    assert rejected.error.startswith(f"{path} row 2 (line {bad}): not UTF-8 text (byte 0xe9")
    assert "save the manifest as UTF-8" in rejected.error


def test_integral_floats_are_integers_and_nan_cells_are_empty(folder, tmp_path):
    """pandas writes an integer column with a null as float64: seed 7.0, then NaN."""
    pd_like = [
        {"ref_image": "ref.png", "video": "clips/a.mp4", "seed": 7.0, "steps": 8.0},
        {"ref_image": "ref.png", "video": "clips/b.mp4", "seed": float("nan"), "steps": 2.5},
    ]
    path = write_manifest(folder / "jobs.parquet", pd_like)
    read = read_manifest(path, _config(tmp_path).test_case[0])
    first, second = read.rows
    assert first.error is None and (first.case.seed, first.case.num_inference_steps) == (7, 8)
    assert isinstance(first.case.seed, int)
    assert second.case is None and "num_inference_steps" in second.error and "2.5" in second.error
    assert "seed" not in second.error  # NaN is an empty cell: the default seed


def test_a_table_that_cannot_be_a_manifest_stops_before_any_work(folder, tmp_path, monkeypatch):
    defaults = _config(tmp_path).test_case[0]
    typo = write_manifest(folder / "typo.csv", [{"ref_image": "ref.png", "vidoe": "a.mp4"}])
    with pytest.raises(InputError, match=r"typo.csv: unknown column 'vidoe' \(did you mean"):
        read_manifest(typo, defaults)
    no_video = write_manifest(folder / "nov.csv", [{"ref_image": "ref.png", "seed": 1}])
    with pytest.raises(InputError, match=r"nov\.csv: no 'video' column"):
        read_manifest(no_video, defaults)
    with pytest.raises(InputError, match=r"jobs\.txt: unknown format; name the file \.csv"):
        read_manifest(folder / "jobs.txt", defaults)
    with pytest.raises(InputError, match=r"gone\.csv: file not found"):
        read_manifest(folder / "gone.csv", defaults)
    (folder / "empty.jsonl").write_text("\n")
    with pytest.raises(InputError, match=r"empty\.jsonl: holds no rows"):
        read_manifest(folder / "empty.jsonl", defaults)
    (folder / "huge.csv").write_text("ref_image,video\nref.png," + "a" * 200_000 + "\n")
    with pytest.raises(InputError, match=r"huge\.csv: cannot read it \(field larger than"):
        read_manifest(folder / "huge.csv", defaults)
    parquet = write_manifest(folder / "jobs.parquet", ROWS)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # pyarrow not installed
    with pytest.raises(InputError, match=r"Parquet needs pyarrow; pip install 'mimicache\[parquet"):
        read_manifest(parquet, defaults)


def test_url_inputs_stay_urls_for_the_worker_to_fetch(folder, tmp_path):
    rows = [
        {"ref_image": "s3://bucket/ref.png", "video": "clips/a.mp4"},
        {"ref_image": (folder / "ref.png").as_uri(), "video": "clips/b.mp4"},
        {"ref_image": "ftp://host/ref.png", "video": "clips/b.mp4"},
    ]
    manifest = write_manifest(folder / "jobs.csv", rows)
    defaults = _config(tmp_path).test_case[0]
    asked: list[str] = []

    def resolve(text: str) -> Path:
        asked.append(text)
        return resolve_local(text)

    read = read_manifest(manifest, defaults, resolve=resolve)
    assert [row.error is None for row in read.rows] == [True, True, False]
    # the plan keeps the URL: the process that runs the job fetches it, not the driver
    assert location(read.rows[0].case.ref_image_path) == "s3://bucket/ref.png"
    assert "s3://bucket/ref.png" not in asked and asked[0] == str(manifest)
    assert read.rows[1].case.ref_image_path == folder / "ref.png"  # file:// is local
    assert "ftp:// URL, which this build cannot fetch" in read.rows[2].error
    plan = plan_manifest(read, output_dir=tmp_path / "out", timestamp="T")
    assert location(plan.jobs[0].case.ref_image_path) == "s3://bucket/ref.png"


def test_rows_asking_for_one_name_get_the_next_free_one(folder, tmp_path):
    same = {"ref_image": "ref.png", "video": "clips/a.mp4"}
    manifest = write_manifest(folder / "jobs.csv", [same, same, same])
    out = tmp_path / "out" / "jobs"
    out.mkdir(parents=True)
    (out / "a_T_1.json").write_text("{}")  # an earlier run's sidecar holds this name
    read = read_manifest(manifest, _config(tmp_path).test_case[0])
    plan = plan_manifest(read, output_dir=tmp_path / "out", timestamp="T")
    assert [j.output_path.name for j in plan.jobs] == ["a_T.mp4", "a_T_2.mp4", "a_T_3.mp4"]
    assert {j.base_stem for j in plan.jobs} == {"a_T"}
