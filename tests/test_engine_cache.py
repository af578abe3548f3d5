"""The engine with the feature cache: transparency, partial reuse, model changes."""

import dataclasses
import os
import shutil
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from mimicache.cache.store import FeatureStore
from mimicache.config import load_config
from mimicache.engine import (
    JobRecord,
    MimicMotion,
    pack_frames,
    published_reference_image,
    stages,
    unpack_frames,
)
from mimicache.testing.models import TinyBundle
from mimicache.testing.tiny_dwpose import write_tiny_dwpose
from tests.engine_fixtures import figure_video, reference_image, write_config

ALL = {"image_keypoints", "video_keypoints", "pose_frames", "clip_embeddings", "vae_latents"}
KEYPOINT_STAGES = {"image_keypoints", "video_keypoints"}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    return {
        "image": reference_image(root / "ref.png"),
        "image2": reference_image(root / "ref2.png", phase=0.1),
        "video": figure_video(root / "walk.mp4"),
    }


@pytest.fixture(scope="module")
def case(tiny_bundle, media, tmp_path_factory):
    path = write_config(
        tmp_path_factory.mktemp("cfg") / "c.yaml", tiny_bundle, media["image"], media["video"]
    )
    return load_config(path)


@pytest.fixture(scope="module")
def engine(case):
    return MimicMotion.from_config(case, device="cpu")


def _with_store(engine, root, **kw):
    engine.cache = FeatureStore(root, **kw)
    return engine


def _events(result):
    return {e.stage: e.reason for e in result.cache_events}


def _missed(result):
    return {e.stage for e in result.cache_events if not e.hit}


def test_warm_cache_output_equals_uncached_output(engine, case, tmp_path):
    job = case.test_case[0]
    engine.cache = None
    plain = engine.generate(job, progress=False)
    cold = _with_store(engine, tmp_path / "c").generate(job, progress=False)
    warm = _with_store(engine, tmp_path / "c").generate(job, progress=False)
    assert _missed(cold) == ALL and {e.reason for e in cold.cache_events} == {"absent"}
    # a full hit reads the drawn frames and the features, no keypoints: nothing else needs them
    assert _missed(warm) == set() and set(_events(warm)) == ALL - KEYPOINT_STAGES
    assert plain.frames.shape == (6, 64, 64, 3) and plain.frames.dtype == np.uint8
    assert np.array_equal(plain.frames, cold.frames)
    assert np.array_equal(plain.frames, warm.frames)
    for name in ("preprocess", "pipeline", "total", "denoise", "decode", "pose_frames"):
        assert warm.timings[name] >= 0
    # the cold job's stages in the order they ran (the drawn frames' look-up first missed)
    ran = ["image_keypoints", "video_keypoints", "pose_frames", "clip_embeddings", "vae_latents"]
    assert [name for name in cold.timings if name in ALL] == ran
    # a seed change with noise_aug_strength 0: everything still hits, output equals uncached
    reseeded = replace(job, seed=7)
    warm7 = engine.generate(reseeded, progress=False)
    assert _missed(warm7) == set()
    engine.cache = None
    assert np.array_equal(engine.generate(reseeded, progress=False).frames, warm7.frames)
    assert not np.array_equal(warm7.frames, plain.frames)


def test_a_full_hit_opens_neither_the_image_nor_the_video(engine, case, tmp_path, monkeypatch):
    """The image is opened only by a stage that computes; the warm job equals the cold one."""
    from mimicache import media

    job = case.test_case[0]
    cold = _with_store(engine, tmp_path / "c").generate(job, progress=False)
    opened = []
    for name in ("_open_image", "_open_video"):
        real = getattr(media, name)
        monkeypatch.setattr(media, name, lambda path, real=real: opened.append(path) or real(path))
    warm = engine.generate(job, progress=False)
    assert _missed(warm) == set() and opened == []  # not even the video's frame rate is probed
    assert np.array_equal(cold.frames, warm.frames)
    # a miss of one image stage reads it again (here the VAE's, under another seed)
    engine.generate(replace(job, noise_aug_strength=0.02, seed=3), progress=False)
    assert [Path(p) for p in opened] == [job.ref_image_path] * 2  # its header, then its pixels


def test_a_jobs_hits_are_in_the_index_when_it_ends(engine, case, tmp_path, monkeypatch):
    from mimicache.cache import index as index_mod

    monkeypatch.setattr(index_mod, "HIT_WRITE_DELAY_S", 3600.0)  # held until written
    job = case.test_case[0]
    _with_store(engine, tmp_path / "c").generate(job, progress=False)
    engine.cache.close()
    engine.cache = store = FeatureStore(tmp_path / "c")
    started = time.time()
    warm = engine.generate(job, progress=False)
    assert _missed(warm) == set()
    with sqlite3.connect(store.index_path) as conn:  # another connection: what is written
        used = dict(conn.execute("SELECT key, last_used FROM entries").fetchall())
    assert len(used) == 5 and len(warm.cache_events) == 3  # no keypoints needed
    assert all(used[e.key] >= started for e in warm.cache_events)
    store.close()


def test_a_full_hit_reads_no_keypoints_and_says_who_was_seen(engine, case, tmp_path, monkeypatch):
    job = case.test_case[0]
    cold = _with_store(engine, tmp_path / "c").generate(job, progress=False)
    loaded: list[str] = []
    real = FeatureStore._load
    monkeypatch.setattr(
        FeatureStore, "_load", lambda self, stage, key, **kw: loaded.append(stage) or real(
            self, stage, key, **kw)
    )  # fmt: skip
    warm = engine.generate(job, progress=False)
    assert sorted(loaded) == ["clip_embeddings", "pose_frames", "vae_latents"]
    assert warm.people == cold.people and warm.people.frames > 0
    assert np.array_equal(warm.frames, cold.frames)


def test_drawn_frames_cached_without_the_report_fall_back_to_the_keypoints(
    engine, case, tmp_path, monkeypatch
):
    from mimicache.engine.stages import CACHED_STAGES, POSE_FRAMES, pack_frames

    job = case.test_case[0]
    plain = dataclasses.replace(
        CACHED_STAGES[POSE_FRAMES], encode=lambda drawn: pack_frames(drawn.frames)
    )
    with monkeypatch.context() as m:  # an entry without the report
        m.setitem(CACHED_STAGES, POSE_FRAMES, plain)
        cold = _with_store(engine, tmp_path / "c").generate(job, progress=False)
    warm = engine.generate(job, progress=False)
    assert _missed(warm) == set() and set(_events(warm)) == ALL  # the steps ran, all hits
    assert warm.people == cold.people
    assert np.array_equal(warm.frames, cold.frames)


def test_seed_with_augmentation_misses_only_vae(engine, case, tmp_path):
    job = replace(case.test_case[0], noise_aug_strength=0.02)
    _with_store(engine, tmp_path / "c").generate(job, progress=False)
    other_seed = engine.generate(replace(job, seed=3), progress=False)
    assert _events(other_seed)["vae_latents"] == "parameters changed"
    assert _missed(other_seed) == {"vae_latents"}
    engine.cache = None
    assert np.array_equal(
        engine.generate(replace(job, seed=3), progress=False).frames, other_seed.frames
    )


def test_new_resolution_and_new_reference_reuse_video_keypoints(engine, case, media, tmp_path):
    job = case.test_case[0]
    _with_store(engine, tmp_path / "c").generate(job, progress=False)
    bigger = engine.generate(replace(job, resolution=128), progress=False)
    assert "video_keypoints" not in _missed(bigger)
    assert {"image_keypoints", "pose_frames", "clip_embeddings", "vae_latents"} <= _missed(bigger)
    assert bigger.frames.shape[1:] == (192, 128, 3)
    new_ref = engine.generate(replace(job, ref_image_path=media["image2"]), progress=False)
    assert "video_keypoints" not in _missed(new_ref)
    assert _events(new_ref)["image_keypoints"] == "absent"  # another file: a new subject


def test_replaced_file_with_old_mtime_misses(engine, case, media, tmp_path):
    video = tmp_path / "walk.mp4"
    shutil.copy(media["video"], video)
    job = replace(case.test_case[0], ref_video_path=video)
    _with_store(engine, tmp_path / "c").generate(job, progress=False)
    stat = video.stat()
    figure_video(video, phase=0.3)  # new content, same size class, then the old times restored
    os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    result = engine.generate(job, progress=False)
    assert _events(result)["video_keypoints"] == "input changed"
    assert "image_keypoints" not in _missed(result)


def test_same_bytes_under_another_name_hit(engine, case, media, tmp_path):
    job = case.test_case[0]
    _with_store(engine, tmp_path / "c").generate(job, progress=False)
    copy = tmp_path / "copy.mp4"
    shutil.copy(media["video"], copy)
    assert _missed(engine.generate(replace(job, ref_video_path=copy), progress=False)) == set()


def test_pipeline_feature_cache_off_neither_reads_nor_writes(engine, case, tmp_path):
    job = case.test_case[0]
    store = _with_store(engine, tmp_path / "c").cache
    engine.settings = engine.settings.replace(cache_pipeline_features=False)
    try:
        result = engine.generate(job, progress=False)
        assert set(_events(result)) == {"image_keypoints", "video_keypoints", "pose_frames"}
        assert not store.entries("clip_embeddings") and not store.entries("vae_latents")
    finally:
        engine.settings = engine.settings.replace(cache_pipeline_features=True)


def test_changed_detector_misses_keypoint_stages(tiny_bundle, case, tmp_path):
    job = case.test_case[0]
    root = tmp_path / "c"
    first = MimicMotion.from_config(case, device="cpu", cache=FeatureStore(root))
    first.generate(job, progress=False)
    det, pose = write_tiny_dwpose(tmp_path / "dw", dynamic_batch=False)  # other pose-model bytes
    changed = case.replace(dwpose_det_path=det, dwpose_pose_path=pose)
    second = MimicMotion.from_config(changed, device="cpu", cache=FeatureStore(root))
    result = second.generate(job, progress=False)
    assert _events(result)["image_keypoints"] == "model changed"
    assert _events(result)["video_keypoints"] == "model changed"
    assert {"clip_embeddings", "vae_latents"}.isdisjoint(_missed(result))


def test_changed_vae_weights_miss_only_vae_latents(tiny_bundle, case, tmp_path):
    job = case.test_case[0]
    root = tmp_path / "c"
    base = tmp_path / "svd"
    shutil.copytree(tiny_bundle.base_model_path, base)
    moved = case.replace(base_model_path=base)
    MimicMotion.from_config(moved, device="cpu", cache=FeatureStore(root)).generate(
        job, progress=False
    )
    weights = base / "vae" / "diffusion_pytorch_model.fp16.safetensors"
    state = load_file(str(weights))
    name = next(k for k in sorted(state) if k.endswith("conv_in.weight"))
    state[name] = state[name] * 1.5
    save_file(state, str(weights))
    result = MimicMotion.from_config(moved, device="cpu", cache=FeatureStore(root)).generate(
        job, progress=False
    )
    assert _events(result)["vae_latents"] == "model changed"
    assert _missed(result) == {"vae_latents"}


def test_checkpoint_change_touches_no_cached_stage(tiny_bundle, case, tmp_path):
    job = case.test_case[0]
    root = tmp_path / "c"
    MimicMotion.from_config(case, device="cpu", cache=FeatureStore(root)).generate(
        job, progress=False
    )
    from mimicache.testing.models import tiny_checkpoint_state

    state = tiny_checkpoint_state()
    state["pose_net.scale"] = state["pose_net.scale"] * 2
    ckpt = tmp_path / "other.pth"
    torch.save(state, ckpt)
    engine = MimicMotion.from_config(
        case.replace(ckpt_path=ckpt), device="cpu", cache=FeatureStore(root)
    )
    assert _missed(engine.generate(job, progress=False)) == set()


def test_force_refresh_recomputes_and_overwrites(engine, case, tmp_path):
    job = case.test_case[0]
    _with_store(engine, tmp_path / "c").generate(job, progress=False)
    forced = _with_store(engine, tmp_path / "c", force_refresh=True).generate(job, progress=False)
    assert {e.reason for e in forced.cache_events} == {"forced"}


def test_published_reference_round_trip_truncates_like_the_script():
    levels = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).repeat(1, 3, 1, 1)
    restored = np.asarray(published_reference_image(levels / 127.5 - 1)).astype(int)
    lowered = levels[0].permute(1, 2, 0).numpy().astype(int) - restored
    assert set(np.unique(lowered)) <= {0, 1}
    assert 0 < (lowered == 1).sum() < lowered.size


def test_pose_frames_pack_round_trip():
    frames = np.zeros((3, 64, 48, 3), np.uint8)
    frames[:, 10:20, 5:9] = [200, 30, 7]
    packed = pack_frames(frames)
    assert packed["zstd"].numel() < frames.nbytes / 20
    assert np.array_equal(unpack_frames(packed), frames)


def test_bundle_type(tiny_bundle):
    assert isinstance(tiny_bundle, TinyBundle)
    assert tiny_bundle.det_model_path.name == "yolox_l.onnx"


def test_pose_frames_key_names_the_mode_only_when_not_published():
    video = stages.video_keypoints_key("v" * 64, 2, "det")
    image = stages.image_keypoints_key("i" * 64, 576, "det")
    published = stages.pose_frames_key(video, image)
    # the key of entries written before the mode existed: unchanged
    assert published.fields() == stages.pose_frames_key(video, image, "published").fields()
    assert published.params == {
        "video_keypoints": video.digest,
        "image_keypoints": image.digest,
        "code": stages.DRAWING_VERSION,
    }
    graft = stages.pose_frames_key(video, image, "graft")
    assert graft.params == {**published.params, "retarget": "graft"}
    assert graft.inputs == published.inputs and graft.models == published.models
    assert graft.digest != published.digest


def test_retarget_switch_redraws_from_cached_keypoints(engine, case, tmp_path):
    job = case.test_case[0]
    plain = {}
    try:
        engine.cache = None
        for mode in ("published", "graft"):
            engine.settings = engine.settings.replace(pose_retarget=mode)
            plain[mode] = engine.generate(job, progress=False).frames
        assert not np.array_equal(plain["published"], plain["graft"])
        _with_store(engine, tmp_path / "c")
        engine.settings = engine.settings.replace(pose_retarget="published")
        cold = engine.generate(job, progress=False)
        engine.settings = engine.settings.replace(pose_retarget="graft")
        switched = engine.generate(job, progress=False)
        events = _events(switched)
        assert _missed(switched) == {"pose_frames"}
        assert events["pose_frames"] == "parameters changed"
        assert events["video_keypoints"] == events["image_keypoints"] == "hit"
        warm_graft = engine.generate(job, progress=False)
        engine.settings = engine.settings.replace(pose_retarget="published")
        warm_published = engine.generate(job, progress=False)
        assert _missed(warm_graft) == set() and _missed(warm_published) == set()
        for mode, runs in (
            ("published", (cold, warm_published)),
            ("graft", (switched, warm_graft)),
        ):
            for run in runs:
                assert np.array_equal(run.frames, plain[mode])  # warm = uncached, both modes
    finally:
        engine.settings = engine.settings.replace(pose_retarget="published")


def test_pose_retarget_from_config_and_argument(case):
    assert MimicMotion.from_config(case, device="cpu").pose_retarget == "published"
    grafting = case.replace(pose_retarget="graft")
    assert MimicMotion.from_config(grafting, device="cpu").pose_retarget == "graft"
    chosen = MimicMotion.from_config(grafting, device="cpu", pose_retarget="published")
    assert chosen.pose_retarget == "published"
    with pytest.raises(ValueError, match="published, graft"):
        MimicMotion.from_config(case, device="cpu", pose_retarget="grft")


def test_the_drawn_frames_entry_keeps_the_poses_it_drew(engine, case, tmp_path):
    """What a clip is scored against: the poses the pose frames show, equal on a hit, and
    drawing them again gives the very frames (frame 0 the reference pose)."""
    from mimicache.pose.draw import draw_poses

    job = case.test_case[0]
    _with_store(engine, tmp_path / "c")
    cold = engine.generate(job, progress=False)
    warm = engine.generate(job, progress=False)
    assert _missed(warm) == set()
    assert len(cold.targets) == 1 + len(cold.frames)
    assert all(a.equals(b) for a, b in zip(cold.targets, warm.targets))
    record = JobRecord(engine.device)
    frames, image = engine.prepare_pose(job, record, progress=False)
    drawn = draw_poses(record.targets, *image.size)
    assert np.array_equal(drawn, frames.permute(0, 2, 3, 1).numpy())
