"""DWPose inference backends: one ONNX file run by ONNX Runtime or by PyTorch, same interface.

``open_model(path, backend, device)`` → a model with ``inputs`` / ``outputs`` (name, shape, type),
``providers`` (what executes it), ``batch_dynamic`` and ``run(x)``: float32 numpy (N, 3, H, W) →
list of float32 numpy outputs (N, ...). ``resolve_backend("auto", device)`` picks ONNX Runtime
when it has a provider for the device, otherwise torch (which runs on any torch device); then a
file with operators torch lacks still runs, on ONNX Runtime (``open_model(..., fallback=True)``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mimicache.config import DWPOSE_HF_REPO
from mimicache.errors import ConfigError, ModelLoadError, setting

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "torch")

__all__ = ["BACKENDS", "OrtModel", "TorchModel", "open_model", "resolve_backend"]


def _ort_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def ort_has_device(device: str) -> bool:
    """Whether this ONNX Runtime can run on ``device`` ('cpu', 'cuda', 'cuda:N', ...)."""
    dev = str(device)
    if dev == "cpu":
        return True
    return dev.split(":", 1)[0] == "cuda" and "CUDAExecutionProvider" in _ort_providers()


def resolve_backend(backend: str, device: str) -> str:
    """'auto' → 'onnxruntime' when it has the device's provider, else 'torch'; names checked."""
    if backend not in BACKENDS:
        raise ConfigError(
            f"unknown DWPose backend ({setting('dwpose_backend', backend)}): use one of "
            f"{', '.join(BACKENDS)} (dwpose.backend in the config)"
        )
    if backend != "auto":
        return backend
    if ort_has_device(device):
        return "onnxruntime"
    logger.info("DWPose runs on PyTorch: ONNX Runtime has no provider for device '%s'", device)
    return "torch"


def _providers_for(device: str) -> list:
    dev = str(device)
    if dev.startswith("cuda"):
        if "CUDAExecutionProvider" not in _ort_providers():
            raise ModelLoadError(
                f"device '{dev}' was asked for DWPose but this onnxruntime has no "
                f"CUDAExecutionProvider (available: {', '.join(_ort_providers())}). Install "
                f"onnxruntime-gpu (pip install 'mimicache[gpu]'), use "
                f"{setting('dwpose_backend', 'torch')}, "
                "or run DWPose with device 'cpu'."
            )
        device_id = int(dev.split(":", 1)[1]) if ":" in dev else 0
        return [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
    if dev != "cpu":
        raise ModelLoadError(
            f"DWPose device '{dev}' is not one ONNX Runtime runs on ('cpu' or 'cuda[:N]'); "
            f"use {setting('dwpose_backend', 'torch')} (or auto) for other torch devices."
        )
    return ["CPUExecutionProvider"]


class OrtModel:
    """One ONNX file in an ONNX Runtime session (the reference backend)."""

    backend = "onnxruntime"

    def __init__(self, path: Path, device: str) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        # On the CPU the thread count splits the float sums, so it is set (torch's count, which
        # --threads sets) and recorded for the cache key rather than left to ONNX Runtime.
        self.threads: int | None = None
        if not str(device).startswith("cuda"):
            import torch

            self.threads = torch.get_num_threads()
            options.intra_op_num_threads = self.threads
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=_providers_for(device)
            )
        except Exception as exc:  # onnxruntime raises several private exception types
            raise ModelLoadError(
                f"cannot load DWPose ONNX model {path}: {exc}. The file is damaged or not an ONNX "
                f"model; download it again from https://huggingface.co/{DWPOSE_HF_REPO}."
            ) from exc
        self.inputs = self.session.get_inputs()
        self.outputs = self.session.get_outputs()
        self.providers: list[str] = list(self.session.get_providers())
        batch = self.inputs[0].shape[0] if self.inputs and self.inputs[0].shape else None
        self.batch_dynamic = not isinstance(batch, int) or batch <= 0

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.inputs[0].name: x})


class TorchModel:
    """One ONNX file run by PyTorch (float32) on any torch device; always batches."""

    backend = "torch"
    batch_dynamic = True

    def __init__(self, path: Path, device: str) -> None:
        import torch

        from mimicache.pose.onnx_torch import OnnxTorchModule

        try:
            torch_device = torch.device(device)
            torch.empty(0, device=torch_device)
        except (RuntimeError, AssertionError) as exc:
            hint = ""
            if str(device).startswith("cuda") and not ort_has_device(device):
                hint = (
                    " ONNX Runtime cannot either: it has no CUDAExecutionProvider (install "
                    "onnxruntime-gpu: pip install 'mimicache[gpu]')."
                )
            raise ModelLoadError(
                f"torch cannot use device '{device}' for DWPose: {exc}.{hint} Pick a device "
                "this torch build supports (cpu, cuda[:N], mps, ...) or run DWPose on 'cpu'."
            ) from exc
        self.module = OnnxTorchModule(path).to(torch_device).eval()
        self.inputs = self.module.inputs
        self.outputs = self.module.outputs
        self.providers = [f"torch:{torch_device.type}"]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return self.module.run_numpy(x)


def open_model(
    path: Path, backend: str, device: str, *, fallback: bool = False
) -> OrtModel | TorchModel:
    """Open ``path`` with a resolved backend name ('onnxruntime' or 'torch').

    ``fallback`` (the backend was chosen by 'auto'): a file with operators the torch backend
    lacks runs on ONNX Runtime instead (on ``device`` when it has a provider for it, else the
    CPU), with one warning naming the operators and the file.
    """
    if backend == "onnxruntime":
        return OrtModel(path, device)
    if backend != "torch":
        raise ConfigError(f"unresolved DWPose backend '{backend}'")
    from mimicache.pose.onnx_ops import UnsupportedOnnxOp

    try:
        return TorchModel(path, device)
    except UnsupportedOnnxOp as exc:
        if not fallback or not exc.ops:
            raise
        ort_device = device if ort_has_device(device) else "cpu"
        logger.warning(
            "DWPose model %s uses ONNX operator(s) %s that the torch backend lacks; running it "
            "on ONNX Runtime (%s) instead (%s)",
            path,
            ", ".join(exc.ops),
            ort_device,
            setting("dwpose_backend", "auto"),
        )
        return OrtModel(path, ort_device)
