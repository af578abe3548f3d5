from __future__ import annotations

import numpy as np
import pytest

from mimicache.errors import InputError
from mimicache.pose import PoseFrame, align_poses
from mimicache.pose.align import ALIGN_IDS, align_params


def _person(points: np.ndarray, n: int = 1, score: float = 0.9) -> PoseFrame:
    cand = np.concatenate([points] * n)
    sc = np.full((n, 18), score)
    subset = np.where(sc > 0.3, np.arange(18) + 18 * np.arange(n)[:, None], -1).astype(float)
    return PoseFrame(
        candidate=cand,
        subset=subset,
        body_score=sc,
        faces=np.tile(points[:1], (n, 68, 1)),
        faces_score=np.full((n, 68), 0.5),
        hands=np.tile(points[:1], (2 * n, 21, 1)),
        hands_score=np.full((2 * n, 21), 0.5),
    )


def test_known_scale_and_offset_is_recovered():
    rng = np.random.default_rng(0)
    ref_pts = rng.uniform(0.2, 0.8, (18, 2))
    fh, fw, H, W = 100, 200, 100, 50  # fh / fw / H * W = 0.25 → ax = 4 * ay
    ay, by = 0.5, 0.1
    ax, bx = 4 * ay, -0.3
    video_pts = (ref_pts - [bx, by]) / [ax, ay]
    video = [_person(video_pts), _person(video_pts, n=2), _person(video_pts)]
    a, b = align_params(_person(ref_pts), video, (fh, fw), (H, W))
    np.testing.assert_allclose(a, [ax, ay], rtol=1e-9)
    np.testing.assert_allclose(b, [bx, by], atol=1e-9)
    out = align_poses(_person(ref_pts), video, (fh, fw), (H, W))
    assert len(out) == 3 and out[1].num_people == 2  # two-person frames are aligned, not fitted
    np.testing.assert_allclose(out[0].candidate, ref_pts, atol=1e-9)
    np.testing.assert_allclose(out[1].faces[1, 0], ref_pts[0], atol=1e-9)
    np.testing.assert_allclose(out[2].hands[1, 5], ref_pts[0], atol=1e-9)
    np.testing.assert_array_equal(out[0].body_score, video[0].body_score)


def test_only_present_reference_ids_are_used():
    rng = np.random.default_rng(1)
    ref_pts = rng.uniform(0.2, 0.8, (18, 2))
    ref = _person(ref_pts)
    video_pts = ref_pts * 0.5
    bad = video_pts.copy()
    bad[3] = [5.0, 5.0]  # id 3 (right elbow) is not an alignment id
    a, _ = align_params(ref, [_person(bad)], (100, 100), (100, 100))
    np.testing.assert_allclose(a, [2.0, 2.0])
    assert 3 not in ALIGN_IDS


def test_errors_name_the_files():
    pts = np.full((18, 2), 0.5)
    with pytest.raises(InputError, match=r"no person found in the reference image ref\.png"):
        align_poses(
            _person(pts, score=0.1), [_person(pts)], (10, 10), (10, 10), image_path="ref.png"
        )
    with pytest.raises(InputError, match=r"driving video dance\.mp4 shows exactly one person"):
        align_poses(_person(pts), [_person(pts, n=2)], (10, 10), (10, 10), video_path="dance.mp4")
    with pytest.raises(InputError, match="reference image"):
        align_poses(PoseFrame.empty(), [_person(pts)], (10, 10), (10, 10))
