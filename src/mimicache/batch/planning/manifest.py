"""Jobs from a manifest (``--manifest``): a CSV, JSONL or Parquet file with one row per job, its
``ref_image`` and ``video``, optional test-case values over the config's first test case and
an optional ``output_name``. Rows become the same ``plan.Job`` values a folder plan makes, so
every executor runs them unchanged; a bad row becomes a failed ``JobResult`` naming its row
and the others run. Relative paths resolve against the manifest's folder."""

from __future__ import annotations

import csv
import dataclasses
import difflib
import itertools
import json
import os
import posixpath
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from mimicache.batch.job import Job, JobResult
from mimicache.batch.outputs.publish import STEM_MAX, candidates, fit_stem, in_use
from mimicache.batch.planning.plan import override_tag
from mimicache.config import TEST_CASE_KEYS, TestCase
from mimicache.errors import ConfigError, InputError, StorageError
from mimicache.storage.fetch import fetch, input_url

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
# Short column names a dataset table is likely to use, beside the config's own key names.
ALIASES = {
    "ref_image": "ref_image_path",
    "video": "ref_video_path",
    "steps": "num_inference_steps",
    "guidance": "guidance_scale",
}
OUTPUT_NAME = "output_name"
COLUMNS = (*ALIASES, *TEST_CASE_KEYS, OUTPUT_NAME)
_INPUTS = {"ref_image_path": "ref_image", "ref_video_path": "video"}
_INT_KEYS = {f.name for f in dataclasses.fields(TestCase) if f.type in (int, "int")}
_FLOAT_KEYS = {f.name for f in dataclasses.fields(TestCase) if f.type in (float, "float")}

# resolve(text) -> a local file: the one place an input string becomes a path, so fetching
# URLs into a local tier plugs in here without touching the plan.
Resolver = Callable[[str], Path]


def resolve_local(text: str) -> Path:
    """A local path as written, a ``file://`` URL as its path, an object-storage or HTTP URL
    fetched to this machine (``cache.fetch``); any other URL is an ``InputError``."""
    if "://" not in text:
        return Path(text).expanduser()
    url = urllib.parse.urlsplit(text)
    if url.scheme == "file":
        return Path(urllib.request.url2pathname(url.path))
    if input_url(text) is not None:
        try:
            return fetch(text)
        except StorageError as exc:
            raise InputError(str(exc)) from None
    raise InputError(
        f"{text} is a {url.scheme}:// URL, which this build cannot fetch; download it and "
        "give a local path"
    )


@dataclass
class ManifestRow:
    """One row: ``number`` is 1-based over the data rows (the header is not a row), ``line``
    its line in a text file; ``case`` None when ``error`` says why the row cannot run."""

    number: int
    values: dict[str, Any]  # as written, empty cells left out
    line: int | None = None
    case: TestCase | None = None
    output_name: str | None = None
    error: str | None = None

    def where(self, manifest: str) -> str:
        line = f" (line {self.line})" if self.line is not None else ""
        return f"{manifest} row {self.number}{line}"


@dataclass
class Manifest:
    """A read manifest: every row, checked against the defaults (``source`` as given)."""

    source: str
    defaults: TestCase
    rows: list[ManifestRow] = field(default_factory=list)

    @property
    def stem(self) -> str:
        return PurePosixPath(urllib.parse.urlsplit(self.source).path).stem or "manifest"


@dataclass
class ManifestPlan:
    """The runnable rows as jobs and the bad rows as failed results, both indexed by row."""

    jobs: list[Job]
    rejected: list[JobResult]


def read_manifest(
    source: str | Path, defaults: TestCase, *, resolve: Resolver = resolve_local
) -> Manifest:
    """Read and check every row of ``source`` over ``defaults`` (the config's first test case
    with the command line's overrides). A manifest that cannot be read at all is an
    ``InputError``; a bad row is recorded in its ``ManifestRow.error``."""
    text = str(source)
    kind = FORMATS.get(PurePosixPath(urllib.parse.urlsplit(text).path).suffix.lower())
    if kind is None:
        raise InputError(
            f"manifest {text}: unknown format; name the file .csv, .jsonl (or .ndjson) or .parquet"
        )
    try:
        path = resolve(text)
    except InputError as exc:
        raise InputError(f"manifest {exc}") from None
    if not path.is_file():
        raise InputError(f"manifest {text}: file not found; give an existing {kind} file")
    try:
        records = _READERS[kind](path, text)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"manifest {text}: cannot read it ({exc})") from None
    if not records:
        raise InputError(f"manifest {text}: holds no rows; give one row per job")
    manifest = Manifest(text, defaults)
    local = _Inputs(resolve)
    base = _folder_of(text, path)
    names: dict[str, int] = {}
    for number, (line, values, problem) in enumerate(records, start=1):
        row = ManifestRow(number, values, line)
        row.error = problem or _check_row(row, defaults, base, local, names)
        if row.error:
            row.case = None
            row.error = f"{row.where(text)}: {row.error}"
        manifest.rows.append(row)
    return manifest


def plan_manifest(
    manifest: Manifest, *, output_dir: str | Path, timestamp: str, tag: str = ""
) -> ManifestPlan:
    """Jobs in row order (``Job.index`` = row number - 1) into ``{output_dir}/{manifest
    stem}/``: ``{output_name}.mp4`` where the row names one, else ``{video_stem}_{timestamp}
    [_{tag}][_{row values}].mp4`` (e.g. ``_seed7_steps8``); a taken name gets ``_1``, ``_2``...
    Bad rows come back as failed results with their row's message."""
    target = Path(output_dir) / manifest.stem
    tried: dict[tuple[Path, str], int] = {}
    jobs: list[Job] = []
    rejected: list[JobResult] = []
    for row in manifest.rows:
        source = {"path": manifest.source, "row": row.number, "values": row.values}
        if row.case is None:
            video = str(row.values.get("video") or row.values.get("ref_video_path") or "")
            name = PurePosixPath(video).stem or f"row {row.number}"
            # a placeholder case: the row's own values could not make one
            source["rejected"] = True
            job = Job(
                row.number - 1,
                0,
                manifest.defaults,
                Path(name),
                target / f"{name}.mp4",
                source=source,
            )
            rejected.append(JobResult.failure(job, row.error or "bad row"))
            continue
        case = row.case
        if row.output_name is not None:
            folder, stem = (target / row.output_name).parent, PurePosixPath(row.output_name).name
        else:
            extra = _row_tag(row.values)
            suffix = "".join(f"_{part}" for part in (tag, extra) if part)
            folder, stem = target, fit_stem(case.ref_video_path.stem, f"_{timestamp}{suffix}")
        output = _free_name(folder, stem, tried)
        jobs.append(Job(row.number - 1, 0, case, case.ref_video_path, output, stem, source))
    return ManifestPlan(jobs, rejected)


def _free_name(folder: Path, stem: str, tried: dict[tuple[Path, str], int]) -> Path:
    """The first ``{stem}[_N].mp4`` not planned yet and not on disk. ``tried`` remembers where
    each name's search stopped, so a thousand rows of one video stay linear."""
    start = tried.get((folder, stem), 0)
    names = itertools.islice(candidates(folder, stem), start, None)
    n, path = next((n, path) for n, path in enumerate(names, start) if not in_use(path))
    tried[(folder, stem)] = n + 1
    return path


# --------------------------------------------------------------------------- one row


def _check_row(
    row: ManifestRow, defaults: TestCase, base: str, resolve: _Inputs, names: dict[str, int]
) -> str | None:
    """Build ``row.case`` (and ``row.output_name``); the row's problem, or None."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for column, value in row.values.items():
        key = ALIASES.get(column, column)
        if column == OUTPUT_NAME:
            continue
        if key not in TEST_CASE_KEYS:
            problems.append(f"unknown column {column!r} ({_close(column)})")
        elif key in values:
            problems.append(f"{column} and {_INPUTS.get(key, key)} both give {key}")
        else:
            values[key] = _typed(key, value)
    for key, column in _INPUTS.items():
        if key not in values:
            problems.append(f"{column} is missing (every row needs ref_image and video)")
        elif not isinstance(values[key], str):
            problems.append(f"{column} must be a file path, got {values[key]!r}")
    if problems:
        return "; ".join(problems)
    try:
        for key, column in _INPUTS.items():
            found, missing = resolve(_join(base, values[key]))
            if missing:
                relative = _join(base, values[key]) != values[key]
                hint = (
                    f" (relative paths start at the manifest's folder {base})" if relative else ""
                )
                return f"{column} {found} not found{hint}"
            values[key] = found
        row.case = defaults.replace(**values)
    except (ConfigError, InputError) as exc:
        return "; ".join(line.strip() for line in str(exc).splitlines() if "problems:" not in line)
    name = row.values.get(OUTPUT_NAME)
    if name is not None:
        row.output_name, problem = _output_name(name)
        if problem is None and row.output_name in names:
            problem = f"duplicate output_name {name!r} (row {names[row.output_name]} has it)"
        if problem is not None:
            return problem
        names[row.output_name] = row.number
    return None


class _Inputs:
    """``resolve`` once per distinct input string (a dataset names the same few reference
    images thousands of times; a URL is fetched once): (absolute path, whether it is missing),
    or the resolver's ``InputError`` again."""

    def __init__(self, resolve: Resolver):
        self.resolve = resolve
        self.known: dict[str, tuple[Path, bool] | InputError] = {}

    def __call__(self, text: str) -> tuple[Path, bool]:
        if text not in self.known and input_url(text) is not None:
            # kept as a URL: the worker that runs the job fetches it (a missing object fails
            # that job, naming the URL), so on a cluster no input passes through the driver
            self.known[text] = (Path(text), False)
        if text not in self.known:
            try:
                path = self.resolve(text).absolute()
                self.known[text] = (path, not path.is_file())
            except InputError as exc:
                self.known[text] = exc
        found = self.known[text]
        if isinstance(found, InputError):
            raise found
        return found


def _typed(key: str, value: Any) -> Any:
    """A text cell as the key's type (CSV has only text), an integral float as an integer for
    an integer key (a Parquet integer column with a null is float64: ``seed = 7.0``); other
    values as they are, so the config's checks name a wrong type."""
    if isinstance(value, float) and key in _INT_KEYS and value.is_integer():
        return int(value)
    if not isinstance(value, str):
        return value
    try:
        if key in _INT_KEYS:
            return int(value)
        if key in _FLOAT_KEYS:
            return float(value)
    except ValueError:
        return value
    return value


def _output_name(value: Any) -> tuple[str | None, str | None]:
    """The normalised ``output_name`` (a relative name without ``.mp4``), or the problem."""
    if not isinstance(value, str) or not value.strip():
        return None, f"output_name must be a file name, got {value!r}"
    name = value.strip().replace("\\", "/")
    name = name[:-4] if name.lower().endswith(".mp4") else name
    parts = PurePosixPath(name).parts
    if name.startswith("/") or not parts or any(p in ("..", ".") for p in parts):
        return None, f"output_name {value!r} must be a name inside the output folder"
    if len(parts[-1].encode("utf-8", "surrogateescape")) > STEM_MAX:
        return None, f"output_name {value!r} is longer than {STEM_MAX} bytes"
    return "/".join(parts), None


def _row_tag(values: Mapping[str, Any]) -> str:
    """The row's seed / steps / guidance / noise values as a name part (``seed7_steps8``)."""
    labelled = ("seed", "num_inference_steps", "guidance_scale", "noise_aug_strength")
    given = {ALIASES.get(k, k): v for k, v in values.items()}
    return override_tag({k: given[k] for k in labelled if k in given})


def _close(column: str) -> str:
    close = difflib.get_close_matches(column, COLUMNS, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(COLUMNS)


def _folder_of(source: str, path: Path) -> str:
    """Where the manifest's relative paths start: its URL's folder, or its file's folder."""
    if "://" in source and not source.startswith("file://"):
        return source.rsplit("/", 1)[0]
    return str(path.resolve().parent)


def _join(base: str, text: str) -> str:
    """A row's path against the manifest's folder, tidied (``data/../x.mp4`` is ``x.mp4``)."""
    if "://" in text:
        return text
    if Path(text).expanduser().is_absolute():
        return os.path.normpath(Path(text).expanduser())
    if "://" in base:
        return f"{base}/{posixpath.normpath(text)}"
    return os.path.normpath(Path(base) / text)


# --------------------------------------------------------------------------- formats

# Each reader returns (line or None, the row's non-empty values, a problem or None) per row.
Record = tuple[int | None, dict[str, Any], str | None]


def _given(values: Mapping[Any, Any]) -> dict[str, Any]:
    """The cells that hold a value: empty cells (and a float column's NaN) mean "the
    default"."""
    out = {}
    for key, value in values.items():
        if isinstance(value, str):
            value = value.strip()
        if value is not None and value != "" and not (isinstance(value, float) and value != value):
            out[str(key).strip()] = value
    return out


def _undecodable(cells: Mapping[Any, Any]) -> str | None:
    """What is wrong with a row read with ``surrogateescape`` whose bytes are not UTF-8."""
    for column, value in cells.items():
        for text in value if isinstance(value, list) else [value]:
            bad = next((c for c in str(text or "") if "\udc80" <= c <= "\udcff"), None)
            if bad is not None:
                byte = ord(bad) - 0xDC00
                return (
                    f"not UTF-8 text (byte 0x{byte:02x} in column {column!r}); save the "
                    "manifest as UTF-8"
                )
    return None


def _check_header(columns: list[str], shown: str) -> None:
    """A table's columns: a typo in a header would fail every row, so it stops the run."""
    names = [str(c).strip() for c in columns]
    unknown = [c for c in names if c not in COLUMNS]
    if unknown:
        raise InputError(f"manifest {shown}: unknown column {unknown[0]!r} ({_close(unknown[0])})")
    twice = sorted({c for c in names if names.count(c) > 1})
    if twice:
        raise InputError(f"manifest {shown}: column {twice[0]!r} appears twice")
    for column in ("ref_image", "video"):
        if column not in names and ALIASES[column] not in names:
            raise InputError(f"manifest {shown}: no {column!r} column; every row needs one")


def _read_csv(path: Path, shown: str) -> list[Record]:
    # Bytes that are not UTF-8 fail their own row (surrogateescape keeps them apart), not
    # the whole file.
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        if (problem := _undecodable({"header": header})) is not None:
            raise InputError(f"manifest {shown}: line 1 (the header) is {problem}")
        _check_header(header, shown)
        records: list[Record] = []
        for cells in reader:
            extra = cells.pop(None, None)  # type: ignore[call-overload]
            problem = f"{len(extra)} more value(s) than the header has columns" if extra else None
            if not (any(str(v or "").strip() for v in cells.values()) or extra):
                continue
            if (undecodable := _undecodable(cells)) is not None:
                records.append((reader.line_num, {}, undecodable))
            else:
                records.append((reader.line_num, _given(cells), problem))
    return records


def _read_jsonl(path: Path, shown: str) -> list[Record]:
    records: list[Record] = []
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            if (problem := _undecodable({"line": text})) is not None:
                records.append((line, {}, problem.replace(" in column 'line'", "")))
                continue
            try:
                value = json.loads(text)
            except ValueError as exc:
                records.append((line, {}, f"not valid JSON ({exc})"))
                continue
            if not isinstance(value, dict):
                records.append((line, {}, "must be a JSON object of column: value"))
            else:
                records.append((line, _given(value), None))
    return records


def _read_parquet(path: Path, shown: str) -> list[Record]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(
            f"manifest {shown}: reading Parquet needs pyarrow; pip install 'mimicache[parquet]'"
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own ArrowInvalid / OSError kinds
        raise InputError(f"manifest {shown}: not a readable Parquet file ({exc})") from None
    _check_header(table.column_names, shown)
    return [(None, _given(row), None) for row in table.to_pylist()]


_READERS: dict[str, Callable[[Path, str], list[Record]]] = {
    "csv": _read_csv,
    "jsonl": _read_jsonl,
    "parquet": _read_parquet,
}
