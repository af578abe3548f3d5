"""Tiny DWPose stand-ins (real ONNX files, real signatures) and synthetic figure frames.

``write_tiny_dwpose(folder)`` writes ``yolox_l.onnx`` (input (1,3,640,640) → raw YOLOX output
(1,8400,85)) and ``dw-ll_ucoco_384.onnx`` (input (B,3,384,288) → simcc_x (B,133,576), simcc_y
(B,133,768)), built node by node with ``onnx.helper``. They are deterministic and follow image
content: bright pixels (channel mean > 150) on a dark background are "a person".

- Detector: each horizontal run of bright columns (up to 4) gives a box around its bright
  pixels (objectness 0.95, person 0.9), a shifted duplicate (0.6, removed by NMS) and a
  class-1 copy (removed by the class filter). No bright pixel: no box.
- Pose model: keypoints sit at fixed relative places inside the bright pixels' bounding box of
  the crop (so they move with the crop), as Gaussian SimCC peaks whose heights are per-keypoint
  scores (ears 0.25, the rest of the body 0.6-0.95, face/hands 0.35-0.85) times the bright-pixel
  coverage; an empty crop gives all-zero maps (score 0, location -1).

``make_figure_frame(h, w, t)`` draws the matching light stick figure(s) on a dark background;
``make_people_frame(h, w, t, figures)`` places figures of given sizes where asked.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

DET_NAME = "yolox_l.onnx"
POSE_NAME = "dw-ll_ucoco_384.onnx"
OPSET = 17
BRIGHT = 150.0
BIG = 1.0e4
MAX_PEOPLE = 4

__all__ = ["keypoint_template", "make_figure_frame", "make_people_frame", "write_tiny_dwpose"]


class _Graph:
    """Minimal helper to build an ONNX graph with unique names."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []
        self._n = 0

    def _name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, value, dtype=np.float32) -> str:
        from onnx import numpy_helper

        name = self._name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def zeros(self, shape: list[int]) -> str:
        from onnx import helper

        value = helper.make_tensor("zero", 1, [1], [0.0])
        return self.op("ConstantOfShape", self.const(shape, np.int64), value=value)

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs) -> str:
        from onnx import helper

        name = out or self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], **attrs))
        return name

    def model(self, inputs: list, outputs: list, name: str):
        from onnx import helper

        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mimicache-tiny"
        )
        model.ir_version = 8
        return model


def _bright_mask(g: _Graph, pixels: str) -> str:
    gray = g.op("ReduceMean", pixels, axes=[1], keepdims=0)
    return g.op("Cast", g.op("Greater", gray, g.const(BRIGHT)), to=1)


def _masked_min_max(g: _Graph, mask: str, coords: str, axis: int) -> tuple[str, str]:
    one = g.const(1.0)
    big = g.const(BIG)
    inv = g.op("Mul", g.op("Sub", one, mask), big)
    vals = g.op("Mul", mask, coords)
    lo = g.op("ReduceMin", g.op("Add", vals, inv), axes=[axis], keepdims=1)
    hi = g.op("ReduceMax", g.op("Sub", vals, inv), axes=[axis], keepdims=1)
    return lo, hi


def _detector_model():
    # Long on purpose: one ONNX graph written node by node reads best in one place.
    from onnx import TensorProto, helper

    g = _Graph()
    k = MAX_PEOPLE
    m = _bright_mask(g, "input")  # (1, 640, 640) [b, y, x]
    col = g.op("ReduceMax", m, axes=[1], keepdims=0)  # (1, 640)
    prev = g.op(
        "Concat",
        g.const(np.zeros((1, 1))),
        g.op(
            "Slice", col, g.const([0], np.int64), g.const([639], np.int64), g.const([1], np.int64)
        ),
        axis=1,
    )
    rising = g.op("Mul", col, g.op("Sub", g.const(1.0), prev))
    seg_id = g.op("Mul", g.op("CumSum", rising, g.const(1, np.int64)), col)
    ks = g.const(np.arange(1, k + 1).reshape(k, 1))
    seg = g.op("Cast", g.op("Equal", seg_id, ks), to=1)  # (K, 640)
    xs = g.const(np.arange(640).reshape(1, 640))
    xmin, xmax = _masked_min_max(g, seg, xs, axis=1)  # (K, 1)
    m2 = g.op("Reshape", m, g.const([640, 640], np.int64))
    rows = g.op("MatMul", m2, g.op("Transpose", seg, perm=[1, 0]))  # (640, K)
    rows = g.op("Transpose", g.op("Cast", g.op("Greater", rows, g.const(0.5)), to=1), perm=[1, 0])
    ymin, ymax = _masked_min_max(g, rows, xs, axis=1)
    wide = g.op("Cast", g.op("Greater", g.op("Sub", xmax, xmin), g.const(8.0)), to=1)
    present = g.op("Mul", g.op("ReduceMax", seg, axes=[1], keepdims=1), wide)
    one = g.const(1.0)
    bw = g.op("Max", g.op("Add", g.op("Sub", xmax, xmin), one), one)
    bh = g.op("Max", g.op("Add", g.op("Sub", ymax, ymin), one), one)
    half = g.const(0.5)
    cx = g.op("Add", xmin, g.op("Mul", bw, half))
    cy = g.op("Add", ymin, g.op("Mul", bh, half))
    inv32 = g.const(1.0 / 32.0)
    ty = g.op("Mul", cy, inv32)
    tw = g.op("Log", g.op("Mul", bw, inv32))
    th = g.op("Log", g.op("Mul", bh, inv32))

    def rows_for(cell0: int, shift: float, obj: float, cls0: float, cls1: float) -> str:
        cells = g.const(np.arange(cell0, cell0 + k).reshape(k, 1))
        tx = g.op("Sub", g.op("Mul", g.op("Add", cx, g.const(shift)), inv32), cells)
        objectness = g.op("Mul", present, g.const(obj))
        classes = np.zeros((k, 80), dtype=np.float32)
        classes[:, 0], classes[:, 1] = cls0, cls1
        return g.op("Concat", tx, ty, tw, th, objectness, g.const(classes), axis=1)

    block = g.op(
        "Concat",
        rows_for(0, 0.0, 0.95, 0.9, 0.0),  # the person
        rows_for(k, 3.0, 0.6, 0.9, 0.0),  # a shifted duplicate: NMS removes it
        rows_for(2 * k, 0.0, 0.9, 0.05, 0.8),  # another class: the class filter removes it
        axis=0,
    )
    block = g.op("Reshape", block, g.const([1, 3 * k, 85], np.int64))
    # rows 8000.. are the stride-32 cells (gx, gy=0): the person rows use cells gx = 0..3K-1
    g.op(
        "Concat",
        g.zeros([1, 8000, 85]),
        block,
        g.zeros([1, 400 - 3 * k, 85]),
        axis=1,
        out="output",
    )
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 640, 640])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8400, 85])
    return g.model([inp], [out], "tiny_yolox")


def keypoint_template() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relative x, y (in the figure's box) and score of the 133 COCO-WholeBody points."""
    body = [
        (0.50, 0.07, 0.92), (0.53, 0.05, 0.90), (0.47, 0.05, 0.90), (0.56, 0.06, 0.25),
        (0.44, 0.06, 0.25), (0.66, 0.20, 0.95), (0.34, 0.20, 0.95), (0.80, 0.33, 0.85),
        (0.20, 0.33, 0.85), (0.95, 0.45, 0.70), (0.05, 0.45, 0.70), (0.60, 0.55, 0.90),
        (0.40, 0.55, 0.90), (0.63, 0.75, 0.80), (0.37, 0.75, 0.80), (0.66, 0.95, 0.60),
        (0.34, 0.95, 0.60),
    ]  # fmt: skip
    feet = [(0.68, 0.98, 0.5), (0.70, 0.98, 0.5), (0.66, 0.99, 0.5),
            (0.32, 0.98, 0.5), (0.30, 0.98, 0.5), (0.34, 0.99, 0.5)]  # fmt: skip
    face = []
    for j in range(68):
        a = 2 * math.pi * j / 68
        face.append(
            (0.5 + 0.04 * math.cos(a), 0.07 + 0.035 * math.sin(a), 0.35 + 0.05 * ((7 * j) % 10))
        )
    hands = []
    for side_x, sign in ((0.93, 1.0), (0.07, -1.0)):
        for j in range(21):
            finger, seg = (j - 1) // 4, (j - 1) % 4 + 1
            if j == 0:
                finger, seg = 2, 0
            hands.append(
                (side_x + sign * 0.012 * (finger - 2), 0.47 + 0.012 * seg, 0.45 + 0.1 * (j % 5))
            )
    pts = np.array(body + feet + face + hands, dtype=np.float32)
    return pts[:, 0], pts[:, 1], pts[:, 2]


def _pose_model(dynamic_batch: bool):
    from onnx import TensorProto, helper

    g = _Graph()
    batch = "batch" if dynamic_batch else 1
    mean = g.const(np.array([123.675, 116.28, 103.53]).reshape(1, 3, 1, 1))
    std = g.const(np.array([58.395, 57.12, 57.375]).reshape(1, 3, 1, 1))
    pixels = g.op("Add", g.op("Mul", "input", std), mean)
    m = _bright_mask(g, pixels)  # (B, 384, 288)
    col = g.op("ReduceMax", m, axes=[1], keepdims=1)  # (B, 1, 288)
    row = g.op("ReduceMax", m, axes=[2], keepdims=1)  # (B, 384, 1)
    xmin, xmax = _masked_min_max(g, col, g.const(np.arange(288).reshape(1, 1, 288)), axis=2)
    ymin, ymax = _masked_min_max(g, row, g.const(np.arange(384).reshape(1, 384, 1)), axis=1)
    coverage = g.op("ReduceMean", m, axes=[1, 2], keepdims=1)  # (B, 1, 1)
    presence = g.op("Min", g.op("Mul", coverage, g.const(50.0)), g.const(1.0))
    u, v, s = keypoint_template()
    amp = g.op("Mul", g.const(s.reshape(1, 133, 1)), presence)  # (B, 133, 1)
    neg = g.const(-1.0 / (2.0 * 2.0**2))  # sigma = 2 bins

    def simcc(lo: str, hi: str, rel: np.ndarray, bins: int, out: str) -> None:
        pos = g.op("Add", lo, g.op("Mul", g.const(rel.reshape(1, 133, 1)), g.op("Sub", hi, lo)))
        d = g.op(
            "Sub", g.const(np.arange(bins).reshape(1, 1, bins)), g.op("Mul", pos, g.const(2.0))
        )
        g.op("Mul", g.op("Exp", g.op("Mul", g.op("Mul", d, d), neg)), amp, out=out)

    simcc(xmin, xmax, u, 576, "simcc_x")
    simcc(ymin, ymax, v, 768, "simcc_y")
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 384, 288])
    outs = [
        helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [batch, 133, 576]),
        helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [batch, 133, 768]),
    ]
    return g.model([inp], outs, "tiny_dwpose")


def write_tiny_dwpose(directory: str | Path, *, dynamic_batch: bool = True) -> tuple[Path, Path]:
    """Write ``yolox_l.onnx`` and ``dw-ll_ucoco_384.onnx`` into ``directory``; return their paths.

    Byte-for-byte deterministic. ``dynamic_batch=False`` fixes the pose model's batch to 1 (like
    the published file), which makes ``DWPose.detect_many`` run one box at a time.
    """
    import onnx

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    det, pose = directory / DET_NAME, directory / POSE_NAME
    for path, model in ((det, _detector_model()), (pose, _pose_model(dynamic_batch))):
        onnx.checker.check_model(model)
        tmp = path.with_suffix(".onnx.tmp")
        tmp.write_bytes(model.SerializeToString())
        tmp.replace(path)
    return det, pose


_FIGURE_COLORS = [(255, 240, 220), (230, 245, 255), (250, 250, 200), (255, 225, 240)]


def _draw_figure(
    img: np.ndarray, cx: float, top: float, fig_h: float, t: float, thick: int
) -> None:
    def pt(x: float, y: float) -> tuple[int, int]:
        return round(x), round(y)

    head_r = 0.07 * fig_h
    neck = (cx, top + 2 * head_r)
    hip = (cx, top + 0.55 * fig_h)
    swing = math.sin(2 * math.pi * t) * 0.6
    arm = 0.3 * fig_h
    leg = 0.45 * fig_h
    c = _FIGURE_COLORS
    cv2.circle(img, pt(cx, top + head_r), max(2, int(head_r)), c[0], thickness=-1)
    cv2.line(img, pt(*neck), pt(*hip), c[1], thick)
    for side in (-1, 1):
        ang = math.pi / 4 + side * swing * 0.5
        hand = (
            neck[0] + side * arm * math.cos(ang),
            neck[1] + 0.05 * fig_h + arm * math.sin(ang) * 0.6,
        )
        cv2.line(img, pt(neck[0], neck[1] + 0.05 * fig_h), pt(*hand), c[2], thick)
        foot = (hip[0] + side * leg * (0.3 + 0.1 * side * swing), hip[1] + leg)
        cv2.line(img, pt(*hip), pt(*foot), c[3], thick)


def make_figure_frame(height: int, width: int, t: float, *, people: int = 1) -> np.ndarray:
    """(height, width, 3) uint8 RGB: ``people`` light stick figures on a dark background.

    ``t`` in [0, 1] is the phase: the figure moves from left to right and swings its limbs.
    ``people=0`` gives an empty (dark) frame; ``people=2`` two well separated figures.
    """
    img = np.zeros((height, width, 3), dtype=np.uint8)
    img[:] = (14, 12, 24)
    if people <= 0:
        return img
    fig_h = (0.72 if people == 1 else 0.5) * height
    thick = max(3, round(0.035 * fig_h))
    top = 0.12 * height
    if people == 1:
        centers = [width * (0.35 + 0.3 * t)]
    else:
        centers = [
            width * (0.12 + (0.76 * (i + 0.5) / people)) + 0.04 * width * t for i in range(people)
        ]
    for cx in centers:
        _draw_figure(img, cx, top, fig_h, t, thick)
    return img


def make_people_frame(
    height: int, width: int, t: float, figures: list[tuple[float, float]]
) -> np.ndarray:
    """(height, width, 3) uint8 RGB: one light stick figure per ``(centre x, figure height)``,
    both fractions of the frame's width and height, all standing on one floor line.

    A figure is about 0.6 of its height wide; the tiny detector needs them apart (no shared
    column) to see separate people. ``t`` swings the limbs as in ``make_figure_frame``.
    """
    img = np.zeros((height, width, 3), dtype=np.uint8)
    img[:] = (14, 12, 24)
    floor = 0.92 * height
    for cx, size in figures:
        fig_h = size * height
        thick = max(3, round(0.035 * fig_h))
        _draw_figure(img, cx * width, floor - fig_h, fig_h, t, thick)
    return img
