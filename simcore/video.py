"""Writing frames to GIF or MP4 files (imageio).

    with VideoWriter("run.gif", fps=20) as video:
        for frame in frames:          # (H, W, 3) uint8
            video.append(frame)

The format follows the file suffix: ``.gif`` through imageio's pillow plugin (loops
forever, ``1000 / fps`` ms per frame), ``.mp4`` through imageio's ffmpeg plugin,
which needs the optional ``imageio-ffmpeg`` package (``pip install simcore[mp4]``).
Every frame of one file has the size of the first (rounded up to even for MP4); a
frame of another size is padded (black) or cropped to it, so a window that grows
mid-recording still gives a valid file. GIF keeps its frames in memory until
``close`` (imageio's pillow plugin), and pillow merges identical consecutive frames
into one longer frame (timing is kept); MP4 streams.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from simcore.errors import SimcoreError

#: file suffix -> format name
SUPPORTED = {".gif": "GIF", ".mp4": "MP4"}


def _check_frame(frame: Any) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise SimcoreError(f"a video frame must be an (H, W, 3) array, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise SimcoreError(f"a video frame must be uint8, got {arr.dtype}")
    return arr


def _fit(frame: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pad (black, bottom/right) or crop ``frame`` to ``shape`` (H, W)."""
    h, w = shape
    if frame.shape[:2] == (h, w):
        return frame
    out = np.zeros((h, w, 3), dtype=np.uint8)
    ch, cw = min(h, frame.shape[0]), min(w, frame.shape[1])
    out[:ch, :cw] = frame[:ch, :cw]
    return out


def has_mp4() -> bool:
    """Whether MP4 can be written here (the ``imageio-ffmpeg`` package is importable)."""
    return importlib.util.find_spec("imageio_ffmpeg") is not None


class VideoWriter:
    """Streams frames into a ``.gif`` or ``.mp4`` file; use as a context manager or
    call :meth:`close` (the file is complete only then)."""

    def __init__(self, path: str | Path, fps: float = 20):
        self.path = Path(path)
        self.fps = float(fps)
        if not self.fps > 0:
            raise SimcoreError(f"fps must be positive, got {fps!r}")
        suffix = self.path.suffix.lower()
        if suffix not in SUPPORTED:
            raise SimcoreError(
                f"cannot write video {str(self.path)!r}: unsupported suffix {self.path.suffix or '(none)'!r}; "
                f"supported: {', '.join(SUPPORTED)}"
            )
        if suffix == ".mp4" and not has_mp4():
            raise SimcoreError(
                f"writing {str(self.path)!r} needs the imageio-ffmpeg package: "
                "pip install simcore[mp4] (or pip install imageio-ffmpeg), or write a .gif instead"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SimcoreError(f"cannot write video {str(self.path)!r}: {exc}") from exc
        self.format = SUPPORTED[suffix]
        self.frames = 0
        self.shape: tuple[int, int] | None = None
        self._writer: Any = None
        self._closed = False

    def _open(self) -> None:
        if self.format == "GIF":
            import imageio.v3 as iio

            # the pillow plugin keeps the frames until close, then saves them all
            self._writer = iio.imopen(self.path, "w", plugin="pillow", extension=".gif")
        else:
            import imageio.v2 as iio2

            # libx264/yuv420p needs even sizes (frames are padded to them in append)
            self._writer = iio2.get_writer(
                self.path, format="FFMPEG", mode="I", fps=self.fps, codec="libx264",
                macro_block_size=2, ffmpeg_log_level="error",
            )

    def append(self, frame: np.ndarray) -> None:
        """Add one (H, W, 3) uint8 frame."""
        if self._closed:
            raise SimcoreError(f"video {str(self.path)!r} is closed")
        arr = _check_frame(frame)
        if self.shape is None:
            h, w = arr.shape[:2]
            if self.format == "MP4":  # yuv420p: even sizes; pad rather than resample
                h, w = h + h % 2, w + w % 2
            self.shape = (h, w)
            self._open()
        arr = np.ascontiguousarray(_fit(arr, self.shape))
        if self.format == "GIF":
            # duration in ms per frame; loop=0: repeat forever
            self._writer.write(arr, is_batch=False, duration=1000.0 / self.fps, loop=0)
        else:
            self._writer.append_data(arr)
        self.frames += 1

    def close(self) -> None:
        """Finish the file. Idempotent; a writer that got no frame writes no file."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"VideoWriter({str(self.path)!r}, fps={self.fps:g}, frames={self.frames})"


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = 20) -> Path:
    """Write ``frames`` (an iterable of (H, W, 3) uint8 arrays) to ``path``; returns the path."""
    count = 0
    with VideoWriter(path, fps) as video:
        for frame in frames:
            video.append(frame)
            count += 1
    if count == 0:
        raise SimcoreError(f"no frames to write to {str(path)!r}")
    return Path(path)


def side_by_side(frames: list[np.ndarray], gap: int = 2, fill: int = 0) -> np.ndarray:
    """Frames next to each other, left to right, ``gap`` pixels of ``fill`` apart;
    shorter frames are padded at the bottom. Returns (max H, sum W + gaps, 3) uint8."""
    arrs = [_check_frame(f) for f in frames]
    if not arrs:
        raise SimcoreError("side_by_side needs at least one frame")
    if gap < 0:
        raise SimcoreError(f"gap must be >= 0, got {gap!r}")
    h = max(a.shape[0] for a in arrs)
    w = sum(a.shape[1] for a in arrs) + gap * (len(arrs) - 1)
    out = np.full((h, w, 3), fill, dtype=np.uint8)
    x = 0
    for a in arrs:
        out[: a.shape[0], x : x + a.shape[1]] = a
        x += a.shape[1] + gap
    return out
