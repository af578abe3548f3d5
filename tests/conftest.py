"""Shared fixtures: tiny random-weight models written to disk in the real formats, offline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

from mimicache.testing.models import tiny_checkpoint_state, write_base_model


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """(base model folder, checkpoint path) of the tiny SVD + MimicMotion weights."""
    root = tmp_path_factory.mktemp("tiny-models")
    base = write_base_model(root / "svd-tiny")
    ckpt = root / "MimicMotion_tiny.pth"
    torch.save(tiny_checkpoint_state(), ckpt)
    return base, ckpt


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_base):
    from mimicache.pipeline.weights import load_pipeline

    base, ckpt = tiny_base
    return load_pipeline(base, ckpt, dtype=torch.float32, device="cpu")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """The whole tiny bundle (SVD folder, checkpoint, DWPose ONNX models)."""
    from mimicache.testing.models import write_tiny_bundle

    return write_tiny_bundle(tmp_path_factory.mktemp("tiny-bundle"))


from tests.ray_fixtures import ray_cluster  # noqa: E402, F401  (a session-wide Ray cluster)
from tests.s3_fixtures import s3_server  # noqa: E402, F401  (the Ray cluster's environment)
