"""An object-storage output that fails: each fault of the store named before any work (missing
bucket, refused credentials, unreachable endpoint, throttling), a job's publication retried,
then kept on this machine and published by ``--resume``; the driver's own files staying local
with a warning; the report's thumbnails of remote outputs. The store is moto's S3 server behind
a real HTTP proxy that fails on cue (``tests/s3_fixtures.py``), reached through s3fs."""

from __future__ import annotations

import json
import logging
import socket

import pytest

from mimicache.batch.outputs.publish import publish_output
from mimicache.batch.outputs.root import location, open_output_root
from mimicache.batch.outputs.unpublished import kept_folder
from mimicache.batch.reporting.results import RESULTS_FILE
from mimicache.cli import main
from mimicache.errors import OutputError
from mimicache.storage import faults as store_faults
from mimicache.storage.digests import bytes_digest
from mimicache.storage.faults import Retry, StoreError
from tests import s3_fixtures
from tests.engine_fixtures import figure_video, reference_image, write_config

s3_server, s3_url, s3_proxy = s3_fixtures.s3_server, s3_fixtures.s3_url, s3_fixtures.s3_proxy


@pytest.fixture(autouse=True)
def _quick_retries(monkeypatch, tmp_path):
    """The retry policy's tries, without its waits; staging and kept files under tmp_path;
    no console handler of an earlier test's ``main`` (it writes to that test's closed
    capture, a "Logging error" traceback that is none of this test's)."""
    monkeypatch.setattr(store_faults, "PUBLISH_RETRY", Retry(tries=3, waits=(0.0,)))
    monkeypatch.setenv("MIMICACHE_LOCAL_CACHE_DIR", str(tmp_path / "tier"))
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_mimicache", False)]:
        root.removeHandler(handler)
        handler.close()


def _direct(endpoint: str):
    """s3fs straight to moto, past the proxy (what is really in the bucket)."""
    import s3fs

    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)


def _puts(proxy, name: str) -> int:
    return sum(1 for method, path in proxy.requests if method == "PUT" and name in path)


def _sidecar(path) -> bytes:
    return json.dumps({"output": location(path)}).encode()


# --------------------------------------------------------------------------- before any work


def test_each_fault_of_the_store_has_its_own_message(s3_url, s3_proxy, monkeypatch):
    out = s3_url.replace("/cache", "/out")
    bucket = out.split("/")[2]
    with pytest.raises(OutputError) as missing:
        open_output_root("s3://no-such-bucket/x")
    assert "bucket no-such-bucket does not exist" in str(missing.value)
    assert "create it" in str(missing.value)

    s3_proxy.fail(403)
    with pytest.raises(OutputError) as denied:
        open_output_root(out)
    assert f"refuses these credentials for bucket {bucket}" in str(denied.value)
    assert "AccessDenied" in str(denied.value) and "does not exist" not in str(denied.value)

    s3_proxy.fail(503)
    with pytest.raises(OutputError) as throttled:
        open_output_root(out)
    assert "throttling requests" in str(throttled.value) and "try again later" in str(
        throttled.value
    )

    s3_proxy.heal()
    assert open_output_root(out).remote  # the same bucket, reachable again
    assert any(".mimicache-write-check" in p for m, p in s3_proxy.requests if m == "PUT")
    assert not _direct(s3_proxy.upstream_url).glob(f"{bucket}/out/.mimicache-write-check*")

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", nobody)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(OutputError) as unreachable:
        open_output_root(out)
    message = str(unreachable.value)
    assert message.startswith(f"output_dir='{out}'") and "\n" not in message
    assert f"the store at {nobody} cannot be reached" in message
    assert "AWS_ENDPOINT_URL" in message and "does not exist" not in message


def test_refused_credentials_stop_the_run_with_exit_code_2(
    tiny_bundle, s3_url, s3_proxy, tmp_path, capsys
):
    config = write_config(
        tmp_path / "cfg.yaml", tiny_bundle, reference_image(tmp_path / "ref.png"),
        figure_video(tmp_path / "walk.mp4", frames=4),
    )  # fmt: skip
    s3_proxy.fail(403)
    out = s3_url.replace("/cache", "/out")
    code = main(["run", "--inference_config", str(config), "--output_dir", out, "--quiet"])
    error = capsys.readouterr().err
    assert code == 2
    assert f"error: --output_dir {out}: the store refuses these credentials" in error
    assert "Traceback" not in error


# --------------------------------------------------------------------------- one publication


def test_a_publication_is_retried_through_server_errors_and_an_answer_lost(s3_url, s3_proxy):
    folder = s3_url.replace("/cache", "/out")
    s3_proxy.fail(500, count=2, when=lambda method, path: method == "PUT")
    first = publish_output(folder, "clip", b"video", _sidecar)
    assert location(first) == f"{folder}/clip.mp4"
    assert _puts(s3_proxy, "clip.mp4") == 3  # two 500s, then the put that took
    # the store wrote it, but its answer was lost: the next try finds our very bytes there
    s3_proxy.fail(500, count=1, when=lambda m, p: p.endswith("again.mp4"), forwarded=True)
    again = publish_output(folder, "again", b"bytes", _sidecar)
    assert location(again) == f"{folder}/again.mp4"  # not again_1: the name is ours
    fs = _direct(s3_proxy.upstream_url)
    assert fs.cat_file(f"{folder}/again.mp4") == b"bytes"
    assert json.loads(fs.cat_file(f"{folder}/again.json")) == {"output": f"{folder}/again.mp4"}


def test_throttling_is_retried_then_named_and_refused_credentials_are_not_retried(s3_url, s3_proxy):
    folder = s3_url.replace("/cache", "/out")
    s3_proxy.fail(503, when=lambda method, path: method == "PUT")
    with pytest.raises(StoreError) as throttled:
        publish_output(folder, "slow", b"video", _sidecar)
    assert throttled.value.fault.kind == "throttled"
    assert "could not publish slow.mp4" in str(throttled.value)
    assert "(tried 3 times)" in str(throttled.value)
    s3_proxy.fail(403, when=lambda method, path: method == "PUT")
    before = _puts(s3_proxy, "denied.mp4")
    with pytest.raises(StoreError) as denied:
        publish_output(folder, "denied", b"video", _sidecar)
    assert denied.value.fault.kind == "denied" and "tried" not in str(denied.value)
    assert _puts(s3_proxy, "denied.mp4") - before == 1  # waiting would not change a 403


def test_a_refused_sidecar_takes_its_mp4_back_or_says_it_stays(s3_url, s3_proxy, caplog):
    folder = s3_url.replace("/cache", "/out")
    fs = _direct(s3_proxy.upstream_url)
    s3_proxy.fail(403, when=lambda method, path: method == "PUT" and ".json" in path)
    with pytest.raises(StoreError, match=r"could not publish clip\.json"):
        publish_output(folder, "clip", b"video", _sidecar)
    assert not fs.exists(f"{folder}/clip.mp4")  # no mp4 without its sidecar
    refused = {("PUT", "lone.json"), ("DELETE", "lone.mp4")}
    s3_proxy.fail(403, when=lambda method, path: (method, path.rsplit("/")[-1]) in refused)
    with caplog.at_level(logging.WARNING), pytest.raises(StoreError) as error:
        publish_output(folder, "lone", b"video", _sidecar)
    assert error.value.fault.kind == "denied"
    fs.invalidate_cache()
    assert fs.exists(f"{folder}/lone.mp4")  # the store would not take it back either: said so
    assert any(
        "could not remove lone.mp4" in r.getMessage() and "named by no sidecar" in r.getMessage()
        for r in caplog.records
    )


def test_the_drivers_uploads_fail_as_warnings_naming_the_local_file(
    s3_url, s3_proxy, tmp_path, caplog
):
    root = open_output_root(s3_url.replace("/cache", "/out"))
    staged = root.staging / RESULTS_FILE
    staged.write_text('{"status": "ok"}\n')
    s3_proxy.fail(500)
    with caplog.at_level(logging.WARNING):
        assert root.upload(staged, every=3600) is False  # during the run: once
        tried = _puts(s3_proxy, RESULTS_FILE)
        assert root.upload(staged, every=3600) is True  # not again before the end
        assert _puts(s3_proxy, RESULTS_FILE) == tried == 1
        assert root.upload(staged) is False  # the end: retried
        assert _puts(s3_proxy, RESULTS_FILE) == 1 + 3
        report = root.staging / "run.report.html"
        report.write_text("<html></html>")
        assert root.upload(report) is False  # the store failed after retries: one try
        assert _puts(s3_proxy, report.name) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"it stays at {staged}" in w and "server error" in w for w in warnings)
    assert staged.read_text() == '{"status": "ok"}\n'
    # a results.jsonl that cannot be read before the run is an error, not rows lost later
    s3_proxy.fail(403)
    with pytest.raises(OutputError, match="refuses these credentials"):
        root.download(RESULTS_FILE)


# --------------------------------------------------------------------------- a whole run


def test_an_endpoint_cut_mid_run_loses_no_job_and_resume_publishes_what_was_kept(
    tiny_bundle, s3_url, s3_proxy, tmp_path, monkeypatch, capsys
):
    clips = tmp_path / "clips"
    for i, name in enumerate("abc"):
        figure_video(clips / f"{name}.mp4", frames=4, phase=i / 3)
    image = reference_image(tmp_path / "ref.png")
    config = write_config(tmp_path / "cfg.yaml", tiny_bundle, image, clips / "a.mp4")
    out = s3_url.replace("/cache", "/out")
    bucket_path = out.removeprefix("s3://")
    argv = [
        "run", "--inference_config", str(config), "--batch_folder", str(clips),
        "--output_dir", out, "--feature_cache_dir", str(tmp_path / "cache"), "--threads", "1",
        "--quiet",
    ]  # fmt: skip
    # the endpoint goes away once the first job's sidecar is in
    s3_proxy.cut_after(
        lambda method, path: method == "PUT" and "/clips/" in path and ".json" in path
    )
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err + captured.out

    fs = _direct(s3_proxy.upstream_url)
    published = sorted(p.rsplit("/", 1)[-1] for p in fs.glob(f"{bucket_path}/clips/*"))
    assert [p.split("_")[0] for p in published] == ["a", "a"]  # its mp4 and sidecar
    kept = kept_folder(f"{out}/clips")
    assert sorted(p.name.split("_")[0] for p in kept.glob("*.mp4")) == ["b", "c"]
    # the driver's files stayed in the staging folder, with every job's row
    (staging,) = (tmp_path / "tier" / "staging").glob("run-*")
    rows = [json.loads(line) for line in (staging / RESULTS_FILE).read_text().splitlines()]
    assert [(r["name"], r["status"]) for r in rows] == [
        ("a", "ok"),
        ("b", "failed"),
        ("c", "failed"),
    ]
    for row in rows[1:]:
        assert "cannot be reached" in row["error"] and row["kept"].startswith(str(kept))
        kept_mp4 = (kept / row["kept"].rsplit("/", 1)[-1]).read_bytes()
        assert bytes_digest(kept_mp4) == row["output_blake3"]
        sidecar = json.loads(
            (kept / row["kept"].rsplit("/", 1)[-1]).with_suffix(".json").read_text()
        )
        assert sidecar["status"] == "ok" and sidecar["unpublished"]["folder"] == f"{out}/clips"
    assert not fs.exists(f"{bucket_path}/{RESULTS_FILE}")
    (log,) = staging.glob("*.log")
    (report,) = staging.glob("*.report.html")
    # URLs as given, the kept folder named in the summary and the log, the local files printed
    summary = captured.out
    assert f"{out}/clips/a_" in summary and "s3:/" + out[5:] not in summary
    assert "2 result(s) not published" in summary and str(kept) in summary
    assert "--resume publishes them" in summary
    assert f"not uploaded to {out}; on this machine: {staging / RESULTS_FILE}" in summary
    text = log.read_text()
    assert f"{out}/clips/a_" in text and "s3:/" + out[5:] not in text
    assert f"kept on this machine in {kept}" in text and "--resume" in text
    assert f"it stays at {staging / RESULTS_FILE}" in captured.err
    # the report: the kept results' thumbnails; the published one's plainly missing
    page = report.read_text()
    assert page.count('<img alt="frames of') == 2 and "could not be fetched" in page
    assert "ref_video_path" not in page.split("<h2>Jobs</h2>")[1].split("parameters</summary>")[0]

    # while the store is still away, --resume stops before any work, saying so
    assert main([*argv, "--resume"]) == 2
    assert "cannot be reached" in capsys.readouterr().err

    # the store back: --resume publishes the kept results instead of computing them again
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_proxy.upstream_url)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    assert main([*argv, "--resume"]) == 0
    fs.invalidate_cache()
    mp4s = sorted(fs.glob(f"{bucket_path}/clips/*.mp4"))
    assert [p.rsplit("/", 1)[-1].split("_")[0] for p in mp4s] == ["a", "b", "c"]
    for row in rows[1:]:
        (mp4,) = [p for p in mp4s if p.rsplit("/", 1)[-1].startswith(row["name"] + "_")]
        assert bytes_digest(fs.cat_file(mp4)) == row["output_blake3"]  # the kept bytes
        sidecar = json.loads(fs.cat_file(mp4.removesuffix(".mp4") + ".json"))
        assert sidecar["output"] == f"s3://{mp4}" and "unpublished" not in sidecar
    assert not list(kept.glob("*"))
    again = [json.loads(line) for line in fs.cat_file(f"{out}/{RESULTS_FILE}").splitlines()]
    assert [(r["name"], r["status"]) for r in again] == [
        ("a", "skipped"), ("b", "skipped"), ("c", "skipped"),
    ]  # fmt: skip
    (resumed_log,) = [p for p in fs.glob(f"{bucket_path}/*.log")]
    text = fs.cat_file(resumed_log).decode()
    assert text.count("published the result an earlier run kept") == 2 and "redone" not in text


# --------------------------------------------------------------------------- reading clips back


def test_reading_clips_from_a_refusing_store_names_the_fault(s3_url, s3_proxy, capsys, caplog):
    """``score`` and ``grid`` read an object-storage root: a store fault is the one-line error
    with what to do, and a results.jsonl whose last line a crash cut is read without it."""
    from mimicache.batch.outputs.clips import find_clips
    from mimicache.errors import InputError

    out = s3_url.replace("/cache", "/read")
    good = {"status": "failed", "output": None, "error": "x"}
    _direct(s3_proxy.upstream_url).pipe(
        out.split("://", 1)[1] + "/results.jsonl", (json.dumps(good) + '\n{"status": "o').encode()
    )
    assert find_clips(f"{out}/results.jsonl").clips == []  # the cut line skipped, not fatal
    assert "line 2 is not a result row" in caplog.text

    s3_proxy.fail(403)
    for source in (out, f"{out}/results.jsonl"):
        with pytest.raises(InputError) as denied:
            find_clips(source)
        assert "refuses these credentials" in str(denied.value), source
    assert main(["score", out]) == 2
    error = capsys.readouterr().err
    assert "refuses these credentials" in error and "Traceback" not in error


def test_a_grid_whose_sheet_cannot_be_published_leaves_no_video_alone(s3_url, s3_proxy):
    from mimicache.batch.outputs.publish import publish_files

    out = s3_url.replace("/cache", "/grids")
    s3_proxy.fail(403, when=lambda method, path: method == "PUT" and path.endswith(".png"))
    with pytest.raises(OutputError):
        publish_files(out, "walk_grid", {".mp4": b"video", ".png": b"sheet"})
    assert _puts(s3_proxy, "walk_grid.mp4") == 1  # it was published, then taken back
    s3_proxy.heal()
    assert not _direct(s3_proxy.upstream_url).glob(out.split("://", 1)[1] + "/walk_grid*")
