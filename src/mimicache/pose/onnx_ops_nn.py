"""More ONNX operators as PyTorch functions: the pooling, transposed convolution, padding and
normalisation ops of CNN detectors and pose heads (handlers as in :mod:`onnx_ops`).

``NN_OPS`` maps operator names to handlers ``(node, inputs) -> tensor``; the torch backend runs
the union of ``onnx_ops.OPS`` and ``NN_OPS``. Tensors are (N, C, *spatial) float32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from mimicache.pose.onnx_ops import _align, _ints, _spatial_pads, _unsupported

__all__ = ["NN_OPS"]


def _torch_pad(begin: list[int], end: list[int]) -> list[int]:
    """ONNX per-axis (begin, end) pads → F.pad's flat list, last axis first."""
    flat: list[int] = []
    for b, e in zip(reversed(begin), reversed(end)):
        flat += [b, e]
    return flat


def _average_pool(node, x):
    t = x[0]
    rank = t.dim() - 2
    a = node.attrs
    kernel = list(a["kernel_shape"])
    strides = list(a.get("strides", [1] * rank))
    if any(d != 1 for d in a.get("dilations", [1] * rank)):
        _unsupported(node, "AveragePool with dilations")
    pads = _spatial_pads(node, rank, t.shape[2:], kernel, strides, [1] * rank)
    begin, end = pads[:rank], pads[rank:]
    ceil, include = bool(a.get("ceil_mode", 0)), bool(a.get("count_include_pad", 0))
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[rank - 1]
    if begin == end and all(p <= k // 2 for p, k in zip(begin, kernel)):
        # torch pads implicitly with the same divisor rules as ONNX when pads are symmetric
        return pool(t, kernel, strides, begin, ceil_mode=ceil, count_include_pad=include)
    # Asymmetric (or wide) pads: pad with zeros explicitly; torch then sees no padding, so its
    # divisor counts the pads (count_include_pad=1). Otherwise divide by the pooled mask of real
    # pixels: avg(x) / avg(mask) = sum(x) / (number of real pixels in the window).
    flat = _torch_pad(begin, end)
    out = pool(F.pad(t, flat), kernel, strides, 0, ceil_mode=ceil, count_include_pad=True)
    if not include:
        mask = F.pad(torch.ones((1, 1, *t.shape[2:]), dtype=t.dtype, device=t.device), flat)
        out = out / pool(mask, kernel, strides, 0, ceil_mode=ceil, count_include_pad=True)
    # torch saw the explicit pads as input, so it kept ceil_mode windows starting in them
    sizes = _pool_sizes(t, kernel, strides, begin, end, ceil)
    return out[(slice(None), slice(None), *(slice(0, m) for m in sizes))]


def _conv_transpose(node, x):
    t, w = _align(x[0], x[1])
    bias = x[2] if len(x) > 2 else None
    rank = t.dim() - 2
    a = node.attrs
    kernel = list(a.get("kernel_shape", w.shape[2:]))
    strides = list(a.get("strides", [1] * rank))
    dil = list(a.get("dilations", [1] * rank))
    out_pad = list(a.get("output_padding", [0] * rank))
    auto = a.get("auto_pad", "NOTSET")
    full = [
        s * (n - 1) + op + (k - 1) * d + 1
        for n, s, op, k, d in zip(t.shape[2:], strides, out_pad, kernel, dil)
    ]
    target = a.get("output_shape")
    if target is None and auto in ("SAME_UPPER", "SAME_LOWER"):
        target = [n * s for n, s in zip(t.shape[2:], strides)]
    if target is not None:  # the spec derives the pads from the wanted output size
        target = list(target)[-rank:]
        total = [f - o for f, o in zip(full, target)]
        small = [p // 2 for p in total]
        big = [p - p // 2 for p in total]
        begin, end = (small, big) if auto == "SAME_UPPER" else (big, small)
    elif auto == "VALID":
        begin, end = [0] * rank, [0] * rank
    else:
        pads = list(a.get("pads", [0] * (2 * rank)))
        begin, end = pads[:rank], pads[rank:]
    conv = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[rank - 1]
    group = a.get("group", 1)
    if any(op >= max(s, d) for op, s, d in zip(out_pad, strides, dil)):
        _unsupported(node, "ConvTranspose output_padding not below its stride or dilation")
    if begin == end:
        return conv(t, w, bias, strides, begin, out_pad, group, dil)
    if any(p < 0 for p in begin + end):
        _unsupported(node, "ConvTranspose with an output larger than its full size")
    # Asymmetric pads: the full output, then cropped at each end as ONNX asks.
    out = conv(t, w, bias, strides, 0, out_pad, group, dil)
    index = [slice(None), slice(None)]
    index += [slice(b, f - e) for b, e, f in zip(begin, end, full)]
    return out[tuple(index)]


def _instance_norm(node, x):
    t, scale, bias = _align(x[0], x[1], x[2])
    return F.instance_norm(t, weight=scale, bias=bias, eps=node.attrs.get("epsilon", 1e-5))


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


def _pad(node, x):
    t, a = x[0], node.attrs
    mode = a.get("mode", "constant")
    if mode not in _PAD_MODES:
        _unsupported(node, f"Pad mode={mode}")
    if node.opset < 11:
        pads, value = list(a["pads"]), float(a.get("value", 0.0))
    else:
        pads = _ints(x[1])
        has_value = len(x) > 2 and x[2] is not None and x[2].numel()
        value = x[2].reshape(-1)[0].item() if has_value else 0
    rank = t.dim()
    axes = list(range(rank))
    if len(x) > 3 and x[3] is not None:  # opset 18: pads for the listed axes only
        axes = [v + rank if v < 0 else v for v in _ints(x[3])]
    begin, end = [0] * rank, [0] * rank
    n = len(axes)
    for i, axis in enumerate(axes):
        begin[axis], end[axis] = pads[i], pads[n + i]
    if mode == "constant":
        return F.pad(t, _torch_pad(begin, end), value=value)
    first = next((i for i in range(rank) if begin[i] or end[i]), rank)
    if first < 2 or rank - first > 3 or any(p < 0 for p in begin + end):
        _unsupported(node, f"Pad mode={mode} on the batch or channel axis, or cropping")
    return F.pad(t, _torch_pad(begin[2:], end[2:]), mode=_PAD_MODES[mode])


def _pool_sizes(t, kernel, strides, begin, end, ceil) -> list[int]:
    """ONNX output sizes; a ceil_mode window starting in the end padding is dropped."""
    sizes = []
    for n, b, e, k, s in zip(t.shape[2:], begin, end, kernel, strides):
        span = n + b + e - k
        size = (-(-span // s) if ceil else span // s) + 1
        sizes.append(size - 1 if ceil and (size - 1) * s >= n + b else size)
    return sizes


def _lp_pool(node, x):
    t, a = x[0], node.attrs
    rank = t.dim() - 2
    kernel, p = list(a["kernel_shape"]), float(a.get("p", 2))
    strides = list(a.get("strides", [1] * rank))
    if any(d != 1 for d in a.get("dilations", [1] * rank)):
        _unsupported(node, "LpPool with dilations")
    pads = _spatial_pads(node, rank, t.shape[2:], kernel, strides, [1] * rank)
    begin, end = pads[:rank], pads[rank:]
    sizes = _pool_sizes(t, kernel, strides, begin, end, bool(a.get("ceil_mode", 0)))
    # Zeros to the last window's end, so every window is whole: sum = mean x window area.
    end = [
        max(e, (m - 1) * s + k - n - b)
        for m, s, k, n, b, e in zip(sizes, strides, kernel, t.shape[2:], begin, end)
    ]
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[rank - 1]
    area = float(torch.tensor(kernel).prod())
    mean = pool(F.pad(t.abs().pow(p), _torch_pad(begin, end)), kernel, strides, 0)
    out = (mean * area).pow(1.0 / p)
    return out[(slice(None), slice(None), *(slice(0, m) for m in sizes))]


def _global_lp_pool(node, x):
    p = float(node.attrs.get("p", 2))
    dims = tuple(range(2, x[0].dim()))
    return x[0].abs().pow(p).sum(dim=dims, keepdim=True).pow(1.0 / p)


def _lp_normalization(node, x):
    t = x[0]
    axis = node.attrs.get("axis", -1)
    return t / t.norm(p=int(node.attrs.get("p", 2)), dim=axis, keepdim=True)


def _lrn(node, x):
    t, a = x[0], node.attrs
    size = int(a["size"])
    front, back = (size - 1) // 2, size - 1 - (size - 1) // 2  # ONNX: the extra one at the back
    square = F.pad(t * t, [0, 0] * (t.dim() - 2) + [front, back])
    channels = t.shape[1]
    total = sum(square[:, i : i + channels] for i in range(size))
    scale = a.get("bias", 1.0) + a.get("alpha", 1e-4) / size * total
    return t / scale.pow(a.get("beta", 0.75))


def _group_norm(node, x):
    t, scale, bias = _align(x[0], x[1], x[2])
    groups, eps = int(node.attrs["num_groups"]), node.attrs.get("epsilon", 1e-5)
    if node.opset < 21 and scale.numel() == groups and groups != t.shape[1]:
        # opset 18 scales and shifts per group: spread them over the group's channels
        scale = scale.repeat_interleave(t.shape[1] // groups)
        bias = bias.repeat_interleave(t.shape[1] // groups)
    return F.group_norm(t, groups, scale, bias, eps)


NN_OPS: dict[str, Callable] = {
    "LpPool": _lp_pool,
    "GlobalLpPool": _global_lp_pool,
    "LpNormalization": _lp_normalization,
    "LRN": _lrn,
    "GroupNormalization": _group_norm,
    "AveragePool": _average_pool,
    "ConvTranspose": _conv_transpose,
    "InstanceNormalization": _instance_norm,
    "Pad": _pad,
}
