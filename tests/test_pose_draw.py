from __future__ import annotations

import math

import cv2
import numpy as np

from mimicache.pose import PoseFrame, draw_pose, draw_poses
from mimicache.pose.draw import COLORS, HAND_COLORS, HAND_EDGES, LIMB_SEQ


def _reference_draw(pose: PoseFrame, H: int, W: int) -> np.ndarray:
    """Plain re-statement of the published renderer: fresh canvas, whole-canvas * 0.6 pass."""
    sz = min(H, W)
    sr = (2160 / sz) if sz != 2160 else 1
    canvas = np.zeros((int(H * sr), int(W * sr), 3), np.uint8)
    h, w = canvas.shape[:2]
    cand, subset, score = pose.candidate, pose.subset, pose.body_score
    for i in range(17):
        for n in range(len(subset)):
            idx = subset[n][np.array(LIMB_SEQ[i]) - 1]
            conf = score[n][np.array(LIMB_SEQ[i]) - 1]
            if conf[0] < 0.3 or conf[1] < 0.3:
                continue
            Y = cand[idx.astype(int), 0] * float(w)
            X = cand[idx.astype(int), 1] * float(h)
            length = ((X[0] - X[1]) ** 2 + (Y[0] - Y[1]) ** 2) ** 0.5
            angle = math.degrees(math.atan2(X[0] - X[1], Y[0] - Y[1]))
            poly = cv2.ellipse2Poly(
                (int(np.mean(Y)), int(np.mean(X))), (int(length / 2), 4), int(angle), 0, 360, 1
            )
            cv2.fillConvexPoly(canvas, poly, [int(c * (conf[0] * conf[1])) for c in COLORS[i]])
    canvas = (canvas * 0.6).astype(np.uint8)
    for i in range(18):
        for n in range(len(subset)):
            k = int(subset[n][i])
            if k == -1:
                continue
            x, y = cand[k][0:2]
            cv2.circle(
                canvas,
                (int(x * w), int(y * h)),
                4,
                [int(c * score[n][i]) for c in COLORS[i]],
                thickness=-1,
            )
    for peaks, scores in zip(pose.hands, pose.hands_score):
        for ie, e in enumerate(HAND_EDGES):
            x1, y1 = int(peaks[e[0]][0] * w), int(peaks[e[0]][1] * h)
            x2, y2 = int(peaks[e[1]][0] * w), int(peaks[e[1]][1] * h)
            s = int(scores[e[0]] * scores[e[1]] * 255)
            if x1 > 0.01 and y1 > 0.01 and x2 > 0.01 and y2 > 0.01:
                cv2.line(canvas, (x1, y1), (x2, y2), HAND_COLORS[ie] * s, thickness=2)
        for i, (x, y) in enumerate(peaks):
            x, y = int(x * w), int(y * h)
            if x > 0.01 and y > 0.01:
                cv2.circle(canvas, (x, y), 4, (0, 0, int(scores[i] * 255)), thickness=-1)
    for lmks, scores in zip(pose.faces, pose.faces_score):
        for (x, y), s in zip(lmks, scores):
            x, y = int(x * w), int(y * h)
            if x > 0.01 and y > 0.01:
                cv2.circle(canvas, (x, y), 3, (int(s * 255),) * 3, thickness=-1)
    return cv2.cvtColor(cv2.resize(canvas, (W, H)), cv2.COLOR_BGR2RGB)


def _random_pose(rng, n: int) -> PoseFrame:
    score = rng.uniform(0.0, 1.2, (n, 18))  # > 1 happens with real models: colours saturate
    subset = np.where(score > 0.3, np.arange(18) + 18 * np.arange(n)[:, None], -1).astype(float)
    return PoseFrame(
        candidate=rng.uniform(-0.1, 1.1, (n * 18, 2)),
        subset=subset,
        body_score=score,
        faces=rng.uniform(-0.05, 1.0, (n, 68, 2)),
        faces_score=rng.uniform(0, 1, (n, 68)),
        hands=rng.uniform(-0.05, 1.0, (2 * n, 21, 2)),
        hands_score=rng.uniform(0, 1, (2 * n, 21)),
    )


def test_matches_plain_renderer_on_random_poses():
    rng = np.random.default_rng(0)
    poses = [_random_pose(rng, n) for n in (1, 2, 1, 3)]
    sizes = [(192, 128), (128, 192), (96, 96), (192, 128)]
    for pose, (h, w) in zip(poses, sizes):
        np.testing.assert_array_equal(draw_pose(pose, h, w), _reference_draw(pose, h, w))
    # the reused canvas is clean again: an empty pose draws black
    assert not draw_pose(PoseFrame.empty(), 192, 128).any()


def _two_point_pose(s_neck: float, s_rsho: float) -> PoseFrame:
    cand = np.zeros((18, 2))
    cand[1] = [0.5, 0.25]  # neck
    cand[2] = [0.5, 0.75]  # right shoulder (vertical limb 0: [2, 3] in 1-based ids)
    score = np.zeros((1, 18))
    score[0, 1], score[0, 2] = s_neck, s_rsho
    subset = np.where(score > 0.3, np.arange(18), -1).astype(float)
    return PoseFrame(
        cand,
        subset,
        score,
        np.zeros((1, 68, 2)),
        np.zeros((1, 68)),
        np.zeros((2, 21, 2)),
        np.zeros((2, 21)),
    )


def test_limb_colour_confidence_and_bgr_swap():
    img = draw_pose(_two_point_pose(1.0, 0.5), 2160, 2160)  # canvas = output: no resampling
    # limb 0 colour (255, 0, 0) * 1.0 * 0.5 = 127, dimmed int(127 * 0.6) = 76, BGR → RGB
    np.testing.assert_array_equal(img[1080, 1080], [0, 0, 76])
    # joints after dimming: neck colour[1] (255, 85, 0) x 1.0; right shoulder colour[2] (255, 170, 0) x 0.5
    np.testing.assert_array_equal(img[540, 1080], [0, 85, 255])
    np.testing.assert_array_equal(img[1620, 1080], [0, 85, 127])


def test_low_confidence_limb_and_joint_skipped():
    img = draw_pose(_two_point_pose(1.0, 0.29), 2160, 2160)
    assert not img[1080, 1080].any()  # limb skipped (0.29 < 0.3)
    assert not img[1620, 1080].any()  # joint skipped (subset -1)
    np.testing.assert_array_equal(img[540, 1080], [0, 85, 255])


def test_hand_and_face_colours():
    pose = _two_point_pose(0.0, 0.0)
    pose.hands[0, 0] = [0.25, 0.5]
    pose.hands[0, 1] = [0.75, 0.5]
    pose.hands_score[0, :2] = [1.0, 0.8]
    pose.faces[0, 0] = [0.5, 0.9]
    pose.faces_score[0, 0] = 0.5
    img = draw_pose(pose, 2160, 2160)
    # edge 0: HSV(0, 1, 1) = (1, 0, 0) x int(1.0 * 0.8 * 255) = 204 in canvas channel 0 → blue
    np.testing.assert_array_equal(img[1080, 1080], [0, 0, 204])
    # hand point: (0, 0, int(0.8 * 255)) in canvas order → red in RGB
    np.testing.assert_array_equal(img[1080, 1620], [204, 0, 0])
    np.testing.assert_array_equal(img[1944, 1080], [127, 127, 127])  # face: grey int(0.5 * 255)
    # points at x <= 0 (after int truncation) are skipped: the other 19 hand points sit at 0
    assert not img[0:3, 0:3].any()


def test_draw_poses_stacks():
    out = draw_poses([_two_point_pose(1.0, 1.0)] * 2, 64, 48)
    assert out.shape == (2, 64, 48, 3) and out.dtype == np.uint8
    assert draw_poses([], 64, 48).shape == (0, 64, 48, 3)
