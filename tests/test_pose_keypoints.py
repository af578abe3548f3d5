from __future__ import annotations

import numpy as np
import pytest
import torch

from mimicache.pose import PoseFrame, PoseSequence


def _frame(n: int, seed: int) -> PoseFrame:
    rng = np.random.default_rng(seed)
    score = rng.random((n, 18)).astype(np.float32).astype(np.float64)
    subset = np.where(score > 0.3, np.arange(18) + 18 * np.arange(n)[:, None], -1).astype(
        np.float64
    )
    return PoseFrame(
        candidate=rng.random((n * 18, 2)),
        subset=subset,
        body_score=score,
        faces=rng.random((n, 68, 2)),
        faces_score=rng.random((n, 68)).astype(np.float32).astype(np.float64),
        hands=rng.random((2 * n, 21, 2)),
        hands_score=rng.random((2 * n, 21)).astype(np.float32).astype(np.float64),
    )


def test_round_trip_variable_people_bit_exact():
    seq = PoseSequence([_frame(1, 0), _frame(3, 1), PoseFrame.empty(), _frame(2, 3)])
    tensors = seq.to_tensors()
    assert tensors["counts"].tolist() == [1, 3, 0, 2]
    assert (
        tensors["candidate"].dtype == torch.float64 and tensors["body_score"].dtype == torch.float32
    )
    back = PoseSequence.from_tensors(tensors)
    assert len(back) == 4
    for a, b in zip(seq, back):
        assert a.equals(b)
        assert b.candidate.dtype == np.float64 and b.subset.dtype == np.float64


def test_scores_that_are_not_float32_stay_float64():
    f = _frame(1, 5)
    f.body_score[0, 0] = 0.1  # not a float32 value
    tensors = PoseSequence([f]).to_tensors()
    assert tensors["body_score"].dtype == torch.float64
    assert PoseSequence.from_tensors(tensors)[0].equals(f)


def test_72_frame_sequence_is_compact():
    tensors = PoseSequence([_frame(1, i) for i in range(72)]).to_tensors()
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    assert size < 200_000, size


def test_dict_round_trip_and_validation():
    f = _frame(2, 9)
    d = f.to_dict()
    assert d["bodies"]["candidate"].shape == (36, 2) and d["hands"].shape == (4, 21, 2)
    assert PoseFrame.from_dict(d).equals(f)
    d["bodies"]["candidate"] = d["bodies"]["candidate"][:18]
    with pytest.raises(ValueError, match="candidate"):
        PoseFrame.from_dict(d)
