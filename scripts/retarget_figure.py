"""Draw docs/retarget.png: one driving frame in both pose retarget modes, side by side.

    python scripts/retarget_figure.py [--out docs/retarget.png]

The poses are synthetic (a broad-shouldered reference standing still, a narrower signer with
raised arms), drawn with the project's renderer: the tiny DWPose models give noise-like poses,
which would not show what the modes do. Panels: the reference pose (frame 0 in both modes),
the driving pose as "published" draws it, and the same frame with "graft".
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from mimicache.pose import PoseFrame, draw_pose, graft_pose

HEIGHT, WIDTH = 512, 384  # one panel


def _hand(wrist: np.ndarray, direction: float, size: float) -> np.ndarray:
    """21 hand points: wrist, then 5 fingers of 4 joints fanned around ``direction`` (radians)."""
    points = [wrist]
    for finger in range(5):
        angle = direction + (finger - 2) * 0.3
        step = np.array([np.cos(angle), np.sin(angle)]) * size
        base = wrist + step * 1.2
        points += [base + step * k for k in range(4)]
    return np.array(points)


def _face(centre: np.ndarray, rx: float, ry: float) -> np.ndarray:
    """68 face points: jaw line, brows, nose, eyes and mouth on an ellipse-shaped head."""
    t = np.linspace(np.pi * 0.05, np.pi * 0.95, 17)
    jaw = np.stack([-np.cos(t) * rx, np.sin(t) * ry * 0.9], 1)
    brows = np.stack([np.linspace(-0.7, 0.7, 10) * rx, np.full(10, -0.35 * ry)], 1)
    nose = np.stack([np.zeros(9), np.linspace(-0.2, 0.25, 9) * ry], 1)
    a = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    eyes = np.concatenate(
        [np.stack([np.cos(a) * 0.15 * rx + s * 0.4 * rx, np.sin(a) * 0.06 * ry - 0.15 * ry], 1)
         for s in (-1, 1)]
    )  # fmt: skip
    m = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    mouth = np.stack([np.cos(m) * 0.35 * rx, np.sin(m) * 0.08 * ry + 0.5 * ry], 1)
    return centre + np.concatenate([jaw, brows, nose, eyes, mouth])


def _pose(body: dict[int, tuple[float, float]], face: np.ndarray, hands: list) -> PoseFrame:
    candidate = np.array([body[i] for i in range(18)], dtype=np.float64)
    return PoseFrame(
        candidate=candidate,
        subset=np.arange(18, dtype=np.float64)[None],
        body_score=np.full((1, 18), 0.95),
        faces=face[None],
        faces_score=np.full((1, 68), 0.9),
        hands=np.stack(hands),
        hands_score=np.full((2, 21), 0.9),
    )


def reference_pose() -> PoseFrame:
    """Broad shoulders, arms down, centred."""
    body = {
        0: (0.50, 0.17), 1: (0.50, 0.28), 2: (0.36, 0.29), 3: (0.33, 0.45), 4: (0.32, 0.60),
        5: (0.64, 0.29), 6: (0.67, 0.45), 7: (0.68, 0.60), 8: (0.42, 0.60), 9: (0.42, 0.78),
        10: (0.42, 0.95), 11: (0.58, 0.60), 12: (0.58, 0.78), 13: (0.58, 0.95),
        14: (0.48, 0.15), 15: (0.52, 0.15), 16: (0.46, 0.16), 17: (0.54, 0.16),
    }  # fmt: skip
    c = np.array
    hands = [_hand(c(body[7]), np.pi / 2, 0.012), _hand(c(body[4]), np.pi / 2, 0.012)]
    return _pose(body, _face(c((0.50, 0.165)), 0.05, 0.06), hands)


def driving_pose() -> PoseFrame:
    """A narrower, smaller signer to the left (as rescaled): one hand at the chin, one raised."""
    body = {
        0: (0.38, 0.22), 1: (0.38, 0.31), 2: (0.27, 0.32), 3: (0.24, 0.42), 4: (0.34, 0.27),
        5: (0.49, 0.32), 6: (0.56, 0.25), 7: (0.56, 0.16), 8: (0.33, 0.56), 9: (0.33, 0.72),
        10: (0.33, 0.88), 11: (0.43, 0.56), 12: (0.43, 0.72), 13: (0.43, 0.88),
        14: (0.365, 0.205), 15: (0.395, 0.205), 16: (0.35, 0.21), 17: (0.41, 0.21),
    }  # fmt: skip
    c = np.array
    hands = [_hand(c(body[7]), -np.pi / 2, 0.010), _hand(c(body[4]), -np.pi / 4, 0.010)]
    return _pose(body, _face(c((0.38, 0.215)), 0.035, 0.045), hands)


def _label(panel: np.ndarray, text: str) -> np.ndarray:
    out = panel.copy()
    cv2.putText(out, text, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/retarget.png"))
    args = ap.parse_args()
    ref, video = reference_pose(), driving_pose()
    panels = [
        _label(draw_pose(ref, HEIGHT, WIDTH), "reference (frame 0)"),
        _label(draw_pose(video, HEIGHT, WIDTH), "published"),
        _label(draw_pose(graft_pose(ref, video), HEIGHT, WIDTH), "graft"),
    ]
    gap = np.full((HEIGHT, 4, 3), 96, np.uint8)
    figure = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(figure, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out} ({figure.shape[1]}x{figure.shape[0]})")


if __name__ == "__main__":
    main()
