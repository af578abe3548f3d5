"""Pose previews: the frames shown are the pipeline's pose frames, the cache is shared with
generation, the contact sheet, and `mimicache pose` end to end."""

from __future__ import annotations

import html.parser
import json
import logging
import subprocess
import sys

import av
import numpy as np
import pytest
import torch
from PIL import Image

from mimicache.cache.store import FeatureStore
from mimicache.cli import main
from mimicache.config import load_config
from mimicache.engine import JobRecord, MimicMotion
from mimicache.engine.preview import (
    HEADER_HEIGHT,
    LABEL_WIDTH,
    MAX_SHEET_ROWS,
    PANEL_GAP,
    SHEET_ROW_HEIGHT,
    contact_sheet,
    draw_over,
    letterbox,
    pose_preview,
    sheet_step,
)
from mimicache.errors import InputError
from mimicache.media import write_video
from mimicache.pose import DWPose, preprocess
from mimicache.testing.tiny_dwpose import make_people_frame
from tests.engine_fixtures import (
    RESOLUTION,
    figure_config,
    figure_video,
    reference_image,
    write_config,
)

POSE_STAGES = {"image_keypoints", "video_keypoints", "pose_frames"}


@pytest.fixture(scope="module")
def workspace(tiny_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("preview")
    config = figure_config(root, tiny_bundle)
    case = config.test_case[0]
    return {
        "root": root,
        "image": case.ref_image_path,
        "video": case.ref_video_path,
        "config": config,
    }


def _hits(events):
    return {e.stage for e in events if e.hit}


def test_preview_frames_are_the_pipelines_pose_frames_and_fill_its_cache(workspace, tmp_path):
    config = workspace["config"]
    case = config.test_case[0]
    store = tmp_path / "cache"
    previewer = MimicMotion.for_pose(config, device="cpu", cache=FeatureStore(store))
    assert previewer.pipeline is None  # only DWPose was loaded
    preview = pose_preview(previewer, case, progress=False)
    assert {e.stage for e in preview.cache_events} == POSE_STAGES
    assert _hits(preview.cache_events) == set()

    # the published preprocess with the same DWPose files gives the same frames
    dwpose = DWPose(config.dwpose_det_path, config.dwpose_pose_path)
    pose_pixels, _ = preprocess(
        case.ref_video_path, case.ref_image_path, case.resolution, case.sample_stride, dwpose,
        progress=False,
    )  # fmt: skip
    published = ((pose_pixels + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert preview.pose_frames.dtype == np.uint8
    assert preview.pose_frames.shape == (7, RESOLUTION, RESOLUTION, 3)  # reference + 6 frames
    assert np.array_equal(preview.pose_frames, published)

    # the generating engine on the same cache: the drawn frames are a hit (no keypoints are
    # needed then), its frames the same
    engine = MimicMotion.from_config(config, device="cpu", cache=FeatureStore(store))
    record = JobRecord()
    pose, _ = engine.prepare_pose(case, record, progress=False)
    assert _hits(record.events) == {"pose_frames"} and len(record.events) == 1
    assert record.people == preview.people
    assert np.array_equal(pose.permute(0, 2, 3, 1).numpy(), preview.pose_frames)
    result = engine.generate(case, progress=False)
    assert _hits(result.cache_events) >= {"pose_frames"}
    assert result.frames.shape[0] == preview.pose_frames.shape[0] - 1

    # a second preview: the drawn frames a hit (all it needs), the same frames
    again = pose_preview(previewer, case, progress=False)
    assert _hits(again.cache_events) == {"pose_frames"}
    assert np.array_equal(again.pose_frames, preview.pose_frames)
    assert np.array_equal(again.overlay, preview.overlay)


def test_preview_panels_and_driving_frames(workspace):
    config = workspace["config"]
    case = config.test_case[0]
    preview = pose_preview(MimicMotion.for_pose(config, device="cpu"), case, progress=False)
    n, h, w, _ = preview.pose_frames.shape
    assert preview.driving.shape == preview.overlay.shape == (n, h, w, 3)
    # frame 0 shows the fitted reference image; the others the sampled video frames, letterboxed
    assert preview.driving[0].mean() > 10
    for i in range(1, n):
        assert preview.driving[i].any()
    panels = preview.panels()
    assert panels.shape == (n, h, 3 * w + 2 * PANEL_GAP, 3)
    assert np.array_equal(panels[:, :, -w:], preview.pose_frames)
    assert np.array_equal(panels[:, :, :w], preview.driving)
    assert preview.people is not None and preview.people.frames == n - 1


def test_a_pose_only_engine_does_not_generate(workspace):
    engine = MimicMotion.for_pose(workspace["config"], device="cpu")
    with pytest.raises(RuntimeError, match="for_pose"):
        engine.generate(workspace["config"].test_case[0], progress=False)


def test_letterbox_keeps_the_aspect_and_centres():
    frame = np.full((10, 40, 3), 200, np.uint8)
    out = letterbox(frame, 40, 40)
    assert out.shape == (40, 40, 3)
    rows = np.nonzero(out[:, 20, 0])[0]
    assert (rows.min(), rows.max()) == (15, 24)  # 10 rows of image, 15 black above and below
    assert out[:, :, 0].max() == 200


def test_draw_over_shows_the_skeleton_and_dims_the_rest():
    image = np.full((4, 4, 3), 100, np.uint8)
    pose = np.zeros((4, 4, 3), np.uint8)
    pose[1, 1] = (255, 0, 0)
    pose[2, 2] = (0, 51, 0)  # a faint limb: 20 % toward its colour
    out = draw_over(image, pose)
    assert tuple(out[1, 1]) == (255, 0, 0)
    assert tuple(out[0, 0]) == (45, 45, 45)  # 100 * 0.45
    assert tuple(out[2, 2]) == (36, 46, 36)  # 45 * 0.8 = 36; 36 + 51 * 0.2 = 46.2


@pytest.mark.parametrize(("frames", "step"), [(1, 1), (12, 1), (13, 2), (73, 7), (241, 21)])
def test_sheet_step_keeps_at_most_twelve_rows(frames, step):
    assert sheet_step(frames) == step
    assert len(range(0, frames, step)) <= MAX_SHEET_ROWS


def test_contact_sheet_has_one_row_per_shown_frame(workspace):
    config = workspace["config"]
    preview = pose_preview(MimicMotion.for_pose(config, device="cpu"), config.test_case[0],
                           progress=False)  # fmt: skip
    sheet = contact_sheet(preview, max_rows=3)  # 7 frames -> every 3rd: 0, 3, 6
    assert sheet.height == HEADER_HEIGHT + 3 * SHEET_ROW_HEIGHT  # and the column headers
    assert sheet.mode == "RGB"
    # the headers' row holds text (light pixels) over each panel, the rows below the panels
    header = np.asarray(sheet)[:HEADER_HEIGHT]
    width = (sheet.width - LABEL_WIDTH) // 3
    for column in range(3):
        x = LABEL_WIDTH + column * width
        assert header[:, x : x + width].max() > 150, column


def test_preview_chooses_the_person(tmp_path, tiny_bundle, workspace, caplog):
    frames = []
    for f in range(6):
        frames.append(make_people_frame(96, 192, f / 6, [(0.22 + 0.01 * f, 0.72), (0.6, 0.36)]))
    video = write_video(tmp_path / "two.mp4", np.stack(frames), 24.0)
    config = load_config(write_config(tmp_path / "c.yaml", tiny_bundle, workspace["image"], video))
    case = config.test_case[0]
    store = FeatureStore(tmp_path / "cache")

    def preview(person):
        engine = MimicMotion.for_pose(config, device="cpu", cache=store, person=person)
        return pose_preview(engine, case, progress=False)

    # everyone in every frame: the published alignment has no single-person frame to fit
    with pytest.raises(InputError, match="Pick one person with person='largest', center or N"):
        preview("auto")
    largest, center = preview("largest"), preview("center")
    assert largest.people.chosen == 0 and largest.people.chosen_frames == 6
    assert largest.people.several == list(range(6))
    assert center.people.chosen == 1
    # the keypoints are shared; the drawn frames are a separate entry per choice
    assert _hits(largest.cache_events) == {"image_keypoints", "video_keypoints"}
    assert _hits(center.cache_events) == {"image_keypoints", "video_keypoints"}
    assert not np.array_equal(center.pose_frames, largest.pose_frames)
    caplog.set_level(logging.INFO, logger="mimicache.pose.preprocess")
    caplog.clear()
    again = preview("largest")
    assert _hits(again.cache_events) == {"pose_frames"}  # all it needs
    assert again.people == largest.people  # who was seen, kept with the drawn frames
    assert [r.getMessage() for r in caplog.records if r.name == "mimicache.pose.preprocess"] == [
        f"driving video {case.ref_video_path}: {largest.people.summary()}"
    ]  # the line the steps log, said again


class _Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_pose_command_writes_preview_sheet_log_and_report(workspace, tmp_path, capsys):
    output = tmp_path / "out" / "preview.mp4"
    argv = [
        "pose", "--ref_image", str(workspace["image"]), "--video", str(workspace["video"]),
        "--resolution", str(RESOLUTION), "--sample_stride", "1", "--output", str(output),
        "--inference_config", str(workspace["root"] / "c.yaml"),
        "--feature_cache_dir", str(tmp_path / "cache"), "--quiet", "--device", "cpu",
    ]  # fmt: skip
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "pose stages from the cache: 0 of 3" in first
    with av.open(str(output)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 7
    assert decoded[0].shape == (RESOLUTION, 3 * RESOLUTION + 2 * PANEL_GAP, 3)
    sheet = Image.open(output.with_suffix(".png"))
    assert sheet.height == HEADER_HEIGHT + 7 * SHEET_ROW_HEIGHT
    assert output.with_suffix(".log").stat().st_size > 0
    report = (tmp_path / "out" / "preview.report.html").read_text()
    parsed = _Tags()
    parsed.feed(report)
    text = " ".join(parsed.text)
    assert "walk" in text and "image_keypoints" in text and "ok" in text
    assert parsed.tags.count("img") == 2  # the thumbnail strip and the contact sheet
    before = {p.name: p.read_bytes() for p in output.parent.iterdir()}
    assert main(argv) == 0  # the same --output again: a new name, the first preview kept
    assert "pose stages from the cache: 1 of 1 needed" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in output.parent.iterdir() if p.name in before} == before
    again = {p.name for p in output.parent.iterdir()} - set(before)
    assert again == {"preview_1.mp4", "preview_1.png", "preview_1.log", "preview_1.report.html"}


def test_pose_checks_its_dwpose_files_before_loading_anything(workspace, tmp_path):
    """Named by the flag that gives each, before any model library is imported or any
    output, log or report is made."""
    probe = (
        "import sys; from mimicache.cli.main import main; "
        f"code = main(['pose', '--ref_image', {str(workspace['image'])!r}, '--video', "
        f"{str(workspace['video'])!r}, '--dwpose_pose_path', 'nowhere/pose.onnx', "
        f"'--inference_config', {str(workspace['root'] / 'c.yaml')!r}, "
        f"'--output', {str(tmp_path / 'out' / 'p.mp4')!r}]); "
        "print(code, sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'onnxruntime', 'cv2', 'av', 'diffusers'}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.split("\n")[0] == "2 []", done.stderr
    assert "DWPose pose model not found: nowhere/pose.onnx" in done.stderr
    assert "give its path with --dwpose_pose_path" in done.stderr
    assert not (tmp_path / "out").exists()


def test_pose_command_without_a_person_fails_with_a_report(workspace, tmp_path, capsys):
    dark = tmp_path / "dark.png"
    Image.new("RGB", (64, 96), (10, 10, 10)).save(dark)
    output = tmp_path / "p.mp4"
    code = main(
        [
            "pose", "--ref_image", str(dark), "--video", str(workspace["video"]),
            "--resolution", str(RESOLUTION), "--output", str(output),
            "--inference_config", str(workspace["root"] / "c.yaml"),
            "--disable_feature_cache", "--quiet", "--device", "cpu",
        ]
    )  # fmt: skip
    assert code == 1
    assert not output.exists()
    report = (tmp_path / "p.report.html").read_text()
    assert "failed" in report and "no person found in the reference image" in report


def test_pose_takes_the_config_and_a_run_on_it_hits_every_pose_stage(tiny_bundle, tmp_path, capsys):
    """Everything from the config (image, video, resolution 48, stride 2): the run after it
    finds the pose entries the preview wrote (the drawn frames, which need no keypoints)."""
    image = reference_image(tmp_path / "ref.png")
    video = figure_video(tmp_path / "walk.mp4", frames=6)
    config = write_config(tmp_path / "c.yaml", tiny_bundle, image, video, resolution=48,
                          sample_stride=2)  # fmt: skip
    cache = str(tmp_path / "cache")
    common = ["--inference_config", str(config), "--feature_cache_dir", cache, "--quiet"]
    preview = tmp_path / "preview.mp4"
    assert main(["pose", *common, "--output", str(preview), "--device", "cpu"]) == 0
    assert "pose stages from the cache: 0 of 3 needed" in capsys.readouterr().out
    with av.open(str(preview)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 1 + 3  # the reference, then frames 0, 2, 4 of 6
    assert decoded[0].shape[:2] == (64, 3 * 48 + 2 * PANEL_GAP)  # 48 wide, not 576

    out = tmp_path / "out"
    assert main(["run", *common, "--output_dir", str(out), "--device", "cpu"]) == 0
    sidecar = json.loads(next(out.glob("walk_*.json")).read_text())
    events = {e["stage"]: e["hit"] for e in sidecar["cache_events"]}
    assert events["pose_frames"] is True and not (set(POSE_STAGES) - {"pose_frames"}) & set(events)
    assert events["clip_embeddings"] is False  # the preview loads no CLIP: the run computes it


def test_pose_flags_override_the_config(workspace, tmp_path, capsys):
    output = tmp_path / "p.mp4"
    argv = [
        "pose", "--inference_config", str(workspace["root"] / "c.yaml"), "--sample_stride", "3",
        "--output", str(output), "--disable_feature_cache", "--quiet", "--device", "cpu",
    ]  # fmt: skip
    assert main(argv) == 0
    with av.open(str(output)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 1 + 2  # stride 3 of 6 frames, not the config's 1
    assert frames[0].shape[1] == 3 * RESOLUTION + 2 * PANEL_GAP  # the config's, not 576


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ref_image", "x.png"], "pass --ref_image and --video, or --inference_config"),
        (["--case", "1"], "--case 1 needs --inference_config"),
        (["--case", "2", "--inference_config", "C"], "has 1 test case(s); pass --case 0 to 0"),
    ],
)
def test_pose_without_its_inputs_says_which_flags(workspace, tmp_path, capsys, argv, message):
    argv = [a.replace("C", str(workspace["root"] / "c.yaml")) if a == "C" else a for a in argv]
    assert main(["pose", *argv, "--output", str(tmp_path / "p.mp4")]) == 2
    err = capsys.readouterr().err
    assert message in err and not (tmp_path / "p.mp4").exists()
