"""People in the driving video: boxes, tracks across frames, and the choice of one person.

PoseFrames in (normalised coordinates, any number of people), PoseFrames out (the chosen
person alone, or no person where that person is absent). A person counts as seen in a frame
when at least one of its body points is detected (subset >= 0); DWPose's whole-frame fallback
on an empty frame yields only low-confidence points, so it is not a person here.

Choices (``pose.person`` / ``--person``): ``auto`` keeps every frame as it is (the published
behaviour: all people drawn, the alignment fit on single-person frames); ``largest`` the track
with the largest mean box area; ``center`` the track nearest the frame centre on average; ``N``
the N-th track in order of first appearance, 0-based (people who first appear in the same frame
count left to right). A video with at most one person in every frame is kept as it is under
every choice, so choosing never changes a single-person video; a number beyond the people
tracked is an error there too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mimicache.config import DEFAULT_PERSON, person_choice
from mimicache.errors import InputError, setting
from mimicache.pose.keypoints import PoseFrame

logger = logging.getLogger(__name__)

AUTO = DEFAULT_PERSON
LARGEST = "largest"
CENTER = "center"
MIN_IOU = 0.2  # below this overlap with every track's last box, a person starts a new track
SHOWN_FRAMES = 8

__all__ = [
    "AUTO",
    "CENTER",
    "LARGEST",
    "PeopleReport",
    "Track",
    "box_iou",
    "choose_person",
    "person_boxes",
    "person_pose",
    "track_people",
    "video_boxes",
]


def person_boxes(pose: PoseFrame, frame_hw: tuple[int, int] = (1, 1)) -> list[np.ndarray | None]:
    """Per person: (x0, y0, x1, y1) float64 in pixels of ``frame_hw`` around its detected body
    points, or None when none of its body points is detected."""
    return video_boxes([pose], frame_hw)[0]


def video_boxes(
    video: Sequence[PoseFrame], frame_hw: tuple[int, int] = (1, 1)
) -> list[list[np.ndarray | None]]:
    """``person_boxes`` of every frame, computed for all of them at once (a warm job tracks
    the people of every frame again, so this runs on every job)."""
    counts = [pose.num_people for pose in video]
    if not any(counts):
        return [[None] * n for n in counts]
    height, width = frame_hw
    seen = np.concatenate([pose.subset for pose in video]) >= 0  # (people, 18)
    points = np.concatenate([pose.candidate for pose in video]).reshape(-1, 18, 2)
    points = points * np.array([width, height], dtype=np.float64)
    mask = seen[..., None]
    low = np.where(mask, points, np.inf).min(axis=1)
    high = np.where(mask, points, -np.inf).max(axis=1)
    boxes = np.concatenate([low, high], axis=1)  # (people, 4)
    detected = seen.any(axis=1).tolist()
    out: list[list[np.ndarray | None]] = []
    start = 0
    for n in counts:
        out.append([boxes[i] if detected[i] else None for i in range(start, start + n)])
        start += n
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes; 0 for two degenerate boxes."""
    # Python floats: the same float64 arithmetic as on numpy scalars, at a tenth of the cost
    # (a warm job tracks the people of every frame again)
    ax0, ay0, ax1, ay1 = _floats(a)
    bx0, by0, bx1, by1 = _floats(b)
    ix = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    iy = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = ix * iy
    union = _area(ax0, ay0, ax1, ay1) + _area(bx0, by0, bx1, by1) - inter
    return float(inter / union) if union > 0 else 0.0


def _floats(box: np.ndarray) -> list[float]:
    return np.asarray(box, dtype=np.float64).tolist()


def _area(x0: float, y0: float, x1: float, y1: float) -> float:
    return max(0.0, x1 - x0) * max(0.0, y1 - y0)


@dataclass
class Track:
    """One person followed across frames: frame index -> (person index in that frame, box)."""

    id: int
    people: dict[int, int] = field(default_factory=dict)
    boxes: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def first_frame(self) -> int:
        return min(self.people)

    @property
    def last_box(self) -> np.ndarray:
        return self.boxes[max(self.boxes)]

    def mean_area(self) -> float:
        return float(np.mean([_area(*_floats(b)) for b in self.boxes.values()]))

    def mean_centre_distance(self, frame_hw: tuple[int, int]) -> float:
        centre = np.array([frame_hw[1], frame_hw[0]], dtype=np.float64) / 2.0
        return float(
            np.mean([np.linalg.norm((b[:2] + b[2:]) / 2.0 - centre) for b in self.boxes.values()])
        )


def track_people(
    video: Sequence[PoseFrame], frame_hw: tuple[int, int], *, min_iou: float = MIN_IOU
) -> list[Track]:
    """The people of every frame linked into tracks, numbered in order of first appearance.

    Greedy: in each frame, the person-track pairs are taken by decreasing overlap (IoU of the
    person's box with the track's last box, so a person missed for a few frames is picked up
    again); a person left over, or overlapping no track by ``min_iou``, starts a new track. A
    track takes at most one person per frame.
    """
    tracks: list[Track] = []
    for f, boxes in enumerate(video_boxes(video, frame_hw)):
        people = [(i, box) for i, box in enumerate(boxes) if box is not None]
        pairs = sorted(
            (
                (box_iou(box, track.last_box), t, p)
                for t, track in enumerate(tracks)
                for p, (_, box) in enumerate(people)
            ),
            key=lambda pair: (-pair[0], pair[1], pair[2]),
        )
        used_tracks: set[int] = set()
        matched: set[int] = set()
        for iou, t, p in pairs:
            if iou < min_iou:
                break
            if t in used_tracks or p in matched:
                continue
            used_tracks.add(t)
            matched.add(p)
            index, box = people[p]
            tracks[t].people[f] = index
            tracks[t].boxes[f] = box
        # new people of one frame count left to right, so "N" reads like the video
        fresh = sorted(
            (people[p] for p in range(len(people)) if p not in matched),
            key=lambda item: (item[1][0] + item[1][2], item[0]),
        )
        for index, box in fresh:
            tracks.append(Track(len(tracks), {f: index}, {f: box}))
    return tracks


def person_pose(pose: PoseFrame, index: int) -> PoseFrame:
    """Person ``index`` of ``pose`` alone (its subset renumbered to its own 18 points)."""
    subset = pose.subset[index : index + 1].copy()
    subset[subset >= 0] -= 18 * index
    n = pose.num_people
    return PoseFrame(
        candidate=pose.candidate[18 * index : 18 * index + 18].copy(),
        subset=subset,
        body_score=pose.body_score[index : index + 1].copy(),
        faces=pose.faces[index : index + 1].copy(),
        faces_score=pose.faces_score[index : index + 1].copy(),
        hands=pose.hands[[index, n + index]].copy(),
        hands_score=pose.hands_score[[index, n + index]].copy(),
    )


@dataclass
class PeopleReport:
    """Who was seen in the sampled frames and who drives the pose.

    ``no_person`` / ``several``: frame indices (0-based among the sampled frames) with nobody
    seen / more than one person; ``chosen``: the track id used (None: every person, as
    published); ``chosen_frames``: the frames that show it."""

    choice: str
    frames: int
    people: int
    no_person: list[int]
    several: list[int]
    chosen: int | None = None
    chosen_frames: int = 0

    def summary(self) -> str:
        """Who was seen, in plain words: "2 different people over 7 sampled frames, two or
        more at once in 4 (2, 3, 4, 5), nobody in 1 (6); person 1 drives the pose ..."."""
        if self.people == 0:
            seen = f"nobody in any of the {self.frames} sampled frames"
        else:
            who = "1 person" if self.people == 1 else f"{self.people} different people"
            seen = f"{who} over {self.frames} sampled frames"
            if self.people > 1:
                seen += (
                    f", two or more at once in {len(self.several)}{_frames(self.several)}"
                    if self.several
                    else ", never two at once"
                )
            if self.no_person:
                seen += f", nobody in {len(self.no_person)}{_frames(self.no_person)}"
        if self.chosen is not None:
            used = f"person {self.chosen} drives the pose ({setting('person', self.choice)})"
            return f"{seen}; {used}, seen in {self.chosen_frames} frames"
        if self.several and self.choice == AUTO:
            return f"{seen}; everyone is drawn ({setting('person', AUTO)}); choose one to draw one"
        return f"{seen}; frames kept as they are ({setting('person', self.choice)})"

    def to_dict(self) -> dict:
        return {
            "choice": self.choice,
            "frames": self.frames,
            "people": self.people,
            "no_person": list(self.no_person),
            "several": list(self.several),
            "chosen": self.chosen,
            "chosen_frames": self.chosen_frames,
        }


def _frames(indices: list[int]) -> str:
    if not indices:
        return ""
    shown = ", ".join(str(i) for i in indices[:SHOWN_FRAMES])
    return f" ({shown}{', ...' if len(indices) > SHOWN_FRAMES else ''})"


def choose_person(
    video: Sequence[PoseFrame],
    choice: str | int,
    frame_hw: tuple[int, int],
    *,
    video_path: str | Path | None = None,
) -> tuple[list[PoseFrame], PeopleReport]:
    """The poses the alignment and drawing get under ``choice``, and the report of who was seen.

    ``frame_hw`` is the video frame (height, width) (the centre and the box areas are in its
    pixels). ``InputError`` when a person number exceeds the people tracked (in any video that
    shows somebody).
    """
    try:
        choice = person_choice(choice)
    except ValueError as exc:
        raise ValueError(f"person choice {exc}") from None
    tracks = track_people(video, frame_hw)
    counts = [int((p.subset >= 0).any(axis=1).sum()) for p in video]  # people seen per frame
    report = PeopleReport(
        choice=choice,
        frames=len(video),
        people=len(tracks),
        no_person=[f for f, n in enumerate(counts) if n == 0],
        several=[f for f, n in enumerate(counts) if n > 1],
    )
    if choice.isdigit() and tracks:
        # an explicit number must name someone even in a one-person video, or a typo would
        # silently run as auto; a video with nobody at all fails later with its own error
        _numbered(tracks, int(choice), video_path)
    if choice == AUTO or not report.several:
        return list(video), report
    chosen = _pick(tracks, choice, frame_hw, video_path)
    report.chosen = chosen.id
    report.chosen_frames = len(chosen.people)
    poses = [
        person_pose(pose, chosen.people[f]) if f in chosen.people else PoseFrame.empty()
        for f, pose in enumerate(video)
    ]
    return poses, report


def _pick(
    tracks: list[Track], choice: str, frame_hw: tuple[int, int], video_path: str | Path | None
) -> Track:
    if choice == LARGEST:
        # ties: the earlier track (max keeps the first)
        return max(tracks, key=lambda t: t.mean_area())
    if choice == CENTER:
        return min(tracks, key=lambda t: t.mean_centre_distance(frame_hw))
    return _numbered(tracks, int(choice), video_path)


def _numbered(tracks: list[Track], number: int, video_path: str | Path | None) -> Track:
    if number < len(tracks):
        return tracks[number]
    where = f" {video_path}" if video_path else ""
    shows = (
        "1 person (numbered 0"
        if len(tracks) == 1
        else f"{len(tracks)} people (numbered 0 to {len(tracks) - 1}"
    )
    raise InputError(
        f"{setting('person', number)}: the driving video{where} shows {shows} in order of first "
        "appearance, left to right within a frame); choose one of those, or largest, center "
        "or auto."
    )
