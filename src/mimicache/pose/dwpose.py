"""DWPose: YOLOX person detector + DWPose whole-body SimCC model, on ONNX Runtime or PyTorch.

Frame in: (H, W, 3) uint8 RGB. Pose out: :class:`PoseFrame` / the published dict layout with
coordinates normalised by the frame size. Pre- and post-processing reproduce the published
MimicMotion DWPose code number for number (same cv2 calls, dtypes and operation order); the
two ONNX files are opened once (by the backend of ``pose.backends``) and reused for every frame.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from mimicache.config import (
    DEFAULT_DWPOSE_DET_PATH,
    DEFAULT_DWPOSE_POSE_PATH,
    check_dwpose_files,
    local_file,
)
from mimicache.pose.backends import open_model, resolve_backend
from mimicache.pose.keypoints import PoseFrame
from mimicache.pose.signatures import (
    DET_INPUT_SIZE,
    check_detector,
    check_pose_model,
)

logger = logging.getLogger(__name__)

DEFAULT_DET_MODEL = DEFAULT_DWPOSE_DET_PATH
DEFAULT_POSE_MODEL = DEFAULT_DWPOSE_POSE_PATH

DET_PAD_VALUE = 114
NMS_IOU = 0.45
NMS_SCORE = 0.1
DET_SCORE = 0.3
BBOX_PADDING = 1.25
SIMCC_SPLIT_RATIO = 2.0
KEYPOINT_THRESHOLD = 0.3
POSE_MEAN = np.array([123.675, 116.28, 103.53])
POSE_STD = np.array([58.395, 57.12, 57.375])

# After the neck is inserted at 17, these OpenPose positions take these mmpose indices.
OPENPOSE_IDX = [1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17]
MMPOSE_IDX = [17, 6, 8, 10, 7, 9, 12, 14, 16, 13, 15, 2, 1, 4, 3]

# Bump when pre/post-processing changes the keypoints it produces: it is part of the DWPose
# fingerprint and of the keypoint entries' keys, so such a change never reads stale entries.
KEYPOINTS_VERSION = 1

SETTINGS: dict = {
    "det_input_size": list(DET_INPUT_SIZE),
    "det_pad_value": DET_PAD_VALUE,
    "nms_iou": NMS_IOU,
    "nms_score": NMS_SCORE,
    "det_score": DET_SCORE,
    "det_class": 0,
    "bbox_padding": BBOX_PADDING,
    "simcc_split_ratio": SIMCC_SPLIT_RATIO,
    "keypoint_threshold": KEYPOINT_THRESHOLD,
    "pose_mean": POSE_MEAN.tolist(),
    "pose_std": POSE_STD.tolist(),
    "postprocess_version": KEYPOINTS_VERSION,
}


# ----------------------------------------------------------------------------- detector


def letterbox(
    image: np.ndarray, size: tuple[int, int] = DET_INPUT_SIZE
) -> tuple[np.ndarray, float]:
    """Top-left anchored letterbox: (3, size) float32 raw 0-255 (pad 114) and the scale ratio."""
    padded = np.ones((size[0], size[1], 3), dtype=np.uint8) * DET_PAD_VALUE
    ratio = min(size[0] / image.shape[0], size[1] / image.shape[1])
    new_w, new_h = int(image.shape[1] * ratio), int(image.shape[0] * ratio)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR).astype(np.uint8)
    padded[:new_h, :new_w] = resized
    return np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32), ratio


def yolox_grids(size: tuple[int, int] = DET_INPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Grid offsets (1, A, 2) int and strides (1, A, 1) int for strides 8, 16, 32."""
    grids, strides = [], []
    for stride in (8, 16, 32):
        xv, yv = np.meshgrid(np.arange(size[1] // stride), np.arange(size[0] // stride))
        grid = np.stack((xv, yv), 2).reshape(1, -1, 2)
        grids.append(grid)
        strides.append(np.full((*grid.shape[:2], 1), stride))
    return np.concatenate(grids, 1), np.concatenate(strides, 1)


def decode_yolox(raw: np.ndarray, size: tuple[int, int] = DET_INPUT_SIZE) -> np.ndarray:
    """Raw YOLOX output (1, A, 5+C) → decoded copy (centre/size in input pixels), same dtype."""
    out = np.array(raw, copy=True)
    grids, strides = yolox_grids(size)
    out[..., :2] = (out[..., :2] + grids) * strides
    out[..., 2:4] = np.exp(out[..., 2:4]) * strides
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy single-class NMS (boxes xyxy with the +1 pixel area convention); kept indices."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep: list[int] = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        w = np.maximum(0.0, xx2 - xx1 + 1)
        h = np.maximum(0.0, yy2 - yy1 + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= iou_threshold)[0] + 1]
    return keep


def person_boxes(raw: np.ndarray, ratio: float) -> np.ndarray:
    """Raw detector output → person boxes (M, 4) float64 xyxy in frame pixels, best first.

    Class-aware NMS at IoU 0.45 over scores > 0.1, then class 0 with score > 0.3. Only class 0
    survives the final filter and NMS is per class, so only class 0 is computed.
    """
    pred = decode_yolox(raw)[0]
    boxes = pred[:, :4]
    scores = pred[:, 4:5] * pred[:, 5:6]
    xyxy = np.ones_like(boxes)
    xyxy[:, 0] = boxes[:, 0] - boxes[:, 2] / 2.0
    xyxy[:, 1] = boxes[:, 1] - boxes[:, 3] / 2.0
    xyxy[:, 2] = boxes[:, 0] + boxes[:, 2] / 2.0
    xyxy[:, 3] = boxes[:, 1] + boxes[:, 3] / 2.0
    xyxy /= ratio
    cls_scores = scores[:, 0]
    valid = cls_scores > NMS_SCORE
    if valid.sum() == 0:
        return np.zeros((0, 4))
    valid_scores = cls_scores[valid]
    valid_boxes = xyxy[valid]
    keep = nms(valid_boxes, valid_scores, NMS_IOU)
    dets = np.concatenate([valid_boxes[keep], valid_scores[keep, None]], 1).astype(np.float64)
    return dets[dets[:, 4] > DET_SCORE, :4]


# ----------------------------------------------------------------------------- pose model


def bbox_center_scale(
    box: np.ndarray, padding: float = BBOX_PADDING
) -> tuple[np.ndarray, np.ndarray]:
    """xyxy → centre (2,) and padded scale (w, h) (2,), float64."""
    x1, y1, x2, y2 = (np.asarray(box)[k : k + 1] for k in range(4))
    center = np.hstack([x1 + x2, y1 + y2]) * 0.5
    scale = np.hstack([x2 - x1, y2 - y1]) * padding
    return center, scale


def fix_aspect_ratio(scale: np.ndarray, aspect_ratio: float) -> np.ndarray:
    """Grow (w, h) so that w / h equals ``aspect_ratio``."""
    w, h = np.hsplit(scale, [1])
    return np.where(
        w > h * aspect_ratio, np.hstack([w, w / aspect_ratio]), np.hstack([h * aspect_ratio, h])
    )


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = a - b
    return b + np.r_[-d[1], d[0]]


def warp_matrix(center: np.ndarray, scale: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """mmpose top-down affine (no rotation, no shift): (2, 3) float64 frame → crop."""
    dst_w, dst_h = output_size
    src_dir = np.array([0.0, scale[0] * -0.5])
    dst_dir = np.array([0.0, dst_w * -0.5])
    src = np.zeros((3, 2), dtype=np.float32)
    src[0, :] = center
    src[1, :] = center + src_dir
    src[2, :] = _third_point(src[0, :], src[1, :])
    dst = np.zeros((3, 2), dtype=np.float32)
    dst[0, :] = [dst_w * 0.5, dst_h * 0.5]
    dst[1, :] = np.array([dst_w * 0.5, dst_h * 0.5]) + dst_dir
    dst[2, :] = _third_point(dst[0, :], dst[1, :])
    return cv2.getAffineTransform(np.float32(src), np.float32(dst))


def crop_for_pose(
    image: np.ndarray, box, input_wh: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One box → model input (3, h, w) float32 (normalised), centre (2,), scale (2,) float64."""
    center, scale = bbox_center_scale(np.array(box))
    w, h = input_wh
    scale = fix_aspect_ratio(scale, aspect_ratio=w / h)
    mat = warp_matrix(center, scale, (w, h))
    crop = cv2.warpAffine(image, mat, (int(w), int(h)), flags=cv2.INTER_LINEAR)
    normed = (crop - POSE_MEAN) / POSE_STD
    return normed.transpose(2, 0, 1).astype(np.float32), center, scale


def decode_simcc(
    simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float = SIMCC_SPLIT_RATIO
) -> tuple[np.ndarray, np.ndarray]:
    """SimCC (N, K, Wx), (N, K, Wy) → locations (N, K, 2) float32 in input pixels, scores (N, K).

    Location = argmax / split ratio; score = the smaller of the two maxima; location -1 where the
    score is <= 0 (before the division, as published: -1 becomes -0.5).
    """
    n, k, _ = simcc_x.shape
    sx = simcc_x.reshape(n * k, -1)
    sy = simcc_y.reshape(n * k, -1)
    locs = np.stack((np.argmax(sx, axis=1), np.argmax(sy, axis=1)), axis=-1).astype(np.float32)
    max_x = np.amax(sx, axis=1)
    max_y = np.amax(sy, axis=1)
    mask = max_x > max_y
    max_x[mask] = max_y[mask]
    vals = max_x
    locs[vals <= 0.0] = -1
    locs = locs.reshape(n, k, 2)
    locs /= split_ratio
    return locs, vals.reshape(n, k)


def to_frame_coords(
    locs: np.ndarray, input_wh: tuple[int, int], center: np.ndarray, scale: np.ndarray
) -> np.ndarray:
    """Crop locations (1, K, 2) float32 → frame pixels (K, 2) float64."""
    return (locs / input_wh * scale + center - scale / 2)[0]


def to_openpose(keypoints: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 133, 2), (N, 133) → (N, 134, 2), (N, 134) float64: neck inserted at 17, OpenPose order."""
    info = np.concatenate((keypoints, scores[..., None]), axis=-1)
    neck = np.mean(info[:, [5, 6]], axis=1)
    neck[:, 2:4] = np.logical_and(info[:, 5, 2:4] > 0.3, info[:, 6, 2:4] > 0.3).astype(int)
    info = np.insert(info, 17, neck, axis=1)
    info[:, OPENPOSE_IDX] = info[:, MMPOSE_IDX]
    return info[..., :2], info[..., 2]


def to_pose_frame(keypoints: np.ndarray, scores: np.ndarray, height: int, width: int) -> PoseFrame:
    """OpenPose-ordered (N, 134, 2) frame-pixel points and (N, 134) scores → normalised PoseFrame."""
    candidate = np.array(keypoints, dtype=np.float64, copy=True)
    nums = candidate.shape[0]
    candidate[..., 0] /= float(width)
    candidate[..., 1] /= float(height)
    body = candidate[:, :18].copy().reshape(nums * 18, 2)
    subset = scores[:, :18].copy()
    for i in range(len(subset)):
        for j in range(len(subset[i])):
            subset[i][j] = int(18 * i + j) if subset[i][j] > KEYPOINT_THRESHOLD else -1
    return PoseFrame(
        candidate=body,
        subset=subset,
        body_score=scores[:, :18],
        faces=candidate[:, 24:92],
        faces_score=scores[:, 24:92],
        hands=np.vstack([candidate[:, 92:113], candidate[:, 113:]]),
        hands_score=np.vstack([scores[:, 92:113], scores[:, 113:]]),
    )


# ----------------------------------------------------------------------------- sessions


class DWPose:
    """YOLOX-L person detector + DWPose-LL whole-body model on ONNX Runtime or PyTorch.

    ``backend``: 'onnxruntime' (the reference), 'torch' (the same ONNX files run by PyTorch in
    float32 on any torch device, always batched) or 'auto' (ONNX Runtime when it has a provider
    for ``device``, else torch, and ONNX Runtime for a file with operators torch lacks);
    :attr:`backend` holds what ran the files ('detector+pose' when they differ). ``__call__(frame)``
    returns the published dict layout; ``detect`` a :class:`PoseFrame`; ``detect_many`` runs a
    sequence with a progress bar, ``chunk_size`` frames at a time: the detector over the chunk's
    letterboxed frames and the pose model over all their boxes in one call each when the model's
    batch allows it (one at a time otherwise; the results are identical). The two files may be
    hub references (``hf://yzd-v/DWPose/yolox_l.onnx``), resolved through the hub cache.
    """

    def __init__(
        self,
        det_model_path: str | Path = DEFAULT_DET_MODEL,
        pose_model_path: str | Path = DEFAULT_POSE_MODEL,
        device: str = "cpu",
        *,
        backend: str = "auto",
        chunk_size: int = 8,
    ) -> None:
        # a hub reference (hf://...) becomes its file in the hub cache: what the keys fingerprint
        self.det_model_path = local_file(det_model_path)
        self.pose_model_path = local_file(pose_model_path)
        self.device = str(device)
        self.chunk_size = max(1, int(chunk_size))
        resolved = resolve_backend(backend, self.device)
        check_dwpose_files(self.det_model_path, self.pose_model_path)
        auto = backend == "auto"
        self.det_model = open_model(self.det_model_path, resolved, self.device, fallback=auto)
        check_detector(self.det_model, self.det_model_path)
        self.pose_model = open_model(self.pose_model_path, resolved, self.device, fallback=auto)
        det_backend, pose_backend = self.det_model.backend, self.pose_model.backend
        # What ran each file (auto may have sent one to ONNX Runtime): it enters the cache key.
        self.backend: str = (
            pose_backend if det_backend == pose_backend else f"{det_backend}+{pose_backend}"
        )
        signature = check_pose_model(self.pose_model, self.pose_model_path)
        self.pose_input_size: tuple[int, int] = signature.input_wh  # (w, h)
        self.pose_batch_dynamic: bool = signature.batch_dynamic or self.pose_model.batch_dynamic
        self.det_batch_dynamic: bool = self.det_model.batch_dynamic
        self.providers: list[str] = list(self.pose_model.providers)
        # ONNX Runtime's CPU threads (None: the torch backend, whose threads torch reports).
        self.threads: int | None = next(
            (m.threads for m in (self.det_model, self.pose_model) if getattr(m, "threads", None)),
            None,
        )
        self.settings: dict = dict(SETTINGS)

    def fingerprint_extra(self) -> dict:
        """What besides the two files decides the keypoints: settings, backend, providers."""
        return {"settings": self.settings, "backend": self.backend, "providers": self.providers}

    # -- stages
    def _detect_raw(self, blobs: list[np.ndarray]) -> list[np.ndarray]:
        """Letterboxed (3, 640, 640) blobs → raw detector outputs (1, A, 5+C), one per blob."""
        if self.det_batch_dynamic and len(blobs) > 1:
            raw = self.det_model.run(np.stack(blobs))[0]
            return [raw[i : i + 1] for i in range(len(blobs))]
        return [self.det_model.run(blob[None])[0] for blob in blobs]

    def detect_boxes(self, frame: np.ndarray) -> np.ndarray:
        """Person boxes (M, 4) float64 xyxy in frame pixels (M may be 0)."""
        blob, ratio = letterbox(frame)
        return person_boxes(self._detect_raw([blob])[0], ratio)

    def _boxes_many(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        boxed = [letterbox(f) for f in frames]
        raws = self._detect_raw([b for b, _ in boxed])
        return [person_boxes(raw, ratio) for raw, (_, ratio) in zip(raws, boxed)]

    def _crops(self, frame: np.ndarray, boxes: np.ndarray) -> list:
        if len(boxes) == 0:
            boxes = [[0, 0, frame.shape[1], frame.shape[0]]]
        return [crop_for_pose(frame, box, self.pose_input_size) for box in boxes]

    def _run_pose(self, inputs: list[np.ndarray], batched: bool) -> tuple[np.ndarray, np.ndarray]:
        if batched and len(inputs) > 1:
            sx, sy = self.pose_model.run(np.stack(inputs))[:2]
            return sx, sy
        xs, ys = [], []
        for inp in inputs:
            sx, sy = self.pose_model.run(inp[None])[:2]
            xs.append(sx)
            ys.append(sy)
        return np.concatenate(xs), np.concatenate(ys)

    def _finish(
        self, frame_hw: tuple[int, int], crops: list, sx: np.ndarray, sy: np.ndarray
    ) -> PoseFrame:
        keypoints, scores = [], []
        for i, (_, center, scale) in enumerate(crops):
            locs, vals = decode_simcc(sx[i : i + 1], sy[i : i + 1])
            keypoints.append(to_frame_coords(locs, self.pose_input_size, center, scale))
            scores.append(vals[0])
        kp, sc = to_openpose(np.array(keypoints), np.array(scores))
        return to_pose_frame(kp, sc, *frame_hw)

    # -- public
    def detect(self, frame: np.ndarray) -> PoseFrame:
        """One (H, W, 3) uint8 RGB frame → its people."""
        frame = _check_frame(frame)
        crops = self._crops(frame, self.detect_boxes(frame))
        # torch batches the crops of a frame; ONNX Runtime keeps the published one-by-one runs
        sx, sy = self._run_pose([c[0] for c in crops], batched=self.pose_model.backend == "torch")
        return self._finish(frame.shape[:2], crops, sx, sy)

    def __call__(self, frame: np.ndarray) -> dict:
        """Published dict layout (normalised coordinates) for one RGB frame."""
        return self.detect(frame).to_dict()

    def detect_many(
        self,
        frames: Iterable[np.ndarray],
        *,
        progress: bool = True,
        total: int | None = None,
        batch: bool | None = None,
        desc: str = "DWPose",
    ) -> list[PoseFrame]:
        """Poses of every frame, in order. ``batch=None``: batch when the model allows it;
        ``desc`` labels the progress bar."""
        batched = self.pose_batch_dynamic if batch is None else (batch and self.pose_batch_dynamic)
        if total is None and hasattr(frames, "__len__"):
            total = len(frames)  # type: ignore[arg-type]
        out: list[PoseFrame] = []
        it: Iterator[np.ndarray] = iter(frames)
        with tqdm(total=total, desc=desc, unit="frame", disable=not progress) as bar:
            while True:
                chunk = [_check_frame(f) for f in islice(it, self.chunk_size)]
                if not chunk:
                    break
                per_frame = [self._crops(f, b) for f, b in zip(chunk, self._boxes_many(chunk))]
                inputs = [c[0] for crops in per_frame for c in crops]
                sx, sy = self._run_pose(inputs, batched)
                start = 0
                for frame, crops in zip(chunk, per_frame):
                    stop = start + len(crops)
                    out.append(self._finish(frame.shape[:2], crops, sx[start:stop], sy[start:stop]))
                    start = stop
                bar.update(len(chunk))
        return out


def _check_frame(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(
            f"DWPose expects an (H, W, 3) uint8 RGB frame, got {frame.shape} {frame.dtype}"
        )
    return frame
