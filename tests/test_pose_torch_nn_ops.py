"""Pooling, transposed convolution, padding and normalisation in the torch DWPose backend, each
checked against ONNX Runtime on a one-operator model over its attribute combinations."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper

from mimicache.errors import ModelLoadError
from mimicache.pose import DWPose, backends
from mimicache.pose.onnx_ops import UnsupportedOnnxOp
from mimicache.pose.onnx_torch import OnnxTorchModule
from mimicache.testing.tiny_dwpose import make_figure_frame
from tests import pose_fixtures
from tests.test_pose_torch_backend import _both, _graph_file

tiny_models = pose_fixtures.tiny_models

R = np.random.default_rng(7)
X = R.standard_normal((2, 4, 9, 11)).astype(np.float32)
X1 = R.standard_normal((2, 3, 10)).astype(np.float32)
I64 = np.int64


def _pool_cases() -> dict:
    cases = {}
    for pads in ([0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 2, 1], [2, 0, 0, 2]):
        for strides in ([1, 1], [2, 3]):
            for ceil in (0, 1):
                for include in (0, 1):
                    name = f"avgpool_p{''.join(map(str, pads))}_s{''.join(map(str, strides))}"
                    cases[f"{name}_ceil{ceil}_inc{include}"] = (
                        "AveragePool", X, [], {"kernel_shape": [3, 4], "strides": strides,
                        "pads": pads, "ceil_mode": ceil, "count_include_pad": include}, 17)  # fmt: skip
    for auto in ("SAME_UPPER", "SAME_LOWER", "VALID"):
        cases[f"avgpool_{auto.lower()}"] = (
            "AveragePool",
            X,
            [],
            {"kernel_shape": [2, 3], "strides": [2, 2], "auto_pad": auto},
            17,
        )
    cases["avgpool_1d_asym"] = ("AveragePool", X1, [], {"kernel_shape": [3], "strides": [2],
                                "pads": [0, 2], "ceil_mode": 1}, 17)  # fmt: skip
    return cases


def _conv_transpose_cases() -> dict:
    w = R.standard_normal((4, 3, 3, 2)).astype(np.float32)
    wg = R.standard_normal((4, 2, 3, 3)).astype(np.float32)
    b = R.standard_normal(3).astype(np.float32)
    return {
        "convt_plain_bias": ("ConvTranspose", X, [w, b], {}, 17),
        "convt_stride_pads_outpad": ("ConvTranspose", X, [w, b], {"strides": [2, 3],
                                     "pads": [1, 0, 1, 0], "output_padding": [1, 2]}, 17),
        "convt_asym_pads": ("ConvTranspose", X, [w, b], {"strides": [2, 2],
                            "pads": [0, 1, 2, 0]}, 17),
        "convt_groups_dilated": ("ConvTranspose", X, [wg], {"group": 2, "dilations": [2, 1],
                                 "strides": [1, 2]}, 17),
        "convt_output_shape": ("ConvTranspose", X, [w, b], {"strides": [2, 2],
                               "output_shape": [18, 21]}, 17),
        "convt_same_upper": ("ConvTranspose", X, [w], {"strides": [2, 2],
                             "auto_pad": "SAME_UPPER"}, 17),
        "convt_same_lower": ("ConvTranspose", X, [w], {"strides": [2, 2],
                             "auto_pad": "SAME_LOWER"}, 17),
        "convt_1d": ("ConvTranspose", X1, [R.standard_normal((3, 2, 4)).astype(np.float32)],
                     {"strides": [3], "pads": [1, 2]}, 17),
    }  # fmt: skip


def _other_cases() -> dict:
    scale = R.standard_normal(4).astype(np.float32)
    shift = R.standard_normal(4).astype(np.float32)
    pads = np.array([0, 0, 1, 2, 0, 0, 3, 1], I64)
    return {
        "instance_norm": ("InstanceNormalization", X, [scale, shift], {"epsilon": 1e-3}, 17),
        "instance_norm_1d": ("InstanceNormalization", X1, [scale[:3], shift[:3]], {}, 17),
        "pad_constant_value": ("Pad", X, [pads, np.array(1.5, np.float32)], {}, 17),
        "pad_constant_crop": ("Pad", X, [np.array([0, 1, -1, 2, 0, -1, 0, -3], I64)], {}, 17),
        "pad_reflect": ("Pad", X, [pads], {"mode": "reflect"}, 17),
        "pad_edge": ("Pad", X, [pads], {"mode": "edge"}, 17),
        "pad_wrap": ("Pad", X, [pads], {"mode": "wrap"}, 19),
        "pad_axes": ("Pad", X, [np.array([2, 1], I64), None, np.array([-1], I64)], {}, 18),
        "pad_attr_opset2": ("Pad", X, [], {"pads": [0, 0, 1, 0, 0, 0, 0, 2], "value": -2.0}, 2),
    }  # fmt: skip


def _more_cases() -> dict:
    g = R.standard_normal(4).astype(np.float32)
    return {
        "lppool_p2_asym_ceil": ("LpPool", X, [], {"kernel_shape": [3, 2], "strides": [2, 2],
                                "pads": [0, 1, 1, 0], "ceil_mode": 1}, 18),
        "lppool_p1": ("LpPool", X, [], {"kernel_shape": [2, 3], "p": 1}, 17),
        "lppool_same_upper": ("LpPool", X, [], {"kernel_shape": [3, 3], "strides": [2, 2],
                              "auto_pad": "SAME_UPPER"}, 17),
        "global_lp_pool_p3": ("GlobalLpPool", X, [], {"p": 3}, 17),
        "lp_normalization_p1": ("LpNormalization", X, [], {"axis": 1, "p": 1}, 17),
        "lp_normalization_p2": ("LpNormalization", X, [], {}, 17),
        "lrn_odd": ("LRN", X, [], {"size": 3, "alpha": 0.5, "beta": 0.6, "bias": 2.0}, 17),
        "lrn_defaults": ("LRN", X, [], {"size": 5}, 17),  # ONNX Runtime runs odd sizes only
        "group_norm_opset21": ("GroupNormalization", X, [g, g[::-1].copy()], {"num_groups": 2,
                               "epsilon": 1e-3}, 21),
    }  # fmt: skip


CASES = {**_pool_cases(), **_conv_transpose_cases(), **_other_cases(), **_more_cases()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_nn_op_matches_onnxruntime(tmp_path, case):
    op, x, consts, attrs, opset = CASES[case]
    path = _graph_file(tmp_path, op, x, consts, attrs, opset, 1, case)
    ref, out = _both(path, x)
    assert len(ref) == len(out) == 1
    assert ref[0].shape == out[0].shape and ref[0].dtype == out[0].dtype
    np.testing.assert_allclose(out[0], ref[0], rtol=1e-5, atol=1e-5)


def test_pad_mode_it_cannot_run_is_named(tmp_path):
    path = _graph_file(tmp_path, "Pad", X, [np.array([1, 0, 0, 0, 1, 0, 0, 0], I64)],
                       {"mode": "reflect"}, 17, 1, "reflect_batch")  # fmt: skip
    with pytest.raises(UnsupportedOnnxOp, match=r"reflect_batch\.onnx: Pad node .*reflect"):
        OnnxTorchModule(path)(torch.from_numpy(X))


def _with_op_torch_lacks(src, dst):
    """The tiny pose model with an identity Shrink (lambd=0, bias=0) after its input."""
    model = onnx.load(str(src))
    graph = model.graph
    name = graph.input[0].name
    for node in graph.node:
        node.input[:] = ["x_shrunk" if i == name else i for i in node.input]
    graph.node.insert(0, helper.make_node("Shrink", [name], ["x_shrunk"], lambd=0.0, bias=0.0))
    onnx.save(model, str(dst))
    return dst


def test_auto_runs_a_file_torch_cannot_on_onnxruntime(tmp_path, tiny_models, monkeypatch, caplog):
    det, pose = tiny_models
    shrunk = _with_op_torch_lacks(pose, tmp_path / "pose_shrink.onnx")
    with pytest.raises(ModelLoadError, match=r"pose_shrink\.onnx uses ONNX operator\(s\) Shrink"
                       r".*dwpose_backend='onnxruntime'"):  # fmt: skip
        DWPose(det, shrunk, backend="torch")
    monkeypatch.setattr(backends, "ort_has_device", lambda device: False)  # auto picks torch
    with caplog.at_level(logging.WARNING, logger="mimicache"):
        dw = DWPose(det, shrunk, backend="auto")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "Shrink" in warnings[0] and "pose_shrink.onnx" in warnings[0]
    assert (dw.det_model.backend, dw.pose_model.backend) == ("torch", "onnxruntime")
    assert dw.backend == "torch+onnxruntime" and dw.fingerprint_extra()["backend"] == dw.backend
    frame = make_figure_frame(240, 320, 0.3)
    ref = DWPose(det, pose, backend="onnxruntime").detect(frame)
    got = dw.detect(frame)
    np.testing.assert_array_equal(got.subset, ref.subset)
    np.testing.assert_allclose(got.candidate, ref.candidate, atol=1e-4)


def test_new_ops_in_a_batch_one_graph_run_on_any_batch(tmp_path):
    """A fixed batch-1 graph (as DWPose files are) is vectorised over N with these ops too."""
    from onnx import TensorProto, numpy_helper

    w = R.standard_normal((4, 2, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["x"], ["a"], kernel_shape=[3, 3], pads=[0, 1, 2, 0],
                         ceil_mode=1),
        helper.make_node("Pad", ["a", "p"], ["b"], mode="reflect"),
        helper.make_node("ConvTranspose", ["b", "w"], ["c"], strides=[2, 2], pads=[1, 0, 0, 1]),
        helper.make_node("InstanceNormalization", ["c", "s", "t"], ["y"]),
    ]  # fmt: skip
    inits = [
        numpy_helper.from_array(np.array([0, 0, 1, 2, 0, 0, 2, 1], I64), "p"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.full(2, 1.5, np.float32), "s"),
        numpy_helper.from_array(np.full(2, 0.5, np.float32), "t"),
    ]
    graph = helper.make_graph(
        nodes, "fixed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 9, 11])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    path = tmp_path / "fixed_nn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    batch = R.standard_normal((3, 4, 9, 11)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = np.concatenate([sess.run(None, {"x": batch[i : i + 1]})[0] for i in range(3)])
    (out,) = OnnxTorchModule(path).run_numpy(batch)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
