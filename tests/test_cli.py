"""`mimicache run` end to end on the tiny bundle, and the original scripts."""

import json
import re
import subprocess
import sys
from pathlib import Path

import av
import pytest

import mimicache.engine.engine
import mimicache.engine.loaded
from mimicache.cli import build_parser, main, original_script_main
from mimicache.errors import MimicacheError
from tests.engine_fixtures import figure_video, reference_image, write_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workspace(tiny_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("ws")
    videos = root / "clips"
    videos.mkdir()
    figure_video(videos / "a_walk.mp4", frames=6)
    figure_video(videos / "b_walk.mp4", frames=4, phase=0.4)
    (videos / "c_broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    (videos / ".hidden.mp4").write_bytes(b"not even looked at")
    image = reference_image(root / "ref.png")
    config = write_config(root / "cfg.yaml", tiny_bundle, image, videos / "a_walk.mp4")
    return {"root": root, "videos": videos, "config": config}


def _decode(path):
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return len(frames), frames[0].shape


def test_batch_with_a_corrupt_video(workspace, tmp_path, monkeypatch, capsys):
    loads = []
    real = mimicache.engine.loaded.load_pipeline
    monkeypatch.setattr(
        mimicache.engine.loaded, "load_pipeline", lambda *a, **k: loads.append(1) or real(*a, **k)
    )
    out = tmp_path / "out"
    code = main(
        [
            "run", "--inference_config", str(workspace["config"]), "--batch_folder", str(workspace["videos"]),
            "--output_dir", str(out), "--feature_cache_dir", str(tmp_path / "cache"), "--quiet",
        ]
    )  # fmt: skip
    assert code == 1
    assert len(loads) == 1  # models loaded once for the whole batch
    written = sorted((out / "clips").glob("*.mp4"))
    assert [p.name.split("_")[0] + "_" + p.name.split("_")[1] for p in written] == [
        "a_walk",
        "b_walk",
    ]
    assert _decode(written[0]) == (6, (64, 64, 3))  # reference frame dropped: 1+6 -> 6
    assert _decode(written[1]) == (4, (64, 64, 3))
    sidecar = json.loads(written[0].with_suffix(".json").read_text())
    assert sidecar["status"] == "ok" and sidecar["parameters"]["num_inference_steps"] == 1
    assert sidecar["pose_retarget"] == "published"
    assert {"preprocess", "pipeline", "total"} <= set(sidecar["timings"])
    summary = capsys.readouterr().out
    assert "c_broken" in summary and "failed" in summary and "2 succeeded, 1 failed" in summary
    log = next(out.glob("*.log")).read_text()
    assert "c_broken failed" in log and "c_broken.mp4" in log
    failed = json.loads(next((out / "clips").glob("c_broken_*.json")).read_text())
    assert failed["status"] == "failed" and failed["output"] is None


def test_config_error_exits_2_and_names_the_key(tmp_path, workspace, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(workspace["config"].read_text().replace("num_frames", "num_frame"))
    code = main(["run", "--inference_config", str(bad), "--output_dir", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "num_frame" in err and "did you mean 'num_frames'" in err and "bad.yaml" in err


def test_missing_model_exits_2(tmp_path, workspace, capsys):
    bad = tmp_path / "nomodel.yaml"
    bad.write_text(workspace["config"].read_text().replace("MimicMotion_tiny.pth", "absent.pth"))
    code = main(
        ["run", "--inference_config", str(bad), "--output_dir", str(tmp_path / "o"), "--quiet"]
    )
    assert code == 2
    assert "absent.pth" in capsys.readouterr().err


def test_steps_override_and_seed_scripts(workspace, tmp_path, monkeypatch):
    calls = []
    real = mimicache.engine.MimicMotion.generate
    monkeypatch.setattr(
        mimicache.engine.MimicMotion,
        "generate",
        lambda self, case, **k: calls.append(case) or real(self, case, **k),
    )
    out = tmp_path / "out"
    code = main(
        [
            "run", "--inference_config", str(workspace["config"]), "--output_dir", str(out),
            "--num_inference_steps", "2", "--seed", "5", "--disable_feature_cache", "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    assert calls[0].num_inference_steps == 2 and calls[0].seed == 5
    assert len(list(out.glob("a_walk_*.mp4"))) == 1  # no batch folder: straight under output_dir
    assert not (tmp_path / "cache").exists()


def test_original_script_defaults():
    import argparse

    from mimicache.cli.flags import ORIGINAL_SCRIPT_DEFAULTS, add_run_arguments

    parser = argparse.ArgumentParser()
    add_run_arguments(parser, ORIGINAL_SCRIPT_DEFAULTS)
    args = parser.parse_args([])
    assert args.num_inference_steps == 4 and args.scheduler == "AnimateLCM_SVD"
    assert (
        args.feature_cache_dir == "cache/features" and args.inference_config == "configs/test.yaml"
    )
    assert args.output_dir == "outputs/" and args.scheduler_sigma_max == 700.0
    assert args.lcm_num_train_timesteps == 40 and not args.scheduler_clip_denoised
    # the pose retargeting default applies after the config's pose.retarget (flag > config)
    assert args.pose_retarget is None and args.default_pose_retarget == "graft"
    run = build_parser().parse_args(["run"])
    assert run.num_inference_steps is None and run.scheduler == "EulerDiscreteScheduler"
    assert run.pose_retarget is None and run.default_pose_retarget == "published"
    bench = build_parser().parse_args(["bench", "--pose_retarget", "graft"])
    assert bench.pose_retarget == "graft"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--pose_retarget", "seed"])
    assert build_parser().parse_args(["bench"]).benchmark_cache


def test_benchmark_cache_runs_cold_then_warm(workspace, tmp_path, capsys):
    out = tmp_path / "out"
    code = original_script_main(
        [
            "--inference_config", str(workspace["config"]), "--output_dir", str(out),
            "--feature_cache_dir", str(tmp_path / "cache"), "--benchmark_cache", "--disable_feature_cache",
            "--num_inference_steps", "1", "--quiet",
        ],
        cache=False,
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "outputs bit-identical: yes (1 of 1 jobs)" in printed
    assert "video_keypoints" in printed and "speed-up" in printed
    assert "a_walk ran once first with the cache off, untimed" in printed
    assert (
        "  cached stages (video_keypoints, image_keypoints, pose_frames, clip_embeddings, "
        "vae_latents; keys, decoding): cold " in printed
    )
    assert "  whole job (every stage): cold " in printed
    log = next(out.glob("*.log")).read_text()
    assert "warm-up: a_walk once with the cache off" in log
    assert "ignoring --disable_feature_cache" in log
    assert "Cache miss for video_keypoints" in log and "forced" in log
    assert "Loaded cached features for pose_frames" in log  # the warm run needs no keypoints
    assert len(list(out.glob("*_cold.mp4"))) == 1 and len(list(out.glob("*_warm.mp4"))) == 1


def test_scripts_run_as_files():
    for script in ("inference_raw_batch_cache.py", "inference_raw_batch_turbo.py"):
        done = subprocess.run(
            [sys.executable, str(ROOT / script), "--help"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0
        assert (
            "--disable_pipeline_feature_cache" in done.stdout
            and "--scheduler_clip_denoised" in done.stdout
        )
        text = " ".join(done.stdout.split())
        assert "--pose_retarget {published,graft}" in text
        assert "(default: the config's value, else graft)" in text
        assert "the graft pose retargeting" in text


@pytest.mark.parametrize(
    ("seed_script", "config_value", "flag", "expected"),
    [
        (False, None, None, "published"),
        (False, "graft", None, "graft"),
        (False, "graft", "published", "published"),
        (True, None, None, "graft"),
        (True, "published", None, "published"),
        (True, None, "published", "published"),
        (True, "published", "graft", "graft"),
    ],
)
def test_pose_retarget_precedence(
    workspace, tmp_path, monkeypatch, seed_script, config_value, flag, expected
):
    """Flag > config's pose.retarget > the command's default (run: published, seed: graft)."""
    seen = []

    def fake_from_config(config, **kw):
        seen.append(kw["settings"].pose_retarget)
        raise MimicacheError("stop before loading models")

    monkeypatch.setattr(mimicache.engine.MimicMotion, "from_config", staticmethod(fake_from_config))
    config = tmp_path / "cfg.yaml"
    text = workspace["config"].read_text()
    if config_value is not None:
        text += f"pose:\n  retarget: {config_value}\n"
    config.write_text(text)
    argv = ["--inference_config", str(config), "--output_dir", str(tmp_path / "o"), "--quiet"]
    if flag is not None:
        argv += ["--pose_retarget", flag]
    code = original_script_main(argv, cache=True) if seed_script else main(["run", *argv])
    assert code == 2 and seen == [expected]


def _run_args(workspace, tmp_path, cache):
    return [
        "run", "--inference_config", str(workspace["config"]), "--output_dir", str(tmp_path / "o"),
        "--feature_cache_dir", str(cache), "--quiet",
    ]  # fmt: skip


def test_max_size_prunes_after_the_run(workspace, tmp_path):
    cache = tmp_path / "cache"
    args = _run_args(workspace, tmp_path, cache)
    assert main(args) == 0
    assert len(list(cache.rglob("*.safetensors"))) == 5 + 2  # the stages and the scores
    assert main([*args, "--feature_cache_max_size", "1"]) == 0
    assert list(cache.rglob("*.safetensors")) == []


def test_ctrl_c_writes_the_summary_and_report(workspace, tmp_path, monkeypatch, capsys):
    """Ctrl-C during the second job: the first stays done, the rest are marked interrupted in
    the summary and report.html, the log says so, exit code 130, no empty claimed names."""
    real = mimicache.engine.engine.MimicMotion.generate
    calls = []

    def stopped_at_the_second(self, case, **kw):
        calls.append(case.ref_video_path.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, case, **kw)

    monkeypatch.setattr(mimicache.engine.engine.MimicMotion, "generate", stopped_at_the_second)
    out = tmp_path / "out"
    args = [*_run_args(workspace, tmp_path, tmp_path / "cache"), "--batch_folder",
            str(workspace["videos"]), "--output_dir", str(out)]  # fmt: skip
    assert main(args) == 130
    summary = capsys.readouterr().out
    assert "1 succeeded, 0 failed, 2 interrupted" in summary
    rows = {line.split()[1]: line for line in summary.splitlines() if line[:1].isdigit()}
    assert " ok " in rows["a_walk"]
    assert " interrupted " in rows["b_walk"] and " interrupted " in rows["c_broken"]
    log = next(out.glob("*.log"))
    assert "interrupted: 1 job(s) finished, 2 not" in log.read_text()
    report = log.with_name(log.stem + ".report.html").read_text()
    assert "1 succeeded, 0 failed, 2 interrupted" in report
    assert '<td class="interrupted">interrupted</td>' in report
    written = sorted(p.name.split("_")[0] for p in (out / "clips").iterdir())
    assert written == ["a", "a"]  # a_walk's mp4 and sidecar; nothing claimed for the others


def test_cache_commands_are_mounted(workspace, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(_run_args(workspace, tmp_path, cache)) == 0
    capsys.readouterr()
    assert main(["cache", "stats", "--feature_cache_dir", str(cache)]) == 0
    stats = capsys.readouterr().out
    for stage in (
        "video_keypoints",
        "image_keypoints",
        "pose_frames",
        "clip_embeddings",
        "vae_latents",
    ):
        assert stage in stats
    assert main(["cache", "verify", "--feature_cache_dir", str(cache)]) == 0


def test_demo_runs_offline(tmp_path, capsys):
    from mimicache.cli.demo import run_demo

    assert run_demo(tmp_path / "demo") == 0
    captured = capsys.readouterr()
    printed = captured.out
    # the job count from the first line; the headline: the cached stages and a warm job
    assert printed.splitlines()[0].startswith("mimicache demo: 2 jobs")
    assert re.search(r"The cache: its stages ran \d+x faster warm .* a warm job saved", printed)
    assert "outputs bit-identical: yes (2 of 2 jobs)" in printed
    # what the README's first steps show the demo printing
    from tests.test_first_steps import assert_shown, first_steps

    assert_shown(first_steps()[0][1], printed)
    # the warm-up says what it does, and the cache speaks one line per job
    assert "warm-up: walk_a once with the cache off, untimed, so the cold run" in captured.err
    assert "walk_a: 0 of 7 cached stages from the cache; computed" in captured.err  # cold
    assert "walk_a: 5 of 5 cached stages from the cache" in captured.err  # warm
    assert "Cache miss for" not in captured.err  # each entry's line is in the log file
    assert "tiny random weights" in printed
    assert len(list((tmp_path / "demo" / "outputs" / "videos").glob("*.mp4"))) == 4
    # the closing lines point at the demo's own config and cache, not the defaults
    assert f"--inference_config {tmp_path / 'demo' / 'demo.yaml'}" in printed
    assert f"--feature_cache_dir {tmp_path / 'demo' / 'cache'}" in printed
    # the commands work as printed, without an activated venv: they name this install's mimicache
    import shlex
    import sys
    from pathlib import Path

    commands = [line for line in printed.splitlines() if line.startswith("  /")]
    assert len(commands) == 5  # run again, the cache's stats, doctor, download, a real run
    for line in commands:
        executable = shlex.split(line)[0]
        assert Path(executable).is_file(), executable
        assert Path(executable).parent == Path(sys.executable).parent
