"""Speed modes: fast equals exact up to float rounding, each batching step equals its unbatched
form, the engine's options reach the pipeline, and a warm cache changes nothing in fast mode."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from PIL import Image

from mimicache.cache.store import FeatureStore
from mimicache.config import load_config
from mimicache.engine import MimicMotion, SpeedOptions
from mimicache.errors import ConfigError, ModelLoadError
from mimicache.pipeline import fast, offload
from mimicache.pipeline.fast import BatchPlan, decode_groups, plan_batches
from mimicache.pipeline.tiles import UNetPass, tile_indices, tile_passes, unet_passes
from tests.engine_fixtures import figure_video, reference_image, write_config

H, W = 32, 48
# fast vs exact on the tiny bundle, CPU fp32 (frames in [0,1]); measured about 1e-7
FAST_TOLERANCE = 1e-4


def _inputs(num_frames, seed=0):
    rng = np.random.RandomState(seed)
    image = Image.fromarray((rng.rand(H, W, 3) * 255).astype(np.uint8))
    pose = torch.from_numpy((rng.rand(num_frames, 3, H, W) * 255).astype(np.uint8))
    return image, pose


def _run(pipe, image, pose, *, mode="exact", plan=None, guidance=2.0, chunk=4, steps=2, **kw):
    return pipe(
        image,
        pose,
        height=H,
        width=W,
        num_frames=pose.shape[0],
        tile_size=4,
        tile_overlap=1,
        num_inference_steps=steps,
        min_guidance_scale=guidance,
        max_guidance_scale=guidance,
        noise_aug_strength=0.02,
        decode_chunk_size=chunk,
        generator=torch.Generator().manual_seed(3),
        output_type="pt",
        device="cpu",
        speed=mode,
        batch_plan=plan,
        **kw,
    ).frames


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


@pytest.fixture(scope="module")
def exact_frames(tiny_pipeline):
    image, pose = _inputs(7)
    return _run(tiny_pipeline, image, pose)


@pytest.mark.parametrize("plan", [None, BatchPlan(3, 2)])
def test_fast_equals_exact_up_to_rounding(tiny_pipeline, exact_frames, plan):
    image, pose = _inputs(7)  # 2 tiles of 4: 4 passes per step, 1 full decode chunk + 3 frames
    exact = exact_frames
    fast = _run(tiny_pipeline, image, pose, mode="fast", plan=plan)
    assert fast.shape == exact.shape == (1, 7, 3, H, W)
    delta = (fast - exact).abs().max().item()
    assert delta < FAST_TOLERANCE
    assert psnr(fast, exact) > 80
    # the uint8 frames the engine writes (truncated): at most ±1, and only where a float
    # difference of ``delta`` crosses a level, i.e. on no more than about 255·delta of values
    a, b = (fast * 255).to(torch.uint8).int(), (exact * 255).to(torch.uint8).int()
    assert (a - b).abs().max() <= 1 and (a != b).float().mean() <= 255 * delta + 1e-3


def test_fast_without_guidance_batches_tiles(tiny_pipeline):
    image, pose = _inputs(10)
    calls = []
    hook = tiny_pipeline.unet.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    try:
        fast = _run(
            tiny_pipeline, image, pose, mode="fast", plan=BatchPlan(3, 1), guidance=1.0, steps=1
        )
    finally:
        hook.remove()
    exact = _run(tiny_pipeline, image, pose, guidance=1.0, steps=1)
    assert calls == [3]  # the 3 tiles of 10 frames in one call
    assert (fast - exact).abs().max() < FAST_TOLERANCE


def test_fast_makes_fewer_unet_calls_with_the_same_draws(tiny_pipeline):
    image, pose = _inputs(10)  # 3 tiles, 6 passes per step
    sizes = []
    hook = tiny_pipeline.unet.register_forward_hook(lambda m, a, o: sizes.append(a[0].shape[0]))
    try:
        _run(tiny_pipeline, image, pose, mode="fast", plan=BatchPlan(4, 1), steps=1)
    finally:
        hook.remove()
    assert sizes == [4, 2]
    # the generator ends in the same state: no draw was added, dropped or reordered
    gens = []
    for mode in ("exact", "fast"):
        gen = torch.Generator().manual_seed(3)
        tiny_pipeline(
            image, pose, height=H, width=W, tile_size=4, tile_overlap=1, num_inference_steps=1,
            generator=gen, output_type="latent", device="cpu", speed=mode,
        )  # fmt: skip
        gens.append(torch.randn(4, generator=gen))
    assert torch.equal(gens[0], gens[1])


def test_batched_guidance_pair_equals_two_passes(tiny_pipeline):
    torch.manual_seed(0)
    unet = tiny_pipeline.unet
    frames = [0, 1, 2, 3]
    cond = torch.randn(1, 4, 8, H // 8, W // 8)
    uncond = torch.randn(1, 4, 8, H // 8, W // 8)
    emb = torch.randn(1, 1, 32)
    pose = torch.randn(4, 32, H // 8, W // 8)
    ids = torch.tensor([[6.0, 127.0, 0.02]])
    t = torch.tensor(1.5)
    args = dict(
        inputs=(uncond, cond),
        embeddings=(torch.zeros_like(emb), emb),
        pose_latents=pose,
        added_time_ids=ids,
    )
    group = [UNetPass(frames, False), UNetPass(frames, True)]
    pair = unet_passes(unet, group, t, zero_pose=True, **args)
    one = [unet_passes(unet, [p], t, zero_pose=False, **args)[0] for p in group]
    with torch.no_grad():  # the published calls: no pose latents for the unconditional pass
        u = unet(uncond, t, torch.zeros_like(emb), ids, pose_latents=None).sample
        c = unet(cond, t, emb, ids, pose_latents=pose).sample
    assert torch.equal(one[0], u) and torch.equal(one[1], c)
    torch.testing.assert_close(pair[0], u, rtol=0, atol=1e-5)
    torch.testing.assert_close(pair[1], c, rtol=0, atol=1e-5)
    assert not torch.equal(pair[0], pair[1])


def test_tile_passes_keep_the_published_order():
    tiles = tile_indices(10, 4, 1)
    assert all(len(t) == 4 for t in tiles)
    passes = tile_passes(tiles, guided=True)
    assert [(p.frames[1], p.conditional) for p in passes] == [
        (1, False), (1, True), (4, False), (4, True), (7, False), (7, True),
    ]  # fmt: skip
    assert [p.conditional for p in tile_passes(tiles, guided=False)] == [True] * 3


def test_batched_decode_chunks_equal_per_chunk_decode(tiny_pipeline):
    torch.manual_seed(1)
    latents = torch.randn(1, 11, 4, H // 8, W // 8)
    exact = tiny_pipeline.decode_latents(latents, 4)
    fast = tiny_pipeline.decode_latents(latents, 4, speed="fast", decode_batch=2)
    torch.testing.assert_close(fast, exact, rtol=0, atol=1e-5)
    # each chunk is still its own temporal window: one 11-frame window differs
    whole = tiny_pipeline.decode_latents(latents, 11)
    assert (whole - exact).abs().max() > 1e-3


def test_decode_groups():
    groups = decode_groups(11, 4, "fast", 3)
    assert [(g.start, g.stop, g.chunk) for g in groups] == [(0, 8, 4), (8, 11, 3)]
    groups = decode_groups(11, 4)
    assert [(g.start, g.stop, g.chunk) for g in groups] == [(0, 4, 4), (4, 8, 4), (8, 11, 3)]
    groups = decode_groups(16, 4, "fast", 3)
    assert [(g.start, g.stop) for g in groups] == [(0, 12), (12, 16)]
    with pytest.raises(ValueError, match="exact"):
        decode_groups(11, 4, "exact", 2)
    with pytest.raises(ValueError, match="decode_chunk_size"):
        decode_groups(11, 0)


def test_decode_chunk_size_is_honoured(tiny_pipeline):
    image, pose = _inputs(5)
    sizes = []
    hook = tiny_pipeline.vae.decoder.register_forward_hook(
        lambda m, a, o: sizes.append(a[0].shape[0])
    )
    try:
        small = _run(tiny_pipeline, image, pose, chunk=2, steps=1)
        large = _run(tiny_pipeline, image, pose, chunk=5, steps=1)
    finally:
        hook.remove()
    assert sizes == [2, 2, 1, 5]
    assert (small - large).abs().max() > 1e-4  # the temporal decoder's window matters


def test_exact_refuses_batches(tiny_pipeline):
    image, pose = _inputs(5)
    with pytest.raises(ValueError, match="exact"):
        _run(tiny_pipeline, image, pose, plan=BatchPlan(2, 1))
    with pytest.raises(ValueError, match="speed must be one of"):
        _run(tiny_pipeline, image, pose, mode="turbo")


def test_plan_batches_follows_memory():
    tiles = tile_indices(73, 72, 6)
    shape = (1, 73, 4, 128, 72)  # published size: 576x1024
    args = ("fast", "cuda", torch.float16, tiles, shape, 8, 8, True)
    gib = 2**30
    assert plan_batches("exact", "cuda", torch.float16, tiles, shape, 8, 8, True) == BatchPlan()
    assert plan_batches(*args[:1], "cpu", *args[2:]) == BatchPlan(2, 1)
    roomy = plan_batches(*args, free_bytes=120 * gib)
    tight = plan_batches(*args, free_bytes=20 * gib)
    full = plan_batches(*args, free_bytes=4 * gib)
    assert roomy.unet_batch == 4 and roomy.decode_batch > 1
    assert 1 <= tight.unet_batch < roomy.unet_batch and tight.decode_batch < roomy.decode_batch
    assert full == BatchPlan(1, 1)
    # fp32 needs twice the memory of fp16
    fp32 = plan_batches(
        "fast", "cuda", torch.float32, tiles, shape, 8, 8, True, free_bytes=40 * gib
    )
    fp16 = plan_batches(*args, free_bytes=40 * gib)
    assert fp32.unet_batch < fp16.unet_batch
    # no guidance: two tiles at most
    assert plan_batches(*args[:-1], False, free_bytes=120 * gib).unet_batch == 2


def test_channels_last_converts_only_2d_convolutions(tiny_pipeline):
    import copy

    decoder = copy.deepcopy(tiny_pipeline.vae.decoder)
    converted = fast.use_channels_last(decoder)
    convs = [m for m in decoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert converted == len(convs) > 0
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    z = torch.randn(4, 4, H // 8, W // 8)
    ind = torch.zeros(1, 4)
    with torch.no_grad():
        ref = tiny_pipeline.vae.decoder(z, image_only_indicator=ind, num_frames=4)
        out = decoder(z, image_only_indicator=ind, num_frames=4)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_compile_problem_names_the_fix(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("CXX", "no-such-compiler")
    problem = fast.compile_problem("cpu")
    assert "C++ compiler" in problem and "g++" in problem
    assert fast.compile_problem("cpu", backend="eager") is None


def test_compile_falls_back_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(fast, "compile_problem", lambda device, backend: "no compiler here")

    class Pipe:  # compile_models must not touch the models when it cannot compile
        unet = vae = None

    assert fast.compile_models(Pipe(), "cpu") is False
    assert "compile=True is off: no compiler here" in caplog.text


# -- the engine --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def config(tiny_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("speed")
    image, video = reference_image(root / "ref.png"), figure_video(root / "walk.mp4", frames=5)
    path = write_config(root / "c.yaml", tiny_bundle, image, video, num_frames=4)
    return load_config(path)


@pytest.fixture(scope="module")
def exact_engine(config):
    return MimicMotion.from_config(config, device="cpu")


@pytest.fixture(scope="module")
def fast_engine(config):
    return MimicMotion.from_config(config, device="cpu", speed="fast", decode_chunk_size=3)


@pytest.fixture(scope="module")
def fast_frames(fast_engine, config):
    return fast_engine.generate(config.test_case[0], progress=False).frames


def test_engine_fast_frames_match_exact(exact_engine, fast_engine, fast_frames, config):
    job = config.test_case[0]
    exact = exact_engine.generate(job, progress=False).frames
    fast = fast_frames
    assert fast.shape == exact.shape == (5, 64, 64, 3)
    diff = np.abs(fast.astype(int) - exact.astype(int))
    # decode_chunk_size 3 vs 8 changes the temporal decoder's windows: not a rounding change
    assert diff.max() > 1
    same_chunks = MimicMotion.from_config(config, device="cpu", speed="fast")
    fast8 = same_chunks.generate(job, progress=False).frames
    assert np.abs(fast8.astype(int) - exact.astype(int)).max() <= 1
    assert fast_engine.speed == SpeedOptions("fast", decode_chunk_size=3)
    assert fast_engine.batch_planner.plans  # the plan of this shape is kept for later jobs


def test_warm_cache_equals_uncached_in_fast_mode(fast_engine, fast_frames, config, tmp_path):
    job = config.test_case[0]
    fast_engine.cache = FeatureStore(tmp_path / "cache")
    cold = fast_engine.generate(job, progress=False)
    warm = fast_engine.generate(job, progress=False)
    fast_engine.cache = None
    assert all(not e.hit for e in cold.cache_events) and all(e.hit for e in warm.cache_events)
    assert len(warm.cache_events) == 3  # the drawn frames and the features: no keypoints
    assert np.array_equal(fast_frames, cold.frames)  # fast_frames: computed with no cache
    assert np.array_equal(fast_frames, warm.frames)


def test_cache_keys_do_not_depend_on_the_speed_options(exact_engine, fast_engine, config):
    job = config.test_case[0]
    a, b = exact_engine.keys(job), fast_engine.keys(job)
    for stage in ("image_keypoints", "video_keypoints", "pose_frames", "clip_embeddings"):
        assert getattr(a, stage) == getattr(b, stage)
    assert a.vae_latents == b.vae_latents


def test_compile_runs_through_the_engine(config, fast_frames):
    # inductor needs minutes on two CPU cores even for the tiny UNet, so the wiring is tested
    # with torch.compile's eager backend: dynamo traces and runs the same graphs
    job = config.test_case[0]
    compiled = MimicMotion.from_config(
        config, device="cpu", speed="fast", compile=True, compile_backend="eager",
        decode_chunk_size=3,
    )  # fmt: skip
    assert compiled.pipeline.unet._compiled_call_impl is not None
    assert compiled.pipeline.vae.decoder._compiled_call_impl is not None
    first = compiled.generate(job, progress=False).frames
    again = compiled.generate(job, progress=False).frames
    assert np.array_equal(first, again)
    assert np.abs(first.astype(int) - fast_frames.astype(int)).max() <= 1


def test_speed_option_errors():
    with pytest.raises(ConfigError, match=r"compile=True .* needs speed='fast'"):
        SpeedOptions(compile=True)
    with pytest.raises(ConfigError, match=r"speed: exact or fast"):
        SpeedOptions(speed="turbo")
    with pytest.raises(ConfigError, match="decode_chunk_size=0 must be at least 1"):
        SpeedOptions(decode_chunk_size=0)
    with pytest.raises(ConfigError, match="offload must be one of"):
        SpeedOptions(offload="disk")


def test_offload_is_a_no_op_on_the_cpu(caplog):
    assert offload.apply_offload(object(), "model", "cpu") is False
    assert "offload='model' does nothing on cpu" in caplog.text
    assert offload.apply_offload(object(), "none", "cuda") is False


def test_offload_without_accelerate_names_the_install(monkeypatch):
    monkeypatch.setattr(offload, "accelerate_missing", lambda: True)
    with pytest.raises(ModelLoadError, match="pip install 'accelerate"):
        offload.apply_offload(object(), "sequential", torch.device("cuda"))
    with pytest.raises(ModelLoadError, match="offload='model' needs the accelerate package"):
        offload.require_accelerate("model")
    offload.require_accelerate("none")


def test_offload_installs_diffusers_hooks(monkeypatch):
    monkeypatch.setattr(offload, "accelerate_missing", lambda: False)
    seen = []

    class Pipe:
        def enable_model_cpu_offload(self, device):
            seen.append(("model", device))

        def enable_sequential_cpu_offload(self, device):
            seen.append(("sequential", device))

    cuda = torch.device("cuda")
    assert offload.apply_offload(Pipe(), "model", cuda) is True
    assert offload.apply_offload(Pipe(), "sequential", cuda) is True
    assert seen == [("model", cuda), ("sequential", cuda)]


# -- the command line --------------------------------------------------------------------------


def test_run_flags_reach_the_engine(config, tmp_path, monkeypatch, capsys):
    from mimicache.cli import main
    from mimicache.engine import engine as engine_module

    seen = {}

    def capture(cls, config, **kwargs):
        seen.update(dataclasses.asdict(kwargs["settings"].speed_options))
        raise ModelLoadError("stop before loading")

    monkeypatch.setattr(engine_module.MimicMotion, "from_config", classmethod(capture))
    common = [
        "run", "--inference_config", str(config.source_path), "--output_dir",
        str(tmp_path / "out"), "--feature_cache_dir", str(tmp_path / "cache"), "--quiet",
        "--device", "cpu",
    ]  # fmt: skip
    flags = ["--speed", "fast", "--compile", "--decode_chunk_size", "4", "--offload", "model"]
    assert main([*common, *flags]) == 2
    assert "stop before loading" in capsys.readouterr().err
    assert (seen["speed"], seen["compile"], seen["decode_chunk_size"], seen["offload"]) == (
        "fast", True, 4, "model",
    )  # fmt: skip
    assert main([*common, "--compile"]) == 2
    assert "--compile changes float rounding, so it needs --speed fast" in capsys.readouterr().err
    assert main(common) == 2  # no speed flags: the defaults reach the engine
    assert seen["speed"] == "exact" and seen["offload"] == "none" and seen["decode_chunk_size"] == 8
