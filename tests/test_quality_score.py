"""A clip's scores and verdict from synthetic arrays: thresholds, reasons, frames, keypoints."""

from __future__ import annotations

import numpy as np
import pytest

from mimicache.config.thresholds import DEFAULT_THRESHOLDS, parse_thresholds
from mimicache.errors import ConfigError
from mimicache.pose import PoseFrame
from mimicache.quality.metrics import NUM_POINTS, PARTS
from mimicache.quality.points import matching_points, person_points, sequence_points
from mimicache.quality.score import ClipScore, score_clip, scored_frames

SCALE = 40.0


def _still(frames: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    points = np.ones((frames, NUM_POINTS, 3))
    points[..., :2] = rng.uniform(0, 300, (1, NUM_POINTS, 2))
    return points


def _clip(frames: int) -> np.ndarray:
    return np.full((frames, 8, 8, 3), 90, np.uint8)


def test_a_clip_that_follows_its_pose_is_ok():
    targets = _still(10)
    emb = np.ones((10, 4))
    score = score_clip(targets=targets, outputs=targets.copy(), scale=SCALE, frames=range(10),
                       clip=_clip(10), reference_embedding=np.ones(4), frame_embeddings=emb)  # fmt: skip
    assert score.verdict == "ok" and score.reasons == []
    assert score.parts["right_hand"].error == 0.0 and score.parts["right_hand"].recall == 1.0
    assert score.identity == pytest.approx(1.0) and score.flicker == 0.0
    assert score.thresholds == DEFAULT_THRESHOLDS


def test_a_melted_hand_makes_the_clip_suspect_and_names_its_frames():
    targets = _still(10)
    outputs = targets.copy()
    outputs[3:7, PARTS["right_hand"], 0] += 0.5 * SCALE  # half a shoulder width off
    outputs[8:, PARTS["left_hand"], 2] = 0.0  # the left hand vanishes at the end
    score = score_clip(targets=targets, outputs=outputs, scale=SCALE, frames=range(10),
                       clip=_clip(10), thresholds={"right_hand": 0.1})  # fmt: skip
    assert score.verdict == "suspect"
    right, left = score.parts["right_hand"], score.parts["left_hand"]
    assert right.error == pytest.approx(0.2) and right.errors[3] == pytest.approx(0.5)
    assert "right hand error 0.20 > 0.10 in frames 3-6" in score.reasons
    assert left.recall == pytest.approx(0.8) and left.recalls[8:] == [0.0, 0.0]
    assert left.error == pytest.approx(0.2)  # a missing point costs one scale unit
    assert not any("left hand" in r for r in score.reasons)  # 0.2 <= 0.4, 80% >= 50%
    assert score.identity is None  # no embeddings given
    strict = ClipScore.from_dict(score.to_dict()).judge({**score.thresholds, "hand_recall": 0.9})
    assert "left hand shows 80% of its points < 90% in frames 8-9" in strict.reasons


def test_frames_name_runs_of_the_scored_frames():
    targets = _still(4)
    outputs = targets.copy()
    outputs[[0, 1, 3], PARTS["face"], 1] += SCALE
    score = score_clip(targets=targets, outputs=outputs, scale=SCALE, frames=[0, 8, 16, 24],
                       clip=_clip(25))  # fmt: skip
    # frames 0 and 8 are consecutive scored frames: one run
    assert any(r.endswith("in frames 0-8, 24") for r in score.reasons), score.reasons


def test_identity_and_flicker_reasons():
    clip = np.zeros((6, 8, 8, 3), np.uint8)
    clip[1::2] = 255
    ref = np.array([1.0, 0, 0, 0])
    emb = np.array([[1.0, 0, 0, 0], [0.2, 1, 0, 0], [1, 0, 0, 0]])
    score = score_clip(targets=_still(3), outputs=_still(3), scale=SCALE, frames=[0, 2, 5],
                       clip=clip, reference_embedding=ref, frame_embeddings=emb)  # fmt: skip
    assert score.identity_worst_frame == 2 and score.identity_min == pytest.approx(0.196116)
    assert any(r.startswith("identity 0.73 < 0.75 (worst frame 2: 0.20)") for r in score.reasons)
    assert "flicker 1.000 > 0.050" in score.reasons


def test_scored_frames_are_evenly_spaced_with_both_ends():
    assert scored_frames(7, None) == list(range(7))
    assert scored_frames(7, 16) == list(range(7))
    assert scored_frames(73, 16)[:3] == [0, 5, 10] and scored_frames(73, 16)[-1] == 72
    assert len(scored_frames(73, 16)) == 16
    with pytest.raises(ConfigError, match="at least 2"):
        scored_frames(73, 1)


def test_thresholds_are_parsed_and_checked():
    assert parse_thresholds(["right_hand=0.2", "identity=0.6"]) == {
        "right_hand": 0.2,
        "identity": 0.6,
    }
    with pytest.raises(ConfigError, match="unknown score threshold 'right_hnd'"):
        parse_thresholds(["right_hnd=0.2"])
    with pytest.raises(ConfigError, match="must be a number >= 0, got 'x'"):
        parse_thresholds(["body=x"])
    with pytest.raises(ConfigError, match="write NAME=VALUE"):
        parse_thresholds(["body"])


def _frame(people: list[tuple[float, float]]) -> PoseFrame:
    """People whose every point sits at (x, y) (normalised), all shown."""
    n = len(people)
    candidate = np.concatenate([np.tile(p, (18, 1)) for p in people]) if n else np.zeros((0, 2))
    return PoseFrame(
        candidate=candidate,
        subset=np.tile(np.arange(18.0), (n, 1)),
        body_score=np.full((n, 18), 0.9),
        faces=np.stack([np.tile(p, (68, 1)) for p in people]) if n else np.zeros((0, 68, 2)),
        faces_score=np.full((n, 68), 0.8),
        hands=np.stack([np.tile(p, (21, 1)) for p in people] * 2) if n else np.zeros((0, 21, 2)),
        hands_score=np.concatenate([np.full((n, 21), 0.7), np.full((n, 21), 0.6)]),
    )


def test_poses_become_pixel_points_and_the_nearest_person_is_matched():
    frame = _frame([(0.5, 0.25), (0.1, 0.9)])
    first = person_points(frame, 0, height=200, width=100)
    assert first.shape == (NUM_POINTS, 3)
    assert np.allclose(first[:, :2], [50.0, 50.0])
    assert first[PARTS["left_hand"], 2][0] == pytest.approx(0.7)
    assert first[PARTS["right_hand"], 2][0] == pytest.approx(0.6)
    second = person_points(frame, 1, 200, 100)
    assert np.allclose(matching_points(frame, second, 200, 100), second)
    assert np.allclose(matching_points(frame, first, 200, 100), first)
    assert not matching_points(_frame([]), first, 200, 100)[:, 2].any()
    seq = sequence_points([frame, _frame([])], 200, 100)
    assert seq.shape == (2, NUM_POINTS, 3) and not seq[1, :, 2].any()
