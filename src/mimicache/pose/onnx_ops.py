"""ONNX operators as PyTorch functions: the set the DWPose models (and their tiny stand-ins) use.

Each handler takes ``(node, inputs)``: ``inputs`` is a list of tensors (``None`` for an omitted
optional input) and ``node`` carries ``attrs`` (plain Python values) and ``opset``; it returns a
tensor or a list of tensors, following the ONNX operator specification for opsets 11-18.
Integer (shape-like) tensors live on the CPU, so reading them never waits for an accelerator.
A case the handler does not cover raises :class:`UnsupportedOnnxOp`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from mimicache.errors import ModelLoadError

__all__ = ["OPS", "UnsupportedOnnxOp", "torch_dtype"]

INT_MAX = 2**62

_DTYPES = {
    1: torch.float32, 2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32,
    7: torch.int64, 9: torch.bool, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16,
}  # fmt: skip


class UnsupportedOnnxOp(ModelLoadError):
    """An ONNX operator (or one of its modes) that the torch backend does not implement.

    ``ops`` names the operators found missing when the file was read (empty for a mode found
    missing while running), so a caller can turn to ONNX Runtime before running anything.
    """

    def __init__(self, message: str, ops: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.ops = tuple(ops)


def torch_dtype(onnx_type: int) -> torch.dtype:
    if onnx_type not in _DTYPES:
        raise UnsupportedOnnxOp(f"ONNX tensor type {onnx_type} is not supported")
    return _DTYPES[onnx_type]


def _ints(t) -> list[int]:
    return [int(v) for v in (t.tolist() if isinstance(t, torch.Tensor) else t)]


def _axis(a: int, rank: int) -> int:
    return a + rank if a < 0 else a


def _align(*ts):
    """Move CPU tensors with dimensions next to the accelerator operand (0-d ones broadcast)."""
    dev = next((t.device for t in ts if t.device.type != "cpu"), None)
    if dev is None:
        return ts
    return tuple(t.to(dev) if t.device != dev and t.dim() > 0 else t for t in ts)


def _unsupported(node, what: str):
    raise UnsupportedOnnxOp(f"{node.op_type} node '{node.name}': {what} is not supported")


def _binary(fn: Callable) -> Callable:
    def run(node, x):
        return fn(*_align(x[0], x[1]))

    return run


def _div(a, b):
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")  # ONNX integer division truncates
    return a / b


def _variadic(fn: Callable) -> Callable:
    def run(node, x):
        out = x[0]
        for t in x[1:]:
            out = fn(*_align(out, t))
        return out

    return run


def _axes(node, x, index: int, attr_until: int) -> list[int] | None:
    """Axes from the attribute (opsets before ``attr_until``) or from input ``index``."""
    if node.opset < attr_until:
        return node.attrs.get("axes")
    return _ints(x[index]) if len(x) > index and x[index] is not None else None


def _reduce(kind: str, attr_until: int = 18) -> Callable:
    def run(node, x):
        t = x[0]
        axes = _axes(node, x, 1, attr_until)
        keep = bool(node.attrs.get("keepdims", 1))
        if not axes:
            if node.attrs.get("noop_with_empty_axes", 0):
                return t
            axes = list(range(t.dim()))
        dims = tuple(_axis(a, t.dim()) for a in axes)
        if kind == "mean":
            return t.mean(dim=dims, keepdim=keep)
        if kind == "sum":
            return t.sum(dim=dims, keepdim=keep)
        if kind == "l2":
            return (t * t).sum(dim=dims, keepdim=keep).sqrt()
        return t.amax(dim=dims, keepdim=keep) if kind == "max" else t.amin(dim=dims, keepdim=keep)

    return run


def _spatial_pads(node, rank: int, in_hw, kernel, strides, dilations) -> list[int]:
    """ONNX pads [b1, b2, ..., e1, e2, ...] with auto_pad resolved."""
    auto = node.attrs.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", "VALID"):
        return (
            list(node.attrs.get("pads", [0] * (2 * rank))) if auto == "NOTSET" else [0] * (2 * rank)
        )
    begin, end = [], []
    for size, k, s, d in zip(in_hw, kernel, strides, dilations):
        total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return begin + end


def _pad_for(pads: list[int], rank: int, value: float):
    """Symmetric pads → (padding, None); otherwise (0, F.pad argument)."""
    begin, end = pads[:rank], pads[rank:]
    if begin == end:
        return begin, None
    flat: list[int] = []
    for b, e in zip(reversed(begin), reversed(end)):
        flat += [b, e]
    return [0] * rank, flat


def _conv(node, x):
    t, w = _align(x[0], x[1])
    bias = x[2] if len(x) > 2 else None
    rank = t.dim() - 2
    a = node.attrs
    kernel = a.get("kernel_shape", list(w.shape[2:]))
    strides, dil = a.get("strides", [1] * rank), a.get("dilations", [1] * rank)
    pads = _spatial_pads(node, rank, t.shape[2:], kernel, strides, dil)
    padding, extra = _pad_for(pads, rank, 0.0)
    if extra is not None:
        t = F.pad(t, extra)
    conv = (F.conv1d, F.conv2d, F.conv3d)[rank - 1]
    return conv(t, w, bias, strides, padding, dil, a.get("group", 1))


def _max_pool(node, x):
    t = x[0]
    rank = t.dim() - 2
    a = node.attrs
    kernel = a["kernel_shape"]
    strides, dil = a.get("strides", [1] * rank), a.get("dilations", [1] * rank)
    if len(node.outputs) > 1 or a.get("storage_order", 0):
        _unsupported(node, "MaxPool indices output")
    pads = _spatial_pads(node, rank, t.shape[2:], kernel, strides, dil)
    padding, extra = _pad_for(pads, rank, float("-inf"))
    if extra is not None:
        t = F.pad(t, extra, value=float("-inf"))
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[rank - 1]
    return pool(t, kernel, strides, padding, dil, ceil_mode=bool(a.get("ceil_mode", 0)))


def _resize(node, x):
    t, a = x[0], node.attrs
    if node.op_type == "Upsample" or node.opset < 11:
        scales, sizes = x[1], None
    else:
        scales = x[2] if len(x) > 2 else None
        sizes = x[3] if len(x) > 3 else None
    mode = a.get("mode", "nearest")
    coord = a.get(
        "coordinate_transformation_mode", "half_pixel" if node.opset >= 11 else "asymmetric"
    )
    nearest = a.get("nearest_mode", "round_prefer_floor")
    kwargs: dict = {}
    if sizes is not None and sizes.numel():
        kwargs["size"] = _ints(sizes)[2:]
    elif scales is not None and scales.numel():
        s = [float(v) for v in scales.tolist()]
        if s[:2] != [1.0, 1.0]:
            _unsupported(node, "Resize over batch or channels")
        kwargs.update(scale_factor=s[2:], recompute_scale_factor=False)
    else:
        _unsupported(node, "Resize without scales or sizes")
    if mode == "nearest" and coord == "asymmetric" and nearest == "floor":
        return F.interpolate(t, mode="nearest", **kwargs)
    if (
        mode == "nearest"
        and coord in ("half_pixel", "pytorch_half_pixel")
        and nearest == "round_prefer_ceil"
    ):
        return F.interpolate(t, mode="nearest-exact", **kwargs)
    if (
        mode == "linear"
        and t.dim() == 4
        and coord in ("half_pixel", "pytorch_half_pixel", "align_corners")
    ):
        return F.interpolate(t, mode="bilinear", align_corners=coord == "align_corners", **kwargs)
    _unsupported(
        node, f"Resize mode={mode} coordinate_transformation_mode={coord} nearest_mode={nearest}"
    )


def _slice(node, x):
    t = x[0]
    if node.opset < 10:
        starts, ends = node.attrs["starts"], node.attrs["ends"]
        axes, steps = node.attrs.get("axes"), None
    else:
        starts, ends = _ints(x[1]), _ints(x[2])
        axes = _ints(x[3]) if len(x) > 3 and x[3] is not None else None
        steps = _ints(x[4]) if len(x) > 4 and x[4] is not None else None
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps or [1] * len(starts)
    index: list = [slice(None)] * t.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = _axis(axis, t.dim())
        dim = t.shape[axis]
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            index[axis] = slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
        else:  # negative steps: explicit indices (torch slicing needs positive steps)
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
            idx = torch.arange(start, end, step, device=t.device)
            t = t.index_select(axis, idx)
    return t[tuple(index)]


def _reshape(node, x):
    t, shape = x[0], _ints(x[1])
    if not node.attrs.get("allowzero", 0):
        shape = [t.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return t.reshape(shape)


def _split(node, x):
    t, axis = x[0], _axis(node.attrs.get("axis", 0), x[0].dim())
    if node.opset < 13:
        sizes = node.attrs.get("split")
    else:
        sizes = _ints(x[1]) if len(x) > 1 and x[1] is not None else None
    if sizes is None:
        n = len(node.outputs)
        sizes = [-(-t.shape[axis] // n)] * (n - 1)
        sizes.append(t.shape[axis] - sum(sizes))
    return list(torch.split(t, list(sizes), dim=axis))


def _squeeze(node, x):
    t, axes = x[0], _axes(node, x, 1, 13)
    if not axes:
        return t.squeeze()
    return t.squeeze(tuple(_axis(a, t.dim()) for a in axes))


def _unsqueeze(node, x):
    t, axes = x[0], _axes(node, x, 1, 13)
    rank = t.dim() + len(axes)
    for a in sorted(_axis(a, rank) for a in axes):
        t = t.unsqueeze(a)
    return t


def _gather(node, x):
    t, idx = x[0], x[1].to(torch.int64)
    axis = _axis(node.attrs.get("axis", 0), t.dim())
    idx = torch.where(idx < 0, idx + t.shape[axis], idx).to(t.device)
    out = t.index_select(axis, idx.reshape(-1))
    return out.reshape((*t.shape[:axis], *idx.shape, *t.shape[axis + 1 :]))


def _shape(node, x):
    dims = list(x[0].shape)
    start, end = node.attrs.get("start", 0), node.attrs.get("end", len(dims))
    return torch.tensor(dims[start:end], dtype=torch.int64)


def _constant_of_shape(node, x):
    value = node.attrs.get("value")
    shape = _ints(x[0])
    if value is None:
        return torch.zeros(shape, dtype=torch.float32)
    return torch.full(shape, value.reshape(-1)[0].item(), dtype=value.dtype)


def _clip(node, x):
    lo, hi = (node.attrs.get("min"), node.attrs.get("max")) if node.opset < 11 else (None, None)
    if node.opset >= 11:
        lo = x[1] if len(x) > 1 and x[1] is not None else None
        hi = x[2] if len(x) > 2 and x[2] is not None else None
        lo = lo.item() if lo is not None and lo.device.type == "cpu" else lo
        hi = hi.item() if hi is not None and hi.device.type == "cpu" else hi
    return torch.clamp(x[0], lo, hi)


def _cumsum(node, x):
    t, axis = x[0], _axis(_ints(x[1].reshape(-1))[0], x[0].dim())
    if node.attrs.get("reverse", 0):
        t = t.flip(axis)
    out = t.cumsum(axis)
    if node.attrs.get("exclusive", 0):
        out = out - t
    return out.flip(axis) if node.attrs.get("reverse", 0) else out


def _softmax(node, x):
    t = x[0]
    axis = _axis(node.attrs.get("axis", -1 if node.opset >= 13 else 1), t.dim())
    if node.opset >= 13:
        return torch.softmax(t, axis)
    flat = t.reshape(*t.shape[:axis], -1)  # older opsets: softmax over the flattened tail
    return torch.softmax(flat, -1).reshape(t.shape)


def _gemm(node, x):
    a, b = _align(x[0], x[1])
    a = a.t() if node.attrs.get("transA", 0) else a
    b = b.t() if node.attrs.get("transB", 0) else b
    out = node.attrs.get("alpha", 1.0) * (a @ b)
    if len(x) > 2 and x[2] is not None:
        out = out + node.attrs.get("beta", 1.0) * x[2]
    return out


def _layer_norm(node, x):
    t = x[0]
    axis = _axis(node.attrs.get("axis", -1), t.dim())
    bias = x[2] if len(x) > 2 else None
    return F.layer_norm(t, t.shape[axis:], x[1], bias, node.attrs.get("epsilon", 1e-5))


def _batch_norm(node, x):
    t, scale, bias, mean, var = x[:5]
    return F.batch_norm(t, mean, var, scale, bias, False, 0.0, node.attrs.get("epsilon", 1e-5))


def _expand(node, x):
    return x[0].expand(torch.broadcast_shapes(tuple(x[0].shape), tuple(_ints(x[1]))))


def _where(node, x):
    return torch.where(*_align(x[0], x[1], x[2]))


def _flatten(node, x):
    t = x[0]
    axis = _axis(node.attrs.get("axis", 1), t.dim())
    return t.reshape(int(torch.tensor(t.shape[:axis]).prod()), -1)


def _cast(node, x):
    return x[0].to(torch_dtype(node.attrs["to"]))


def _unary(fn: Callable) -> Callable:
    return lambda node, x: fn(x[0])


OPS: dict[str, Callable] = {
    "Add": _binary(torch.add), "Sub": _binary(torch.sub), "Mul": _binary(torch.mul),
    "Div": _binary(_div), "Pow": _binary(torch.pow), "Greater": _binary(torch.gt),
    "Less": _binary(torch.lt), "Equal": _binary(torch.eq), "And": _binary(torch.logical_and),
    "Or": _binary(torch.logical_or), "Max": _variadic(torch.maximum),
    "Min": _variadic(torch.minimum), "Sum": _variadic(torch.add), "MatMul": _binary(torch.matmul),
    "Relu": _unary(torch.relu), "Sigmoid": _unary(torch.sigmoid), "Tanh": _unary(torch.tanh),
    "Exp": _unary(torch.exp), "Log": _unary(torch.log), "Sqrt": _unary(torch.sqrt),
    "Neg": _unary(torch.neg), "Abs": _unary(torch.abs), "Erf": _unary(torch.erf),
    "Not": _unary(torch.logical_not), "Identity": _unary(lambda t: t),
    "Dropout": _unary(lambda t: t), "Floor": _unary(torch.floor), "Ceil": _unary(torch.ceil),
    "HardSigmoid": lambda n, x: torch.clamp(
        x[0] * n.attrs.get("alpha", 0.2) + n.attrs.get("beta", 0.5), 0.0, 1.0
    ),
    "HardSwish": _unary(F.hardswish),
    "LeakyRelu": lambda n, x: F.leaky_relu(x[0], n.attrs.get("alpha", 0.01)),
    "GlobalAveragePool": _unary(lambda t: t.mean(dim=tuple(range(2, t.dim())), keepdim=True)),
    "GlobalMaxPool": _unary(lambda t: t.amax(dim=tuple(range(2, t.dim())), keepdim=True)),
    "ReduceMean": _reduce("mean"), "ReduceMax": _reduce("max"), "ReduceMin": _reduce("min"),
    "ReduceL2": _reduce("l2"), "ReduceSum": _reduce("sum", attr_until=13),
    "Conv": _conv, "MaxPool": _max_pool, "Resize": _resize, "Upsample": _resize,
    "Concat": lambda n, x: torch.cat(_align(*x), n.attrs["axis"]),
    "Transpose": lambda n, x: x[0].permute(n.attrs.get("perm", list(range(x[0].dim()))[::-1])),
    "Reshape": _reshape, "Flatten": _flatten, "Slice": _slice, "Split": _split,
    "Squeeze": _squeeze, "Unsqueeze": _unsqueeze, "Gather": _gather, "Shape": _shape,
    "ConstantOfShape": _constant_of_shape, "Expand": _expand, "Where": _where, "Cast": _cast,
    "Clip": _clip, "CumSum": _cumsum, "Softmax": _softmax, "Gemm": _gemm,
    "LayerNormalization": _layer_norm, "BatchNormalization": _batch_norm,
}  # fmt: skip
