from __future__ import annotations

import math

import numpy as np
import pytest

from mimicache.errors import ModelLoadError
from mimicache.pose import DWPose
from mimicache.pose.dwpose import (
    crop_for_pose,
    decode_simcc,
    decode_yolox,
    letterbox,
    nms,
    person_boxes,
    to_frame_coords,
    to_openpose,
    to_pose_frame,
)
from mimicache.testing.tiny_dwpose import make_figure_frame, write_tiny_dwpose
from tests import pose_fixtures

# shared fixtures
dwpose = pose_fixtures.dwpose
tiny_models = pose_fixtures.tiny_models


# ----------------------------------------------------------------------------- detector
def test_letterbox_top_left_pad_114():
    img = np.full((100, 200, 3), 50, np.uint8)
    blob, ratio = letterbox(img)
    assert ratio == pytest.approx(3.2) and blob.shape == (3, 640, 640) and blob.dtype == np.float32
    assert (blob[:, :320, :] == 50).all()  # 100*3.2 rows of image, full width
    assert (blob[:, 320:, :] == 114).all()
    img2 = np.zeros((64, 32, 3), np.uint8)
    img2[:, :, 0] = 255  # R stays channel 0: raw RGB, no BGR swap, no normalisation
    blob2, r2 = letterbox(img2)
    assert r2 == 10.0
    assert (blob2[0, :, :320] == 255).all() and (blob2[1, :, :320] == 0).all()
    assert (blob2[:, :, 320:] == 114).all()


def test_decode_yolox_grids():
    raw = np.zeros((1, 8400, 85), np.float32)
    raw[0, 0, :4] = [0.5, 0.25, 0.0, math.log(2)]  # stride 8, cell (0, 0)
    raw[0, 6400 + 40 + 3, :4] = [0, 0, 0, 0]  # stride 16, cell gx=3, gy=1
    raw[0, 8000 + 2 * 20 + 5, :4] = [1, 0, math.log(3), 0]  # stride 32, gx=5, gy=2
    out = decode_yolox(raw)[0]
    np.testing.assert_allclose(out[0, :4], [4, 2, 8, 16], rtol=1e-6)
    np.testing.assert_allclose(out[6443, :4], [48, 16, 16, 16])
    np.testing.assert_allclose(out[8045, :4], [192, 64, 96, 32], rtol=1e-6)
    assert out.dtype == np.float32


def test_nms_hand_computed():
    boxes = np.array([[0, 0, 9, 9], [1, 1, 10, 10], [20, 20, 29, 29], [5, 0, 14, 9]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    # IoU(0,1) = 81 / 119 = 0.68 > 0.45 → dropped; IoU(0,3) = 50 / 150 = 0.33 → kept
    assert [int(i) for i in nms(boxes, scores, 0.45)] == [0, 2, 3]
    assert [int(i) for i in nms(boxes, scores, 0.3)] == [0, 2]


def _raw_row(raw, cell, cx, cy, w, h, obj, cls):
    """Write a stride-32 cell (gx=cell, gy=0) row that decodes to the given box."""
    raw[0, 8000 + cell, :5] = [cx / 32 - cell, cy / 32, math.log(w / 32), math.log(h / 32), obj]
    raw[0, 8000 + cell, 5:] = cls


def test_person_boxes_threshold_nms_class_and_ratio():
    raw = np.zeros((1, 8400, 85), np.float32)
    person = np.zeros(80)
    person[0] = 0.9
    other = np.zeros(80)
    other[1] = 0.9
    _raw_row(raw, 0, 100, 200, 64, 128, 0.9, person)  # score 0.81
    _raw_row(raw, 1, 102, 200, 64, 128, 0.8, person)  # duplicate, suppressed
    _raw_row(raw, 2, 400, 200, 64, 128, 0.25, person)  # 0.225: passes NMS (>0.1), fails 0.3
    _raw_row(raw, 3, 300, 200, 64, 128, 0.5, person)  # 0.45: kept, second
    _raw_row(raw, 4, 500, 200, 64, 128, 0.9, other)  # class 1: dropped
    boxes = person_boxes(raw, 2.0)
    assert boxes.dtype == np.float64 and boxes.shape == (2, 4)
    np.testing.assert_allclose(boxes, [[34, 68, 66, 132], [134, 68, 166, 132]], atol=1e-3)
    assert person_boxes(np.zeros((1, 8400, 85), np.float32), 1.0).shape == (0, 4)


# ----------------------------------------------------------------------------- pose model
def test_crop_for_pose_affine_and_normalisation():
    img = np.zeros((300, 200, 3), np.uint8)
    img[120, 60] = (255, 128, 0)  # the box centre
    inp, center, scale = crop_for_pose(img, [10.0, 20.0, 110.0, 220.0], (288, 384))
    np.testing.assert_allclose(center, [60, 120])
    # scale (100, 200) * 1.25 = (125, 250); w/h fixed to 0.75 → (187.5, 250)
    np.testing.assert_allclose(scale, [187.5, 250])
    assert inp.shape == (3, 384, 288) and inp.dtype == np.float32
    # background: (0 - mean) / std; the centre pixel lands at (144, 192) of the crop
    np.testing.assert_allclose(
        inp[:, 0, 0], -np.array([123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375], rtol=1e-6
    )
    peak = np.unravel_index(np.argmax(inp[0]), inp[0].shape)
    assert abs(peak[0] - 192) <= 1 and abs(peak[1] - 144) <= 1
    # crop location (144, 192) maps back to the centre
    back = to_frame_coords(np.array([[[144.0, 192.0]]], np.float32), (288, 384), center, scale)
    np.testing.assert_allclose(back, [[60, 120]])


def test_decode_simcc_argmax_split_min_score_and_minus_one():
    sx = np.zeros((1, 3, 576), np.float32)
    sy = np.zeros((1, 3, 768), np.float32)
    sx[0, 0, 100], sy[0, 0, 300] = 0.8, 0.6
    sx[0, 1, 7], sy[0, 1, 9] = 0.5, 0.9
    sx[0, 2] = -1.0
    sy[0, 2, 5] = 2.0  # x max is -1 → score -1 <= 0 → location -1
    locs, vals = decode_simcc(sx, sy)
    np.testing.assert_array_equal(locs[0], [[50, 150], [3.5, 4.5], [-0.5, -0.5]])
    np.testing.assert_allclose(vals[0], [0.6, 0.5, -1.0])


def test_neck_insertion_and_openpose_reorder():
    kp = np.stack([np.arange(133), 1000 + np.arange(133)], -1)[None].astype(np.float64)
    sc = np.full((1, 133), 0.5, np.float32)
    sc[0, 5], sc[0, 6] = 0.9, 0.8
    k2, s2 = to_openpose(kp, sc)
    assert k2.shape == (1, 134, 2) and s2.shape == (1, 134)
    src = [0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]
    for pos, m in enumerate(src):
        want = [5.5, 1005.5] if m is None else [m, 1000 + m]
        np.testing.assert_array_equal(k2[0, pos], want, err_msg=f"openpose {pos}")
    assert s2[0, 1] == 1.0  # both shoulders > 0.3
    np.testing.assert_array_equal(k2[0, 18:], kp[0, 17:])  # feet/face/hands shifted by one
    sc[0, 6] = 0.29  # not > 0.3 → neck score 0
    assert to_openpose(kp, sc)[1][0, 1] == 0.0


def test_pose_frame_layout_two_people():
    kp = np.random.default_rng(0).uniform(0, 100, (2, 134, 2))
    sc = np.full((2, 134), 0.9)
    sc[1, 3] = 0.2
    pf = to_pose_frame(kp, sc, height=50, width=200)
    assert pf.candidate.shape == (36, 2) and pf.num_people == 2
    np.testing.assert_allclose(pf.candidate[18 + 4], kp[1, 4] / [200, 50])
    assert pf.subset[0, 17] == 17 and pf.subset[1, 0] == 18 and pf.subset[1, 3] == -1
    np.testing.assert_allclose(pf.faces[1], kp[1, 24:92] / [200, 50])
    np.testing.assert_allclose(pf.hands[1], kp[1, 92:113] / [200, 50])  # left hands first
    np.testing.assert_allclose(pf.hands[2], kp[0, 113:] / [200, 50])  # then right hands
    d = pf.to_dict()
    assert set(d) == {"bodies", "hands", "hands_score", "faces", "faces_score"}
    assert set(d["bodies"]) == {"candidate", "subset", "score"}


# ----------------------------------------------------------------------------- sessions
def test_tiny_models_follow_the_figure(dwpose):
    f0, f1 = make_figure_frame(96, 128, 0.0), make_figure_frame(96, 128, 1.0)
    p0, p1 = dwpose.detect(f0), dwpose.detect(f1)
    assert p0.num_people == p1.num_people == 1
    assert (p0.body_score[0, [0, 1, 2, 5, 8, 11]] > 0.3).all()
    assert (p0.subset[0, [16, 17]] == -1).all()  # ears: 0.25
    shift = p1.candidate[1, 0] - p0.candidate[1, 0]
    assert shift == pytest.approx(0.3, abs=0.05)  # the figure moves 0.3 of the width
    dark = dwpose.detect(make_figure_frame(96, 128, 0.0, people=0))
    assert dark.num_people == 1  # no box → the whole frame is the box, as published
    assert (dark.subset == -1).all() and (dark.body_score == 0).all()
    assert len(dwpose.detect_boxes(make_figure_frame(96, 160, 0.5, people=2))) == 2
    d = dwpose(f0)
    np.testing.assert_array_equal(d["bodies"]["candidate"], p0.candidate)
    assert dwpose.providers == ["CPUExecutionProvider"] and dwpose.settings["nms_iou"] == 0.45


def test_detect_many_batched_equals_unbatched(dwpose, tmp_path):
    frames = [make_figure_frame(96, 128, t) for t in (0.0, 0.3, 0.6)]
    frames += [make_figure_frame(96, 160, 0.5, people=2), make_figure_frame(96, 128, 0, people=0)]
    frames += [make_figure_frame(80, 120, 0.9)]
    batched = dwpose.detect_many(frames, progress=False)
    single = dwpose.detect_many(frames, progress=False, batch=False)
    static = DWPose(*write_tiny_dwpose(tmp_path, dynamic_batch=False))
    assert not static.pose_batch_dynamic and dwpose.pose_batch_dynamic
    one_by_one = static.detect_many(iter(frames), progress=False)
    assert [p.num_people for p in batched] == [1, 1, 1, 2, 1, 1]
    for a, b, c, f in zip(batched, single, one_by_one, frames):
        assert a.equals(b) and a.equals(c)
        assert a.equals(dwpose.detect(f))


def test_missing_onnx_files(tmp_path, tiny_models):
    with pytest.raises(ModelLoadError, match=r"yolox_l\.onnx.*yzd-v/DWPose"):
        DWPose(tmp_path / "models/DWPose/yolox_l.onnx", tiny_models[1])
    with pytest.raises(
        ModelLoadError, match=r"pose model not found: .*dw-ll_ucoco_384\.onnx.*yzd-v/DWPose"
    ):
        DWPose(tiny_models[0], tmp_path / "dw-ll_ucoco_384.onnx")


def test_wrong_onnx_signature_or_garbage(tmp_path, tiny_models):
    det, pose = tiny_models
    with pytest.raises(
        ModelLoadError, match=r"dw-ll_ucoco_384\.onnx does not have the YOLOX detector signature"
    ):
        DWPose(pose, det)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelLoadError, match=r"junk\.onnx"):
        DWPose(det, junk)


def test_cuda_without_provider(tiny_models):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA EP available here")
    with pytest.raises(ModelLoadError, match="CUDAExecutionProvider"):
        DWPose(*tiny_models, device="cuda")


def test_tiny_models_are_deterministic(tmp_path):
    a = write_tiny_dwpose(tmp_path / "a")
    b = write_tiny_dwpose(tmp_path / "b")
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))
