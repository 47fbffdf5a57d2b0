"""GIF/MP4 writing (simcore.video)."""
from __future__ import annotations

import importlib.util

import imageio.v3 as iio
import numpy as np
import pytest

from simcore.errors import SimcoreError
from simcore.video import VideoWriter, side_by_side, write_video


def _frames(n=5, h=16, w=24):
    # flat colours from a small palette: GIF stores them exactly
    palette = np.array([[230, 60, 60], [60, 200, 80], [70, 110, 240], [240, 210, 60], [20, 20, 28]], np.uint8)
    out = []
    for i in range(n):
        f = np.empty((h, w, 3), np.uint8)
        f[:] = palette[i % len(palette)]
        f[: h // 2, : w // 3] = palette[(i + 2) % len(palette)]
        out.append(f)
    return out


def test_gif_round_trip(tmp_path):
    frames = _frames()
    path = tmp_path / "clip.gif"
    with VideoWriter(path, fps=10) as video:
        for f in frames:
            video.append(f)
    assert video.closed and video.frames == 5
    back = iio.imread(path, index=None)
    assert back.shape == (5, 16, 24, 3)
    np.testing.assert_array_equal(back, np.stack(frames))
    meta = iio.immeta(path)
    assert meta["duration"] == 100 and meta["loop"] == 0


def test_write_video_and_frame_size_changes(tmp_path):
    a = np.full((8, 8, 3), 200, np.uint8)
    b = np.full((12, 4, 3), 90, np.uint8)  # taller and narrower: cropped and padded
    path = write_video(tmp_path / "sub" / "v.gif", [a, b], fps=5)
    back = iio.imread(path, index=None)
    assert back.shape == (2, 8, 8, 3)
    assert (back[1, :, :4] == 90).all() and (back[1, :, 4:] == 0).all()


def test_unknown_suffix_names_the_supported_ones(tmp_path):
    with pytest.raises(SimcoreError, match=r"\.gif.*\.mp4"):
        VideoWriter(tmp_path / "clip.avi", fps=10)
    with pytest.raises(SimcoreError, match="suffix"):
        write_video(tmp_path / "noext", _frames(2))


@pytest.mark.skipif(importlib.util.find_spec("imageio_ffmpeg") is not None, reason="imageio-ffmpeg is installed")
def test_mp4_without_imageio_ffmpeg_says_what_to_install(tmp_path):
    with pytest.raises(SimcoreError, match=r"pip install simcore\[mp4\]"):
        VideoWriter(tmp_path / "clip.mp4", fps=10)


@pytest.mark.skipif(importlib.util.find_spec("imageio_ffmpeg") is None, reason="needs imageio-ffmpeg")
def test_mp4_round_trip(tmp_path):
    frames = [np.full((16, 24, 3), v, np.uint8) for v in (0, 128, 255, 128)]
    path = write_video(tmp_path / "clip.mp4", frames, fps=10)
    import imageio.v2 as iio2

    back = np.stack(iio2.mimread(path, format="FFMPEG"))
    assert back.shape == (4, 16, 24, 3)
    np.testing.assert_allclose(back.mean(axis=(1, 2, 3)), [0, 128, 255, 128], atol=8)


def test_bad_frames_and_misuse(tmp_path):
    video = VideoWriter(tmp_path / "x.gif", fps=10)
    with pytest.raises(SimcoreError, match="uint8"):
        video.append(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(SimcoreError, match=r"\(H, W, 3\)"):
        video.append(np.zeros((4, 4), np.uint8))
    video.close()
    with pytest.raises(SimcoreError, match="closed"):
        video.append(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(SimcoreError, match="no frames"):
        write_video(tmp_path / "empty.gif", [])
    with pytest.raises(SimcoreError, match="fps"):
        VideoWriter(tmp_path / "y.gif", fps=0)


def test_side_by_side():
    a = np.full((4, 3, 3), 10, np.uint8)
    b = np.full((6, 2, 3), 20, np.uint8)
    out = side_by_side([a, b], gap=2)
    assert out.shape == (6, 7, 3) and out.dtype == np.uint8
    assert (out[:4, :3] == 10).all() and (out[4:, :3] == 0).all()
    assert (out[:, 3:5] == 0).all()
    assert (out[:, 5:] == 20).all()
    np.testing.assert_array_equal(side_by_side([a], gap=5), a)
    with pytest.raises(SimcoreError):
        side_by_side([])
