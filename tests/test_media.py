from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from mimicache.errors import InputError
from mimicache.media import (
    effective_stride,
    fit_image,
    fit_size,
    iter_frames,
    probe_video,
    read_image,
    write_video,
)
from tests.pose_fixtures import frame_index_video


# ----------------------------------------------------------------------------- fit
@pytest.mark.parametrize(
    ("h", "w", "resolution", "expected"),
    [
        (1200, 800, 576, (1024, 576)),  # portrait → W = res, H = int(res / (9/16) // 64) * 64
        (800, 1200, 576, (576, 1024)),  # landscape
        (900, 900, 576, (576, 1024)),  # square counts as landscape
        (1200, 800, 320, (512, 320)),  # 320 / 0.5625 = 568.9 → 512
        (800, 1200, 320, (320, 512)),
        (500, 500, 320, (320, 512)),
    ],
)
def test_fit_sizes(h, w, resolution, expected):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (h // 10, w // 10, 3), dtype=np.uint8)
    out = fit_image(img, resolution)
    assert out.shape == (*expected, 3) and out.dtype == np.uint8


def test_fit_size_cover_with_ceil():
    # 100x300 (h x w) landscape to 576x1024: h/w = 1/3 < 576/1024 → h=576, w=ceil(576*3)=1728
    assert fit_size(100, 300, 576) == (576, 1024, 576, 1728)
    # 700x500 portrait → 1024x576 target; 1.4 < 1024/576 → h=1024, w=ceil(1024/1.4)=732
    assert fit_size(700, 500, 576) == (1024, 576, 1024, math.ceil(1024 / 1.4))


def test_fit_image_matches_torch_bilinear_round_and_center_crop():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (37, 61, 3), dtype=np.uint8)
    out = fit_image(img, 64)  # landscape: target 64 x 64 (64/0.5625 = 113.8 → 64)
    _, _, hr, wr = fit_size(37, 61, 64)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    ref = torch.nn.functional.interpolate(x, size=(hr, wr), mode="bilinear", align_corners=False)
    ref = ref.round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    top, left = round((hr - 64) / 2.0), round((wr - 64) / 2.0)
    np.testing.assert_array_equal(out, ref[top : top + 64, left : left + 64])
    assert (hr, wr) == (64, math.ceil(64 * 61 / 37))


def test_fit_image_same_size_is_identity():
    img = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(fit_image(img, 64), img)


# ----------------------------------------------------------------------------- read_image
def test_read_image_modes(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (8, 10, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)

    rgba = np.dstack([rgb, np.full((8, 10), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_image(tmp_path / "b.png"), rgb)  # alpha dropped

    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(tmp_path / "c.png")
    out = read_image(tmp_path / "c.png")
    np.testing.assert_array_equal(out, np.asarray(pal.convert("RGB")))

    g16 = (np.arange(80, dtype=np.uint16).reshape(8, 10) * 800).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "d.png")
    out = read_image(tmp_path / "d.png")
    assert out.shape == (8, 10, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], np.rint(g16 / 257.0).astype(np.uint8))

    Image.fromarray(rgb).save(tmp_path / "e.webp", lossless=True)
    np.testing.assert_array_equal(read_image(tmp_path / "e.webp"), rgb)
    Image.fromarray(rgb).save(tmp_path / "f.jpg")
    assert read_image(tmp_path / "f.jpg").shape == (8, 10, 3)


def test_read_image_bad_inputs(tmp_path):
    with pytest.raises(InputError, match=r"not found: .*missing\.png"):
        read_image(tmp_path / "missing.png")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(InputError, match=r"broken\.png.*PNG, JPEG or WebP"):
        read_image(bad)


# ----------------------------------------------------------------------------- videos
@pytest.mark.parametrize(("fps", "stride_rule"), [(24, 1), (30, 1), (60, 2)])
def test_stride_rule_on_real_videos(tmp_path, fps, stride_rule):
    path = frame_index_video(tmp_path / f"v{fps}.mp4", 12, fps)
    info = probe_video(path)
    assert (info.width, info.height, info.frame_count) == (32, 32, 12)
    assert info.avg_fps == pytest.approx(fps)
    assert effective_stride(2, info.avg_fps) == 2 * stride_rule
    frames = list(iter_frames(path, 2))
    expected_idx = list(range(0, 12, 2 * stride_rule))
    assert len(frames) == len(expected_idx)
    means = [round(f.mean() / 8) for f in frames]
    assert means == expected_idx
    assert all(f.shape == (32, 32, 3) and f.dtype == np.uint8 for f in frames)


def test_effective_stride_values():
    assert [effective_stride(1, f) for f in (23.976, 24, 29.97, 47.9, 48, 60, 120)] == [
        1,
        1,
        1,
        1,
        2,
        2,
        5,
    ]
    assert effective_stride(3, 60) == 6


def test_write_video_roundtrip_and_odd_size(tmp_path):
    frames = np.zeros((3, 17, 21, 3), np.uint8)
    frames[:, :, :, 0] = 200
    out = write_video(tmp_path / "sub" / "odd.mp4", frames, 15)
    info = probe_video(out)
    assert (info.width, info.height, info.frame_count) == (22, 18, 3)  # padded to even
    assert info.avg_fps == pytest.approx(15)
    first = next(iter_frames(out, 1))
    assert abs(int(first[5, 5, 0]) - 200) < 10
    assert [p.name for p in out.parent.iterdir()] == ["odd.mp4"]  # no temp file left


def test_write_video_failure_leaves_no_file(tmp_path, monkeypatch):
    import av

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", boom)
    with pytest.raises(Exception, match="disk full"):
        write_video(tmp_path / "x.mp4", np.zeros((2, 16, 16, 3), np.uint8), 10)
    assert os.listdir(tmp_path) == []


def test_video_bad_inputs(tmp_path):
    with pytest.raises(InputError, match=r"not found: .*nope\.mp4"):
        list(iter_frames(tmp_path / "nope.mp4", 1))
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    with pytest.raises(InputError, match=r"notes\.mp4"):
        list(iter_frames(text, 1))
    with pytest.raises(InputError, match=r"notes\.mp4"):
        probe_video(text)
    good = frame_index_video(tmp_path / "ok.mp4", 4, 24)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(InputError, match=r"truncated\.mp4"):
        list(iter_frames(truncated, 1))


def test_video_with_no_decodable_frame(tmp_path):
    import struct

    good = frame_index_video(tmp_path / "good.mp4", 4, 24)
    data = bytearray(good.read_bytes())
    at = data.find(b"mdat")
    size = struct.unpack(">I", data[at - 4 : at])[0]
    data[at + 4 : at - 4 + size] = bytes(size - 8)  # keep the container, zero every frame
    path = tmp_path / "zeroed.mp4"
    path.write_bytes(data)
    assert probe_video(path).frame_count == 4
    with pytest.raises(InputError, match=r"zeroed\.mp4 has no decodable frame"):
        list(iter_frames(path, 1))


def test_video_with_empty_track(tmp_path):
    import av

    path = tmp_path / "empty.mp4"
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 16, 16, "yuv420p"
        c.start_encoding()
    with pytest.raises(InputError, match=r"empty\.mp4"):
        list(iter_frames(path, 1))
