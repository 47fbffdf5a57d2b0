"""Flat-shaded, anti-aliased rasterization with numpy (no per-pixel Python loops).

Pixel ``(row i, col j)`` covers the square ``[j, j+1) x [i, i+1)``; positions are
continuous, so a ball moving 0.3 px moves its edge pixels' coverage and the frames
carry sub-pixel position information (which the world model and the probes use).
Each primitive touches only its bounding box, so drawing costs O(object area).
"""
from __future__ import annotations

import math

import numpy as np


_BLANKS: dict[tuple, np.ndarray] = {}


def blank(height: int, width: int, color) -> np.ndarray:
    """A (H, W, 3) uint8 frame filled with ``color``."""
    key = (height, width, tuple(int(c) for c in color))
    cached = _BLANKS.get(key)
    if cached is None:
        cached = _BLANKS[key] = np.tile(np.asarray(color, dtype=np.uint8), (height, width, 1))
    return cached.copy()


def _blend(region: np.ndarray, alpha: np.ndarray, color) -> None:
    """region = region * (1 - alpha) + color * alpha, in place, rounded to uint8."""
    a = alpha[..., None]
    c = np.asarray(color, dtype=np.float32)
    out = region.astype(np.float32) * (1.0 - a) + c * a
    np.rint(out, out=out)
    region[...] = out.astype(np.uint8)


def disc_alpha(cx: float, cy: float, r: float, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Coverage of rows y0..y1-1, cols x0..x1-1 by the disc (approximate, 1-px ramp)."""
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
    d = np.sqrt(ys * ys + xs * xs)
    return np.clip(r + 0.5 - d, 0.0, 1.0)


def draw_disc(frame: np.ndarray, cx: float, cy: float, r: float, color) -> None:
    """Draw an anti-aliased disc of radius ``r`` centred at (cx, cy) onto ``frame``."""
    h, w = frame.shape[:2]
    x0, x1 = max(int(math.floor(cx - r - 1)), 0), min(int(math.ceil(cx + r + 1)), w)
    y0, y1 = max(int(math.floor(cy - r - 1)), 0), min(int(math.ceil(cy + r + 1)), h)
    if x0 >= x1 or y0 >= y1:
        return
    _blend(frame[y0:y1, x0:x1], disc_alpha(cx, cy, r, y0, y1, x0, x1), color)


def _coverage(lo: float, hi: float, start: int, stop: int) -> np.ndarray:
    """Fraction of each unit pixel [k, k+1) for k in start..stop-1 inside [lo, hi]."""
    k = np.arange(start, stop, dtype=np.float32)
    return np.clip(np.minimum(k + 1, hi) - np.maximum(k, lo), 0.0, 1.0)


def draw_rect(frame: np.ndarray, x0: float, y0: float, x1: float, y1: float, color) -> None:
    """Draw an axis-aligned rectangle [x0, x1] x [y0, y1] with anti-aliased edges."""
    h, w = frame.shape[:2]
    c0, c1 = max(int(math.floor(x0)), 0), min(int(math.ceil(x1)), w)
    r0, r1 = max(int(math.floor(y0)), 0), min(int(math.ceil(y1)), h)
    if c0 >= c1 or r0 >= r1:
        return
    alpha = _coverage(y0, y1, r0, r1)[:, None] * _coverage(x0, x1, c0, c1)[None, :]
    _blend(frame[r0:r1, c0:c1], alpha, color)
