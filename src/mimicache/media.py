"""Media I/O: reference images, driving videos (PyAV, streaming) and mp4 output.

Images and frames are (H, W, 3) uint8 RGB arrays. ``fit_image`` reproduces the published
reference-image fit; ``iter_frames`` the published frame sampling (effective stride from the
average frame rate); ``write_video`` writes H.264/yuv420p mp4 atomically.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import io
import logging
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from mimicache.errors import InputError, MimicacheError
from mimicache.storage.files import atomic_write

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

ASPECT_RATIO = 9 / 16

__all__ = [
    "ASPECT_RATIO",
    "VideoInfo",
    "effective_stride",
    "fit_image",
    "fit_size",
    "image_size",
    "iter_frames",
    "link_fault",
    "long_side",
    "missing_file",
    "probe_video",
    "read_image",
    "write_video",
]


# ----------------------------------------------------------------------------- files


def link_fault(path: str | Path) -> str | None:
    """Why ``path``, a symbolic link, leads to no file, in words; None when it is not a link or
    its target exists (a plain missing file is the caller's own "not found")."""
    path = Path(path)
    if not path.is_symlink():
        return None
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop this way
        return f"symbolic link loop: {path} leads back to itself"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"symbolic link loop: {path} leads back to itself"
        return f"broken symbolic link: {path} points to {os.readlink(path)}, which does not exist"
    return None


def missing_file(path: str | Path, what: str, hint: str) -> InputError:
    """The error for a ``what`` file that is not there: the broken link in words when it is
    one (``hint`` about the config would mislead then), else "not found" and ``hint``."""
    fault = link_fault(path)
    if fault:
        return InputError(f"{fault}; point the link at a {what} file or remove it.")
    return InputError(f"{what} not found: {path}. {hint}")


# ----------------------------------------------------------------------------- images


def read_image(path: str | Path) -> np.ndarray:
    """Image file → (H, W, 3) uint8 RGB.

    8-bit images are converted like the published loader (``PIL.Image.convert("RGB")``: palette
    expanded, alpha dropped without compositing, EXIF orientation not applied). 16-bit images
    are scaled to 8 bit (value / 257, rounded) instead of being clipped at 255.
    """

    with _open_image(path) as img:
        img.load()
        return _to_rgb8(img)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of the image file, from its header alone (``read_image``'s shape)."""
    with _open_image(path) as img:
        return img.height, img.width


@contextlib.contextmanager
def _open_image(path: str | Path):
    """The opened PIL image; a missing or unreadable file is an ``InputError`` naming it."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise missing_file(path, "reference image", "Check the ref_image_path in your config.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                yield img
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(
            f"cannot read reference image {path}: {exc}. Use a PNG, JPEG or WebP image file."
        ) from exc


def _to_rgb8(img) -> np.ndarray:
    import numpy as np

    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        if mode.startswith("I;16") or (mode in ("I", "F") and arr.size and arr.max() > 255):
            arr = arr / 257.0
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2))
    if mode in ("RGB;16", "RGBA;16", "RGBX;16"):  # pragma: no cover - rare Pillow raw modes
        img = img.convert("RGBA")
    rgb = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def long_side(resolution: int) -> int:
    """The fitted image's long side: ``int(resolution / (9/16) // 64) * 64`` (1024 at 576)."""
    return int(resolution / ASPECT_RATIO // 64) * 64


def fit_size(height: int, width: int, resolution: int) -> tuple[int, int, int, int]:
    """(target_h, target_w, resize_h, resize_w) of the published fit for an h x w image."""
    if height > width:
        w_target, h_target = resolution, long_side(resolution)
    else:
        w_target, h_target = long_side(resolution), resolution
    h_w_ratio = float(height) / float(width)
    if h_w_ratio < h_target / w_target:
        h_resize, w_resize = h_target, math.ceil(h_target / h_w_ratio)
    else:
        h_resize, w_resize = math.ceil(w_target * h_w_ratio), w_target
    return h_target, w_target, h_resize, w_resize


def fit_image(image: np.ndarray, resolution: int) -> np.ndarray:
    """(H, W, 3) uint8 → (h_target, w_target, 3) uint8: cover-resize then centre crop.

    The resize is torchvision's v1 tensor resize with ``antialias=None`` on uint8: float32
    bilinear interpolation (align_corners=False, no antialias), rounded, cast to uint8.
    """
    import numpy as np

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"fit_image expects (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    import torch  # the fit is torch's resize, number for number; nothing else here needs torch

    h, w = image.shape[:2]
    h_target, w_target, h_resize, w_resize = fit_size(h, w, resolution)
    tensor = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)
    if (h_resize, w_resize) != (h, w):
        x = tensor[None].to(torch.float32)
        x = torch.nn.functional.interpolate(
            x, size=[h_resize, w_resize], mode="bilinear", align_corners=False, antialias=False
        )
        tensor = x.round().to(torch.uint8)[0]
    top = round((h_resize - h_target) / 2.0)
    left = round((w_resize - w_target) / 2.0)
    out = tensor[:, top : top + h_target, left : left + w_target]
    return np.ascontiguousarray(out.permute(1, 2, 0).numpy())


# ----------------------------------------------------------------------------- videos


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    width: int
    height: int
    avg_fps: float
    frame_count: int


def effective_stride(sample_stride: int, avg_fps: float) -> int:
    """Published rule: ``sample_stride * max(1, int(avg_fps / 24))``."""
    return int(sample_stride) * max(1, int(avg_fps / 24))


def _open_video(path: str | Path):
    import av

    path = Path(path)
    if not path.is_file():
        raise missing_file(path, "driving video", "Check the ref_video_path in your config.")
    try:
        container = av.open(str(path))
    except Exception as exc:  # PyAV raises many FFmpeg error subclasses
        raise InputError(
            f"{path} is not a video PyAV can decode: {_words(exc)}. Use a video file FFmpeg "
            "can read (e.g. mp4)."
        ) from exc
    if not container.streams.video:
        container.close()
        raise InputError(
            f"{path} has no video stream. Use a video file (e.g. mp4) as the driving video."
        )
    return path, container


def _words(exc: BaseException) -> str:
    """FFmpeg's reason without its internal error number (``[Errno 1094995529] ...``):
    "invalid data found when processing input"."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    reason = str(reason).strip()
    return reason[:1].lower() + reason[1:]


def _avg_fps(stream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def probe_video(path: str | Path) -> VideoInfo:
    """Size, average frame rate and frame count (from the header; counted if unknown)."""
    path, container = _open_video(path)
    try:
        stream = container.streams.video[0]
        count = int(stream.frames or 0)
        if count <= 0:
            count = sum(1 for p in container.demux(stream) if p.size)
        cc = stream.codec_context
        return VideoInfo(path, int(cc.width), int(cc.height), _avg_fps(stream), count)
    except MimicacheError:
        raise
    except Exception as exc:
        raise InputError(
            f"cannot read video {path}: {_words(exc)}. The file may be damaged."
        ) from exc
    finally:
        container.close()


def iter_frames(path: str | Path, sample_stride: int) -> Iterator[np.ndarray]:
    """Yield frames 0, s, 2s, ... (s = effective stride) as (H, W, 3) uint8 RGB, streaming."""

    if sample_stride < 1:
        raise ValueError(f"sample_stride must be >= 1, got {sample_stride}")
    path, container = _open_video(path)
    yielded = 0
    try:
        stream = container.streams.video[0]
        stride = effective_stride(sample_stride, _avg_fps(stream))
        stream.thread_type = "AUTO"
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index % stride == 0:
                    yielded += 1
                    yield frame.to_ndarray(format="rgb24")
        except MimicacheError:
            raise
        except Exception as exc:
            if yielded == 0:
                raise InputError(
                    f"video {path} has no decodable frame ({_words(exc)}). Re-encode it (e.g. "
                    "to H.264 mp4) or pick another video."
                ) from exc
            logger.warning(
                "decoding %s stopped after %d sampled frames: %s", path, yielded, _words(exc)
            )
    finally:
        container.close()
    if yielded == 0:
        raise InputError(
            f"video {path} has no decodable frame. Re-encode it (e.g. to H.264 mp4) or pick another video."
        )


# ----------------------------------------------------------------------------- writing


def _rate(fps: float) -> Fraction:
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be a positive number, got {fps}")
    return Fraction(fps).limit_denominator(1001)


# x264's CPU flag for its AVX-512 kernels (x264.h: X264_CPU_AVX512).
_X264_CPU_AVX512 = 1 << 16


@functools.cache
def _x264_params() -> dict[str, str]:
    """Encoder options that keep libx264 off its AVX-512 kernels.

    With them, the libx264 bundled with PyAV encodes the same frames into a different bitstream
    from one call to the next (decoded frames differ by up to ~100 levels; see
    benchmarks/encode_determinism.py); with every other vector unit the CPU has, and on CPUs
    without AVX-512, it is repeatable. The flags are x264's own detection minus AVX-512, read
    from the libx264 that PyAV loaded (Linux); elsewhere nothing changes.
    """
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libx264" in line}
        (path,) = paths
        detect = ctypes.CDLL(path).x264_cpu_detect
    except (OSError, ValueError, AttributeError):
        return {}
    detect.restype = ctypes.c_uint32
    flags = detect()
    if not flags & _X264_CPU_AVX512:
        return {}
    return {"x264-params": f"asm={flags & ~_X264_CPU_AVX512}"}


def encode_video(frames: np.ndarray, fps: float, name: str | Path = "video") -> bytes:
    """(F, H, W, 3) uint8 RGB frames as the bytes of an H.264/yuv420p mp4 (``name`` only
    labels the log line).

    H.264 with 4:2:0 chroma needs even sizes: an odd height or width is padded by one
    row/column repeating the edge pixels (logged). Encoded in memory, so the caller decides
    how the file is published (``write_video``, or a create-only link under a free name).
    """
    import av
    import numpy as np

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(
            f"write_video expects (F, H, W, 3) uint8 with F >= 1, got {frames.shape} {frames.dtype}"
        )
    rate = _rate(fps)
    _, h, w, _ = frames.shape
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:
        logger.warning(
            "%s: %dx%d is odd; padding to %dx%d for H.264/yuv420p", name, w, h, w + pad_w, h + pad_h
        )
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = w + pad_w, h + pad_h
        stream.pix_fmt = "yuv420p"
        stream.options = _x264_params()
        for i, img in enumerate(frames):
            if pad_h or pad_w:
                img = np.pad(img, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def write_video(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """Write (F, H, W, 3) uint8 RGB frames as H.264/yuv420p mp4 (``encode_video``), atomically;
    return the path. The file appears only when complete (a temp file renamed over ``path``)."""

    path = Path(path)
    data = encode_video(frames, fps, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(path, data, temp_stem=path.stem)
    except Exception as exc:
        raise MimicacheError(
            f"cannot write video {path}: {exc}. Check the output folder and disk space."
        ) from exc
    return path
