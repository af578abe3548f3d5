"""``--output_dir s3://...``: create-only publication of a job's files on object storage, the
driver's files staged and uploaded, ``--resume`` from the bucket; inputs and the manifest by
URL on the local executor (moto's S3 server through s3fs)."""

from __future__ import annotations

import json

import pytest

from mimicache.batch.outputs.publish import publish_output
from mimicache.batch.outputs.root import location, object_sidecars, open_output_root
from mimicache.batch.reporting.results import RESULTS_FILE
from mimicache.cli import main
from mimicache.errors import OutputError
from mimicache.storage.digests import bytes_digest
from tests import s3_fixtures
from tests.engine_fixtures import figure_video, reference_image, write_config

s3_server, s3_url = s3_fixtures.s3_server, s3_fixtures.s3_url  # fixtures


def _fs():
    import fsspec

    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    return fs


def test_publish_never_overwrites_and_takes_the_next_free_name(s3_url):
    folder = s3_url.replace("/cache", "/out")
    sidecar = lambda path: json.dumps({"output": location(path)}).encode()  # noqa: E731
    first = publish_output(folder, "clip", b"first", sidecar)
    second = publish_output(folder, "clip", b"second", sidecar)
    assert location(first) == f"{folder}/clip.mp4" and location(second) == f"{folder}/clip_1.mp4"
    fs = _fs()
    assert fs.cat_file(f"{folder}/clip.mp4") == b"first"  # never replaced
    assert json.loads(fs.cat_file(f"{folder}/clip_1.json")) == {"output": f"{folder}/clip_1.mp4"}
    # a sidecar name someone else holds: our mp4 under that name is taken back, next name used
    fs.pipe_file(f"{folder}/clip_2.json", b"{}")
    third = publish_output(folder, "clip", b"third", sidecar)
    assert location(third) == f"{folder}/clip_3.mp4"
    assert not fs.exists(f"{folder}/clip_2.mp4")
    # a failed job: the sidecar alone, the mp4 name left free
    failed = publish_output(folder, "bad", None, lambda _: b'{"status": "failed"}')
    assert not fs.exists(location(failed)) and fs.exists(f"{folder}/bad.json")
    names = sorted(p.name for p, _ in object_sidecars(folder))
    assert names == ["bad.json", "clip.json", "clip_1.json", "clip_2.json", "clip_3.json"]


def test_a_url_root_needs_the_s3_extra_and_an_existing_bucket(s3_server, monkeypatch):
    with pytest.raises(OutputError, match=r"output_dir='s3://no-such-bucket/x'.*does not exist"):
        open_output_root("s3://no-such-bucket/x")
    import fsspec.core

    def without_s3fs(url, **_):  # what fsspec raises when s3fs is not installed
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(fsspec.core, "url_to_fs", without_s3fs)
    with pytest.raises(OutputError) as error:
        open_output_root("s3://bucket/out")
    message = str(error.value)
    assert message.startswith("output_dir='s3://bucket/out'") and "\n" not in message
    assert 'pip install "mimicache[s3]"' in message


def test_local_run_with_inputs_manifest_and_outputs_in_the_bucket(
    tiny_bundle, s3_url, tmp_path, monkeypatch
):
    monkeypatch.setenv("MIMICACHE_LOCAL_CACHE_DIR", str(tmp_path / "tier"))
    bucket = s3_url.removesuffix("/cache")
    fs = _fs()
    image = reference_image(tmp_path / "ref.png")
    video = figure_video(tmp_path / "walk.mp4", frames=4)
    fs.put_file(str(image), f"{bucket}/data/ref.png")
    fs.put_file(str(video), f"{bucket}/data/clips/walk.mp4")
    fs.pipe_file(f"{bucket}/data/jobs.csv", b"ref_image,video\nref.png,clips/walk.mp4\n")
    config = write_config(tmp_path / "cfg.yaml", tiny_bundle, image, video)
    out = f"{bucket}/out"
    argv = [
        "run", "--inference_config", str(config), "--manifest", f"{bucket}/data/jobs.csv",
        "--output_dir", out, "--feature_cache_dir", str(tmp_path / "cache"), "--threads", "1",
        "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    fs.invalidate_cache()
    (mp4,) = fs.glob(f"{out.removeprefix('s3://')}/jobs/*.mp4")
    sidecar = json.loads(fs.cat_file(mp4.removesuffix(".mp4") + ".json"))
    data = fs.cat_file(mp4)
    assert sidecar["status"] == "ok" and sidecar["output"] == f"s3://{mp4}"
    assert sidecar["parameters"]["ref_video_path"] == f"{bucket}/data/clips/walk.mp4"
    assert sidecar["output_bytes"] == len(data) and sidecar["output_blake3"] == bytes_digest(data)
    (row,) = [json.loads(line) for line in fs.cat_file(f"{out}/{RESULTS_FILE}").splitlines()]
    assert row["output"] == f"s3://{mp4}" and row["output_blake3"] == bytes_digest(data)
    assert row["video"] == f"{bucket}/data/clips/walk.mp4"  # the URL as planned
    uploaded = {p.rsplit("/", 1)[-1] for p in fs.ls(out.removeprefix("s3://"))}
    assert any(n.endswith(".log") for n in uploaded) and any(
        n.endswith(".report.html") for n in uploaded
    )
    # the report shows the object's frames (fetched once), named by its URL
    (report,) = [n for n in uploaded if n.endswith(".report.html")]
    page = fs.cat_file(f"{out}/{report}").decode()
    assert page.count('<img alt="frames of walk"') == 1 and f"output: s3://{mp4}" in page
    assert "no thumbnails" not in page
    # nothing written locally but the staging copies and the fetched inputs
    assert not (tmp_path / "s3:").exists()

    # --resume reads results.jsonl and the sidecars from the bucket: nothing to redo
    assert main([*argv, "--resume"]) == 0
    fs.invalidate_cache()
    assert len(fs.glob(f"{out.removeprefix('s3://')}/jobs/*.mp4")) == 1
    rows = [json.loads(line) for line in fs.cat_file(f"{out}/{RESULTS_FILE}").splitlines()]
    assert [r["status"] for r in rows] == ["ok", "skipped"]
    assert rows[1]["output"] == row["output"]


def test_results_jsonl_goes_up_as_jobs_finish_then_whole_at_the_end(s3_url, tmp_path, monkeypatch):
    from mimicache.batch import JobResult
    from mimicache.batch.job import Job
    from mimicache.batch.reporting.results import ResultsLog
    from mimicache.config import TestCase

    monkeypatch.setenv("MIMICACHE_LOCAL_CACHE_DIR", str(tmp_path / "tier"))
    root = open_output_root(s3_url.replace("/cache", "/out"))
    assert root.remote and root.staging.parent == tmp_path / "tier" / "staging"
    case = TestCase(ref_image_path=tmp_path / "ref.png", ref_video_path=tmp_path / "v.mp4")
    jobs = [Job(i, 0, case, case.ref_video_path, root.folder / f"v_{i}.mp4") for i in range(3)]
    log = ResultsLog(root.download(RESULTS_FILE), run="T",
                     after_write=lambda path: root.upload(path, every=3600))  # fmt: skip
    # kept alive as a run keeps them (the log tells results apart by identity)
    results = [JobResult(job, "failed", error=f"error {job.index}") for job in jobs]
    log.add(results[0])  # the first row goes up at once
    fs = _fs()
    assert len(fs.cat_file(f"{root.url}/{RESULTS_FILE}").splitlines()) == 1
    log.add(results[1])  # within the interval: staged only
    fs.invalidate_cache()
    assert len(fs.cat_file(f"{root.url}/{RESULTS_FILE}").splitlines()) == 1
    root.upload(log.path)  # the end of the run
    fs.invalidate_cache()
    assert len(fs.cat_file(f"{root.url}/{RESULTS_FILE}").splitlines()) == 2
    # the next run appends to the rows already at the root
    again = open_output_root(root.url)
    staged = again.download(RESULTS_FILE)
    assert staged.parent != root.staging and len(staged.read_text().splitlines()) == 2
