"""A finished clip scored with the engine's own DWPose and CLIP, through the feature cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mimicache.cache.store import FeatureStore
from mimicache.engine import JobRecord, MimicMotion
from mimicache.engine.scoring import (
    CPU_SCORE_FRAMES,
    ScoreOptions,
    score_frames,
    score_result,
)
from mimicache.errors import InputError
from mimicache.pose import PoseSequence
from mimicache.quality.score import scored_frames
from mimicache.testing.tiny_dwpose import make_figure_frame
from tests.engine_fixtures import figure_config


@pytest.fixture(scope="module")
def engine(tiny_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("scoring")
    config = figure_config(root, tiny_bundle)
    engine = MimicMotion.from_config(config, device="cpu", cache=FeatureStore(root / "cache"))
    return engine, config.test_case[0]


def _figures(count: int, height: int, width: int, shift: int = 0) -> np.ndarray:
    """A clip of the tiny DWPose's stick figure, ``shift`` pixels to the right."""
    frames = np.stack([make_figure_frame(height, width, i / count) for i in range(count)])
    return np.roll(frames, shift, axis=2)


def test_a_clip_showing_exactly_its_targets_scores_zero_and_a_rescore_is_a_hit(engine):
    engine, case = engine
    clip = _figures(5, 64, 48)
    record = JobRecord(engine.device)
    # the targets: what DWPose finds in this very clip (frame 0: the reference pose)
    found = engine.dwpose.detect_many(list(clip), progress=False)
    targets = PoseSequence([found[0], *found])
    first = score_result(engine, case, clip, targets, record, subject="clip.mp4")
    assert first.frames == [0, 1, 2, 3, 4]
    for part in ("body", "left_hand", "right_hand", "face"):
        assert first.parts[part].error == 0.0 and first.parts[part].recall == 1.0
        assert first.parts[part].dtw == 0.0
    assert first.flicker > 0 and first.identity is not None and -1 <= first.identity <= 1
    cold = {e.stage: e.hit for e in record.events}
    assert cold == {"output_keypoints": False, "clip_embeddings": False, "output_embeddings": False}
    assert {"output_keypoints", "output_embeddings", "score"} <= set(record.timings)
    again = JobRecord(engine.device)
    second = score_result(engine, case, clip, targets, again, subject="clip.mp4")
    assert {e.stage: e.hit for e in again.events} == dict.fromkeys(cold, True)
    assert second.to_dict() == first.to_dict()


def test_a_clip_whose_figure_moved_scores_the_shift(engine):
    engine, case = engine
    clip = _figures(4, 64, 48)
    found = engine.dwpose.detect_many(list(clip), progress=False)
    targets = PoseSequence([found[0], *found])
    moved = _figures(4, 64, 48, shift=3)
    score = score_result(engine, case, moved, targets, JobRecord(), subject="moved.mp4")
    body = score.parts["body"]
    assert body.recall == 1.0 and body.error == pytest.approx(3.0 / score.scale, rel=0.2)
    strict = score.judge({**score.thresholds, "body": body.error / 2})
    assert strict.verdict == "suspect" and strict.reasons[0].startswith("body error")


def test_targets_that_do_not_match_the_clip_are_named(engine):
    engine, case = engine
    clip = _figures(4, 64, 48)
    with pytest.raises(InputError, match="the clip has 4 frames but its pose frames show 0"):
        score_result(engine, case, clip, PoseSequence([]), JobRecord(), subject="x.mp4")
    short = PoseSequence(engine.dwpose.detect_many(list(clip[:3]), progress=False))
    with pytest.raises(
        InputError, match=r"x\.mp4: the clip has 4 frames but its pose frames show 2"
    ):
        score_result(engine, case, clip, short, JobRecord(), subject="x.mp4")


def test_a_cpu_scores_a_subset_and_a_number_overrides(engine):
    engine, _ = engine
    assert score_frames(engine, ScoreOptions()) == CPU_SCORE_FRAMES
    assert score_frames(engine, ScoreOptions(frames=None)) is None
    assert score_frames(engine, ScoreOptions(frames=4)) == 4
    assert scored_frames(72, CPU_SCORE_FRAMES)[-1] == 71


def test_the_reference_frame_embeds_as_the_reference_does(engine):
    """Frames and the reference image go through one CLIP path: identity 1 for the same
    picture."""
    engine, case = engine
    from mimicache.engine.engine import published_reference
    from mimicache.pose.preprocess import ReferenceImage

    image = ReferenceImage(case.ref_image_path, case.resolution)
    pil = published_reference(image)
    reference = engine.pipeline.encode_image(pil, engine.device)  # the published path
    frames = engine.image_encoder.encode_frames(np.asarray(pil)[None], engine.device)
    assert torch.equal(reference, frames)
