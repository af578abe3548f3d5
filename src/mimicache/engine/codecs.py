"""How the stages' values become named tensors and back, losslessly: drawn pose frames
(zstd), the drawn frames' entry (frames, who was seen, the poses drawn), JSON as bytes."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import zstandard

from mimicache.pose import PeopleReport, PoseSequence
from mimicache.pose.preprocess import DrawnPose

__all__ = [
    "json_tensor",
    "pack_drawn",
    "pack_frames",
    "tensor_json",
    "unpack_drawn",
    "unpack_frames",
]


def pack_frames(frames: np.ndarray) -> dict[str, torch.Tensor]:
    """uint8 frames -> zstd bytes + shape. Drawn poses are mostly black, so they shrink ~50x
    and decompress far faster than they draw."""
    frames = np.ascontiguousarray(frames)
    packed = zstandard.ZstdCompressor(level=3, threads=-1).compress(frames.tobytes())
    return {
        "zstd": torch.frombuffer(bytearray(packed), dtype=torch.uint8),
        "shape": torch.tensor(frames.shape, dtype=torch.int64),
    }


def unpack_frames(tensors: Mapping[str, torch.Tensor]) -> np.ndarray:
    shape = tuple(int(x) for x in tensors["shape"].tolist())
    frames = np.empty(shape, dtype=np.uint8)
    view = memoryview(frames).cast("B")
    filled = 0
    with zstandard.ZstdDecompressor().stream_reader(tensors["zstd"].numpy().tobytes()) as reader:
        while filled < frames.nbytes and (count := reader.readinto(view[filled:])):
            filled += count
    if filled != frames.nbytes:
        raise ValueError(f"pose frames entry holds {filled} bytes, expected {frames.nbytes}")
    return frames


PEOPLE = "people"  # the pose frames entry's report of who was seen
TARGETS = "targets."  # the prefix of the poses it drew (a PoseSequence's tensors)


def json_tensor(value: Any) -> torch.Tensor:
    """``value`` as UTF-8 JSON bytes, uint8 (a tensor an entry can hold)."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return torch.frombuffer(bytearray(text), dtype=torch.uint8)


def tensor_json(tensor: torch.Tensor) -> Any:
    """The value ``json_tensor`` made."""
    return json.loads(tensor.numpy().tobytes().decode("utf-8"))


def pack_drawn(drawn: DrawnPose) -> dict[str, torch.Tensor]:
    """The drawn frames (``pack_frames``), who was seen (JSON bytes) and the poses drawn."""
    tensors = pack_frames(drawn.frames)
    if drawn.people is not None:
        tensors[PEOPLE] = json_tensor(dataclasses.asdict(drawn.people))
    if drawn.targets is not None:
        tensors.update({TARGETS + k: v for k, v in drawn.targets.to_tensors().items()})
    return tensors


def unpack_drawn(tensors: Mapping[str, torch.Tensor]) -> DrawnPose:
    stored = tensors.get(PEOPLE)
    people = PeopleReport(**tensor_json(stored)) if stored is not None else None
    targets = {k.removeprefix(TARGETS): v for k, v in tensors.items() if k.startswith(TARGETS)}
    poses = PoseSequence.from_tensors(targets) if targets else None
    return DrawnPose(unpack_frames(tensors), people, poses)
