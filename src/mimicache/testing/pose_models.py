"""Real-architecture DWPose stand-ins with random weights, exported to ONNX by PyTorch.

``write_yolox_onnx(path)``: YOLOX-L (Focus stem, CSPDarknet, SPP, PAFPN, decoupled head) with
input ``images`` (1, 3, 640, 640) float raw 0-255 → ``output`` (1, 8400, 85) undecoded
(box offsets, sigmoid objectness, 80 sigmoid class scores), as the published ``yolox_l.onnx``.
``write_rtmpose_onnx(path)``: RTMPose-l whole-body (CSPNeXt with channel attention, SPPF-style
pooling, RTMCC head: 7x7 conv, ScaleNorm MLP, one GAU block, SimCC classifiers) with input
``input`` (1, 3, 384, 288) float normalised → ``simcc_x`` (1, 133, 576), ``simcc_y``
(1, 133, 768), as the published ``dw-ll_ucoco_384.onnx``.

``width`` and ``depth`` scale channels and block counts as the published configs do
(1.0 / 1.0 is the real YOLOX-L / RTMPose-l size; tests use reduced widths for speed). Both are
exported with the TorchScript exporter at opset 11 (as the published files were, so BatchNorm
is folded into the convolutions and attribute-style Split/Squeeze/Unsqueeze/Reduce appear).
Weights are seeded, so a given (width, depth, seed) always writes the same graph. The output
layers are then scaled on a synthetic figure frame so the outputs have a trained model's ranges
(finite boxes, a handful of person detections per frame, SimCC peaks around 0.4): the
post-processing sees boxes, crops and keypoints on both sides of its thresholds.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
from torch import nn

__all__ = ["build_rtmpose", "build_yolox", "write_rtmpose_onnx", "write_yolox_onnx"]

OPSET = 11


def _cba(cin: int, cout: int, k: int, s: int = 1, groups: int = 1, eps: float = 1e-3):
    """Conv (no bias) + BatchNorm + SiLU: YOLOX's BaseConv and mmcv's ConvModule."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=eps),
        nn.SiLU(),
    )


# ----------------------------------------------------------------------------- YOLOX-L


class _Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool) -> None:
        super().__init__()
        self.conv1, self.conv2, self.shortcut = _cba(c, c, 1), _cba(c, c, 3), shortcut

    def forward(self, x):
        y = self.conv2(self.conv1(x))
        return y + x if self.shortcut else y


class _CSPLayer(nn.Module):
    """YOLOX CSP block: two 1x1 branches, bottlenecks on one, concat, 1x1."""

    def __init__(self, cin: int, cout: int, n: int, shortcut: bool = True) -> None:
        super().__init__()
        h = cout // 2
        self.conv1, self.conv2, self.conv3 = _cba(cin, h, 1), _cba(cin, h, 1), _cba(2 * h, cout, 1)
        self.m = nn.Sequential(*[_Bottleneck(h, shortcut) for _ in range(n)])

    def forward(self, x):
        return self.conv3(torch.cat([self.m(self.conv1(x)), self.conv2(x)], 1))


class _SPP(nn.Module):
    def __init__(self, cin: int, cout: int, kernels=(5, 9, 13), eps: float = 1e-3) -> None:
        super().__init__()
        h = cin // 2
        self.conv1 = _cba(cin, h, 1, eps=eps)
        self.pools = nn.ModuleList([nn.MaxPool2d(k, 1, k // 2) for k in kernels])
        self.conv2 = _cba(h * (len(kernels) + 1), cout, 1, eps=eps)

    def forward(self, x):
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [p(x) for p in self.pools], 1))


class _YoloX(nn.Module):
    def __init__(self, width: float, depth: float, num_classes: int = 80) -> None:
        super().__init__()
        c = int(64 * width)
        n = max(round(3 * depth), 1)
        self.stem = _cba(12, c, 3)  # after the Focus space-to-depth
        self.dark2 = nn.Sequential(_cba(c, 2 * c, 3, 2), _CSPLayer(2 * c, 2 * c, n))
        self.dark3 = nn.Sequential(_cba(2 * c, 4 * c, 3, 2), _CSPLayer(4 * c, 4 * c, 3 * n))
        self.dark4 = nn.Sequential(_cba(4 * c, 8 * c, 3, 2), _CSPLayer(8 * c, 8 * c, 3 * n))
        self.dark5 = nn.Sequential(
            _cba(8 * c, 16 * c, 3, 2), _SPP(16 * c, 16 * c), _CSPLayer(16 * c, 16 * c, n, False)
        )
        c3, c4, c5 = 4 * c, 8 * c, 16 * c
        self.lateral_conv0 = _cba(c5, c4, 1)
        self.c3_p4 = _CSPLayer(2 * c4, c4, n, False)
        self.reduce_conv1 = _cba(c4, c3, 1)
        self.c3_p3 = _CSPLayer(2 * c3, c3, n, False)
        self.bu_conv2 = _cba(c3, c3, 3, 2)
        self.c3_n3 = _CSPLayer(2 * c3, c4, n, False)
        self.bu_conv1 = _cba(c4, c4, 3, 2)
        self.c3_n4 = _CSPLayer(2 * c4, c5, n, False)
        hid = int(256 * width)
        self.stems = nn.ModuleList([_cba(ch, hid, 1) for ch in (c3, c4, c5)])
        self.cls_convs = nn.ModuleList(
            [nn.Sequential(_cba(hid, hid, 3), _cba(hid, hid, 3)) for _ in range(3)]
        )
        self.reg_convs = nn.ModuleList(
            [nn.Sequential(_cba(hid, hid, 3), _cba(hid, hid, 3)) for _ in range(3)]
        )
        self.cls_preds = nn.ModuleList([nn.Conv2d(hid, num_classes, 1) for _ in range(3)])
        self.reg_preds = nn.ModuleList([nn.Conv2d(hid, 4, 1) for _ in range(3)])
        self.obj_preds = nn.ModuleList([nn.Conv2d(hid, 1, 1) for _ in range(3)])

    def forward(self, x):
        # Focus: space-to-depth by strided slicing (top-left, bottom-left, top-right, bottom-right)
        x = torch.cat(
            [x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1
        )
        x = self.dark2(self.stem(x))
        x2 = self.dark3(x)
        x1 = self.dark4(x2)
        x0 = self.dark5(x1)
        up = nn.functional.interpolate
        fpn0 = self.lateral_conv0(x0)
        f0 = self.c3_p4(torch.cat([up(fpn0, scale_factor=2.0, mode="nearest"), x1], 1))
        fpn1 = self.reduce_conv1(f0)
        pan2 = self.c3_p3(torch.cat([up(fpn1, scale_factor=2.0, mode="nearest"), x2], 1))
        pan1 = self.c3_n3(torch.cat([self.bu_conv2(pan2), fpn1], 1))
        pan0 = self.c3_n4(torch.cat([self.bu_conv1(pan1), fpn0], 1))
        outs = []
        for k, feat in enumerate((pan2, pan1, pan0)):
            feat = self.stems[k](feat)
            cls_feat, reg_feat = self.cls_convs[k](feat), self.reg_convs[k](feat)
            out = torch.cat(
                [
                    self.reg_preds[k](reg_feat),
                    self.obj_preds[k](reg_feat).sigmoid(),
                    self.cls_preds[k](cls_feat).sigmoid(),
                ],
                1,
            )
            outs.append(out.flatten(start_dim=2))
        return torch.cat(outs, 2).permute(0, 2, 1)


# ----------------------------------------------------------------------------- RTMPose-l


class _ChannelAttention(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x * nn.functional.hardsigmoid(self.fc(nn.functional.adaptive_avg_pool2d(x, 1)))


class _CSPNeXtBlock(nn.Module):
    def __init__(self, c: int, identity: bool) -> None:
        super().__init__()
        self.conv1 = _cba(c, c, 3, eps=1e-5)
        self.dw = _cba(c, c, 5, groups=c, eps=1e-5)  # depthwise-separable: depthwise 5x5 ...
        self.pw = _cba(c, c, 1, eps=1e-5)  # ... then pointwise 1x1
        self.identity = identity

    def forward(self, x):
        y = self.pw(self.dw(self.conv1(x)))
        return y + x if self.identity else y


class _CSPNeXtLayer(nn.Module):
    def __init__(self, c: int, n: int, identity: bool) -> None:
        super().__init__()
        h = c // 2
        self.main_conv, self.short_conv = _cba(c, h, 1, eps=1e-5), _cba(c, h, 1, eps=1e-5)
        self.blocks = nn.Sequential(*[_CSPNeXtBlock(h, identity) for _ in range(n)])
        self.attention = _ChannelAttention(2 * h)
        self.final_conv = _cba(2 * h, c, 1, eps=1e-5)

    def forward(self, x):
        y = torch.cat([self.blocks(self.main_conv(x)), self.short_conv(x)], 1)
        return self.final_conv(self.attention(y))


class _SPPF(nn.Module):
    """mmdet SPPBottleneck with one 5x5 max pool applied three times in a chain."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = _cba(c, c // 2, 1, eps=1e-5), _cba(c * 2, c, 1, eps=1e-5)
        self.pool = nn.MaxPool2d(5, 1, 2)

    def forward(self, x):
        x = self.conv1(x)
        y1 = self.pool(x)
        y2 = self.pool(y1)
        return self.conv2(torch.cat([x, y1, y2, self.pool(y2)], 1))


class _ScaleNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.scale, self.eps = dim**-0.5, eps
        self.g = nn.Parameter(torch.ones(1))

    def forward(self, x):
        norm = (torch.norm(x, dim=-1, keepdim=True) * self.scale).clamp(min=self.eps)
        return x / norm * self.g


class _GAU(nn.Module):
    """Gated attention unit of the RTMCC head (self-attention, SiLU, no relative bias)."""

    def __init__(self, dim: int, expansion: int = 2, s: int = 128) -> None:
        super().__init__()
        self.e, self.s = dim * expansion, s
        self.ln = _ScaleNorm(dim)
        self.uv = nn.Linear(dim, 2 * self.e + s, bias=False)
        self.gamma = nn.Parameter(torch.rand(2, s))
        self.beta = nn.Parameter(torch.rand(2, s))
        self.o = nn.Linear(self.e, dim, bias=False)
        self.res_scale = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        uv = nn.functional.silu(self.uv(self.ln(x)))
        u, v, base = torch.split(uv, [self.e, self.e, self.s], dim=2)
        base = base.unsqueeze(2) * self.gamma[None, None, :] + self.beta
        q, k = torch.unbind(base, dim=2)
        kernel = torch.square(torch.relu(torch.bmm(q, k.permute(0, 2, 1)) / math.sqrt(self.s)))
        return x * self.res_scale + self.o(u * torch.bmm(kernel, v))


class _RTMPose(nn.Module):
    def __init__(self, width: float, depth: float, keypoints: int = 133) -> None:
        super().__init__()
        c0 = int(64 * width)
        self.stem = nn.Sequential(
            _cba(3, c0 // 2, 3, 2, eps=1e-5), _cba(c0 // 2, c0 // 2, 3, eps=1e-5),
            _cba(c0 // 2, c0, 3, eps=1e-5),
        )  # fmt: skip
        stages, cin = [], c0
        # (channels, blocks, identity shortcut, SPP) per stage at width and depth 1
        arch = ((128, 3, True, False), (256, 6, True, False), (512, 6, True, False),
                (1024, 3, False, True))  # fmt: skip
        for cout, blocks, identity, spp in arch:
            cout = int(cout * width)
            layers = [_cba(cin, cout, 3, 2, eps=1e-5)]
            if spp:
                layers.append(_SPPF(cout))
            layers.append(_CSPNeXtLayer(cout, max(round(blocks * depth), 1), identity))
            stages.append(nn.Sequential(*layers))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.final_layer = nn.Conv2d(cin, keypoints, 7, 1, 3)
        tokens = (384 // 32) * (288 // 32)
        self.mlp_norm = _ScaleNorm(tokens)
        self.mlp = nn.Linear(tokens, 256, bias=False)
        self.gau = _GAU(256)
        self.cls_x = nn.Linear(256, 288 * 2, bias=False)
        self.cls_y = nn.Linear(256, 384 * 2, bias=False)

    def forward(self, x):
        feats = self.final_layer(self.stages(self.stem(x))).flatten(2)
        feats = self.gau(self.mlp(self.mlp_norm(feats)))
        return self.cls_x(feats), self.cls_y(feats)


# ----------------------------------------------------------------------------- export


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    """He-scaled convolutions and non-trivial BatchNorm statistics, so features stay alive."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (1.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            elif isinstance(m, nn.Linear):
                fan_in = m.weight.shape[1]
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (1.0 / fan_in) ** 0.5)
    return model.eval()


def build_yolox(width: float = 1.0, depth: float = 1.0, *, seed: int = 0) -> nn.Module:
    """YOLOX-L at ``width`` / ``depth`` (1.0 each: the published size), random weights."""
    torch.manual_seed(seed)
    model = _randomise(_YoloX(width, depth), seed)
    _calibrate_head(model)
    return model


def _calibrate_head(model: _YoloX) -> None:
    """Scale the prediction convs to unit-size outputs on a figure frame, as a trained head's are:
    box offsets of std 0.5 (finite boxes), objectness and class logits of std 1 with a low
    objectness prior and a person-class prior, so only a few anchors per frame pass as people."""
    from mimicache.pose.dwpose import letterbox
    from mimicache.testing.tiny_dwpose import make_figure_frame

    convs = [*model.reg_preds, *model.obj_preds, *model.cls_preds]
    seen: dict[int, torch.Tensor] = {}
    hooks = [
        c.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, o))
        for k, c in enumerate(convs)
    ]
    blob, _ = letterbox(make_figure_frame(360, 640, 0.5))
    with torch.no_grad():
        model(torch.from_numpy(blob[None]))
        for k, conv in enumerate(convs):
            raw = seen[k] - conv.bias[None, :, None, None]
            scale = (0.5 if k < 3 else 1.0) / max(float(raw.std()), 1e-12)
            conv.weight.mul_(scale)
            conv.bias.zero_()
            seen[k] = raw * scale
        # objectness: on the calibration frame the 3rd strongest anchor scores 0.7, the 12th 0.1
        top = torch.cat([seen[k].flatten() for k in (3, 4, 5)]).topk(12).values
        gain = (math.log(0.7 / 0.3) - math.log(0.1 / 0.9)) / float(top[2] - top[11])
        for conv in model.obj_preds:
            conv.weight.mul_(gain)
            conv.bias.fill_(math.log(0.7 / 0.3) - gain * float(top[2]))
        for conv in model.cls_preds:
            conv.bias[0] = 1.0
    for hook in hooks:
        hook.remove()


def build_rtmpose(width: float = 1.0, depth: float = 1.0, *, seed: int = 0) -> nn.Module:
    """RTMPose-l whole-body (384x288) at ``width`` / ``depth``, random weights."""
    torch.manual_seed(seed)
    model = _randomise(_RTMPose(width, depth), seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # scale the classifiers so peaks are ~0.4, as a trained model's are
        peaks = torch.cat([s.amax(-1) for s in model(torch.randn(2, 3, 384, 288, generator=gen))])
        factor = 0.4 / float(peaks.mean())
        model.cls_x.weight.mul_(factor)
        model.cls_y.weight.mul_(factor)
    return model


def _export(model: nn.Module, shape: tuple, path: Path, inp: str, outs: list[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".onnx.tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model, torch.zeros(shape), str(tmp), input_names=[inp], output_names=outs,
            opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )  # fmt: skip
    tmp.replace(path)
    return path


def write_yolox_onnx(
    path: str | Path, *, width: float = 1.0, depth: float = 1.0, seed: int = 0
) -> Path:
    """Export the YOLOX-L stand-in to ``path`` (batch fixed to 1, as published)."""
    return _export(
        build_yolox(width, depth, seed=seed), (1, 3, 640, 640), Path(path), "images", ["output"]
    )


def write_rtmpose_onnx(
    path: str | Path, *, width: float = 1.0, depth: float = 1.0, seed: int = 0
) -> Path:
    """Export the RTMPose-l whole-body stand-in to ``path`` (batch fixed to 1, as published)."""
    return _export(
        build_rtmpose(width, depth, seed=seed),
        (1, 3, 384, 288),
        Path(path),
        "input",
        ["simcc_x", "simcc_y"],
    )
