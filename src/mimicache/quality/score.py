"""One clip's scores (``ClipScore``) from its measured arrays, and its verdict.

A clip is ``suspect`` when one of its scores passes a threshold, each a documented default
that ``--score_threshold NAME=VALUE`` (or the config's ``score.thresholds``) overrides:

- ``body``, ``left_hand``, ``right_hand``, ``face``: the part's mean point error, in body-scale
  units (the reference's shoulder width), above this;
- ``hand_recall``: a hand shows less than this share of the points its target shows;
- ``identity``: the mean CLIP cosine similarity of the frames to the reference below this;
- ``flicker``: the clip's flicker (``metrics.flicker``) above this.

Each reason names the frames where it holds ("right hand error 0.31 > 0.20 in frames
12-30"), counted from 0 in the written clip (the reference frame is not in it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mimicache.config.thresholds import DEFAULT_THRESHOLDS, PART_WORDS, check_thresholds
from mimicache.errors import ConfigError
from mimicache.quality.metrics import (
    PARTS,
    dtw_error,
    flicker,
    identity,
    mean_or_nan,
    part_errors,
    part_recall,
)

__all__ = ["SCORER", "ClipScore", "PartScore", "describe", "score_clip", "scored_frames"]

SCORER = "mimicache-score/1"  # bump when a measure changes: clips scored before are rescored


def _number(value: float) -> float | None:
    """A JSON-able float: None for NaN."""
    return None if value is None or math.isnan(value) else round(float(value), 6)


@dataclass
class PartScore:
    """One part's scores: the mean point ``error`` (body-scale units), the share of the
    target's points shown (``recall``) and the time-warped error (``dtw``, nDTW-MJE), each
    None when no scored frame asks for the part; per scored frame, ``errors`` and ``recalls``."""

    error: float | None
    recall: float | None
    dtw: float | None
    errors: list[float | None]
    recalls: list[float | None]


@dataclass
class ClipScore:
    """A clip's scores and verdict (``to_dict`` is what sidecars and ``results.jsonl`` hold)."""

    frames: list[int]  # the scored frames, counted from 0 in the written clip
    scale: float  # pixels per body-scale unit: the reference's shoulder width
    parts: dict[str, PartScore]
    identity: float | None  # mean cosine similarity of the scored frames to the reference
    identity_min: float | None
    identity_worst_frame: int | None
    identities: list[float | None]
    flicker: float
    thresholds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    verdict: str = "ok"
    reasons: list[str] = field(default_factory=list)
    scorer: str = SCORER
    # the frames with the largest error (up to WORST): their target and found points, pixels
    worst: list[dict[str, Any]] = field(default_factory=list)
    clip_frames: int = 0  # the frames in the clip (the scored ones are ``frames``)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClipScore:
        values = dict(data)
        values["parts"] = {k: PartScore(**v) for k, v in values["parts"].items()}
        return cls(**values)

    def judge(self, thresholds: Mapping[str, float] | None = None) -> ClipScore:
        """``verdict`` and ``reasons`` under ``thresholds`` (default: this score's own)."""
        if thresholds is not None:
            self.thresholds = dict(thresholds)
        t = self.thresholds
        reasons = []
        for part, word in PART_WORDS.items():
            score, limit = self.parts[part], t[part]
            if score.error is not None and score.error > limit:
                where = _frames(self.frames, score.errors, lambda e, limit=limit: e > limit)
                reasons.append(f"{word} error {score.error:.2f} > {limit:.2f}{where}")
        for part in ("left_hand", "right_hand"):
            score = self.parts[part]
            if score.recall is not None and score.recall < t["hand_recall"]:
                where = _frames(self.frames, score.recalls, lambda r: r < t["hand_recall"])
                reasons.append(
                    f"{PART_WORDS[part]} shows {score.recall:.0%} of its points < "
                    f"{t['hand_recall']:.0%}{where}"
                )
        if self.identity is not None and self.identity < t["identity"]:
            reasons.append(
                f"identity {self.identity:.2f} < {t['identity']:.2f} (worst frame "
                f"{self.identity_worst_frame}: {self.identity_min:.2f})"
            )
        if self.flicker > t["flicker"]:
            reasons.append(f"flicker {self.flicker:.3f} > {t['flicker']:.3f}")
        self.reasons = reasons
        self.verdict = "suspect" if reasons else "ok"
        return self


WORST = 3  # frames a score keeps the points of, to show them beside the clip's frames


def _worst(
    frames: Sequence[int],
    errors: Mapping[str, np.ndarray],
    targets: np.ndarray,
    outputs: np.ndarray,
) -> list[dict[str, Any]]:
    """The ``WORST`` frames by their mean part error, with their target and found points
    (rounded: a tenth of a pixel, a hundredth of a confidence)."""
    per_frame = np.stack([errors[part] for part in PARTS])  # (parts, n)
    mean = np.nan_to_num(mean_or_nan(per_frame, axis=0), nan=-1.0)  # -1: nobody to compare
    order = [int(i) for i in np.argsort(-mean, kind="stable")[:WORST] if mean[i] >= 0]

    def rounded(points: np.ndarray) -> list[list[float]]:
        return [[round(float(x), 1), round(float(y), 1), round(float(c), 2)] for x, y, c in points]

    return [
        {
            "frame": int(frames[i]),
            "error": round(float(mean[i]), 4),
            "target": rounded(targets[i]),
            "found": rounded(outputs[i]),
        }
        for i in order
    ]


def _frames(frames: Sequence[int], values: Sequence[float | None], bad) -> str:
    """ " in frames 3-5, 9" over the scored frames whose value is ``bad``."""
    hits = [f for f, v in zip(frames, values) if v is not None and bad(v)]
    if not hits:
        return ""
    runs: list[list[int]] = []
    index = {f: i for i, f in enumerate(frames)}
    for f in hits:  # consecutive scored frames form a run, even when the scoring skips some
        if runs and index[f] == index[runs[-1][-1]] + 1:
            runs[-1].append(f)
        else:
            runs.append([f])
    text = ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs)
    return f" in frame{'s' if len(hits) > 1 else ''} {text}"


def scored_frames(count: int, limit: int | None) -> list[int]:
    """The frames of a ``count``-frame clip a score looks at: all (``limit`` None or at least
    ``count``), else ``limit`` evenly spaced ones, the first and last among them."""
    if limit is None or limit >= count:
        return list(range(count))
    if limit < 2:
        raise ConfigError(f"score_frames must be at least 2 (or all), got {limit}")
    return sorted({round(float(x)) for x in np.linspace(0, count - 1, limit)})


def score_clip(
    *,
    targets: np.ndarray,
    outputs: np.ndarray,
    scale: float,
    frames: Sequence[int],
    clip: np.ndarray,
    reference_embedding: np.ndarray | None = None,
    frame_embeddings: np.ndarray | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> ClipScore:
    """The scores of a clip and their verdict.

    Args:
        targets: (n, 128, 3) the poses the scored frames were asked for, in output pixels.
        outputs: (n, 128, 3) the poses found in those frames of the clip.
        scale: the body scale in pixels (``metrics.body_scale`` of the reference pose).
        frames: the n scored frames' numbers in the clip.
        clip: (F, H, W, 3) uint8, the whole clip (flicker looks at consecutive frames).
        reference_embedding: (D,) the reference image's CLIP embedding (None: no identity).
        frame_embeddings: (n, D) the scored frames' CLIP embeddings.
        thresholds: the verdict's thresholds (default ``DEFAULT_THRESHOLDS``).

    Returns:
        The ``ClipScore``, judged.
    """
    errors = part_errors(targets, outputs, scale)
    recalls = part_recall(targets, outputs)
    parts = {}
    for part in PARTS:
        e, r = errors[part], recalls[part]
        parts[part] = PartScore(
            error=_number(np.nanmean(e)) if np.any(~np.isnan(e)) else None,
            recall=_number(np.nanmean(r)) if np.any(~np.isnan(r)) else None,
            dtw=_number(dtw_error(targets, outputs, scale, part)),
            errors=[_number(x) for x in e],
            recalls=[_number(x) for x in r],
        )
    sims = (
        identity(reference_embedding, frame_embeddings)
        if reference_embedding is not None and frame_embeddings is not None
        else np.zeros(0)
    )
    worst = int(np.argmin(sims)) if len(sims) else None
    score = ClipScore(
        frames=[int(f) for f in frames],
        scale=float(scale),
        parts=parts,
        identity=_number(sims.mean()) if len(sims) else None,
        identity_min=_number(sims[worst]) if worst is not None else None,
        identity_worst_frame=int(frames[worst]) if worst is not None else None,
        identities=[_number(x) for x in sims],
        flicker=float(flicker(clip)),
        worst=_worst(frames, errors, targets, outputs),
        clip_frames=len(clip),
    )
    return score.judge(check_thresholds(thresholds or DEFAULT_THRESHOLDS))


def describe(score: Mapping[str, Any]) -> str:
    """A score (``ClipScore.to_dict()``) in a few plain lines: the verdict and its reasons, then
    each part's error and the hands' recall, the identity and the flicker."""
    lines = [str(score.get("verdict", "?"))]
    lines += [f"- {reason}" for reason in score.get("reasons") or []]
    parts = score.get("parts") or {}
    measures = []
    for part, word in PART_WORDS.items():
        found = parts.get(part) or {}
        if found.get("error") is None:
            continue
        text = f"{word} {found['error']:.2f}"
        if part.endswith("hand") and found.get("recall") is not None:
            text += f" ({found['recall']:.0%} shown)"
        measures.append(text)
    if score.get("identity") is not None:
        measures.append(f"identity {score['identity']:.2f}")
    if score.get("flicker") is not None:
        measures.append(f"flicker {score['flicker']:.3f}")
    count = len(score.get("frames") or [])
    lines.append(f"{', '.join(measures)} ({count} frames scored)")
    return "\n".join(lines)
