"""``--sweep``: the product's size, content and order, ranges, errors before anything loads, one
model load for engine-choice sweeps, warm variants, grids whose tiles are the variants' frames,
``mimicache grid`` on an existing folder, and composition with shards and resume."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import mimicache.engine.engine
from mimicache.batch.job import Job
from mimicache.batch.planning.sweep import parse_sweep, sweep_jobs
from mimicache.batch.reporting.grid import (
    GridClip,
    GridGroup,
    grid_frames,
    grid_layout,
    groups_of,
)
from mimicache.batch.reporting.results import read_results
from mimicache.cli import main
from mimicache.cli.console import flag_words
from mimicache.config import TestCase
from mimicache.errors import ConfigError
from mimicache.media import iter_frames
from tests import s3_fixtures
from tests.engine_fixtures import walk_workspace

s3_server, s3_url = s3_fixtures.s3_server, s3_fixtures.s3_url  # fixtures

SWEEP = [
    "--sweep",
    "seed=1,2",
    "guidance_scale=1.5,2.5",
    "scheduler=EulerDiscreteScheduler,AnimateLCM_SVD",
]


def _job(tmp_path, index=0) -> Job:
    case = TestCase(ref_video_path=tmp_path / "walk.mp4", ref_image_path=tmp_path / "ref.png")
    stem = "walk_20261206120000" + (f"_{index}" if index else "")  # as the plan names them
    return Job(index, 0, case, case.ref_video_path, tmp_path / "out" / f"{stem}.mp4")


def test_the_product_its_order_and_its_ranges(tmp_path):
    sweep = parse_sweep(["seed=1:3", "guidance_scale=1.5,2", "resolution=64,128"])
    # the value that changes cached features varies slowest
    assert sweep.keys == ("resolution", "seed", "guidance_scale")
    assert sweep.size == 12 and len(sweep.variants()) == 12
    assert sweep.variants()[:3] == [
        {"resolution": 64, "seed": 1, "guidance_scale": 1.5},
        {"resolution": 64, "seed": 1, "guidance_scale": 2.0},
        {"resolution": 64, "seed": 2, "guidance_scale": 1.5},
    ]
    assert parse_sweep(["seed=0:20:5"]).axes == (("seed", (0, 5, 10, 15, 20)),)
    assert parse_sweep(["speed=exact,fast", "person=largest,1"]).variants()[-1] == {
        "person": "1",
        "speed": "fast",
    }
    jobs = sweep_jobs([_job(tmp_path, 0), _job(tmp_path, 1)], sweep)
    assert [j.index for j in jobs] == list(range(24))
    assert len({j.output_path for j in jobs}) == 24
    first = jobs[0]
    assert first.case.resolution == 64 and first.case.seed == 1
    assert first.output_path.name == "walk_20261206120000_res64_seed1_g1.5.mp4"
    assert first.name == "walk_res64_seed1_g1.5"
    assert first.sweep["id"] == sweep.id and first.sweep["base"] == "walk_20261206120000"
    assert parse_sweep(["seed=1:3", "guidance_scale=1.5,2", "resolution=64,128"]).id == sweep.id
    engine = sweep_jobs([_job(tmp_path)], parse_sweep(["scheduler=AnimateLCM_SVD"]))[0]
    assert engine.engine == {"scheduler": "AnimateLCM_SVD"} and engine.case.seed == 42


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["guidance=1,2"], "--sweep guidance: not a key that can be swept"),
        (["guidance_scale=a,2"], "--sweep guidance_scale=a: 'a' is not a number"),
        (["guidance_scale=1:3"], "a range needs a whole-number key"),
        (["seed=5:1"], "the range ends before it starts"),
        (["seed=1,1"], "a value is listed twice"),
        (["seed=1", "seed=2"], "--sweep seed: given twice"),
        (["scheduler=DDIM"], "--sweep scheduler=DDIM: choose from EulerDiscreteScheduler"),
        (["person=tallest"], "--sweep person=tallest: must be one of"),
        (["num_frames=1"], "--sweep num_frames=1"),
        (["seed"], "write KEY=V1,V2"),
    ],
)
def test_bad_sweeps_name_the_key(items, message):
    with pytest.raises(ConfigError) as error:
        parse_sweep(items)
    assert message in flag_words(str(error.value))  # as the command line shows it


def test_the_limit_and_an_impossible_variant_are_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"makes 300 jobs .* sweep_limit=256"):
        sweep_jobs([_job(tmp_path)], parse_sweep(["seed=1:300"]))
    assert len(sweep_jobs([_job(tmp_path)], parse_sweep(["seed=1:300"]), limit=300)) == 300
    with pytest.raises(ConfigError, match="frames_overlap"):  # an overlap over the tile size
        sweep_jobs([_job(tmp_path)], parse_sweep(["frames_overlap=100"]))


def test_values_are_checked_alone_and_each_variant_with_its_case(tmp_path):
    # no default tile size or overlap stands in for the config's
    assert parse_sweep(["num_frames=4,8"]).axes == (("num_frames", (4, 8)),)
    assert parse_sweep(["frames_overlap=80"]).axes == (("frames_overlap", (80,)),)
    job = _job(tmp_path)
    job.case = job.case.replace(num_frames=96, frames_overlap=2)
    assert [j.case.num_frames for j in sweep_jobs([job], parse_sweep(["num_frames=4,8"]))] == [4, 8]
    assert sweep_jobs([job], parse_sweep(["frames_overlap=80"]))[0].case.frames_overlap == 80
    with pytest.raises(ConfigError) as error:
        sweep_jobs([job], parse_sweep(["num_frames=4,8", "frames_overlap=80"]))
    assert "sweep='num_frames=4 frames_overlap=80': frames_overlap must be smaller" in str(
        error.value
    )


def test_the_variants_of_two_jobs_of_one_video_keep_apart(tmp_path):
    """Two test cases over one video: the plan names the second job ``_1``; its variants keep
    that, and each job's variants make a grid of their own."""
    first, second = _job(tmp_path), _job(tmp_path, 1)
    second.case_index, second.base_stem = 1, first.base_stem  # as plan_jobs makes them
    jobs = sweep_jobs([first, second], parse_sweep(["seed=1,2"]))
    assert len({j.output_path for j in jobs}) == 4
    assert [j.output_path.name for j in jobs[2:]] == [
        "walk_20261206120000_1_seed1.mp4",
        "walk_20261206120000_1_seed2.mp4",
    ]
    groups = groups_of(
        (j.sweep, GridClip(str(j.output_path), j.sweep["values"]), "out") for j in jobs
    )
    assert [[c.video for c in g.clips] for g in groups] == [
        [str(j.output_path) for j in jobs[:2]],
        [str(j.output_path) for j in jobs[2:]],
    ]


@pytest.fixture(scope="module")
def workspace(tiny_bundle, tmp_path_factory):
    return walk_workspace(tmp_path_factory.mktemp("sweep"), tiny_bundle)


def _run(workspace, out, *extra, cache="cache"):
    argv = [
        "run", "--inference_config", str(workspace["config"]), "--output_dir", str(out),
        "--feature_cache_dir", str(workspace["root"] / cache), "--quiet", "--device", "cpu",
        *extra,
    ]  # fmt: skip
    return main(argv)


@pytest.fixture
def loads(monkeypatch):
    """Counts the model loads of every engine built meanwhile."""
    counted: list[int] = []
    real = mimicache.engine.engine.load_models

    def counting(*args, **kwargs):
        counted.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(mimicache.engine.engine, "load_models", counting)
    return counted


def test_errors_come_before_anything_loads(workspace, tmp_path, loads, capsys):
    assert _run(workspace, tmp_path / "a", "--sweep", "guidance=1,2") == 2
    assert "error: --sweep guidance: not a key that can be swept" in capsys.readouterr().err
    assert _run(workspace, tmp_path / "b", "--sweep", "seed=1:300") == 2
    assert "--sweep_limit 256" in capsys.readouterr().err
    # a variant's engine choice that clashes with the run's other settings
    assert (
        _run(
            workspace, tmp_path / "c", "--speed", "fast", "--compile", "--sweep", "speed=exact,fast"
        )
        == 2
    )
    error = capsys.readouterr().err
    assert "error: --sweep speed=exact: --compile changes float rounding" in error, error
    assert loads == [] and not (tmp_path / "a").exists()


def test_a_sweep_runs_on_one_load_and_lays_its_variants_side_by_side(
    workspace, tmp_path, loads, capsys
):
    out = tmp_path / "out"
    assert _run(workspace, out, *SWEEP, cache="sweep-cache") == 0
    assert loads == [1]  # the schedulers are variants on the loaded models
    printed = capsys.readouterr().out
    videos = sorted(p for p in out.glob("walk_*.mp4") if "_grid" not in p.name)
    assert len(videos) == 8
    assert any(re.search(r"_seed2_g2\.5_lcm\.mp4$", p.name) for p in videos)
    rows = read_results(out / "results.jsonl")
    assert len({r["sweep"]["id"] for r in rows}) == 1
    assert {json.dumps(r["sweep"]["values"], sort_keys=True) for r in rows} == {
        json.dumps({"seed": s, "guidance_scale": g, "scheduler": n}, sort_keys=True)
        for s in (1, 2)
        for g in (1.5, 2.5)
        for n in ("EulerDiscreteScheduler", "AnimateLCM_SVD")
    }
    # every variant after the first prepares from the cache: each of its stages a hit
    for row in rows[1:]:
        stages = ("pose_frames", "clip_embeddings", "vae_latents")
        assert all(row["cache_hits"][s] for s in stages), row["cache_hits"]
    sidecar = json.loads(videos[0].with_suffix(".json").read_text())
    assert sidecar["sweep"]["values"]["seed"] in (1, 2)

    [grid] = out.glob("*_grid.mp4")
    assert grid.with_suffix(".png").is_file() and str(grid) in printed
    # the tiles are the variants' frames: 4 rows (seed x guidance) x 2 schedulers
    frames = np.stack(list(iter_frames(grid, 1)))
    first = {p: next(iter_frames(p, 1)) for p in videos}
    height, width = next(iter(first.values())).shape[:2]
    band = (frames.shape[1] // 4) - height
    assert frames.shape[2] == 2 * width and band > 0
    by_name = {json.dumps(r["sweep"]["values"], sort_keys=True): r for r in rows}
    order = [(1, 1.5), (1, 2.5), (2, 1.5), (2, 2.5)]
    for r, (seed, g) in enumerate(order):
        for c, name in enumerate(("EulerDiscreteScheduler", "AnimateLCM_SVD")):
            values = {"seed": seed, "guidance_scale": g, "scheduler": name}
            video = by_name[json.dumps(values, sort_keys=True)]["output"]
            y = r * (height + band) + band
            tile = frames[0, y : y + height, c * width : (c + 1) * width].astype(float)
            want = first[next(p for p in videos if str(p) == video)].astype(float)
            psnr = 10 * np.log10(255**2 / np.mean((tile - want) ** 2))
            assert psnr > 30, (values, psnr)
    # the labels: the values that differ and the score
    report = next(out.glob("*.report.html")).read_text()
    assert "Sweeps, side by side" in report and 'class="sortable"' in report
    assert report.count("<tr>") >= 8 and "worst part error" in report


def test_grid_redraws_an_existing_sweep_with_another_layout(workspace, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(workspace, out, "--sweep", "seed=1,2", "guidance_scale=1.5,2.5") == 0
    capsys.readouterr()
    assert main(["grid", str(out), "--rows", "guidance_scale", "--cols", "seed"]) == 0
    assert "4 variants ->" in capsys.readouterr().out
    grids = sorted(out.glob("*_grid*.mp4"))
    assert [g.stem.rsplit("_", 1)[-1] for g in grids] == ["grid", "1"]  # never overwritten
    frames = next(iter_frames(grids[1], 1))
    tile = next(iter_frames(next(out.glob("walk_*seed1_g1.5.mp4")), 1))
    assert frames.shape[1] == 2 * tile.shape[1]  # two seeds across
    assert main(["grid", str(out), "--rows", "scheduler"]) == 2
    assert "--rows scheduler: not a swept key" in capsys.readouterr().err


def test_a_shorter_variant_holds_its_last_frame_in_the_grid():
    rng = np.random.default_rng(0)
    clips = {"a.mp4": rng.integers(0, 255, (5, 16, 24, 3), dtype=np.uint8)}
    clips["b.mp4"] = clips["a.mp4"][:3] // 2
    group = GridGroup(
        "id", "walk", "out", ("seed",), [GridClip(v, {"seed": n}) for n, v in enumerate(clips)]
    )
    grid = grid_frames(group, clips)
    assert len(grid) == 5
    tiles = grid[:, -16:]  # below the label band: a's tile, then b's, across
    assert np.array_equal(tiles[:, :, :24], clips["a.mp4"])
    assert np.array_equal(tiles[:3, :, 24:], clips["b.mp4"])
    assert all(np.array_equal(tiles[t, :, 24:], clips["b.mp4"][-1]) for t in (3, 4))


def test_grid_layout_folds_the_other_keys_into_rows():
    clips = [
        GridClip(f"v{s}{g}{n}.mp4", {"seed": s, "guidance_scale": g, "scheduler": n})
        for s in (1, 2)
        for g in (1.5, 2.5)
        for n in ("EulerDiscreteScheduler", "AnimateLCM_SVD")
    ]
    group = GridGroup("id", "walk", "out", ("seed", "guidance_scale", "scheduler"), clips)
    rows, cols, cells = grid_layout(group)
    assert cols == ["euler", "lcm"] and rows[0] == "seed=1 g=1.5" and len(rows) == 4
    assert cells[3][1].values == {"seed": 2, "guidance_scale": 2.5, "scheduler": "AnimateLCM_SVD"}
    rows, cols, _ = grid_layout(group, rows="scheduler", cols="seed")
    assert cols == ["seed=1", "seed=2"] and rows == [
        "euler g=1.5",
        "lcm g=1.5",
        "euler g=2.5",
        "lcm g=2.5",
    ]


def test_shards_and_resume_run_every_variant_once(workspace, tmp_path, capsys):
    out = tmp_path / "out"
    sweep = ["--sweep", "seed=1:3", "guidance_scale=1.5,2.5"]
    assert _run(workspace, out, *sweep, "--shard", "1/2") == 0
    assert _run(workspace, out, *sweep, "--shard", "2/2") == 0
    rows = read_results(out / "results.jsonl")
    values = [json.dumps(r["sweep"]["values"], sort_keys=True) for r in rows]
    assert len(values) == 6 and len(set(values)) == 6  # each variant in exactly one shard
    capsys.readouterr()
    assert _run(workspace, out, *sweep, "--resume") == 0
    assert "0 succeeded, 0 failed, 6 skipped (done)" in capsys.readouterr().out
    # the two shards' variants are one sweep of one job: one grid of all six
    assert main(["grid", str(out)]) == 0
    assert ": 6 variants ->" in capsys.readouterr().out


def test_a_swept_key_is_named_by_the_variants_alone(workspace, tmp_path):
    out = tmp_path / "out"
    assert _run(workspace, out, "--seed", "7", "--guidance_scale", "3", "--sweep", "seed=1,2") == 0
    names = sorted(p.name for p in out.glob("walk_*.mp4") if "_grid" not in p.name)
    assert len(names) == 2 and all("seed7" not in n and "_g3" in n for n in names), names
    assert [n.rsplit("_", 1)[-1] for n in names] == ["seed1.mp4", "seed2.mp4"]


def test_a_sweep_on_ray_workers_into_object_storage(
    workspace,
    tmp_path,
    s3_url,
    ray_cluster,
    capsys,
):
    import fsspec

    root = s3_url.replace("/cache", "/out")
    sweep = ["--sweep", "seed=1,2", "scheduler=EulerDiscreteScheduler,AnimateLCM_SVD"]
    assert _run(workspace, root, *sweep, "--executor", "ray") == 0
    assert "4 succeeded, 0 failed" in capsys.readouterr().out
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    bucket = root.removeprefix("s3://")
    names = [p.rsplit("/", 1)[-1] for p in fs.ls(bucket)]
    assert len([n for n in names if n.endswith(".mp4") and "_grid" not in n]) == 4
    assert len([n for n in names if n.endswith("_grid.mp4")]) == 1
    assert len([n for n in names if n.endswith("_grid.png")]) == 1
    rows = [json.loads(line) for line in fs.cat_file(f"{bucket}/results.jsonl").splitlines()]
    assert sorted(r["sweep"]["values"]["seed"] for r in rows) == [1, 1, 2, 2]


def test_a_tile_label_too_wide_for_its_tile_breaks_between_words():
    from mimicache.batch.reporting.grid import _font, _wrapped

    lines = _wrapped(["seed=1", "suspect · worst part 1.26 · id 0.54"], 60)
    assert " ".join(lines).replace("  ", " ") == "seed=1 suspect worst part 1.26 id 0.54"
    assert all(_font().getlength(line) <= 60 for line in lines), lines
    assert _wrapped(["suspect · worst part 1.26 · id 0.54"], 1000) == [
        "suspect · worst part 1.26 · id 0.54"
    ]
