"""An ONNX graph run by PyTorch: initialisers as buffers, nodes executed in order by op handlers.

``OnnxTorchModule(path)`` loads one ONNX file; ``module(x)`` takes the graph's single input as a
float32 tensor (N, ...) on the module's device and returns the graph outputs as a list of
tensors (N, ...). A graph exported with a fixed batch of 1 (as the published DWPose files are)
runs as written for one sample and is vectorised over N by ``torch.vmap``, so shapes folded
into the graph (``Reshape`` to [1, ...], ``Concat`` with [1, ...] constants) stay right.
Unsupported operators are reported when the file is loaded, naming the operator and the file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mimicache.errors import ModelLoadError, setting
from mimicache.pose.onnx_ops import OPS as BASE_OPS
from mimicache.pose.onnx_ops import UnsupportedOnnxOp
from mimicache.pose.onnx_ops_nn import NN_OPS

logger = logging.getLogger(__name__)

__all__ = ["OPS", "OnnxTorchModule", "ValueInfo", "unsupported_ops"]

OPS = {**BASE_OPS, **NN_OPS}  # every operator the torch backend runs


@dataclass(frozen=True)
class ValueInfo:
    """A graph input or output: name, dims (int, or str / None when dynamic), ONNX elem type."""

    name: str
    dims: tuple
    elem_type: int

    @property
    def type(self) -> str:  # ONNX Runtime's spelling, which the signature checks read
        return {1: "tensor(float)", 10: "tensor(float16)", 11: "tensor(double)"}.get(
            self.elem_type, f"tensor(type {self.elem_type})"
        )

    @property
    def shape(self) -> list:
        return list(self.dims)


@dataclass
class _Node:
    op_type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict
    opset: int
    free_after: list[str] = field(default_factory=list)


def _attr_value(attr):
    from onnx import helper, numpy_helper

    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if attr.type == attr.TENSOR:
        return torch.from_numpy(numpy_helper.to_array(value).copy())
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


def _value_info(vi) -> ValueInfo:
    t = vi.type.tensor_type
    dims = tuple(
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim
    )
    return ValueInfo(vi.name, dims, t.elem_type)


def _constant_node_value(node: _Node) -> torch.Tensor:
    a = node.attrs
    if "value" in a:
        return a["value"]
    for key, dtype in (
        ("value_float", torch.float32),
        ("value_floats", torch.float32),
        ("value_int", torch.int64),
        ("value_ints", torch.int64),
    ):
        if key in a:
            return torch.tensor(a[key], dtype=dtype)
    raise UnsupportedOnnxOp(f"Constant node '{node.name}' with attributes {sorted(a)}")


def unsupported_ops(nodes) -> list[str]:
    """Operator types in ``nodes`` that have no handler (Constant is folded at load)."""
    return sorted({n.op_type for n in nodes if n.op_type not in OPS and n.op_type != "Constant"})


class OnnxTorchModule(nn.Module):
    """One ONNX graph as a torch module (inference only)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        import onnx
        from onnx import numpy_helper

        self.path = Path(path)
        try:
            model = onnx.load(str(self.path))
        except Exception as exc:  # protobuf raises its own DecodeError types
            raise ModelLoadError(
                f"cannot read ONNX model {self.path}: {exc}. The file is damaged or not ONNX."
            ) from exc
        graph = model.graph
        opsets = {o.domain: o.version for o in model.opset_import}
        opset = opsets.get("", opsets.get("ai.onnx", 0))
        foreign = [n for n in graph.node if n.domain not in ("", "ai.onnx")]
        if foreign:
            domains = sorted({n.domain for n in foreign})
            raise UnsupportedOnnxOp(
                f"{self.path} uses operators from domain(s) {', '.join(domains)}, which the torch "
                f"DWPose backend does not run; use {setting('dwpose_backend', 'onnxruntime')} for this file.",
                ops=tuple(sorted({f"{n.domain}.{n.op_type}" for n in foreign})),
            )
        self.nodes = [
            _Node(
                n.op_type,
                n.name,
                list(n.input),
                list(n.output),
                {a.name: _attr_value(a) for a in n.attribute},
                opset,
            )
            for n in graph.node
        ]
        missing = unsupported_ops(self.nodes)
        if missing:
            raise UnsupportedOnnxOp(
                f"{self.path} uses ONNX operator(s) {', '.join(missing)} that the torch DWPose "
                f"backend does not implement; use {setting('dwpose_backend', 'onnxruntime')} for this file.",
                ops=tuple(missing),
            )
        self._host: dict[str, torch.Tensor] = {}  # integer / scalar constants stay on the CPU
        self._buffer_names: dict[str, str] = {}
        for init in graph.initializer:
            self._add_constant(init.name, torch.from_numpy(numpy_helper.to_array(init).copy()))
        for node in [n for n in self.nodes if n.op_type == "Constant"]:
            self._add_constant(node.outputs[0], _constant_node_value(node))
        self.nodes = [n for n in self.nodes if n.op_type != "Constant"]
        known = set(self._host) | set(self._buffer_names)
        self.inputs = [_value_info(v) for v in graph.input if v.name not in known]
        self.outputs = [_value_info(v) for v in graph.output]
        if len(self.inputs) != 1:
            raise ModelLoadError(
                f"{self.path} has {len(self.inputs)} inputs; the DWPose backends expect one image "
                "batch input."
            )
        self._plan_frees()
        batch = self.inputs[0].dims[0] if self.inputs[0].dims else None
        self.fixed_batch: int | None = batch if isinstance(batch, int) and batch > 0 else None

    def _add_constant(self, name: str, value: torch.Tensor) -> None:
        if value.is_floating_point() and value.dim() > 0:
            key = f"c{len(self._buffer_names)}"
            self.register_buffer(key, value, persistent=False)
            self._buffer_names[name] = key
        else:
            self._host[name] = value

    def _plan_frees(self) -> None:
        """Drop each intermediate after its last use, so big batches fit in memory."""
        keep = {o.name for o in self.outputs} | set(self._host) | set(self._buffer_names)
        last: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            for name in node.inputs:
                if name:
                    last[name] = i
        for name, i in last.items():
            if name not in keep:
                self.nodes[i].free_after.append(name)

    @property
    def device(self) -> torch.device:
        for buf in self.buffers():
            return buf.device
        return torch.device("cpu")

    def _run(self, x: torch.Tensor) -> list[torch.Tensor]:
        values: dict[str, torch.Tensor] = dict(self._host)
        for name, key in self._buffer_names.items():
            values[name] = getattr(self, key)
        values[self.inputs[0].name] = x
        for node in self.nodes:
            args = [values[name] if name else None for name in node.inputs]
            try:
                out = OPS[node.op_type](node, args)
            except UnsupportedOnnxOp as exc:
                raise UnsupportedOnnxOp(
                    f"{self.path}: {exc}; use {setting('dwpose_backend', 'onnxruntime')} for this file."
                ) from None
            except (RuntimeError, ValueError, IndexError, TypeError) as exc:
                shapes = [tuple(a.shape) if a is not None else None for a in args]
                raise RuntimeError(
                    f"{self.path}: {node.op_type} node '{node.name}' failed on inputs "
                    f"{shapes}: {exc}"
                ) from exc
            outs = out if isinstance(out, list | tuple) else [out]
            for name, value in zip(node.outputs, outs):
                if name:
                    values[name] = value
            for name in node.free_after:
                values.pop(name, None)
        return [values[o.name] for o in self.outputs]

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.fixed_batch is None or x.shape[0] == self.fixed_batch:
            return self._run(x)
        if self.fixed_batch != 1:
            raise ModelLoadError(
                f"{self.path} has a fixed batch of {self.fixed_batch}, got {x.shape[0]}; the "
                "torch backend runs graphs with a batch of 1 or a dynamic batch on any batch."
            )
        # The graph is written for one sample: run it as such, vectorised over the batch.
        per_sample = torch.vmap(lambda one: tuple(self._run(one)), in_dims=0, out_dims=0)
        outs = per_sample(x.unsqueeze(1))
        return [o.squeeze(1) for o in outs]

    def run_numpy(self, x: np.ndarray) -> list[np.ndarray]:
        """Float32 numpy batch in, numpy outputs (float32) back on the host."""
        tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        return [o.float().cpu().numpy() for o in self.forward(tensor)]
