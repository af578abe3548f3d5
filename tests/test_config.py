from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from mimicache.config import (
    DEFAULT_DWPOSE_DET_PATH,
    InferenceConfig,
    TestCase,
    config_to_dict,
    load_config,
)
from mimicache.errors import ConfigError, MimicacheError
from mimicache.media import long_side

REPO = Path(__file__).resolve().parents[1]

CASE = """\
  - ref_video_path: videos/pose1.mp4
    ref_image_path: images/demo1.jpg
    num_frames: 72
    resolution: 576
    frames_overlap: 6
    num_inference_steps: 25
    noise_aug_strength: 0
    guidance_scale: 2.0
    sample_stride: 2
    fps: 15
    seed: 42
"""
HEAD = "base_model_path: stabilityai/stable-video-diffusion-img2vid-xt-1-1\nckpt_path: models/MimicMotion_1-1.pth\n"


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def case_yaml(**changes: object) -> str:
    """The published case with some values replaced (None deletes the key)."""
    lines = []
    for line in CASE.splitlines():
        key = line.strip().lstrip("- ").split(":")[0]
        if key in changes:
            value = changes.pop(key)
            if value is None:
                continue
            line = f"{line[: line.index(key)]}{key}: {value}"
        lines.append(line)
    if lines and not lines[0].lstrip().startswith("-"):
        lines[0] = "  - " + lines[0].lstrip()
    extra = [f"    {k}: {v}" for k, v in changes.items()]
    return HEAD + "test_case:\n" + "\n".join(lines + extra) + "\n"


def error_for(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    return message


# --------------------------------------------------------------------------- shipped configs


def test_shipped_test_yaml_has_published_defaults(monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_config("configs/test.yaml")
    assert config.base_model_path == "stabilityai/stable-video-diffusion-img2vid-xt-1-1"
    assert config.ckpt_path == REPO / "models/MimicMotion_1-1.pth"
    assert config.source_path == REPO / "configs/test.yaml"
    assert config.batch_video_folder is None
    assert config.dwpose_det_path == REPO / "models/DWPose/yolox_l.onnx"
    assert config.dwpose_pose_path == REPO / "models/DWPose/dw-ll_ucoco_384.onnx"
    assert config.test_case == [
        TestCase(
            ref_video_path=REPO / "assets/example_data/videos/pose1.mp4",
            ref_image_path=REPO / "assets/example_data/images/demo1.jpg",
            num_frames=72,
            resolution=576,
            frames_overlap=6,
            num_inference_steps=25,
            noise_aug_strength=0.0,
            guidance_scale=2.0,
            sample_stride=2,
            fps=15,
            seed=42,
        )
    ]
    case = config.test_case[0]
    assert isinstance(case.noise_aug_strength, float)
    assert isinstance(case.ref_video_path, Path)
    # the dataclass defaults are the published values too
    assert case == TestCase(case.ref_video_path, case.ref_image_path)


def test_shipped_turbo_yaml(monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_config("configs/turbo.yaml")
    assert config.test_case[0].num_inference_steps == 4
    assert config.batch_video_folder == REPO / "assets/bad_videos"
    assert config.test_case[0].resolution == 576


def test_published_config_without_our_keys_loads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(write(tmp_path, HEAD + "test_case:\n" + CASE))
    assert config.dwpose_det_path == tmp_path / DEFAULT_DWPOSE_DET_PATH
    assert config.batch_video_folder is None
    assert config.test_case[0].seed == 42


# --------------------------------------------------------------------------- paths


def test_relative_paths_resolve_against_working_directory_not_config_folder(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    path = write(
        tmp_path,
        case_yaml() + "batch:\n  video_folder: clips\ndwpose:\n  det_model_path: d/det.onnx\n",
        "conf/c.yaml",
    )
    monkeypatch.chdir(run_dir)
    config = load_config(path)
    assert config.ckpt_path == run_dir / "models/MimicMotion_1-1.pth"
    assert config.test_case[0].ref_video_path == run_dir / "videos/pose1.mp4"
    assert config.test_case[0].ref_image_path == run_dir / "images/demo1.jpg"
    assert config.batch_video_folder == run_dir / "clips"
    assert config.dwpose_det_path == run_dir / "d/det.onnx"
    assert config.dwpose_pose_path == run_dir / "models/DWPose/dw-ll_ucoco_384.onnx"
    # explicit base_dir wins over the working directory
    other = load_config(path, base_dir=tmp_path / "conf")
    assert other.ckpt_path == tmp_path / "conf/models/MimicMotion_1-1.pth"


def test_absolute_paths_kept(tmp_path):
    text = case_yaml(ref_image_path=str(tmp_path / "a.png"))
    config = load_config(write(tmp_path, text))
    assert config.test_case[0].ref_image_path == tmp_path / "a.png"


def test_base_model_local_folder_becomes_path(tmp_path, monkeypatch):
    (tmp_path / "svd").mkdir()
    monkeypatch.chdir(tmp_path)
    text = case_yaml().replace("stabilityai/stable-video-diffusion-img2vid-xt-1-1", "svd")
    config = load_config(write(tmp_path, text))
    assert config.base_model_path == tmp_path / "svd"
    assert config.base_model_is_local


def test_base_model_hub_id_stays_string(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(write(tmp_path, case_yaml()))
    assert config.base_model_path == "stabilityai/stable-video-diffusion-img2vid-xt-1-1"
    assert isinstance(config.base_model_path, str)
    assert not config.base_model_is_local


def test_base_model_missing_folder_that_is_not_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = case_yaml().replace("stabilityai/stable-video-diffusion-img2vid-xt-1-1", "./w/svd")
    message = error_for(tmp_path, text)
    assert "base_model_path" in message
    assert "does not exist" in message
    assert "not a hub id" in message


def test_base_model_that_is_a_file(tmp_path, monkeypatch):
    (tmp_path / "model.bin").write_text("x")
    monkeypatch.chdir(tmp_path)
    text = case_yaml().replace("stabilityai/stable-video-diffusion-img2vid-xt-1-1", "model.bin")
    message = error_for(tmp_path, text)
    assert "base_model_path model.bin is a file" in message


# --------------------------------------------------------------------------- file errors


def test_missing_file_says_which_setting(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    message = str(info.value)
    assert str(tmp_path / "nope.yaml") in message
    assert "not found" in message
    assert "inference_config='configs/test.yaml'" in message  # the CLI shows its flag
    assert isinstance(info.value, MimicacheError)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ConfigError, match="is not a file"):
        load_config(tmp_path)


def test_yaml_syntax_error_names_line(tmp_path):
    message = error_for(tmp_path, "base_model_path: x\nckpt_path: [a, b\ntest_case: []\n")
    assert "YAML syntax error" in message
    assert "line 3" in message


def test_duplicate_key_is_an_error(tmp_path):
    message = error_for(tmp_path, case_yaml() + "ckpt_path: other.pth\n")
    assert "duplicate key ckpt_path" in message


def test_top_level_not_a_mapping(tmp_path):
    message = error_for(tmp_path, "- a\n- b\n")
    assert "top level must be a mapping" in message


def test_empty_file_reports_missing_keys(tmp_path):
    message = error_for(tmp_path, "")
    assert "3 problems" in message
    for key in ("base_model_path", "ckpt_path", "test_case"):
        assert f"  {key} is missing (required)" in message


def test_interpolation_resolves(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = (
        HEAD
        + "test_case:\n"
        + CASE.replace("ref_image_path: images/demo1.jpg", "ref_image_path: ${ckpt_path}.jpg")
    )
    config = load_config(write(tmp_path, text))
    assert config.test_case[0].ref_image_path == tmp_path / "models/MimicMotion_1-1.pth.jpg"


def test_bad_interpolation_names_key(tmp_path):
    text = HEAD + "test_case:\n" + CASE.replace("images/demo1.jpg", "${nowhere}")
    message = error_for(tmp_path, text)
    assert "test_case[0].ref_image_path cannot be resolved: Interpolation key 'nowhere'" in message


def test_missing_mandatory_value(tmp_path):
    message = error_for(tmp_path, case_yaml().replace("models/MimicMotion_1-1.pth", "???"))
    assert "ckpt_path cannot be resolved: Missing mandatory value" in message


def test_scalar_file_is_not_a_config(tmp_path):
    message = error_for(tmp_path, "hello\n")
    assert "top level must be a mapping" in message


# --------------------------------------------------------------------------- value errors


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"num_frames": -3},
            "test_case[0].num_frames must be an integer >= 2",
        ),
        (
            {"num_frames": "seventy"},
            "test_case[0].num_frames must be a positive integer, got 'seventy'",
        ),
        (
            {"num_frames": "true"},
            "test_case[0].num_frames must be a positive integer, got true (a boolean)",
        ),
        ({"num_frames": 72.0}, "test_case[0].num_frames must be a positive integer, got 72.0"),
        (
            {"num_inference_steps": 0},
            "test_case[0].num_inference_steps must be a positive integer, got 0",
        ),
        ({"sample_stride": -1}, "test_case[0].sample_stride must be a positive integer, got -1"),
        ({"fps": 0}, "test_case[0].fps must be a positive integer, got 0"),
        ({"resolution": 0}, "test_case[0].resolution must be a positive integer, got 0"),
        (
            {"resolution": 570},
            "test_case[0].resolution must be a multiple of 8 and at least 40, got 570",
        ),
        (
            {"resolution": 32},
            "test_case[0].resolution must be a multiple of 8 and at least 40, got 32",
        ),
        (
            {"frames_overlap": -1},
            "test_case[0].frames_overlap must be a non-negative integer, got -1",
        ),
        (
            {"frames_overlap": 72},
            "test_case[0].frames_overlap must be smaller than num_frames (the tile size, 72), got 72",
        ),
        ({"noise_aug_strength": -0.1}, "test_case[0].noise_aug_strength must be >= 0, got -0.1"),
        ({"noise_aug_strength": ".nan"}, "test_case[0].noise_aug_strength must be a finite number"),
        ({"guidance_scale": "high"}, "test_case[0].guidance_scale must be a number, got 'high'"),
        ({"guidance_scale": "false"}, "test_case[0].guidance_scale must be a number, got false"),
        ({"seed": -1}, "test_case[0].seed must be an integer between 0 and 2**64-1, got -1"),
        ({"seed": "null"}, "test_case[0].seed must be a non-negative integer, got nothing (null)"),
        ({"ref_video_path": 12}, "test_case[0].ref_video_path must be a file path, got 12"),
        ({"ref_image_path": None}, "test_case[0].ref_image_path is missing (required)"),
    ],
)
def test_value_errors_name_file_and_key(tmp_path, changes, expected):
    message = error_for(tmp_path, case_yaml(**changes))
    assert f"{tmp_path / 'cfg.yaml'}: {expected}" in message


def test_error_reports_line_number(tmp_path):
    message = error_for(tmp_path, case_yaml(fps=0))
    assert message.endswith("(line 13)")  # fps is on line 13 of the generated file


def test_ints_accepted_for_floats(tmp_path):
    config = load_config(write(tmp_path, case_yaml(guidance_scale=3, noise_aug_strength=1)))
    assert config.test_case[0].guidance_scale == 3.0
    assert isinstance(config.test_case[0].guidance_scale, float)
    assert config.test_case[0].noise_aug_strength == 1.0


def test_small_valid_values(tmp_path):
    config = load_config(
        write(tmp_path, case_yaml(num_frames=2, frames_overlap=1, resolution=64, seed=0))
    )
    case = config.test_case[0]
    assert (case.num_frames, case.frames_overlap, case.resolution, case.seed) == (2, 1, 64, 0)
    assert long_side(64) == 64
    assert long_side(576) == 1024


def test_several_problems_reported_together(tmp_path):
    message = error_for(tmp_path, case_yaml(fps=0, seed=-5, num_frame=3))
    assert "3 problems:" in message
    assert "test_case[0].fps" in message
    assert "test_case[0].seed" in message
    assert "test_case[0].num_frame " in message


def test_second_case_index_named(tmp_path):
    text = case_yaml() + CASE.replace("fps: 15", "fps: -15")
    message = error_for(tmp_path, text)
    assert "test_case[1].fps must be a positive integer, got -15" in message


# --------------------------------------------------------------------------- structure errors


def test_unknown_case_key_did_you_mean(tmp_path):
    message = error_for(tmp_path, case_yaml(num_frames=None, num_frame=72))
    assert "test_case[0].num_frame is not a known key; did you mean 'num_frames'?" in message


def test_unknown_top_level_key_did_you_mean(tmp_path):
    message = error_for(tmp_path, case_yaml() + "ckpt_pth: x\n")
    assert "ckpt_pth is not a known key; did you mean 'ckpt_path'?" in message


def test_unknown_key_without_close_match_lists_known_keys(tmp_path):
    message = error_for(tmp_path, case_yaml() + "zzz: 1\n")
    assert "zzz is not a known key; known keys: base_model_path, ckpt_path" in message


def test_case_key_at_top_level_is_explained(tmp_path):
    message = error_for(tmp_path, case_yaml() + "num_frames: 16\n")
    assert "num_frames is a test case key; move it inside a test_case entry" in message


def test_unknown_key_in_our_blocks(tmp_path):
    message = error_for(tmp_path, case_yaml() + "dwpose:\n  det_path: x.onnx\n")
    assert "dwpose.det_path is not a known key; did you mean 'det_model_path'?" in message
    message = error_for(tmp_path, case_yaml() + "batch:\n  video_folders: v\n")
    assert "batch.video_folders is not a known key; did you mean 'video_folder'?" in message


def test_block_types(tmp_path):
    message = error_for(tmp_path, case_yaml() + "batch: clips\n")
    assert "batch must be a mapping with video_folder, got 'clips'" in message
    message = error_for(tmp_path, case_yaml() + "dwpose:\n  pose_model_path: 3\n")
    assert "dwpose.pose_model_path must be an ONNX file path, got 3" in message


def test_batch_video_folder_null_is_none(tmp_path):
    config = load_config(write(tmp_path, case_yaml() + "batch:\n  video_folder: null\n"))
    assert config.batch_video_folder is None


def test_missing_required_keys(tmp_path):
    message = error_for(tmp_path, "test_case:\n" + CASE)
    assert "2 problems" in message
    assert "base_model_path is missing (required)" in message
    assert "ckpt_path is missing (required)" in message


def test_missing_ref_video(tmp_path):
    message = error_for(tmp_path, case_yaml(ref_video_path=None))
    assert "test_case[0].ref_video_path is missing (required)" in message


def test_empty_test_case_list(tmp_path):
    message = error_for(tmp_path, HEAD + "test_case: []\n")
    assert "test_case is empty; give at least one case" in message


def test_test_case_as_mapping_gets_list_hint(tmp_path):
    text = HEAD + "test_case:\n" + CASE.replace("  - ", "    ")
    message = error_for(tmp_path, text)
    assert "test_case must be a list of cases; start each case with '- '" in message


def test_test_case_item_not_mapping(tmp_path):
    message = error_for(tmp_path, HEAD + "test_case:\n  - just a string\n")
    assert "test_case[0] must be a mapping of case keys, got 'just a string'" in message


def test_wrong_type_for_top_level_paths(tmp_path):
    message = error_for(tmp_path, case_yaml().replace("models/MimicMotion_1-1.pth", "[a, b]"))
    assert "ckpt_path must be a file path, got a list" in message


# --------------------------------------------------------------------------- overrides, dicts


def test_replace_overrides_and_validates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    case = TestCase(Path("/v.mp4"), Path("/i.jpg"))
    new = case.replace(num_inference_steps=4, seed=None, ref_video_path="clip.mov")
    assert new.num_inference_steps == 4
    assert new.seed == 42  # None means "flag not given"
    assert new.ref_video_path == tmp_path / "clip.mov"
    assert case.num_inference_steps == 25  # original untouched
    with pytest.raises(ConfigError, match="num_inference_steps must be a positive integer, got 0"):
        case.replace(num_inference_steps=0)
    with pytest.raises(ConfigError, match="did you mean 'num_inference_steps'"):
        case.replace(num_inference_step=4)
    with pytest.raises(ConfigError, match="frames_overlap must be smaller than num_frames"):
        case.replace(num_frames=6)


def test_testcase_constructor_coerces_and_validates():
    case = TestCase("a.mp4", "b.jpg", guidance_scale=3)
    assert case.ref_video_path == Path("a.mp4")
    assert case.guidance_scale == 3.0 and isinstance(case.guidance_scale, float)
    assert case.tile_size == 72
    numpy_case = TestCase("a.mp4", "b.jpg", seed=np.int64(7), guidance_scale=np.float32(1.5))
    assert type(numpy_case.seed) is int and numpy_case.seed == 7
    assert type(numpy_case.guidance_scale) is float and numpy_case.guidance_scale == 1.5
    with pytest.raises(
        ConfigError, match=r"seed must be a non-negative integer, got true \(a boolean\)"
    ):
        TestCase("a.mp4", "b.jpg", seed=np.bool_(True))
    with pytest.raises(ConfigError, match="resolution must be a multiple of 8"):
        TestCase("a.mp4", "b.jpg", resolution=100)


def test_config_to_dict_round_trips(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(write(tmp_path, case_yaml(seed=7) + "batch:\n  video_folder: clips\n"))
    data = config_to_dict(config)
    assert data["test_case"][0]["seed"] == 7
    assert data["test_case"][0]["ref_video_path"] == str(tmp_path / "videos/pose1.mp4")
    assert data["batch"] == {"video_folder": str(tmp_path / "clips")}
    assert data["dwpose"]["det_model_path"] == str(tmp_path / DEFAULT_DWPOSE_DET_PATH)
    again = load_config(write(tmp_path, yaml.safe_dump(data), "again.yaml"))
    assert dataclasses.replace(again, source_path=None) == dataclasses.replace(
        config, source_path=None
    )


def test_inference_config_defaults():
    config = InferenceConfig("hub/id", Path("c.pth"), [TestCase("a.mp4", "b.jpg")])
    assert config.dwpose_det_path == Path("models/DWPose/yolox_l.onnx")
    assert config.dwpose_pose_path == Path("models/DWPose/dw-ll_ucoco_384.onnx")
    assert config.batch_video_folder is None and config.source_path is None
    assert config_to_dict(config)["batch"] == {"video_folder": None}


def test_pose_retarget_key(tmp_path):
    assert load_config(write(tmp_path, case_yaml())).pose_retarget is None  # command default
    config = load_config(write(tmp_path, case_yaml() + "pose:\n  retarget: graft\n"))
    assert config.pose_retarget == "graft"
    data = config_to_dict(config)
    assert data["pose"] == {"retarget": "graft"}
    again = load_config(write(tmp_path, yaml.safe_dump(data), "again.yaml"))
    assert again.pose_retarget == "graft"
    assert "pose" not in config_to_dict(load_config(write(tmp_path, case_yaml())))


def test_pose_retarget_errors_name_file_key_line_and_choices(tmp_path):
    text = case_yaml() + "pose:\n  retarget: graf\n"
    message = error_for(tmp_path, text)
    line = text.splitlines().index("  retarget: graf") + 1
    assert (
        "pose.retarget must be one of: published, graft; got 'graf' (did you mean 'graft'?) "
        f"(line {line})"
    ) in message
    message = error_for(tmp_path, case_yaml() + "pose:\n  retarget: 3\n")
    assert "pose.retarget must be one of: published, graft; got 3" in message
    message = error_for(tmp_path, case_yaml() + "pose:\n  retargte: graft\n")
    assert "pose.retargte is not a known key; did you mean 'retarget'?" in message
    message = error_for(tmp_path, case_yaml() + "pose: graft\n")
    assert "pose must be a mapping with retarget, got 'graft'" in message
    message = error_for(tmp_path, case_yaml() + "poses:\n  retarget: graft\n")
    assert "poses is not a known key; did you mean 'pose'?" in message
