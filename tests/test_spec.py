"""The engine's options declared once (``EngineSpec``), the flags generated from them, the one
composition root (``engine.build``) and the executor registry."""

from __future__ import annotations

import argparse
import ast
import dataclasses
from pathlib import Path

import pytest

from mimicache.batch.executing.executor import ExecutorSettings
from mimicache.batch.executing.local_executor import LocalExecutor
from mimicache.batch.executing.ray_executor import RayExecutor
from mimicache.batch.executing.registry import EXECUTORS
from mimicache.cli.engine_flags import ENGINE_FLAGS, engine_spec
from mimicache.cli.flags import ORIGINAL_SCRIPT_DEFAULTS, RUN_DEFAULTS, add_run_arguments
from mimicache.config import InferenceConfig
from mimicache.config.sampler import SchedulerOptions
from mimicache.engine.spec import EngineSpec
from tests.engine_fixtures import figure_config

CONFIG = InferenceConfig(base_model_path="", ckpt_path=Path(), test_case=[])
SPEC_MODULES = ("engine/spec.py", "config/options.py", "config/sampler.py", "config/fields.py")


def _parse(argv: list[str], defaults: dict = RUN_DEFAULTS) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_run_arguments(parser, defaults)
    return parser.parse_args(argv)


def test_run_without_flags_gives_the_spec_defaults():
    # every default comes from the field that declares it: the flags add none of their own
    assert engine_spec(_parse([]), CONFIG) == EngineSpec(CONFIG)
    assert EngineSpec(CONFIG).decode_chunk_size == 8 and EngineSpec(CONFIG).dtype is None


def test_every_flag_sets_its_field():
    args = _parse(
        [
            "--device", "cpu", "--no_use_float16", "--dwpose_backend", "torch",
            "--pose_retarget", "graft", "--person", "largest", "--scheduler", "AnimateLCM_SVD",
            "--scheduler_rho", "3.5", "--scheduler_clip_denoised", "--lcm_num_train_timesteps",
            "20", "--speed", "fast", "--compile", "--decode_chunk_size", "4", "--offload",
            "model", "--threads", "3", "--feature_cache_dir", "elsewhere",
            "--disable_feature_cache", "--feature_cache_force_refresh", "--cache_platform",
            "any", "--disable_pipeline_feature_cache",
        ]
    )  # fmt: skip
    spec = engine_spec(args, CONFIG)
    assert spec == EngineSpec(
        CONFIG,
        device="cpu",
        float16=False,
        dwpose_backend="torch",
        pose_retarget="graft",
        person="largest",
        scheduler=SchedulerOptions(
            name="AnimateLCM_SVD", rho=3.5, clip_denoised=True, num_train_timesteps=20
        ),
        speed="fast",
        compile=True,
        decode_chunk_size=4,
        offload="model",
        threads=3,
        cache_dir="elsewhere",
        cache_enabled=False,
        cache_force_refresh=True,
        cache_platform="any",
        cache_pipeline_features=False,
    )
    assert spec.dtype == "float32" and spec.cache_any_platform
    assert spec.engine_config().dwpose_backend == "torch"


def test_every_spec_field_but_the_config_and_worker_ones_has_a_flag():
    flagged = {item.path[0] for item in ENGINE_FLAGS}
    fields = {f.name for f in dataclasses.fields(EngineSpec)}
    assert fields - flagged == {"config", "dwpose_device", "verbose"}
    names = [item.flag.name for item in ENGINE_FLAGS]
    assert len(names) == len(set(names))


def test_a_command_sets_its_own_defaults_and_help_words():
    seed = _parse([], ORIGINAL_SCRIPT_DEFAULTS)
    assert engine_spec(seed, CONFIG).scheduler.name == "AnimateLCM_SVD"
    parser = argparse.ArgumentParser()
    add_run_arguments(parser, ORIGINAL_SCRIPT_DEFAULTS)
    assert "else graft)" in " ".join(parser.format_help().split())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--threads", "0"], "--threads: must be at least 1"),
        (["--threads", "two"], "--threads: 'two' is not a whole number"),
        (["--person", "tall"], "--person: must be one of auto, largest, center"),
        (["--offload", "disk"], "--offload: invalid choice: 'disk'"),
    ],
)
def test_bad_values_are_usage_errors_with_the_reason(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parse(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_the_spec_modules_import_no_model_library():
    # the command line reads these at start-up: no torch, diffusers, ray or gradio
    src = Path(__file__).resolve().parents[1] / "src" / "mimicache"
    for name in SPEC_MODULES:
        tree = ast.parse((src / name).read_text())
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            (node.module or "").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
        }
        assert not imported & {"torch", "diffusers", "transformers", "ray", "gradio"}, name


def test_the_executor_registry_is_what_the_flag_offers():
    parser = argparse.ArgumentParser()
    add_run_arguments(parser, RUN_DEFAULTS)
    [executor] = [a for a in parser._actions if a.dest == "executor"]
    assert tuple(executor.choices) == tuple(EXECUTORS) == ("local", "ray")
    assert executor.default == "local"
    assert EXECUTORS["local"] is LocalExecutor and EXECUTORS["ray"] is RayExecutor
    assert LocalExecutor.in_process and not RayExecutor.in_process
    ray = RayExecutor(EngineSpec(CONFIG), ExecutorSettings(workers=3))
    assert ray.settings.workers == 3 and ray.engine is None and ray.cache is None


def test_the_built_engine_reports_progress_to_its_observer(tiny_bundle, tmp_path):
    from mimicache.engine import ProgressEvent, build_engine, engine_variant

    config = figure_config(tmp_path, tiny_bundle, frames=5)
    case = config.test_case[0].replace(num_inference_steps=2)
    events: list[ProgressEvent] = []
    spec = EngineSpec(config, device="cpu", cache_dir=tmp_path / "cache")
    engine = build_engine(spec, observer=events.append)
    engine.generate(case, progress=False, label="walk")
    # 1 + 5 pose frames in tiles of 4 overlapping by 1: 2 tiles, 2 steps -> 4 passes
    assert events == [
        ProgressEvent("walk", "preprocess"),
        *[ProgressEvent("walk", "denoise", n, 4) for n in range(1, 5)],
        ProgressEvent("walk", "done"),
    ]

    # a per-call observer takes the job's events instead; a variant shares the loaded models
    # and leaves the engine it came from as it was
    mine: list[ProgressEvent] = []
    lcm = engine_variant(
        engine,
        scheduler=SchedulerOptions(name="AnimateLCM_SVD"),
        speed="exact",
        pose_retarget="published",
        person="auto",
    )
    lcm.generate(case, progress=False, label="lcm", observer=mine.append)
    assert [e.stage for e in mine] == [
        "preprocess",
        "denoise",
        "denoise",
        "denoise",
        "denoise",
        "done",
    ]
    assert len(events) == 6
    assert lcm.pipeline.unet is engine.pipeline.unet and lcm.cache is engine.cache
    assert type(lcm.pipeline.scheduler).__name__ == "AnimateLCMSVDScheduler"
    assert type(engine.pipeline.scheduler).__name__ == "EulerDiscreteScheduler"
