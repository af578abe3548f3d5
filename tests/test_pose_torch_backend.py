"""The torch DWPose backend (ONNX graphs run by PyTorch) against ONNX Runtime on the same files."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from mimicache.cache.keys import fingerprint_files
from mimicache.cli import build_parser
from mimicache.config import load_config
from mimicache.errors import ConfigError, ModelLoadError
from mimicache.pose import DWPose, draw_pose
from mimicache.pose.backends import resolve_backend
from mimicache.pose.onnx_ops import UnsupportedOnnxOp
from mimicache.pose.onnx_torch import OnnxTorchModule
from mimicache.testing.pose_models import write_rtmpose_onnx, write_yolox_onnx
from mimicache.testing.tiny_dwpose import make_figure_frame
from tests import pose_fixtures

tiny_models = pose_fixtures.tiny_models
WIDTH, DEPTH = 0.125, 0.33  # real layer structure and operators, reduced channels and blocks


@pytest.fixture(scope="session")
def arch_models(tmp_path_factory):
    """YOLOX-L and RTMPose-l whole-body exports (random weights, reduced width and depth)."""
    root = tmp_path_factory.mktemp("dwpose-arch")
    det = write_yolox_onnx(root / "yolox_l.onnx", width=WIDTH, depth=DEPTH)
    pose = write_rtmpose_onnx(root / "dw-ll_ucoco_384.onnx", width=WIDTH, depth=DEPTH)
    return det, pose


@pytest.fixture(scope="module")
def arch_ort(arch_models) -> DWPose:
    return DWPose(*arch_models, backend="onnxruntime")


@pytest.fixture(scope="module")
def arch_torch(arch_models) -> DWPose:
    return DWPose(*arch_models, backend="torch", chunk_size=4)


# ----------------------------------------------------------------------------- single operators
def _graph_file(tmp_path, op, x, consts=(), attrs=None, opset=17, n_out=1, name="g"):
    """A one-node graph: input ``x`` (the graph input), then constant inputs as initialisers."""
    inputs, inits = ["x"], []
    for i, c in enumerate(consts):
        if c is None:
            inputs.append("")
            continue
        inputs.append(f"k{i}")
        inits.append(numpy_helper.from_array(np.asarray(c), f"k{i}"))
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, inputs, outs, **(attrs or {}))
    elem = helper.np_dtype_to_tensor_dtype(x.dtype)
    graph = helper.make_graph(
        [node],
        name,
        [helper.make_tensor_value_info("x", elem, list(x.shape))],
        [
            helper.make_tensor_value_info(o, TensorProto.INT64 if op == "Shape" else elem, None)
            for o in outs
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def _both(path, x):
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    out = OnnxTorchModule(path)(torch.from_numpy(x))
    return ref, [o.numpy() for o in out]


R = np.random.default_rng(0)
F4 = R.standard_normal((2, 4, 9, 11)).astype(np.float32)
F3 = R.standard_normal((2, 5, 6)).astype(np.float32)
I64 = np.int64

OP_CASES = {
    "conv_asym_pads_groups_dilated": ("Conv", F4, [R.standard_normal((6, 2, 3, 3)).astype(
                                      np.float32), R.standard_normal(6).astype(np.float32)],
                                      {"group": 2, "pads": [0, 1, 2, 1], "strides": [2, 1],
                                       "dilations": [1, 2]}, 17),
    "conv_same_upper": ("Conv", F4, [R.standard_normal((3, 4, 3, 3)).astype(np.float32)],
                                {"auto_pad": "SAME_UPPER", "strides": [2, 3]},
                                17),
    "maxpool_ceil_pads": ("MaxPool", F4, [], {"kernel_shape": [3, 3], "strides": [2, 2],
                          "pads": [1, 0, 1, 1], "ceil_mode": 1}, 17),
    "resize_nearest_floor_scales": ("Resize", F4, [np.zeros(0, np.float32),
                                    np.array([1, 1, 2, 2], np.float32)],
                                    {"mode": "nearest", "coordinate_transformation_mode":
                                     "asymmetric", "nearest_mode": "floor"}, 11),
    "resize_linear_sizes": ("Resize", F4, [None, None, np.array([2, 4, 14, 5], I64)],
                            {"mode": "linear"}, 13),
    "resize_nearest_half_pixel_ceil": ("Resize", F4, [None, np.array([1, 1, 1.5, 0.5],
                                       np.float32)], {"mode": "nearest", "nearest_mode":
                                       "round_prefer_ceil"}, 13),
    "slice_negative_step": ("Slice", F4, [np.array([-1, 1], I64), np.array([-100, 9], I64),
                            np.array([2, 3], I64), np.array([-2, 3], I64)], {}, 13),
    "split_attr_opset11": ("Split", F3, [], {"axis": 2, "split": [1, 2, 3]}, 11, 3),
    "split_equal_opset13": ("Split", F3, [], {"axis": 2}, 13, 3),
    "squeeze_attr": ("Squeeze", F4[:, :1], [], {"axes": [1]}, 11),
    "unsqueeze_input": ("Unsqueeze", F3, [np.array([-1, 0], I64)], {}, 13),
    "gather_negative": ("Gather", F3, [np.array([[0, -1], [2, 1]], I64)], {"axis": 1}, 13),
    "reduce_l2_attr": ("ReduceL2", F3, [], {"axes": [-1], "keepdims": 1}, 11),
    "reduce_mean_input": ("ReduceMean", F4, [np.array([1, 3], I64)], {"keepdims": 0}, 18),
    "reduce_sum_all": ("ReduceSum", F3, [], {"keepdims": 0}, 13),
    "clip_min_only": ("Clip", F3, [np.array(0.25, np.float32)], {}, 13),
    "hard_sigmoid": ("HardSigmoid", F3, [], {"alpha": 1 / 6, "beta": 0.5}, 17),
    "softmax_opset11_flattens": ("Softmax", F3, [], {"axis": 1}, 11),
    "softmax_opset13": ("Softmax", F3, [], {"axis": 1}, 13),
    "gemm_transb": ("Gemm", F3[0], [R.standard_normal((3, 6)).astype(np.float32),
                    R.standard_normal(3).astype(np.float32)],
                    {"transB": 1, "alpha": 0.5, "beta": 2.0}, 13),
    "layer_norm": ("LayerNormalization", F3, [R.standard_normal(6).astype(np.float32),
                   R.standard_normal(6).astype(np.float32)], {"epsilon": 1e-3}, 17),
    "batch_norm": ("BatchNormalization", F4, [np.full(4, 1.5, np.float32), np.ones(4, np.float32),
                   np.arange(4, dtype=np.float32), np.full(4, 2.0, np.float32)], {}, 15),
    "cumsum_exclusive_reverse": ("CumSum", F3, [np.array(1, I64)], {"exclusive": 1, "reverse": 1},
                                 14),
    "flatten_axis2": ("Flatten", F4, [], {"axis": 2}, 13),
    "expand": ("Expand", F3[:, :1], [np.array([3, 1, 5, 1], I64)], {}, 13),
    "reshape_zero_minus_one": ("Reshape", F4, [np.array([0, -1, 11], I64)], {}, 13),
    "transpose": ("Transpose", F4, [], {"perm": [0, 3, 1, 2]}, 13),
    "pow": ("Pow", np.abs(F3), [np.array(1.5, np.float32)], {}, 13),
    "matmul": ("MatMul", F3, [R.standard_normal((6, 3)).astype(np.float32)], {}, 13),
    "int_div_truncates": ("Div", np.array([7, -7, 9], I64), [np.array([2, 2, -4], I64)], {}, 13),
    "global_average_pool": ("GlobalAveragePool", F4, [], {}, 13),
    "shape_slice": ("Shape", F4, [], {"start": 1, "end": -1}, 15),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_single_op_matches_onnxruntime(tmp_path, case):
    op, x, consts, attrs, opset, *n_out = OP_CASES[case]
    path = _graph_file(tmp_path, op, x, consts, attrs, opset, n_out[0] if n_out else 1, case)
    ref, out = _both(path, x)
    assert len(ref) == len(out)
    for r, o in zip(ref, out):
        assert r.shape == o.shape and r.dtype == o.dtype
        np.testing.assert_allclose(o, r, rtol=1e-5, atol=1e-5)


def test_fixed_batch_graph_runs_on_any_batch(tmp_path):
    """A batch-1 graph with the batch folded into Reshape and Concat constants runs on N."""
    nodes = [
        helper.make_node("Reshape", ["x", "s"], ["r"]),  # [1, 12]: batch written as 1
        helper.make_node("Concat", ["r", "pad"], ["c"], axis=1),  # pad is (1, 2)
        helper.make_node("Shape", ["c"], ["sh"]),
        helper.make_node("Cast", ["sh"], ["shf"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMax", ["shf"], ["m"], keepdims=0),
        helper.make_node("Mul", ["c", "m"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([1, 12], I64), "s"),
        numpy_helper.from_array(np.array([[5.0, 6.0]], np.float32), "pad"),
    ]
    graph = helper.make_graph(
        nodes,
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 14])],
        inits,
    )
    path = tmp_path / "fixed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    module = OnnxTorchModule(path)
    assert module.fixed_batch == 1
    batch = np.random.default_rng(2).standard_normal((4, 3, 4)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = np.concatenate([sess.run(None, {"x": batch[i : i + 1]})[0] for i in range(4)])
    (out,) = module.run_numpy(batch)
    assert out.shape == (4, 14)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert (out[:, -2:] == [70.0, 84.0]).all()  # 14 (the per-sample width) x the pad


def test_unsupported_operator_is_named(tmp_path, tiny_models):
    x = np.zeros((1, 4), np.float32)
    path = _graph_file(tmp_path, "Einsum", x, [np.eye(4, dtype=np.float32)],
                       {"equation": "ij,jk->ik"}, name="einsum")  # fmt: skip
    with pytest.raises(UnsupportedOnnxOp, match=r"einsum\.onnx uses ONNX operator\(s\) Einsum"):
        OnnxTorchModule(path)
    with pytest.raises(ModelLoadError, match=r"Einsum.*dwpose_backend='onnxruntime'"):
        DWPose(path, tiny_models[1], backend="torch")
    cubic = _graph_file(tmp_path, "Resize", F4, [None, np.array([1, 1, 2, 2], np.float32)],
                        {"mode": "cubic"}, 13, name="cubic")  # fmt: skip
    with pytest.raises(UnsupportedOnnxOp, match=r"cubic\.onnx: Resize node .*mode=cubic"):
        OnnxTorchModule(cubic)(torch.from_numpy(F4))


def test_backend_resolution_and_errors(tiny_models):
    assert resolve_backend("auto", "cpu") == "onnxruntime"
    assert resolve_backend("auto", "mps") == "torch"  # ONNX Runtime has no provider for it
    assert resolve_backend("torch", "cpu") == "torch"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert resolve_backend("auto", "cuda:0") == "torch"
    with pytest.raises(
        ConfigError, match=r"unknown DWPose backend \(dwpose_backend='tensorrt'\): use one of"
    ):
        DWPose(*tiny_models, backend="tensorrt")
    with pytest.raises(ModelLoadError, match=r"'mps'.*dwpose_backend='torch'"):
        DWPose(*tiny_models, device="mps", backend="onnxruntime")


# ----------------------------------------------------------------------------- fidelity
def _frames() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    frames = [make_figure_frame(240, 320, t) for t in (0.0, 0.45, 0.9)]
    frames.append(make_figure_frame(200, 360, 0.5, people=2))
    frames.append(make_figure_frame(96, 128, 0.2, people=0))
    frames.append(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8))
    return frames


def _assert_same_poses(ref, got, frames):
    for a, b, frame in zip(ref, got, frames):
        assert a.num_people == b.num_people
        np.testing.assert_array_equal(a.subset, b.subset)
        for pa, pb in ((a.candidate, b.candidate), (a.faces, b.faces), (a.hands, b.hands)):
            assert np.abs(pa - pb).max(initial=0.0) <= 1e-4  # normalised: 1e-4 of the frame size
        np.testing.assert_allclose(b.body_score, a.body_score, rtol=1e-4, atol=1e-5)
        h, w = frame.shape[:2]
        same = (draw_pose(a, h, w) == draw_pose(b, h, w)).all(axis=-1).mean()
        assert same >= 0.999


def test_tiny_models_torch_equals_onnxruntime(tiny_models):
    frames = _frames()
    ref = DWPose(*tiny_models, backend="onnxruntime").detect_many(frames, progress=False)
    dw = DWPose(*tiny_models, backend="torch")
    assert dw.backend == "torch" and dw.providers == ["torch:cpu"]
    got = dw.detect_many(frames, progress=False)
    assert [p.num_people for p in ref] == [1, 1, 1, 2, 1, 1]
    assert (ref[0].subset >= 0).sum() == 16  # the figure is seen (ears below the threshold)
    _assert_same_poses(ref, got, frames)


def _arch_frames() -> list[np.ndarray]:
    frames = _frames()
    return [frames[0], frames[2], frames[3], frames[4]]  # several, some and no detections


def test_real_architecture_torch_equals_onnxruntime(arch_ort, arch_torch):
    frames = _arch_frames()
    assert not arch_ort.det_batch_dynamic and not arch_ort.pose_batch_dynamic  # published layout
    boxes = [len(arch_ort.detect_boxes(f)) for f in frames]
    assert sum(b > 0 for b in boxes) >= 2 and max(boxes) >= 3  # crops from real detections
    ref = arch_ort.detect_many(frames, progress=False)
    got = arch_torch.detect_many(frames, progress=False)
    visible = np.concatenate([(p.subset >= 0).ravel() for p in ref])
    assert 0.05 < visible.mean() < 0.95  # scores straddle the 0.3 threshold
    _assert_same_poses(ref, got, frames)


def test_torch_batch_equals_one_at_a_time(arch_torch):
    frames = _arch_frames()[:2]  # a chunk of 2 frames: 2 letterboxed frames, all their crops
    batched = arch_torch.detect_many(frames, progress=False)
    single = [arch_torch.detect(f) for f in frames]
    _assert_same_poses(single, batched, frames)


# ----------------------------------------------------------------------------- wiring
def test_backend_enters_the_fingerprint(tiny_models):
    a = DWPose(*tiny_models, backend="onnxruntime")
    b = DWPose(*tiny_models, backend="torch")
    files = {"det": tiny_models[0], "pose": tiny_models[1]}
    assert a.fingerprint_extra()["backend"] == "onnxruntime"
    fa, fb = (fingerprint_files(files, extra=d.fingerprint_extra()) for d in (a, b))
    assert fa != fb
    assert fa == fingerprint_files(files, extra=DWPose(*tiny_models).fingerprint_extra())
    # the engine's current recipe (settings + providers) tells them apart as well
    old = [fingerprint_files(files, extra={"settings": d.settings, "providers": d.providers})
           for d in (a, b)]  # fmt: skip
    assert old[0] != old[1]


def test_config_key_and_flag(tmp_path):
    base = (
        "base_model_path: m\nckpt_path: c.pth\n"
        "test_case:\n  - ref_video_path: v.mp4\n    ref_image_path: i.png\n"
    )
    cfg = tmp_path / "a.yaml"
    cfg.write_text(base + "dwpose:\n  backend: torch\n")
    assert load_config(cfg, base_dir=tmp_path).dwpose_backend == "torch"
    cfg.write_text(base)
    assert load_config(cfg, base_dir=tmp_path).dwpose_backend == "auto"
    cfg.write_text(base + "dwpose:\n  backend: cuda\n")
    with pytest.raises(ConfigError, match=r"dwpose\.backend must be one of auto, onnxruntime"):
        load_config(cfg, base_dir=tmp_path)
    assert build_parser().parse_args(["run", "--dwpose_backend", "torch"]).dwpose_backend == "torch"
    assert build_parser().parse_args(["run"]).dwpose_backend is None
