"""Pose values: one frame's people (:class:`PoseFrame`) and a sequence that packs into tensors.

Layout (N people, coordinates normalised to [0, 1] by the frame width/height, float64 as the
published DWPose code produces them):

- ``candidate`` (N*18, 2) body points in OpenPose order, person ``i`` at rows ``18*i .. 18*i+17``
- ``subset`` (N, 18) float, ``18*i + j`` where the body score is > 0.3, else -1
- ``body_score`` (N, 18), ``faces`` (N, 68, 2), ``faces_score`` (N, 68)
- ``hands`` (2N, 21, 2) all left hands then all right hands, ``hands_score`` (2N, 21)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["PoseFrame", "PoseSequence"]

_F64 = np.float64


def _arr(value, shape_tail: tuple[int, ...]) -> np.ndarray:
    out = np.asarray(value, dtype=_F64)
    if out.size == 0:
        out = out.reshape((0, *shape_tail))
    if out.shape[1:] != shape_tail:
        raise ValueError(f"pose array of shape {out.shape} does not end with {shape_tail}")
    return out


@dataclass(eq=False)
class PoseFrame:
    """One frame's people in the published DWPose layout (see module docstring)."""

    candidate: np.ndarray
    subset: np.ndarray
    body_score: np.ndarray
    faces: np.ndarray
    faces_score: np.ndarray
    hands: np.ndarray
    hands_score: np.ndarray

    def __post_init__(self) -> None:
        self.candidate = _arr(self.candidate, (2,))
        self.subset = _arr(self.subset, (18,))
        self.body_score = _arr(self.body_score, (18,))
        self.faces = _arr(self.faces, (68, 2))
        self.faces_score = _arr(self.faces_score, (68,))
        self.hands = _arr(self.hands, (21, 2))
        self.hands_score = _arr(self.hands_score, (21,))
        n = self.subset.shape[0]
        shapes = {
            "candidate": (self.candidate.shape[0], n * 18),
            "body_score": (self.body_score.shape[0], n),
            "faces": (self.faces.shape[0], n),
            "faces_score": (self.faces_score.shape[0], n),
            "hands": (self.hands.shape[0], 2 * n),
            "hands_score": (self.hands_score.shape[0], 2 * n),
        }
        for name, (got, want) in shapes.items():
            if got != want:
                raise ValueError(f"PoseFrame.{name} has {got} rows, expected {want} for {n} people")

    @property
    def num_people(self) -> int:
        return int(self.subset.shape[0])

    @classmethod
    def empty(cls) -> PoseFrame:
        return cls(*(np.zeros(0) for _ in range(7)))

    def to_dict(self) -> dict:
        """The published dict layout (copies): ``{'bodies': {'candidate','subset','score'}, ...}``."""
        return {
            "bodies": {
                "candidate": self.candidate.copy(),
                "subset": self.subset.copy(),
                "score": self.body_score.copy(),
            },
            "hands": self.hands.copy(),
            "hands_score": self.hands_score.copy(),
            "faces": self.faces.copy(),
            "faces_score": self.faces_score.copy(),
        }

    @classmethod
    def from_dict(cls, pose: Mapping) -> PoseFrame:
        bodies = pose["bodies"]
        return cls(
            candidate=bodies["candidate"],
            subset=bodies["subset"],
            body_score=bodies["score"],
            faces=pose["faces"],
            faces_score=pose["faces_score"],
            hands=pose["hands"],
            hands_score=pose["hands_score"],
        )

    def equals(self, other: PoseFrame) -> bool:
        """Bit-exact equality of every array (NaN-aware)."""
        return all(
            a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
            for a, b in zip(self._arrays(), other._arrays())
        )

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (
            self.candidate,
            self.subset,
            self.body_score,
            self.faces,
            self.faces_score,
            self.hands,
            self.hands_score,
        )


def _scores_dtype(*arrays: np.ndarray) -> type:
    """float32 when every score is exactly a float32 value (DWPose scores are), else float64."""
    for a in arrays:
        if not np.array_equal(a.astype(np.float32).astype(_F64), a, equal_nan=True):
            return _F64
    return np.float32


@dataclass
class PoseSequence:
    """Poses of consecutive frames; the person count may vary from frame to frame.

    ``to_tensors`` packs every frame into flat concatenated tensors plus per-frame person
    counts. Coordinates stay float64 (the published code computes them in float64, so rounding
    them would change drawn poses); scores are stored as float32 when that is lossless (always
    for DWPose output). The round trip is bit-exact.
    """

    frames: list[PoseFrame] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[PoseFrame]:
        return iter(self.frames)

    def __getitem__(self, index: int) -> PoseFrame:
        return self.frames[index]

    def to_tensors(self) -> dict[str, torch.Tensor]:
        frames: Sequence[PoseFrame] = self.frames
        counts = np.array([f.num_people for f in frames], dtype=np.int64)

        def cat(name: str, tail: tuple[int, ...]) -> np.ndarray:
            parts = [getattr(f, name) for f in frames]
            if not parts:
                return np.zeros((0, *tail))
            return np.concatenate(parts, axis=0)

        subset = cat("subset", (18,))
        if not np.array_equal(subset, np.round(subset)):
            raise ValueError("PoseFrame.subset must hold whole numbers (indices or -1)")
        body_score = cat("body_score", (18,))
        faces_score = cat("faces_score", (68,))
        hands_score = cat("hands_score", (21,))
        sdt = _scores_dtype(body_score, faces_score, hands_score)
        out = {
            "counts": counts,
            "candidate": cat("candidate", (2,)),
            "subset": subset.astype(np.int32),
            "body_score": body_score.astype(sdt),
            "faces": cat("faces", (68, 2)),
            "faces_score": faces_score.astype(sdt),
            "hands": cat("hands", (21, 2)),
            "hands_score": hands_score.astype(sdt),
        }
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor]) -> PoseSequence:
        # float64 once for the whole sequence: each frame then takes views, not copies
        arr = {
            k: v.detach().cpu().numpy().astype(_F64, copy=False)
            for k, v in tensors.items()
            if k != "counts"
        }
        counts = tensors["counts"].detach().cpu().numpy().astype(np.int64)
        frames: list[PoseFrame] = []
        start = 0
        for n in counts.tolist():
            stop = start + n
            frames.append(
                PoseFrame(
                    candidate=arr["candidate"][18 * start : 18 * stop],
                    subset=arr["subset"][start:stop],
                    body_score=arr["body_score"][start:stop],
                    faces=arr["faces"][start:stop],
                    faces_score=arr["faces_score"][start:stop],
                    hands=arr["hands"][2 * start : 2 * stop],
                    hands_score=arr["hands_score"][2 * start : 2 * stop],
                )
            )
            start = stop
        total = int(counts.sum())
        if arr["subset"].shape[0] != total or arr["candidate"].shape[0] != 18 * total:
            raise ValueError("pose tensors do not match their per-frame person counts")
        return cls(frames)
