"""Choosing one person of the driving video: boxes, tracks, the choices, the report, the key,
the config key; on hand-built poses and on generated videos through the tiny DWPose."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import yaml
from PIL import Image

from mimicache.cache import StageKey
from mimicache.config import load_config, person_choice
from mimicache.engine.stages import pose_frames_key
from mimicache.errors import ConfigError, InputError
from mimicache.media import fit_image, read_image, write_video
from mimicache.pose import (
    PoseFrame,
    choose_person,
    draw_pose,
    extract_image_pose,
    extract_video_poses,
    render_pose_frames,
    select_person,
    track_people,
)
from mimicache.pose.dwpose import to_openpose, to_pose_frame
from mimicache.pose.people import box_iou, person_boxes, person_pose, video_boxes
from mimicache.testing.tiny_dwpose import keypoint_template, make_figure_frame, make_people_frame
from tests import pose_fixtures

dwpose = pose_fixtures.dwpose
tiny_models = pose_fixtures.tiny_models

HW = (100, 200)


def people_frame(boxes: list[tuple[float, float, float, float]]) -> PoseFrame:
    """A PoseFrame with one template person per pixel box (x0, y0, x1, y1) of a HW frame."""
    if not boxes:
        return PoseFrame.empty()
    u, v, s = keypoint_template()
    points, scores = [], []
    for x0, y0, x1, y1 in boxes:
        points.append(np.stack([x0 + u * (x1 - x0), y0 + v * (y1 - y0)], axis=1))
        scores.append(s)
    kp, sc = to_openpose(np.array(points, dtype=np.float64), np.array(scores, dtype=np.float64))
    return to_pose_frame(kp, sc, *HW)


BIG = (10.0, 10.0, 70.0, 95.0)
SMALL = (120.0, 50.0, 140.0, 90.0)


def moved(box, dx: float):
    return (box[0] + dx, box[1], box[2] + dx, box[3])


# --------------------------------------------------------------------------- hand-built poses


def test_boxes_cover_the_detected_body_points_in_pixels():
    pose = people_frame([BIG, SMALL])
    boxes = person_boxes(pose, HW)
    # the template's body points span x 0.05..0.95 and y 0.05..0.95 of its box
    np.testing.assert_allclose(boxes[0], [13.0, 14.25, 67.0, 90.75], atol=1e-6)
    assert boxes[1][0] > 120 and boxes[1][2] < 140
    undetected = PoseFrame.from_dict(pose.to_dict())
    undetected.subset[1] = -1  # a person without one detected body point is nobody
    assert person_boxes(undetected, HW)[1] is None


def test_a_videos_boxes_at_once_equal_each_persons_own():
    """``video_boxes`` (all frames in one pass) against the boxes spelled person by person."""
    rng = np.random.default_rng(3)
    video = [people_frame([BIG, SMALL]), PoseFrame.empty(), people_frame([moved(BIG, 9)])]
    video[0].subset[0, rng.random(18) < 0.3] = -1  # some body points undetected
    video[0].subset[1] = -1  # a person seen nowhere
    found = video_boxes(video, HW)
    assert [len(f) for f in found] == [2, 0, 1] and found[0][1] is None
    for pose, boxes in zip(video, found):
        for i, box in enumerate(boxes):
            seen = pose.subset[i] >= 0
            if not seen.any():
                continue
            points = pose.candidate[18 * i : 18 * i + 18][seen] * [HW[1], HW[0]]
            assert np.array_equal(box, np.concatenate([points.min(0), points.max(0)]))
    assert video_boxes([PoseFrame.empty()] * 2, HW) == [[], []]


def test_box_iou():
    a = np.array([0.0, 0.0, 10.0, 10.0])
    assert box_iou(a, a) == 1.0
    assert box_iou(a, np.array([5.0, 0.0, 15.0, 10.0])) == pytest.approx(50 / 150)
    assert box_iou(a, np.array([20.0, 0.0, 30.0, 10.0])) == 0.0
    assert box_iou(np.zeros(4), np.zeros(4)) == 0.0


def test_tracks_follow_overlap_not_the_order_in_the_frame():
    # the detector lists the people in a different order in frame 1 and 3
    frames = [
        people_frame([BIG, SMALL]),
        people_frame([moved(SMALL, 3), moved(BIG, 3)]),
        people_frame([moved(BIG, 6), moved(SMALL, 6)]),
        people_frame([moved(SMALL, 9), moved(BIG, 9)]),
    ]
    tracks = track_people(frames, HW)
    assert len(tracks) == 2
    assert tracks[0].people == {0: 0, 1: 1, 2: 0, 3: 1}  # the big person, left
    assert tracks[1].people == {0: 1, 1: 0, 2: 1, 3: 0}


def test_a_person_missing_for_a_frame_keeps_its_track_and_a_newcomer_gets_a_new_one():
    frames = [
        people_frame([BIG]),
        people_frame([]),
        people_frame([moved(BIG, 2)]),
        people_frame([moved(BIG, 4), SMALL]),
    ]
    tracks = track_people(frames, HW)
    assert [t.people for t in tracks] == [{0: 0, 2: 0, 3: 0}, {3: 1}]


def test_new_people_of_one_frame_are_numbered_left_to_right():
    tracks = track_people([people_frame([SMALL, BIG])], HW)  # listed right one first
    assert [t.people for t in tracks] == [{0: 1}, {0: 0}]


def test_person_pose_renumbers_the_subset_and_draws_that_person_alone():
    pose = people_frame([BIG, SMALL])
    second = person_pose(pose, 1)
    assert second.num_people == 1
    assert second.subset.max() <= 17 and set(second.subset[0][second.subset[0] >= 0]) <= set(
        range(18)
    )
    np.testing.assert_array_equal(second.candidate, pose.candidate[18:36])
    np.testing.assert_array_equal(second.hands, pose.hands[[1, 3]])
    alone = draw_pose(people_frame([SMALL]), *HW)
    assert np.array_equal(draw_pose(second, *HW), alone)


def two_people_video() -> list[PoseFrame]:
    """Frames 0-1: the small person alone (right of centre); from frame 2 the big one too."""
    frames = [people_frame([moved(SMALL, -40 + 2 * f)]) for f in range(2)]
    frames += [people_frame([moved(BIG, 2 * f), moved(SMALL, -40 + 2 * f)]) for f in range(2, 6)]
    frames.append(people_frame([]))
    return frames


@pytest.mark.parametrize(
    ("choice", "track"), [("largest", 1), ("center", 0), ("0", 0), (1, 1), ("auto", None)]
)
def test_each_choice_picks_its_person_in_every_frame(choice, track):
    video = two_people_video()
    poses, report = choose_person(video, choice, HW)
    assert report.chosen == track
    assert report.people == 2
    assert report.no_person == [6]
    assert report.several == [2, 3, 4, 5]
    if track is None:  # auto: the frames as they are
        assert all(a is b for a, b in zip(poses, video))
        return
    small = [f for f in range(6)]
    big = [2, 3, 4, 5]
    expected = small if track == 0 else big
    assert report.chosen_frames == len(expected)
    for f, pose in enumerate(poses):
        if f not in expected:
            assert pose.num_people == 0
            continue
        assert pose.num_people == 1
        box = person_boxes(pose, HW)[0]
        width = box[2] - box[0]
        assert (width > 40) == (track == 1), (f, box)


def test_a_person_number_beyond_the_people_seen_is_an_error_naming_them():
    with pytest.raises(InputError, match=r"person=2: the driving video clip.mp4 shows 2 people"):
        choose_person(two_people_video(), "2", HW, video_path="clip.mp4")


def test_a_person_number_beyond_a_one_person_video_is_an_error_not_auto():
    video = [people_frame([moved(BIG, 3 * f)]) for f in range(4)]
    with pytest.raises(InputError) as caught:
        choose_person(video, "5", HW, video_path="solo.mp4")
    message = str(caught.value)
    assert message.startswith("person=5: the driving video solo.mp4 shows 1 person (numbered 0")
    assert "choose one of those, or largest, center or auto" in message
    assert "\n" not in message


def test_single_person_frames_are_kept_under_every_choice():
    video = [people_frame([moved(BIG, 3 * f)]) for f in range(4)] + [people_frame([])]
    for choice in ("auto", "largest", "center", "0"):
        poses, report = choose_person(video, choice, HW)
        assert all(a is b for a, b in zip(poses, video)), choice
        assert report.chosen is None and report.no_person == [4] and report.several == []


def test_report_summary_names_the_counts_and_the_choice():
    _, report = choose_person(two_people_video(), "largest", HW)
    text = report.summary()
    assert text.startswith("2 different people over 7 sampled frames")
    assert "two or more at once in 4 (2, 3, 4, 5)" in text and "nobody in 1 (6)" in text
    assert "person 1 drives the pose (person='largest'), seen in 4 frames" in text
    assert report.to_dict()["chosen"] == 1


# --------------------------------------------------------------------------- choices, key, config


def test_person_choice_normalises_and_rejects():
    assert person_choice("Largest") == "largest"
    assert person_choice(" center ") == "center"
    assert person_choice(2) == "2"
    assert person_choice("03") == "3"
    for bad in ("-1", -1, "left", True, 1.5, None):
        with pytest.raises(ValueError, match="auto, largest, center or a person number"):
            person_choice(bad)


def test_the_person_enters_the_pose_frames_key_only_when_not_auto():
    video = StageKey(inputs={"video": "v"}, models={"dwpose": "d"}, params={"x": 1})
    image = StageKey(inputs={"image": "i"}, models={"dwpose": "d"}, params={"y": 2})
    auto = pose_frames_key(video, image, "published", "auto")
    assert auto == pose_frames_key(video, image)  # entries written before the choice keep keys
    assert "person" not in auto.params
    largest = pose_frames_key(video, image, "published", "largest")
    assert largest.params["person"] == "largest"
    keys = {
        pose_frames_key(video, image, "published", p).digest
        for p in ("auto", "largest", "center", "0", "1")
    }
    assert len(keys) == 5


def write_pose_config(tmp_path, pose) -> object:
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "base_model_path": str(tmp_path),
                "ckpt_path": "m.pth",
                "test_case": [{"ref_video_path": "v.mp4", "ref_image_path": "i.png"}],
                "pose": pose,
            }
        )
    )
    return path


def test_config_key_pose_person(tmp_path):
    assert load_config(write_pose_config(tmp_path, {"person": "largest"})).pose_person == "largest"
    assert load_config(write_pose_config(tmp_path, {"person": 1})).pose_person == "1"
    assert load_config(write_pose_config(tmp_path, {"retarget": "graft"})).pose_person is None
    with pytest.raises(ConfigError, match=r"pose\.person.*must be one of auto, largest, center"):
        load_config(write_pose_config(tmp_path, {"person": "tallest"}))


# --------------------------------------------------------------------------- through tiny DWPose

H, W = 96, 192


def two_people_frames(n: int = 8) -> np.ndarray:
    """The small figure (right of centre) alone in frames 0-1, then a big one on the left too;
    both walk right a little."""
    frames = []
    for f in range(n):
        figures = [(0.6 + 0.01 * f, 0.36)]
        if f >= 2:
            figures.insert(0, (0.22 + 0.01 * f, 0.72))
        frames.append(make_people_frame(H, W, f / n, figures))
    return np.stack(frames)


@pytest.fixture(scope="module")
def two_people(tmp_path_factory, dwpose):
    folder = tmp_path_factory.mktemp("two-people")
    video = write_video(folder / "two.mp4", two_people_frames(), 24.0)
    image = folder / "ref.png"
    Image.fromarray(make_figure_frame(96, 64, 0.5)).save(image)
    return video, image, extract_video_poses(video, 1, dwpose, progress=False)


def test_tiny_dwpose_sees_two_people(two_people):
    _, _, video = two_people
    assert [p.num_people for p in video.poses] == [1, 1, 2, 2, 2, 2, 2, 2]


@pytest.mark.parametrize(("choice", "big"), [("largest", True), ("center", False), ("0", False),
                                              ("1", True)])  # fmt: skip
def test_choice_on_a_generated_two_person_video_is_the_intended_person_in_every_frame(
    two_people, choice, big
):
    path, _, video = two_people
    chosen, report = select_person(video, choice, video_path=path)
    assert report.chosen == (1 if big else 0)
    assert report.several == [2, 3, 4, 5, 6, 7]
    shown = [f for f, p in enumerate(chosen.poses) if p.num_people]
    assert shown == (list(range(2, 8)) if big else list(range(8)))
    for f in shown:
        x0, y0, x1, y1 = person_boxes(chosen.poses[f], (H, W))[0]
        centre = (x0 + x1) / 2 / W
        expected = 0.22 + 0.01 * f if big else 0.6 + 0.01 * f
        assert abs(centre - expected) < 0.05, (f, centre)  # the same person in every frame
        assert ((y1 - y0) / H > 0.5) == big


def test_the_pose_frames_follow_the_chosen_person(two_people, dwpose):
    path, image_path, video = two_people
    image = fit_image(read_image(image_path), 64)
    ref = extract_image_pose(image, dwpose)
    h, w = image.shape[:2]
    frames = {}
    for choice in ("auto", "largest", "center"):
        chosen, _ = select_person(video, choice, video_path=path)
        frames[choice] = render_pose_frames(ref, chosen, h, w)
    # frame 0 is the reference pose under every choice
    assert np.array_equal(frames["auto"][0], frames["largest"][0])
    assert not np.array_equal(frames["largest"][3:], frames["center"][3:])
    # frames 1-2 (video frames 0-1) show only the small person: "largest" shows nobody there
    assert frames["largest"][1:3].max() == 0 and frames["center"][1:3].max() > 0


def test_select_person_logs_one_line(two_people, caplog):
    path, _, video = two_people
    with caplog.at_level(logging.INFO, logger="mimicache.pose.preprocess"):
        select_person(video, "largest", video_path=path)
        select_person(video, "auto", video_path=path)
    lines = [r for r in caplog.records if r.name == "mimicache.pose.preprocess"]
    assert [r.levelno for r in lines] == [logging.INFO, logging.WARNING]
    assert "person 1 drives the pose (person='largest')" in lines[0].getMessage()
    assert "everyone is drawn (person='auto')" in lines[1].getMessage()


def test_a_single_person_video_gives_identical_frames_under_every_choice(tmp_path, dwpose):
    frames = np.stack([make_figure_frame(72, 96, i / 6) for i in range(6)])
    frames[2] = make_figure_frame(72, 96, 0.0, people=0)  # one frame without anybody
    path = write_video(tmp_path / "one.mp4", frames, 24.0)
    image = fit_image(np.asarray(make_figure_frame(96, 64, 0.5)), 64)
    ref = extract_image_pose(image, dwpose)
    video = extract_video_poses(path, 1, dwpose, progress=False)
    h, w = image.shape[:2]
    published = render_pose_frames(ref, video, h, w)
    for choice in ("largest", "center", "0"):
        chosen, report = select_person(video, choice)
        assert report.no_person == [2] and report.chosen is None
        assert np.array_equal(render_pose_frames(ref, chosen, h, w), published), choice


def test_person_flag_of_run_bench_and_pose(capsys):
    from mimicache.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["run", "--person", "Largest"]).person == "largest"
    assert parser.parse_args(["bench", "--person", "1"]).person == "1"
    assert parser.parse_args(["run"]).person is None  # the config's pose.person, else auto
    args = parser.parse_args(["pose", "--ref_image", "i.png", "--video", "v.mp4", "--person", "0"])
    assert args.person == "0"
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--person", "tallest"])
    assert "must be one of auto, largest, center or a person number" in capsys.readouterr().err
