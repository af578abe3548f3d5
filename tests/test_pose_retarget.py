"""The original scripts' "graft" retargeting: hand-computed cases, people counts, errors, the staged API."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

import mimicache
from mimicache.errors import InputError
from mimicache.media import fit_image, read_image
from mimicache.pose import (
    PoseFrame,
    align_poses,
    draw_pose,
    extract_image_pose,
    extract_video_poses,
    graft_pose,
    render_pose_frames,
    retarget_poses,
)
from mimicache.pose.retarget import graft_poses
from mimicache.testing.tiny_dwpose import make_figure_frame
from tests import pose_fixtures
from tests.pose_fixtures import figure_video

dwpose = pose_fixtures.dwpose
tiny_models = pose_fixtures.tiny_models


def person(
    body: dict[int, tuple[float, float]],
    *,
    fill: float,
    face: np.ndarray | None = None,
    hands: tuple[np.ndarray, np.ndarray] | None = None,
    hand_score: float = 0.7,
    face_score: float = 0.6,
    missing: tuple[int, ...] = (),
) -> PoseFrame:
    """One person; unlisted body points sit at (fill, fill). ``missing`` points get subset -1."""
    candidate = np.full((18, 2), fill)
    for i, xy in body.items():
        candidate[i] = xy
    score = np.full((1, 18), 0.9)
    score[0, list(missing)] = 0.1
    subset = np.where(score > 0.3, np.arange(18.0), -1.0)
    faces = np.full((1, 68, 2), fill) if face is None else face[None]
    left, right = hands if hands is not None else (np.full((21, 2), fill),) * 2
    return PoseFrame(
        candidate=candidate,
        subset=subset,
        body_score=score,
        faces=faces,
        faces_score=np.full((1, 68), face_score),
        hands=np.stack([left, right]),
        hands_score=np.full((2, 21), hand_score),
    )


def two(first: PoseFrame, second: PoseFrame) -> PoseFrame:
    """Two people in the published layout (hands: both left hands, then both right hands)."""
    return PoseFrame(
        candidate=np.concatenate([first.candidate, second.candidate]),
        subset=np.concatenate([first.subset, second.subset + 18 * (second.subset >= 0)]),
        body_score=np.concatenate([first.body_score, second.body_score]),
        faces=np.concatenate([first.faces, second.faces]),
        faces_score=np.concatenate([first.faces_score, second.faces_score]),
        hands=np.stack([first.hands[0], second.hands[0], first.hands[1], second.hands[1]]),
        hands_score=np.concatenate([first.hands_score[:1], second.hands_score[:1],
                                    first.hands_score[1:], second.hands_score[1:]]),
    )  # fmt: skip


def box_face(x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    """68 face points spanning exactly the box [x0, x1] x [y0, y1] (corners included)."""
    t = np.linspace(0.0, 1.0, 68)
    face = np.stack([x0 + (x1 - x0) * t, y0 + (y1 - y0) * t[::-1] ** 2], axis=1)
    return face


# Reference: neck (0.5, 0.3); shoulders 0.1 away on each side.
REF_BODY = {
    0: (0.5, 0.2), 1: (0.5, 0.3), 2: (0.4, 0.3), 5: (0.6, 0.3), 8: (0.45, 0.6), 11: (0.55, 0.6),
    14: (0.48, 0.18), 15: (0.52, 0.18), 16: (0.46, 0.19), 17: (0.54, 0.19),
}  # fmt: skip
# Driving pose: neck (0.2, 0.5); left shoulder 0.05 away, right shoulder 0.2 away.
VIDEO_BODY = {
    0: (0.2, 0.45), 1: (0.2, 0.5), 2: (0.0, 0.5), 3: (0.0, 0.7), 4: (0.1, 0.8),
    5: (0.25, 0.5), 6: (0.28, 0.54), 7: (0.31, 0.5), 8: (0.9, 0.9),
    14: (0.19, 0.44), 15: (0.21, 0.44), 16: (0.18, 0.45), 17: (0.22, 0.46),
}  # fmt: skip


def reference() -> PoseFrame:
    face = box_face(0.45, 0.55, 0.05, 0.25)
    return person(REF_BODY, fill=0.5, face=face, hand_score=0.3, face_score=0.5)


def driving(**kw) -> PoseFrame:
    left = np.full((21, 2), 0.33)
    left[5] = (0.35, 0.49)
    right = np.full((21, 2), 0.12)
    right[3] = (0.1, 0.9)
    kw.setdefault("face", box_face(0.1, 0.3, 0.4, 0.5))
    kw.setdefault("hands", (left, right))
    return person(VIDEO_BODY, fill=0.8, **kw)


def test_graft_written_out_by_hand():
    ref, video = reference(), driving()
    out = graft_pose(ref, video)
    s_left = 0.1 / (0.05 + 1e-6)
    s_right = 0.1 / (0.2 + 1e-6)
    # arms hang from the reference shoulders, each driving segment scaled by its side's ratio
    elbow_l = np.array([0.6 + 0.03 * s_left, 0.3 + 0.04 * s_left])
    wrist_l = elbow_l + np.array([0.03, -0.04]) * s_left
    elbow_r = np.array([0.4 + 0.0 * s_right, 0.3 + 0.2 * s_right])
    wrist_r = elbow_r + np.array([0.1, 0.1]) * s_right
    np.testing.assert_allclose(out.candidate[6], elbow_l, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out.candidate[7], wrist_l, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out.candidate[3], elbow_r, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out.candidate[4], wrist_r, rtol=0, atol=1e-12)
    # hands follow their wrist: left hand point 5 was (0.04, -0.01) from the driving wrist
    np.testing.assert_allclose(
        out.hands[0][5], wrist_l + np.array([0.04, -0.01]) * s_left, atol=1e-12
    )
    np.testing.assert_allclose(
        out.hands[0][0], wrist_l + np.array([0.02, -0.17]) * s_left, atol=1e-12
    )
    np.testing.assert_allclose(
        out.hands[1][3], wrist_r + np.array([0.0, 0.1]) * s_right, atol=1e-12
    )
    np.testing.assert_allclose(out.hands[1][0], wrist_r + np.array([0.02, -0.68]) * s_right)
    # face box (0.1..0.3, 0.4..0.5) onto (0.45..0.55, 0.05..0.25): x scale 0.5, y scale 2
    np.testing.assert_allclose(out.faces[0][0], (0.45, 0.25), atol=1e-12)
    np.testing.assert_allclose(out.faces[0][-1], (0.55, 0.05), atol=1e-12)
    mid = video.faces[0][30]
    np.testing.assert_allclose(
        out.faces[0][30], ((mid[0] - 0.2) * 0.5 + 0.5, (mid[1] - 0.45) * 2 + 0.15), atol=1e-12
    )
    # body face points: driving box x 0.18..0.22, y 0.44..0.46; reference x 0.46..0.54, y 0.18..0.2
    np.testing.assert_allclose(out.candidate[0], (0.5, (0.45 - 0.45) * 1 + 0.19), atol=1e-12)
    np.testing.assert_allclose(out.candidate[16], (0.46, 0.19), atol=1e-12)
    np.testing.assert_allclose(out.candidate[14], (0.48, 0.18), atol=1e-12)
    np.testing.assert_allclose(out.candidate[17], (0.54, 0.2), atol=1e-12)
    # everything else stays the reference's; scores come from the driving pose
    for i in (1, 2, 5, 8, 9, 10, 11, 12, 13):
        assert np.array_equal(out.candidate[i], ref.candidate[i])
    assert np.array_equal(out.subset, ref.subset)
    assert np.array_equal(out.body_score, ref.body_score)
    assert np.array_equal(out.hands_score, video.hands_score)
    assert np.array_equal(out.faces_score, video.faces_score)
    # pure: inputs untouched
    assert ref.equals(reference()) and video.equals(driving())


def test_degenerate_boxes_are_floored():
    flat = np.tile([0.2, 0.45], (68, 1))  # every driving face point in one place
    out = graft_pose(reference(), driving(face=flat))
    # (p - c) is 0: all points land on the reference box centre
    np.testing.assert_allclose(out.faces[0], np.tile([0.5, 0.15], (68, 1)), atol=1e-12)
    ref = person(REF_BODY, fill=0.5, face=np.tile([0.5, 0.1], (68, 1)))
    out = graft_pose(ref, driving())
    # reference box of size 0 → 1e-6: the driving face shrinks to 1e-6 around the centre
    span = out.faces[0].max(axis=0) - out.faces[0].min(axis=0)
    np.testing.assert_allclose(span, [1e-6, 1e-6], rtol=1e-9)
    np.testing.assert_allclose(out.faces[0].mean(axis=0), [0.5, 0.1], atol=1e-6)


def test_two_people_first_person_used_and_score_rows_kept():
    stranger = person({i: (0.9, 0.9) for i in range(18)}, fill=0.95, hand_score=0.2)
    stranger.hands_score[1] = 0.1  # right hand scores distinguishable from the left
    video = two(driving(), stranger)
    single = graft_pose(reference(), driving())
    out = graft_pose(reference(), video)
    # body, hands and face come from the first person only
    assert np.array_equal(out.candidate, single.candidate)
    assert np.array_equal(out.hands, single.hands)
    assert np.array_equal(out.faces, single.faces)
    # one reference person: its left/right score rows are the first driving person's
    assert np.array_equal(out.hands_score, video.hands_score[[0, 2]])
    assert np.array_equal(out.faces_score, video.faces_score[:1])
    # as many people on both sides: the whole driving score arrays, every person's rows
    ref2 = two(reference(), person(REF_BODY, fill=0.4))
    out2 = graft_pose(ref2, video)
    assert np.array_equal(out2.hands_score, video.hands_score)
    assert np.array_equal(out2.faces_score, video.faces_score)
    assert np.array_equal(out2.candidate[18:], ref2.candidate[18:])  # second person kept
    assert np.array_equal(out2.hands[[1, 3]], ref2.hands[[1, 3]])
    assert np.array_equal(out2.subset, ref2.subset)


def test_video_without_hands_keeps_the_reference_hands():
    ref = reference()
    out = graft_pose(ref, driving(hand_score=0.0, face_score=0.0))
    assert np.array_equal(out.hands, ref.hands)
    assert np.array_equal(out.hands_score, ref.hands_score)
    # the face still follows (its points are mapped), with the reference's scores
    assert np.array_equal(out.faces_score, ref.faces_score)
    assert not np.array_equal(out.faces, ref.faces)
    # the arms still follow
    assert not np.array_equal(out.candidate[7], ref.candidate[7])


def test_graft_poses_errors_name_file_and_frames(caplog):
    ref, good = reference(), driving()
    no_shoulder = person(REF_BODY, fill=0.5, missing=(5,))
    with pytest.raises(InputError, match=r"reference image .*me\.png \(missing: left shoulder\)"):
        graft_poses(no_shoulder, [good], image_path="me.png")
    no_neck = driving(missing=(1,))
    with pytest.raises(
        InputError, match=r"not found in frame\(s\) 1, 3 of the driving video clip\.mp4"
    ):
        graft_poses(ref, [good, no_neck, good, no_neck], video_path="clip.mp4")
    # nobody in a frame (DWPose then reports a person with nothing detected): reference pose
    nobody = driving(missing=tuple(range(18)))
    with caplog.at_level(logging.WARNING):
        out = graft_poses(ref, [good, nobody, PoseFrame.empty()], video_path="clip.mp4")
    assert out[1].equals(ref) and out[2].equals(ref)
    assert out[0].equals(graft_pose(ref, good))
    assert "no person in frame(s) 1, 2 of the driving video clip.mp4" in caplog.text
    with pytest.raises(ValueError, match="published, graft"):
        retarget_poses("grafted", ref, [good])
    assert retarget_poses("published", ref, [good])[0] is good


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    image = root / "ref.png"
    Image.fromarray(make_figure_frame(200, 150, 0.5)).save(image)
    video = figure_video(root / "dance.mp4", 8, height=96, width=128, fps=30)
    return image, video


def test_render_and_preprocess_in_graft_mode(media, dwpose):
    image_path, video_path = media
    image = fit_image(read_image(image_path), 128)
    ref = extract_image_pose(image, dwpose)
    video = extract_video_poses(video_path, 2, dwpose, progress=False)
    published = render_pose_frames(ref, video, 192, 128)
    grafted = render_pose_frames(ref, video, 192, 128, retarget="graft")
    aligned = align_poses(ref, video.poses, (96, 128), (192, 128))
    np.testing.assert_array_equal(grafted[0], published[0])  # the reference frame unchanged
    for i, pose in enumerate(aligned, start=1):
        np.testing.assert_array_equal(grafted[i], draw_pose(graft_pose(ref, pose), 192, 128))
        assert not np.array_equal(grafted[i], published[i])
    pose_pixels, _ = mimicache.preprocess(
        video_path, image_path, 128, 2, dwpose, progress=False, retarget="graft"
    )
    np.testing.assert_array_equal(((pose_pixels + 1) * 127.5).round().byte().numpy(),
                                  grafted.transpose(0, 3, 1, 2))  # fmt: skip
    with pytest.raises(ValueError, match="published, graft"):
        mimicache.preprocess(video_path, image_path, 128, 2, dwpose, retarget="seed")
