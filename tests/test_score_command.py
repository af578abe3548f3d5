"""``mimicache score`` on clips that exist: a folder written without scores, its results.jsonl,
an S3 output root (moto), a damaged mp4, skips and re-judging, a rescore from the cache,
``.pose`` files that pose-format reads back, and Ray workers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from mimicache.batch.reporting.results import read_results
from mimicache.cli import main
from mimicache.quality.metrics import PARTS
from mimicache.quality.pose_files import read_pose_points
from tests import s3_fixtures
from tests.engine_fixtures import figure_video, reference_image, write_config
from tests.test_quality_run import LENIENT

s3_server, s3_url = s3_fixtures.s3_server, s3_fixtures.s3_url  # fixtures


@pytest.fixture(scope="module")
def unscored(tiny_bundle, tmp_path_factory):
    """A run's output folder of two clips written with ``--no_score`` (as every run wrote
    them before clips were scored), and the cache it filled."""
    root = tmp_path_factory.mktemp("unscored")
    image = reference_image(root / "ref.png")
    videos = root / "clips"
    figure_video(videos / "a_walk.mp4", frames=6)
    figure_video(videos / "b_walk.mp4", frames=6, phase=0.3)
    config = write_config(root / "cfg.yaml", tiny_bundle, image, videos / "a_walk.mp4")
    out = root / "out"
    code = main(
        [
            "run", "--inference_config", str(config), "--batch_folder", str(videos),
            "--output_dir", str(out), "--feature_cache_dir", str(root / "cache"), "--quiet",
            "--device", "cpu", "--no_score",
        ]
    )  # fmt: skip
    assert code == 0
    return {"root": root, "config": config, "out": out, "videos": videos}


def _copy(unscored, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(unscored["out"], out)
    return out


def _score(source, cache, *extra):
    return main(["score", str(source), "--feature_cache_dir", str(cache), "--quiet", *extra])


def _summary(capsys) -> str:
    return capsys.readouterr().out


def test_score_fills_a_folder_written_without_scores_and_never_rewrites_a_sidecar(
    unscored, tmp_path, capsys
):
    out = _copy(unscored, tmp_path)
    sidecars = {p: p.read_bytes() for p in out.rglob("*.json")}
    assert all("quality" not in json.loads(b) for b in sidecars.values())
    cache = tmp_path / "fresh-cache"  # nothing cached: the pose frames are made again
    assert _score(out, cache) == 0
    printed = _summary(capsys)
    assert "2 clip(s): 2 scored, 0 re-judged, 0 kept" in printed and " suspect " in printed
    rows = read_results(out / "scores.jsonl")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert {r["clip"] for r in rows} == {
        f"clips/{p.stem}" for p in out.joinpath("clips").glob("*.mp4")
    }
    quality = rows[0]["quality"]
    assert quality["verdict"] == "suspect" and quality["frames"] == list(range(6))
    assert set(quality["parts"]) == set(PARTS) and quality["clip_frames"] == 6
    assert {p: p.read_bytes() for p in out.rglob("*.json")} == sidecars  # immutable
    [report] = out.glob("score_*.report.html")
    assert "Quality, worst first" in report.read_text()
    assert len(list(out.glob("score_*.log"))) == 1

    # the same scorer over the same frames: nothing to do, nothing written
    assert _score(out, cache) == 0
    assert "0 scored, 0 re-judged, 2 kept" in _summary(capsys)
    assert len(read_results(out / "scores.jsonl")) == 2

    # other thresholds: re-judged from the stored measures, nothing computed
    assert _score(out, cache, "--score_threshold", *LENIENT) == 0
    assert "0 scored, 2 re-judged" in _summary(capsys)
    rejudged = read_results(out / "scores.jsonl")[2:]
    assert [r["status"] for r in rejudged] == ["rejudged", "rejudged"]
    assert all(r["quality"]["verdict"] == "ok" and "timings" not in r for r in rejudged)
    assert rejudged[0]["quality"]["parts"] == rows[0]["quality"]["parts"]

    # a rescore of a scored clip reads every stage from the cache
    assert _score(out, cache, "--force") == 0
    assert "2 scored" in _summary(capsys)
    forced = read_results(out / "scores.jsonl")[4:]
    for row in forced:
        assert row["cache_hits"] == {
            "pose_frames": True,
            "output_keypoints": True,
            "clip_embeddings": True,
            "output_embeddings": True,
        }
    assert [r["quality"]["parts"] for r in forced] == [r["quality"]["parts"] for r in rows]

    # other frames: scored again over them
    assert _score(out, cache, "--score_frames", "3") == 0
    assert "2 scored" in _summary(capsys)
    assert read_results(out / "scores.jsonl")[-1]["quality"]["frames"] == [0, 2, 5]


def test_score_names_a_damaged_or_missing_clip_and_scores_the_rest(unscored, tmp_path, capsys):
    out = _copy(unscored, tmp_path)
    first, second = sorted(out.joinpath("clips").glob("*.mp4"))
    first.write_bytes(b"\x00" * 1000)  # damaged
    assert _score(out.joinpath("results.jsonl"), unscored["root"] / "cache") == 1
    printed = _summary(capsys)
    assert "Traceback" not in printed
    assert (
        "1 scored, 0 re-judged, 0 kept (already scored by mimicache-score/1), 1 failed" in printed
    )
    rows = {r["clip"]: r for r in read_results(out / "scores.jsonl")}
    bad = rows[f"clips/{first.stem}"]
    assert bad["status"] == "failed"
    assert str(first) in bad["error"] and "cannot be decoded" in bad["error"]
    assert rows[f"clips/{second.stem}"]["status"] == "ok"
    second.unlink()  # gone: named too; the damaged one fails again
    assert _score(out, unscored["root"] / "cache") == 1
    rows = read_results(out / "scores.jsonl")
    missing = [r for r in rows if r["clip"] == f"clips/{second.stem}"][-1]
    # the earlier score of the vanished clip stays the current one: nothing to redo
    assert missing["status"] == "ok"
    assert _score(out, unscored["root"] / "cache", "--force") == 1
    missing = [r for r in read_results(out / "scores.jsonl") if r["clip"] == f"clips/{second.stem}"]
    assert missing[-1]["status"] == "failed" and "mp4 is missing" in missing[-1]["error"]


def test_score_without_clips_or_config_says_what_to_pass(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["score", str(empty)]) == 2
    assert "no finished clip found" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "nowhere")]) == 2
    assert "not an output folder" in capsys.readouterr().err


def test_pose_files_load_back_with_pose_format(unscored, tmp_path):
    from pose_format import Pose

    out = _copy(unscored, tmp_path)
    exported = tmp_path / "poses"
    assert _score(out, unscored["root"] / "cache", "--export_pose", str(exported)) == 0
    [row, _] = read_results(out / "scores.jsonl")
    stem = row["clip"].split("/")[-1]
    files = {p.name: p for p in exported.iterdir()}
    assert set(files) >= {f"{stem}.{kind}.pose" for kind in ("driving", "target", "output")}
    for kind in ("driving", "target", "output"):
        pose = Pose.read(files[f"{stem}.{kind}.pose"].read_bytes())
        assert pose.header.components[0].name == "pose_keypoints_2d"
        assert pose.body.data.shape[1:] == (1, 137, 2)
    output = Pose.read(files[f"{stem}.output.pose"].read_bytes())
    fps = json.loads(out.joinpath(row["clip"] + ".json").read_text())["parameters"]["fps"]
    assert output.body.data.shape[0] == 6 and output.body.fps == fps  # every frame, the clip's
    # the worst frame's points as the score kept them, and as the .pose file holds them
    worst = row["quality"]["worst"][0]
    found, _ = read_pose_points(files[f"{stem}.output.pose"])
    kept = np.array(worst["found"])
    shown = kept[:, 2] > 0
    assert np.allclose(found[worst["frame"]][shown, :2], kept[shown, :2], atol=0.06)
    target, _ = read_pose_points(files[f"{stem}.target.pose"])
    assert np.allclose(target[worst["frame"]][:, :2], np.array(worst["target"])[:, :2], atol=0.06)
    # the clips are scored now: an export into another folder still writes every clip's files
    again = tmp_path / "again"
    assert _score(out, unscored["root"] / "cache", "--export_pose", str(again)) == 0
    assert {p.name for p in again.iterdir()} == set(files)


def test_pose_command_exports_the_driving_and_target_keypoints(unscored, tmp_path, capsys):
    exported = tmp_path / "poses"
    code = main(
        [
            "pose", "--inference_config", str(unscored["config"]), "--output",
            str(tmp_path / "preview.mp4"), "--feature_cache_dir", str(unscored["root"] / "cache"),
            "--quiet", "--export_pose", str(exported),
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    driving, fps = read_pose_points(exported / "preview.driving.pose")
    target, _ = read_pose_points(exported / "preview.target.pose")
    assert f"keypoints: {exported / 'preview.target.pose'}" in printed
    assert len(driving) == len(target) == 6 and fps > 0
    assert (driving[..., 2] > 0).any() and (target[..., 2] > 0).any()


def test_score_an_s3_output_root(unscored, tiny_bundle, s3_url, tmp_path, capsys):
    import fsspec

    root = s3_url.replace("/cache", "/out")
    code = main(
        [
            "run", "--inference_config", str(unscored["config"]), "--output_dir", root,
            "--feature_cache_dir", str(tmp_path / "cache"), "--quiet", "--device", "cpu",
            "--no_score",
        ]
    )  # fmt: skip
    assert code == 0
    capsys.readouterr()
    assert _score(root, tmp_path / "cache") == 0
    assert "1 clip(s): 1 scored" in _summary(capsys)
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    bucket = root.removeprefix("s3://")
    [row] = [json.loads(line) for line in fs.cat_file(f"{bucket}/scores.jsonl").splitlines()]
    assert row["status"] == "ok" and row["output"].startswith("s3://")
    assert row["quality"]["verdict"] in ("ok", "suspect")
    assert fs.glob(f"{bucket}/score_*.report.html") and fs.glob(f"{bucket}/score_*.log")


def test_score_on_ray_workers(unscored, tmp_path, capsys, ray_cluster):
    out = _copy(unscored, tmp_path)
    assert _score(out, unscored["root"] / "cache", "--executor", "ray", "--workers", "2") == 0
    assert "2 scored" in _summary(capsys)
    assert [r["status"] for r in read_results(out / "scores.jsonl")] == ["ok", "ok"]
