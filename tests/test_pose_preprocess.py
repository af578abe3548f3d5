from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mimicache.errors import InputError
from mimicache.media import fit_image, read_image
from mimicache.pose import (
    VideoPoses,
    align_poses,
    draw_pose,
    extract_image_pose,
    extract_video_poses,
    preprocess,
    render_pose_frames,
)
from mimicache.testing.tiny_dwpose import make_figure_frame
from tests import pose_fixtures
from tests.pose_fixtures import figure_video

# shared fixtures
dwpose = pose_fixtures.dwpose
tiny_models = pose_fixtures.tiny_models


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    image = root / "ref.png"
    Image.fromarray(make_figure_frame(200, 150, 0.5)).save(image)  # portrait
    video = figure_video(root / "dance.mp4", 8, height=96, width=128, fps=30)
    return image, video


def test_preprocess_end_to_end(media, dwpose):
    image_path, video_path = media
    pose_pixels, image_pixels = preprocess(video_path, image_path, 128, 2, dwpose, progress=False)
    # portrait at 128: W = 128, H = int(128 / (9/16) // 64) * 64 = 192; 8 frames at stride 2 → 4
    assert pose_pixels.shape == (5, 3, 192, 128) and pose_pixels.dtype == torch.float32
    assert image_pixels.shape == (1, 3, 192, 128) and image_pixels.dtype == torch.float32
    image = fit_image(read_image(image_path), 128)
    expected = torch.from_numpy(image).permute(2, 0, 1)[None] / 127.5 - 1
    assert torch.equal(image_pixels, expected)
    assert pose_pixels.min() >= -1 and pose_pixels.max() <= 1
    drawn = ((pose_pixels + 1) * 127.5).round()
    assert all((frame > 0).sum() > 200 for frame in drawn)  # every frame shows a skeleton

    # the staged API gives exactly the same frames
    ref = extract_image_pose(image, dwpose)
    video = extract_video_poses(video_path, 2, dwpose, progress=False)
    assert (video.frame_height, video.frame_width, len(video.poses)) == (96, 128, 4)
    frames = render_pose_frames(ref, video, 192, 128)
    assert torch.equal(torch.from_numpy(frames).permute(0, 3, 1, 2) / 127.5 - 1, pose_pixels)
    np.testing.assert_array_equal(frames[0], draw_pose(ref, 192, 128))
    aligned = align_poses(ref, video.poses, (96, 128), (192, 128))
    np.testing.assert_array_equal(frames[2], draw_pose(aligned[1], 192, 128))

    # aligned skeletons sit on the reference body: neck x/y close to the reference's
    ref_neck = ref.candidate[1]
    necks = np.array([p.candidate[1] for p in aligned])
    assert np.abs(necks[:, 1] - ref_neck[1]).max() < 0.05

    # video poses round-trip through tensors and do not depend on the resolution
    back = VideoPoses.from_tensors(video.to_tensors())
    assert (back.frame_height, back.frame_width) == (96, 128)
    assert all(a.equals(b) for a, b in zip(back.poses, video.poses))


def test_reference_image_without_person(tmp_path, media, dwpose):
    dark = tmp_path / "empty_room.png"
    Image.fromarray(make_figure_frame(200, 150, 0.0, people=0)).save(dark)
    with pytest.raises(
        InputError, match=r"no person found in the reference image .*empty_room\.png"
    ):
        preprocess(media[1], dark, 128, 2, dwpose, progress=False)


def test_video_without_single_person_frame(tmp_path, media, dwpose):
    crowd = figure_video(tmp_path / "duo.mp4", 4, height=96, width=160, people=2)
    with pytest.raises(InputError, match=r"driving video .*duo\.mp4 shows exactly one person"):
        preprocess(crowd, media[0], 128, 1, dwpose, progress=False)


def test_missing_inputs(tmp_path, media, dwpose):
    with pytest.raises(InputError, match=r"missing\.png"):
        preprocess(media[1], tmp_path / "missing.png", 128, 2, dwpose, progress=False)
    with pytest.raises(InputError, match=r"missing\.mp4"):
        preprocess(tmp_path / "missing.mp4", media[0], 128, 2, dwpose, progress=False)
    not_video = tmp_path / "clip.mp4"
    not_video.write_text("hello")
    with pytest.raises(InputError, match=r"clip\.mp4"):
        preprocess(not_video, media[0], 128, 2, dwpose, progress=False)


def test_pose_steps_run_in_one_order_through_run_step(media, dwpose):
    """The engine caches each step by its name; a replayed value replaces the computation."""
    from mimicache.engine.stages import POSE_STAGES
    from mimicache.pose.preprocess import IMAGE_KEYPOINTS, POSE_FRAMES, VIDEO_KEYPOINTS, pose_steps

    image_path, video_path = media
    calls, kept = [], {}

    def remember(step, compute, subject):
        calls.append((step, subject.name))
        kept[step] = compute()
        return kept[step]

    pose = pose_steps(video_path, image_path, 128, 2, dwpose, progress=False, run_step=remember)
    assert calls == [
        (IMAGE_KEYPOINTS, "ref.png"),
        (VIDEO_KEYPOINTS, "dance.mp4"),
        (POSE_FRAMES, "dance.mp4"),
    ]
    assert set(POSE_STAGES) == {step for step, _ in calls}
    assert pose.frames is kept[POSE_FRAMES].frames and pose.frames.shape == (5, 192, 128, 3)
    assert pose.people.chosen is None and kept[POSE_FRAMES].people is pose.people  # cached too
    pixels, _ = preprocess(video_path, image_path, 128, 2, dwpose, progress=False)
    assert torch.equal(torch.from_numpy(pose.frames).permute(0, 3, 1, 2) / 127.5 - 1, pixels)

    def replay(step, compute, subject):
        return kept[step]  # a cache hit: nothing is recomputed

    def no_dwpose(*args, **kwargs):
        raise AssertionError("DWPose ran although every step was replayed")

    class Unused:
        detect = detect_many = no_dwpose

    again = pose_steps(video_path, image_path, 128, 2, Unused(), progress=False, run_step=replay)
    assert again.frames is kept[POSE_FRAMES].frames
    assert again.people.summary() == pose.people.summary()
