"""The clip scores' measures against answers computed by hand on synthetic sequences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mimicache.quality.metrics import (
    MISSING_DISTANCE,
    NUM_POINTS,
    PARTS,
    body_scale,
    dtw_error,
    flicker,
    identity,
    part_errors,
    part_recall,
    point_distances,
)

SCALE = 20.0


def still(frames: int = 8, seed: int = 0) -> np.ndarray:
    """Every point shown, at random places, the same in every frame."""
    rng = np.random.default_rng(seed)
    points = np.ones((frames, NUM_POINTS, 3))
    points[..., :2] = rng.uniform(0, 200, (1, NUM_POINTS, 2))
    return points


def a_sign(rest: int = 4, moving: int = 10) -> np.ndarray:
    """Rest, a stroke of the whole body 5 px a frame to the right, rest: a sign's shape."""
    x = np.concatenate(
        [np.zeros(rest), 5.0 * np.arange(1, moving + 1), np.full(rest, 5.0 * moving)]
    )
    points = still(len(x))
    points[..., 0] += x[:, None]
    return points


def test_identical_sequences_score_zero_error_and_full_recall():
    target = a_sign()
    for part, error in part_errors(target, target.copy(), SCALE).items():
        assert np.array_equal(error, np.zeros(len(target))), part
    assert all(np.all(r == 1.0) for r in part_recall(target, target).values())
    assert all(dtw_error(target, target, SCALE, part) == 0.0 for part in PARTS)


def test_a_known_shift_gives_the_shift_over_the_scale():
    target = still()
    output = target.copy()
    output[..., 0] += 3.0
    output[..., 1] -= 4.0  # 5 px away
    errors = part_errors(target, output, SCALE)
    for part in PARTS:
        assert np.allclose(errors[part], 5.0 / SCALE)
    assert math.isclose(dtw_error(target, output, SCALE, "face"), 5.0 / SCALE)
    shifted_hand = target.copy()
    shifted_hand[:, PARTS["left_hand"], 0] += 10.0
    errors = part_errors(target, shifted_hand, SCALE)
    assert np.allclose(errors["left_hand"], 0.5) and np.allclose(errors["right_hand"], 0.0)


def test_a_hand_that_disappears_has_recall_zero_and_counts_as_missing():
    target = still()
    output = target.copy()
    output[3:, PARTS["right_hand"], 2] = 0.1  # below the drawing threshold from frame 3
    recall = part_recall(target, output)["right_hand"]
    assert np.array_equal(recall, [1, 1, 1, 0, 0, 0, 0, 0])
    error = part_errors(target, output, SCALE)["right_hand"]
    assert np.array_equal(error, [0, 0, 0, *[MISSING_DISTANCE] * 5])
    assert np.all(part_recall(target, output)["left_hand"] == 1.0)


def test_points_the_target_does_not_show_are_not_scored():
    target = still()
    target[:, PARTS["face"], 2] = 0.0  # no face asked for
    output = still(seed=1)  # a face somewhere else entirely
    assert np.all(np.isnan(part_errors(target, output, SCALE)["face"]))
    assert np.all(np.isnan(part_recall(target, output)["face"]))
    assert math.isnan(dtw_error(target, output, SCALE, "face"))
    d = point_distances(target, output, SCALE)
    assert np.all(np.isnan(d[:, PARTS["face"]])) and not np.any(np.isnan(d[:, :60]))


def test_a_sequence_two_frames_late_has_dtw_about_zero_and_a_framewise_error():
    target = a_sign()
    late = np.concatenate([target[:1].repeat(2, axis=0), target[:-2]])  # two frames behind
    framewise = np.nanmean(part_errors(target, late, SCALE)["body"])
    assert framewise > 0.2  # 10 px of 20 in each moving frame
    assert dtw_error(target, late, SCALE, "body") == pytest.approx(0.0, abs=1e-12)
    wrong = target.copy()
    wrong[..., 1] += 10.0  # the right timing, the wrong place: DTW cannot hide it
    assert dtw_error(target, wrong, SCALE, "body") == pytest.approx(0.5)


def test_dtw_takes_the_diagonal_among_equal_paths():
    target = still(frames=5)
    output = target.copy()
    output[..., 0] += SCALE  # every cell costs one scale: only the path length normalises
    assert dtw_error(target, output, SCALE, "body") == pytest.approx(1.0)


def _dtw_by_the_book(target, output, part):
    """nDTW-MJE written out cell by cell from its definition: the cheapest monotone path over
    the (target frame, output frame) costs, ties to the diagonal, then down, then across;
    cells whose target shows none of the part cost 0 and are not counted."""
    sl = PARTS[part]
    n, m = len(target), len(output)
    cost = np.full((n, m), np.nan)
    for i in range(n):
        for j in range(m):
            d = point_distances(target[i : i + 1, sl], output[j : j + 1, sl], SCALE)[0]
            if not np.all(np.isnan(d)):
                cost[i, j] = np.nanmean(d)
    total, count = np.full((n + 1, m + 1), np.inf), np.zeros((n + 1, m + 1))
    total[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            pi, pj = min(((i - 1, j - 1), (i - 1, j), (i, j - 1)), key=lambda p: total[p])
            c = cost[i - 1, j - 1]
            total[i, j] = total[pi, pj] + (0.0 if np.isnan(c) else c)
            count[i, j] = count[pi, pj] + (not np.isnan(c))
    return total[n, m] / count[n, m] if count[n, m] else math.nan


def test_dtw_equals_its_definition_on_random_sequences_with_hidden_points():
    rng = np.random.default_rng(7)
    for _ in range(6):
        n, m = rng.integers(1, 9, 2)
        target, output = (
            np.concatenate(
                [
                    rng.uniform(0, 100, (k, NUM_POINTS, 2)),
                    rng.choice([0.1, 0.9], (k, NUM_POINTS, 1)),
                ],
                axis=2,
            )
            for k in (n, m)
        )
        target[rng.random(n) < 0.3, :, 2] = 0.1  # target frames that show nobody: cells not counted
        for part in PARTS:
            want = _dtw_by_the_book(target, output, part)
            got = dtw_error(target, output, SCALE, part)
            assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want, rel=1e-12)


def test_body_scale_is_the_reference_shoulder_width():
    reference = np.zeros((NUM_POINTS, 3))
    reference[2] = [100, 50, 0.9]  # right shoulder
    reference[5] = [130, 90, 0.8]  # left shoulder: 50 px away
    assert body_scale(reference) == 50.0
    reference[5, 2] = 0.2  # not shown
    assert body_scale(reference, fallback=32.0) == 32.0
    with pytest.raises(ValueError, match="no shoulders"):
        body_scale(reference)


def test_identity_of_the_reference_with_itself_is_one():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=1024)
    frames = np.stack([ref, -ref, ref * 2.5, np.roll(ref, 1)])
    sims = identity(ref, frames)
    assert sims[0] == pytest.approx(1.0) and sims[1] == pytest.approx(-1.0)
    assert sims[2] == pytest.approx(1.0)  # scale does not matter
    assert abs(sims[3]) < 0.2  # an unrelated direction
    assert identity(ref[None], frames[:1])[0] == pytest.approx(1.0)


def test_flicker_is_zero_for_a_still_or_steadily_changing_clip_and_one_for_black_white():
    still_frames = np.full((6, 8, 8, 3), 77, np.uint8)
    assert flicker(still_frames) == 0.0
    fade = np.stack([np.full((8, 8, 3), 10 * t, np.uint8) for t in range(6)])
    assert flicker(fade) == 0.0  # a constant-speed change is motion, not flicker
    blink = np.zeros((6, 8, 8, 3), np.uint8)
    blink[1::2] = 255
    assert flicker(blink) == pytest.approx(1.0)
    one_pop = still_frames.copy()
    one_pop[3, :4] = 77 + 51  # half the pixels jump by 51 in one frame
    # that frame's triple and its neighbours' see 2*51 and 51 on half the pixels
    assert flicker(one_pop) == pytest.approx((0 + 51 + 102 + 51) / 2 / 4 / 510)
    assert flicker(still_frames[:2]) == 0.0


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"\(frames, points, 3\)"):
        part_errors(np.zeros((3, 128)), np.zeros((3, 128)), SCALE)
    with pytest.raises(ValueError, match="differ in shape"):
        point_distances(still(3), still(4), SCALE)
