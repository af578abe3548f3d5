"""The numeric platform in the cache key: a hit is always the reader's own uncached result."""

import numpy as np
import pytest
import torch
from safetensors import safe_open

from mimicache.cache.store import FeatureStore
from mimicache.config import load_config
from mimicache.engine import MimicMotion
from mimicache.engine.platform import describe, dwpose_platform, torch_platform
from tests.engine_fixtures import figure_config, reference_image, write_config

ALL = {"image_keypoints", "video_keypoints", "pose_frames", "clip_embeddings", "vae_latents"}
FULL_HIT = {"pose_frames", "clip_embeddings", "vae_latents"}  # no keypoints needed


@pytest.fixture(scope="module")
def config(tiny_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("platform")
    return figure_config(root, tiny_bundle)


def _generate(config, threads: int, cache_root):
    """A fresh engine at ``threads`` (ONNX Runtime's sessions take the count when they open)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        engine = MimicMotion.from_config(config, device="cpu")
        engine.cache = FeatureStore(cache_root) if cache_root is not None else None
        return engine.generate(config.test_case[0], progress=False)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("writer", "reader"), [(1, 2), (2, 1)])
def test_entries_of_another_thread_count_are_never_served(config, tmp_path, writer, reader):
    cache = tmp_path / "cache"
    _generate(config, writer, cache)
    uncached = _generate(config, reader, None)
    warm = _generate(config, reader, cache)
    assert np.array_equal(warm.frames, uncached.frames)
    reasons = {e.stage: (e.hit, e.reason) for e in warm.cache_events}
    assert reasons == {stage: (False, "computed on another platform") for stage in ALL}
    again = _generate(config, reader, cache)  # the reader's own entries now hit
    assert {e.stage for e in again.cache_events if e.hit} == FULL_HIT
    assert np.array_equal(again.frames, uncached.frames)
    # both platforms' entries live side by side, each recording where it was computed
    entries = sorted((cache).rglob("*.safetensors"))
    threads = set()
    for path in entries:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        text = meta["fields"]
        threads |= {t for t in (writer, reader) if f'"threads":{t}' in text}
    assert len(entries) == 2 * len(ALL) and threads == {writer, reader}


def test_platform_names_device_libraries_and_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = torch_platform(torch.device("cpu"), torch.float32)
        pose = dwpose_platform("onnxruntime", "cpu", 3)
    finally:
        torch.set_num_threads(before)
    assert model["device"] == "cpu" and model["threads"] == 1 and model["dtype"] == "float32"
    assert model["torch"] == torch.__version__
    assert model["capability"] == torch.backends.cpu.get_cpu_capability()
    assert pose["threads"] == 3 and "torch" not in pose and pose["onnxruntime"]
    assert pose["opencv"]
    assert describe(pose).startswith("cpu ") and " t3 " in describe(pose)
    assert describe({}) == "-"


def test_cache_ls_and_the_result_show_the_platform(config, tmp_path, capsys):
    from mimicache.cli.main import main

    result = _generate(config, 1, tmp_path / "cache")
    assert result.platform["models"]["threads"] == 1
    assert result.platform["dwpose"]["threads"] == 1
    assert main(["cache", "ls", "--feature_cache_dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "PLATFORM" in out.splitlines()[0]
    assert out.count(" t1 ") == len(ALL)


def test_any_platform_shares_entries_across_thread_counts_and_says_so(config, tmp_path, caplog):
    cache = tmp_path / "cache"

    def run(threads: int, any_platform: bool):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            engine = MimicMotion.from_config(config, device="cpu")
            engine.cache = FeatureStore(cache, any_platform=any_platform)
            return engine.generate(config.test_case[0], progress=False)
        finally:
            torch.set_num_threads(before)

    strict_first = run(1, False)
    assert {e.hit for e in strict_first.cache_events} == {False}
    over_strict = run(1, True)  # the strict entries of this very platform: not another's
    assert {e.reason for e in over_strict.cache_events} == {
        "only a strict entry (keyed by its platform), which cache_platform='any' never uses"
    }
    with caplog.at_level("WARNING"):
        shared = run(2, True)
    assert {e.stage for e in shared.cache_events if e.hit} == FULL_HIT
    assert "shared across numeric platforms" in caplog.text
    strict = run(2, False)  # the opt-in's entries never reach a strict run
    assert {e.reason for e in strict.cache_events} == {
        "only an entry of cache_platform='any', which strict runs never use"
    }
    assert np.array_equal(strict.frames, _generate(config, 2, None).frames)


def test_a_warning_of_the_computing_run_is_repeated_on_a_hit(tiny_bundle, tmp_path, caplog):
    from mimicache.media import write_video
    from mimicache.testing.tiny_dwpose import make_figure_frame

    frames = [make_figure_frame(72, 96, i / 4) for i in range(3)]
    video = write_video(tmp_path / "gap.mp4", np.stack([*frames, frames[0] * 0]), 24.0)
    image = reference_image(tmp_path / "ref.png")
    config = load_config(write_config(tmp_path / "c.yaml", tiny_bundle, image, video))
    engine = MimicMotion.from_config(config, device="cpu")
    words = "a person was detected in 3 of 4 sampled frames"
    for hit in (False, True):
        engine.cache = FeatureStore(tmp_path / "cache")
        caplog.clear()
        with caplog.at_level("WARNING"):
            result = engine.generate(config.test_case[0], progress=False)
        assert {e.hit for e in result.cache_events} == {hit}
        assert caplog.text.count(words) == 1
        assert ("from the cached pose_frames" in caplog.text) is hit


def test_the_onnxruntime_version_is_the_installed_distributions():
    from importlib import metadata

    import onnxruntime  # noqa: F401 - loaded, as DWPose loads it: its own version is read

    version = dwpose_platform("onnxruntime", "cpu", 1)["onnxruntime"]
    assert version == metadata.version("onnxruntime")
