"""Reading objects back out of frames by colour unmixing (the eyes of the physics probes).

Why unmixing: our scenes are flat-shaded and anti-aliased, so every pixel is a blend
``background + alpha * (colour - background)`` of the background and (at most) one
object colour. Projecting ``pixel - background`` onto ``colour - background`` recovers
``alpha`` per pixel; summing alpha gives the object's *area* and the alpha-weighted mean
of pixel centres its *centroid*, both to a small fraction of a pixel. Because blur is
linear, a blurred ball (which is what an imperfect world model draws) keeps the same
alpha sum and centroid, whereas a hard threshold (``alpha > 0.5``) shrinks it. That is
what makes the probes' numbers about physics rather than about sharpness.

Conventions (as in ``simcore.raster``): pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``,
so its centre is ``(x, y) = (j + 0.5, i + 0.5)``; positions are ``(x, y)``, y down.

Several colours: a pixel is given to the colour whose projection leaves the smallest
residual (it belongs to one object), and to none when even that residual is large
(an unknown colour, e.g. the occluder, unless it is passed in ``distractors``). Far
from every object, faint noise is ignored: only pixels within ``grow`` px of a pixel
with ``alpha > seed_alpha`` count, so a model's low-level speckle does not add area.
Known opaque occluders can be passed as rectangles to ``ignore``.

Two ways to turn pixels into objects:

* colour mode (:func:`detect`): one object per colour. Valid for our ball scenes,
  which draw colours without replacement (``simcore.balls``), and cheap (a few
  numpy passes over the frame, used live by the probe plugin).
* blob mode (:func:`detect_blobs`): 8-connected components per colour, for scenes
  that reuse colours or to count duplicates (an object that split or appeared twice).

:func:`track` follows one-object-per-colour detections over an episode with a linear
motion prediction, so an object hidden behind a known occluder is reported
``OCCLUDED`` (expected) and one that disappears in the open ``MISSING`` (a permanence
violation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from simcore.scene import BACKGROUND

# Track status codes (int8), per step and object.
CLEAR = 0  # detected, nothing in the way: centroid and radius are trustworthy
PARTIAL = 1  # detected but overlapping an occluder or the frame edge: centroid/radius biased
OCCLUDED = 2  # not detected, and the prediction puts it behind an occluder (expected)
MISSING = 3  # not detected where it should be visible (a permanence violation)
STATUS_NAMES = ("clear", "partial", "occluded", "missing")

SEED_ALPHA = 0.05  # alpha that marks a pixel as surely part of an object
GROW = 2  # px around seed pixels whose fainter alpha still counts (blur tails)
MIN_AREA = 2.0  # px²: less summed alpha than this is "not visible"
RESIDUAL_ABS = 12.0  # RGB units: residual tolerated anywhere (uint8 rounding, mild noise)
RESIDUAL_REL = 0.15  # ... or this fraction of |pixel - background|

Rect = tuple[float, float, float, float]  # (x0, y0, x1, y1) in px


# ---------------------------------------------------------------------------
# unmixing
# ---------------------------------------------------------------------------


def _as_colors(colors) -> np.ndarray:
    c = np.asarray(colors, dtype=np.float32).reshape(-1, 3)  # (K, 3)
    return c


def unmix(frame: np.ndarray, colors, background=BACKGROUND, *, distractors: Iterable = (),
          ignore: Sequence[Rect] = (), residual_abs: float = RESIDUAL_ABS, residual_rel: float = RESIDUAL_REL,
          seed_alpha: float = SEED_ALPHA, grow: int = GROW) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel (owner, alpha) of ``frame`` (H, W, 3) uint8 against ``colors`` (K, 3).

    Returns ``owner`` (H, W) int64 in ``0..K-1`` (the colour the pixel belongs to;
    ``K`` for "none": background, unexplained colour or a distractor) and ``alpha``
    (H, W) float32 in [0, 1] (zero where owner is K). ``distractors`` are colours of
    known non-object things (the occluder): pixels they explain best belong to none.
    ``ignore``: rectangles ``(x0, y0, x1, y1)`` drawn on top of everything (occluders):
    pixels wholly inside them belong to none. (The grey occluder is nearly a 50 % blend
    of white and the background, so with a little noise its colour alone cannot tell.)
    """
    h, w = frame.shape[:2]
    cols = _as_colors(colors)
    k = len(cols)
    distractors = list(distractors or ())
    extra = _as_colors(distractors) if distractors else np.zeros((0, 3), np.float32)
    bg = np.asarray(background, dtype=np.float32)
    v = np.concatenate([cols, extra]) - bg  # (K+D, 3) colour directions
    if len(v) == 0:
        return np.full((h, w), k, dtype=np.int64), np.zeros((h, w), np.float32)
    vv = np.maximum((v * v).sum(1), 1e-6)  # (K+D,)
    d = frame.reshape(-1, 3).astype(np.float32) - bg  # (P, 3)
    dd = (d * d).sum(1)  # (P,)
    dots = d @ v.T  # (P, K+D)
    a = np.clip(dots / vv, 0.0, 1.0)
    res = dd[:, None] - 2.0 * a * dots + a * a * vv  # (P, K+D) squared residual |d - a v|²
    owner = res.argmin(1)  # (P,)
    idx = np.arange(len(owner))
    alpha = a[idx, owner]
    tol = np.maximum(residual_abs * residual_abs, residual_rel * residual_rel * dd)
    bad = (res[idx, owner] > tol) | (owner >= k)
    alpha[bad] = 0.0
    owner[bad] = k
    alpha = alpha.reshape(h, w)
    owner = owner.reshape(h, w)
    for x0, y0, x1, y1 in ignore:
        r0, r1 = max(int(math.ceil(y0)), 0), min(int(math.floor(y1)), h)
        c0, c1 = max(int(math.ceil(x0)), 0), min(int(math.floor(x1)), w)
        if r0 < r1 and c0 < c1:
            alpha[r0:r1, c0:c1] = 0.0
            owner[r0:r1, c0:c1] = k
    if grow >= 0:  # keep only pixels near surely-object pixels (drops far-away speckle)
        near = _dilate(alpha > seed_alpha, grow)
        alpha = np.where(near, alpha, np.float32(0.0))
        owner = np.where(near, owner, k)
    return owner, alpha


def alpha_maps(frame: np.ndarray, colors, background=BACKGROUND, **kw) -> np.ndarray:
    """Dense per-colour alpha (K, H, W) float32 (zero where another colour owns the pixel)."""
    owner, alpha = unmix(frame, colors, background, **kw)
    k = len(_as_colors(colors))
    return np.stack([np.where(owner == i, alpha, np.float32(0.0)) for i in range(k)]) if k else \
        np.zeros((0,) + alpha.shape, np.float32)


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a (2r+1)² square, separable, with numpy shifts."""
    if r <= 0:
        return mask
    out = mask.copy()
    for _ in range(r):  # r passes of 3-wide rows then columns
        m = out.copy()
        m[1:] |= out[:-1]
        m[:-1] |= out[1:]
        out = m.copy()
        out[:, 1:] |= m[:, :-1]
        out[:, :-1] |= m[:, 1:]
    return out


# ---------------------------------------------------------------------------
# detections
# ---------------------------------------------------------------------------


@dataclass
class Detections:
    """One frame read as one object per colour (arrays over the K colours)."""

    pos: np.ndarray  # (K, 2) centroid (x, y) px; NaN where not visible
    radius: np.ndarray  # (K,) sqrt(area / pi); NaN where not visible
    area: np.ndarray  # (K,) summed alpha (px²), or pixel count for the hard variant
    visible: np.ndarray  # (K,) bool, area >= min_area

    def __len__(self) -> int:
        return len(self.area)


_GRIDS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _centres(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel-centre coordinates xs, ys (H*W,) float64, cached per size."""
    g = _GRIDS.get((h, w))
    if g is None:
        ys, xs = np.mgrid[0:h, 0:w]
        g = _GRIDS[(h, w)] = ((xs.ravel() + 0.5).astype(np.float64), (ys.ravel() + 0.5).astype(np.float64))
    return g


def _moments(owner: np.ndarray, weight: np.ndarray, k: int, min_area: float) -> Detections:
    h, w = owner.shape
    xs, ys = _centres(h, w)
    o = owner.ravel()
    wt = weight.ravel().astype(np.float64)
    area = np.bincount(o, wt, minlength=k + 1)[:k]  # (K,)
    sx = np.bincount(o, wt * xs, minlength=k + 1)[:k]
    sy = np.bincount(o, wt * ys, minlength=k + 1)[:k]
    visible = area >= min_area
    with np.errstate(invalid="ignore", divide="ignore"):
        pos = np.stack([sx / area, sy / area], axis=1)
    pos[~visible] = np.nan
    radius = np.where(visible, np.sqrt(np.maximum(area, 0.0) / math.pi), np.nan)
    return Detections(pos, radius, area, visible)


def detect(frame: np.ndarray, colors, background=BACKGROUND, *, distractors: Iterable = (),
           min_area: float = MIN_AREA, hard: bool = False, **unmix_kw: Any) -> Detections:
    """Read ``frame`` as one object per colour (colour mode).

    Soft (default): area = sum of alpha, centroid alpha-weighted, radius = sqrt(area/π):
    exact for anti-aliased discs and unchanged by blur. ``hard=True``: area = number of
    pixels with ``alpha > 0.5`` and their plain centroid (the usual threshold-and-count
    reading, kept for comparison: it shrinks blurred objects).
    """
    cols = _as_colors(colors)
    owner, alpha = unmix(frame, cols, background, distractors=distractors, **unmix_kw)
    weight = (alpha > 0.5).astype(np.float32) if hard else alpha
    return _moments(owner, weight, len(cols), min_area)


def detect_hard(frame: np.ndarray, colors, background=BACKGROUND, **kw: Any) -> Detections:
    """The hard-threshold variant of :func:`detect` (``alpha > 0.5`` pixel counts)."""
    return detect(frame, colors, background, hard=True, **kw)


@dataclass
class Blob:
    """One connected component of one colour."""

    color: int  # index into the colour list
    pos: np.ndarray  # (2,) alpha-weighted centroid (x, y)
    area: float  # summed alpha, px²
    radius: float  # sqrt(area / pi)
    pixels: int  # pixels in the component (after growing into faint tails)


def label(mask: np.ndarray, same: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """8-connected components of ``mask`` (H, W) bool, without scipy.

    ``same`` (H, W) optional: neighbours join only when their ``same`` values are equal
    (one labelling for all colours at once). Returns labels (H, W) int64 (0 = not in
    mask, components numbered 1..n) and n. Min-label propagation over 3x3
    neighbourhoods with pointer jumping; iterations grow with the log of a blob's
    diameter, so 64x64 frames take a few passes.
    """
    h, w = mask.shape
    big = h * w + 1
    lab = np.where(mask, np.arange(1, h * w + 1).reshape(h, w), big)
    if not mask.any():
        return np.zeros((h, w), np.int64), 0
    sp = None if same is None else np.pad(same, 1, constant_values=-(10**9))
    while True:
        p = np.pad(lab, 1, constant_values=big)
        m = lab.copy()
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                if dy == 1 and dx == 1:
                    continue
                nb = p[dy:dy + h, dx:dx + w]
                if sp is not None:
                    nb = np.where(sp[dy:dy + h, dx:dx + w] == same, nb, big)
                m = np.minimum(m, nb)
        m = np.where(mask, m, big)
        flat = np.append(m.ravel(), big)  # label value v lives at flat index v - 1; big maps to itself
        for _ in range(4):  # pointer jumping: follow each label to its own label
            jumped = flat[np.minimum(flat, big) - 1]
            flat = np.minimum(flat, np.where(flat < big, jumped, big))
        m = flat[:-1].reshape(h, w)
        if np.array_equal(m, lab):
            break
        lab = m
    out = np.zeros((h, w), np.int64)
    values, inverse = np.unique(lab[mask], return_inverse=True)
    out[mask] = inverse + 1
    return out, len(values)


def detect_blobs(frame: np.ndarray, colors, background=BACKGROUND, *, distractors: Iterable = (),
                 min_area: float = MIN_AREA, seed_alpha: float = SEED_ALPHA, grow: int = GROW,
                 **unmix_kw: Any) -> list[Blob]:
    """Read ``frame`` as connected blobs per colour (blob mode), largest first.

    Components are found on the ``alpha > seed_alpha`` pixels (same colour, 8-connected),
    then grown ``grow`` px into the fainter pixels of the same colour so blur tails
    count towards their blob. Blobs with less than ``min_area`` summed alpha are dropped.
    """
    cols = _as_colors(colors)
    owner, alpha = unmix(frame, cols, background, distractors=distractors, seed_alpha=seed_alpha, grow=grow,
                         **unmix_kw)
    return _blobs(owner, alpha, len(cols), min_area, seed_alpha, grow)


def _blob_labels(owner: np.ndarray, alpha: np.ndarray, k: int, seed_alpha: float = SEED_ALPHA,
                 grow: int = GROW) -> np.ndarray:
    """Blob labels (H, W) int64 (0 = none): 8-connected ``alpha > seed_alpha`` pixels of
    one colour, grown ``grow`` px into fainter pixels of the same colour (blur tails)."""
    seeds = (alpha > seed_alpha) & (owner < k)
    lab, n = label(seeds, owner)
    if n == 0:
        return lab
    h, w = owner.shape
    for _ in range(grow):  # grow labels into same-colour faint pixels that have none yet
        p = np.pad(lab, 1)
        po = np.pad(owner, 1, constant_values=-1)
        grown = lab.copy()
        free = (lab == 0) & (alpha > 0) & (owner < k)
        for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2), (0, 0), (0, 2), (2, 0), (2, 2)):
            nb = p[dy:dy + h, dx:dx + w]
            take = free & (grown == 0) & (nb > 0) & (po[dy:dy + h, dx:dx + w] == owner)
            grown[take] = nb[take]
        lab = grown
    return lab


def _blobs(owner: np.ndarray, alpha: np.ndarray, k: int, min_area: float, seed_alpha: float = SEED_ALPHA,
           grow: int = GROW) -> list[Blob]:
    """Blobs of an unmixed frame (``owner``/``alpha`` from :func:`unmix`), largest first."""
    lab = _blob_labels(owner, alpha, k, seed_alpha, grow)
    n = int(lab.max())
    if n == 0:
        return []
    h, w = owner.shape
    xs, ys = _centres(h, w)
    flat, a = lab.ravel(), alpha.ravel().astype(np.float64)
    area = np.bincount(flat, a, minlength=n + 1)
    sx = np.bincount(flat, a * xs, minlength=n + 1)
    sy = np.bincount(flat, a * ys, minlength=n + 1)
    pixels = np.bincount(flat, minlength=n + 1)
    color_of = np.zeros(n + 1, np.int64)
    color_of[flat] = owner.ravel()
    blobs = [Blob(int(color_of[i]), np.array([sx[i] / area[i], sy[i] / area[i]]), float(area[i]),
                  math.sqrt(area[i] / math.pi), int(pixels[i]))
             for i in range(1, n + 1) if area[i] >= min_area]
    return sorted(blobs, key=lambda b: -b.area)


def _largest(owner: np.ndarray, alpha: np.ndarray, weight: np.ndarray, k: int, min_area: float,
             dup_fraction: float, seed_alpha: float = SEED_ALPHA, grow: int = GROW):
    """Per colour, the largest blob as a Detections (with ``weight`` as the area measure,
    alpha or hard counts) and the number of blobs of at least ``dup_fraction`` of it (K,)."""
    lab = _blob_labels(owner, alpha, k, seed_alpha, grow)
    n = int(lab.max())
    if n == 0 or k == 0:
        return _moments(np.full_like(owner, k), weight, k, min_area), np.zeros(k, np.int64)
    flat = lab.ravel()
    blob_area = np.bincount(flat, alpha.ravel().astype(np.float64), minlength=n + 1)  # (n+1,)
    color_of = np.full(n + 1, k, np.int64)
    color_of[flat] = owner.ravel()
    color_of[0] = k
    best = np.zeros(k + 1, np.int64)  # label of each colour's largest blob (0 = none)
    order = np.argsort(blob_area[1:], kind="stable") + 1  # ascending: the largest is written last
    best[color_of[order]] = order
    keep = np.zeros(n + 1, bool)
    keep[best[:k]] = True
    keep[0] = False
    owner_best = np.where(keep[lab], owner, k)  # pixels of each colour's largest blob only
    det = _moments(owner_best, weight, k, min_area)
    largest = blob_area[best[:k]]
    big = (blob_area >= np.maximum(min_area, dup_fraction * largest[np.minimum(color_of, k - 1)])) & \
        (color_of < k)
    big[0] = False
    counts = np.bincount(color_of[big], minlength=k)[:k]
    return det, counts


def _count(blobs: list[Blob], k: int) -> np.ndarray:
    counts = np.zeros(k, np.int64)
    for b in blobs:
        counts[b.color] += 1
    return counts


def blob_counts(frame: np.ndarray, colors, background=BACKGROUND, **kw: Any) -> np.ndarray:
    """Number of blobs (>= min_area) per colour, (K,) int64: 1 per object when colours are unique."""
    return _count(detect_blobs(frame, colors, background, **kw), len(_as_colors(colors)))


# ---------------------------------------------------------------------------
# ground-truth helpers
# ---------------------------------------------------------------------------


def object_table(info: Any) -> dict | None:
    """The object table in a World ``info`` (``info["objects"]``), a recording step
    (``step["state"]``) or a table itself; None when there is none (e.g. dreaming)."""
    if not isinstance(info, dict):
        return None
    for key in ("objects", "state"):
        t = info.get(key)
        if isinstance(t, dict) and "color" in t:
            return t
    return info if "color" in info else None


def objects_from_frame(frame: np.ndarray, info: Any, *, background=BACKGROUND, distractors: Iterable = (),
                       hard: bool = False, **kw: Any) -> Detections:
    """Detect the objects of a ground-truth table in ``frame``, in table order.

    ``info``: a World info dict, a recording step record or an object table; its
    ``color`` column (N, 3) names the colours to look for (one object each).
    """
    table = object_table(info)
    if table is None:
        raise ValueError("no object table (info['objects'], step['state'] or a table with a 'color' column)")
    return detect(frame, np.asarray(table["color"]), background, distractors=distractors, hard=hard, **kw)


# ---------------------------------------------------------------------------
# tracking
# ---------------------------------------------------------------------------


@dataclass
class Track:
    """One-object-per-colour readings over an episode (T frames, K colours)."""

    pos: np.ndarray  # (T, K, 2) measured centroid; the linear prediction where not detected (NaN if none)
    radius: np.ndarray  # (T, K) measured radius; NaN where not detected
    area: np.ndarray  # (T, K) summed alpha
    visible: np.ndarray  # (T, K) bool: detected in the frame
    status: np.ndarray  # (T, K) int8: CLEAR, PARTIAL, OCCLUDED or MISSING
    predicted: np.ndarray  # (T, K) bool: pos is a prediction, not a measurement
    blobs: np.ndarray | None = None  # (T, K) blobs per colour when counted
    occluders: list = field(default_factory=list)

    @property
    def clear(self) -> np.ndarray:
        """(T, K) bool: trustworthy measurements (detected, nothing in the way)."""
        return self.status == CLEAR

    @property
    def occluded(self) -> np.ndarray:
        return self.status == OCCLUDED

    @property
    def missing(self) -> np.ndarray:
        return self.status == MISSING


def _overlaps(p: np.ndarray, r: float, rect: Rect, margin: float = 0.0) -> bool:
    """Does the disc (p, r) reach into ``rect`` grown by ``margin``?"""
    x0, y0, x1, y1 = rect
    cx = min(max(p[0], x0 - margin), x1 + margin)
    cy = min(max(p[1], y0 - margin), y1 + margin)
    return (p[0] - cx) ** 2 + (p[1] - cy) ** 2 < r * r


def _rect_distance(p: np.ndarray, rect: Rect) -> float:
    x0, y0, x1, y1 = rect
    return math.hypot(max(x0 - p[0], 0.0, p[0] - x1), max(y0 - p[1], 0.0, p[1] - y1))


def _contains(p: np.ndarray, rect: Rect, slack: float) -> bool:
    """Is the point ``p`` inside ``rect`` grown by ``slack`` px? (A predicted centre there
    means the object may be wholly behind the occluder, give or take prediction error.)"""
    x0, y0, x1, y1 = rect
    return x0 - slack <= p[0] <= x1 + slack and y0 - slack <= p[1] <= y1 + slack


def _visible_area(d: np.ndarray, r: float) -> np.ndarray:
    """Area of a disc of radius ``r`` on one side of a straight edge, its centre at signed
    distance ``d`` from the edge (d > 0: on that side)."""
    d = np.clip(d, -r, r)
    return r * r * np.arccos(-d / r) + d * np.sqrt(np.maximum(r * r - d * d, 0.0))


def _unhide(p: np.ndarray, area: float, r: float, rect: Rect, size: tuple[int, int]) -> np.ndarray | None:
    """Where is the centre of a disc of radius ``r`` of which only ``area`` px² show at
    centroid ``p``, the rest hidden behind ``rect``?

    The visible part is the disc cut by the rectangle edge nearest ``p`` (a circular
    segment): along the edge the centre shares the centroid's coordinate, across it the
    visible area fixes its distance from the edge. Returns None when no edge fits.
    """
    h, w = size
    x0, y0, x1, y1 = rect
    # (axis, edge coordinate, +1 if the visible side is above the coordinate)
    edges = [(0, x0, -1.0), (0, x1, 1.0), (1, y0, -1.0), (1, y1, 1.0)]
    best = None
    for axis, c, side in edges:
        limit = (w, h)[axis]
        if (side < 0 and c <= 0) or (side > 0 and c >= limit):
            continue  # the edge lies on the frame's border: nothing visible beyond it
        gap = side * (p[axis] - c)  # >= 0 when the centroid is on the visible side
        if gap < -0.5:
            continue
        if best is None or gap < best[0]:
            best = (gap, axis, c, side)
    if best is None or r <= 0:
        return None
    _, axis, c, side = best
    target = min(area, math.pi * r * r)
    lo, hi = -r, r  # bisection on the signed distance (area grows with d)
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if _visible_area(np.float64(mid), r) < target:
            lo = mid
        else:
            hi = mid
    q = np.array(p, dtype=np.float64)
    q[axis] = c + side * 0.5 * (lo + hi)
    return q


def _fold(x: float, lo: float, hi: float) -> float:
    """Reflect ``x`` into [lo, hi] (a ball bouncing off the walls while unseen)."""
    if hi <= lo:
        return x
    span = hi - lo
    u = (x - lo) % (2 * span)
    return lo + (u if u <= span else 2 * span - u)


def track(frames: np.ndarray, colors, background=BACKGROUND, *, occluders: Sequence[Rect] = (),
          distractors: Iterable = (), min_area: float = MIN_AREA, init_pos: np.ndarray | None = None,
          init_vel: np.ndarray | None = None, init_radius: np.ndarray | None = None, dt: float = 1.0,
          largest_blob: bool = True, hard: bool = False, frame_walls: bool = True, occlusion_grace: int = 10,
          dup_fraction: float = 0.5, **kw: Any) -> Track:
    """Follow one object per colour through ``frames`` (T, H, W, 3) uint8.

    Each frame is read with :func:`detect`. A detection is CLEAR unless its disc reaches
    an occluder or past the frame edge (PARTIAL: its centroid and size are biased). An
    undetected object gets a linear prediction from its last two positions (CLEAR ones,
    or, half behind an occluder, the centre its visible area implies; reflected off the
    frame walls when ``frame_walls``); it is OCCLUDED when the
    predicted disc can lie behind an occluder (a rectangle ``(x0, y0, x1, y1)``; pass
    its colour in ``distractors``), else MISSING.

    An object stays OCCLUDED for up to ``occlusion_grace`` frames after its prediction
    leaves the occluder (it may have bounced or collided unseen) before it is MISSING.

    ``init_pos``/``init_vel`` (K, 2) (px, px/s with ``dt`` s per frame) and
    ``init_radius`` (K,) seed the prediction, e.g. from a ground-truth table at t=0,
    so an object hidden from the first frame is known to be occluded.
    ``largest_blob`` (default): each colour is read as its largest connected blob, so
    stray pixels of that colour elsewhere (a blurred blend of two other colours) do not
    pull its centroid; ``Track.blobs`` then counts the blobs of at least
    ``dup_fraction`` of the largest one's area (2 = the object split or doubled).
    False: every pixel of the colour counts (cheaper, as :func:`detect`).
    """
    frames = np.asarray(frames)
    t_len = len(frames)
    cols = _as_colors(colors)
    k = len(cols)
    h, w = frames.shape[1:3] if t_len else (0, 0)
    occl = [tuple(float(v) for v in r) for r in occluders]
    distractors = list(distractors)
    pos = np.full((t_len, k, 2), np.nan)
    radius = np.full((t_len, k), np.nan)
    area = np.zeros((t_len, k))
    visible = np.zeros((t_len, k), bool)
    status = np.full((t_len, k), MISSING, np.int8)
    predicted = np.zeros((t_len, k), bool)
    blobs = np.zeros((t_len, k), np.int64) if largest_blob else None

    # per object: last two clear (t, pos), reference radius
    last: list[list[tuple[float, np.ndarray]]] = [[] for _ in range(k)]
    ref_r = np.full(k, np.nan) if init_radius is None else np.asarray(init_radius, float).copy()
    max_r = np.zeros(k)
    grace_left = np.zeros(k, np.int64)
    vel0 = None if init_vel is None else np.asarray(init_vel, float) * dt  # px per frame
    if init_pos is not None:
        for i in range(k):
            p0 = np.asarray(init_pos[i], float)
            last[i] = [(-1.0, p0 - (vel0[i] if vel0 is not None else 0.0)), (0.0, p0)] if vel0 is not None \
                else [(0.0, p0)]

    def predict(i: int, t: int) -> np.ndarray | None:
        hist = last[i]
        if not hist:
            return None
        t1, p1 = hist[-1]
        v = (p1 - hist[-2][1]) / (t1 - hist[-2][0]) if len(hist) > 1 else np.zeros(2)
        p = p1 + v * (t - t1)
        if frame_walls:
            r = ref_r[i] if np.isfinite(ref_r[i]) else 0.0
            p = np.array([_fold(p[0], r, w - r), _fold(p[1], r, h - r)])
        return p

    for t in range(t_len):
        owner, alpha = unmix(frames[t], cols, background, distractors=distractors, ignore=occl, **kw)
        weight = (alpha > 0.5).astype(np.float32) if hard else alpha
        if largest_blob:
            det, blobs[t] = _largest(owner, alpha, weight, k, min_area, dup_fraction,
                                     kw.get("seed_alpha", SEED_ALPHA), kw.get("grow", GROW))
        else:
            det = _moments(owner, weight, k, min_area)
        area[t] = det.area
        for i in range(k):
            guess = predict(i, t)
            if det.visible[i]:
                max_r[i] = max(max_r[i], det.radius[i])
            # never seen clear: the largest reading so far (a partly hidden object looks small)
            r_ref = ref_r[i] if np.isfinite(ref_r[i]) else max_r[i]
            if det.visible[i]:
                p = det.pos[i]
                pos[t, i], radius[t, i], visible[t, i] = p, det.radius[i], True
                edge = frame_walls and (p[0] - r_ref < -0.5 or p[1] - r_ref < -0.5
                                        or p[0] + r_ref > w + 0.5 or p[1] + r_ref > h + 0.5)
                # the anti-aliased rim reaches r + 0.5; a partly hidden object's centroid stays
                # within a radius of the occluder, so the measurement alone decides
                near = any(_overlaps(p, r_ref + 0.75, rect) for rect in occl)
                if edge or near:
                    status[t, i] = PARTIAL
                    # half hidden: the centroid is biased towards the visible side, so feed the
                    # predictor the centre implied by the visible area instead
                    rect = min(occl, key=lambda q: _rect_distance(p, q)) if occl else None
                    centre = _unhide(p, det.area[i], r_ref, rect, (h, w)) if near and rect is not None else None
                    if centre is not None:
                        hist = [e for e in last[i] if e[0] < t]
                        last[i] = (hist + [(float(t), centre)])[-2:]
                else:
                    status[t, i] = CLEAR
                    if init_radius is None:  # no given size: a smoothed running reference
                        ref_r[i] = det.radius[i] if not np.isfinite(ref_r[i]) else 0.8 * ref_r[i] + 0.2 * det.radius[i]
                    hist = [e for e in last[i] if e[0] < t]  # a measurement replaces a seed at t
                    last[i] = (hist + [(float(t), p.copy())])[-2:]
            else:
                if guess is not None:
                    pos[t, i], predicted[t, i] = guess, True
                    slack = 1.0 + 0.5 * max(0, t - last[i][-1][0])  # prediction error grows with time unseen
                    hidden = any(_contains(guess, rect, slack) for rect in occl)
                    if hidden:
                        grace_left[i] = occlusion_grace
                    elif t and status[t - 1, i] == OCCLUDED and grace_left[i] > 0:
                        hidden = True  # it may have bounced or collided while hidden
                        grace_left[i] -= 1
                    status[t, i] = OCCLUDED if hidden else MISSING
                else:
                    status[t, i] = MISSING
    return Track(pos, radius, area, visible, status, predicted, blobs, occl)
