"""Built-in physics-probe plugin, and the offline probes behind ``simcore probe``.

"Obeys physics" (DESIGN.md §7) is measured by reading objects back out of frames
(``simcore.perception``: colour unmixing, robust to blur) and comparing what they do
with what the scene's simulator says they should do. Two uses:

* Live (the ``simcore_probe`` hook): while a World dreams (the model makes the frames),
  or everywhere once enabled (``enable()``, ``SIMCORE_PROBES=1``, or
  ``simcore_configure`` config ``{"probes": True}``), every transition reports cheap
  readouts in ``info["probes"]``: objects seen/expected, relative radius error and
  (when the simulator's object table is there) position error. Disabled and not
  dreaming, the hook returns at once, so ordinary simulation pays nothing.
* Offline, over whole episodes with ground truth (an object table per step):

  ====  ==========  ===============================================================
  P1    inertia     velocity from line fits over free-flight segments vs truth
  P2    gravity     parabola fits y(t) per free-flight segment: fitted g vs the scene's
  P3    collision   ball–ball hits: momentum, kinetic energy and the elastic solution from
                    line-fitted velocities either side of the hit (masses ∝ tracked r²)
  P4    bounce      restitution from fitted velocities either side of a wall hit
  P5    permanence  objects vanishing (not occluded), appearing, teleporting, resizing
  P8    drift       per-step position error in radii; H* = first step median > 1 radius
  ====  ==========  ===============================================================

  Every probe also runs on ground-truth frames re-rendered from the tables (the
  *floor*: what perception alone gets wrong) and, given a ``roundtrip`` callable,
  on autoencoder round trips of them (the floor a model cannot beat). Model numbers
  are judged relative to the floor (``TOLERANCES``); P5 events that the floor shows
  too (a ball that bounces while hidden, Pong's serve) are excused.

Free-flight segments come from the ground truth, not the frames: a step is free when
the table's positions and velocities follow exact ballistic motion (and the scene's
``wall_hits``/``ball_hits`` counters did not move), so every bounce, collision or
serve splits a trajectory, whatever the model drew.

Known limits: the floor of P4 on scenes with gravity is not zero, because the
simulator mirrors a wall overshoot without gravity's share (``simcore.physics.walls``
adds up to ``2·g·dt/substeps`` of normal speed per bounce; ~1-3 % on Projectile-v0);
judging against the floor absorbs it. P5 "appear" only sees objects of known colours
(a reappearance, or a colour split in two blobs), not objects of new colours.
"""
from __future__ import annotations

import math
import os
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from simcore import perception
from simcore.hookspecs import hookimpl
from simcore.jsonable import jsonable
from simcore.scene import BACKGROUND, REFERENCE_SIZE

#: Violation rule per probe metric: (factor, slack) -> flagged when
#: ``value > factor * floor + slack``. The slack keeps a near-zero floor from turning
#: rounding into a violation; the factor allows perception to do worse on model
#: frames (blur, colour shifts) than on crisp ground truth.
TOLERANCES: dict[str, tuple[float, float]] = {
    "p1.vel_rel_err": (2.0, 0.05),  # velocity error / speed: 5 % beyond twice the floor
    "p2.g_rel_err": (2.0, 0.05),  # |fitted g / g - 1|
    "p4.restitution_err": (2.0, 0.10),  # mean |fitted e - e|
    "p3.momentum_err": (2.0, 0.05),  # mean |ΔP| / |P| over ball–ball collisions
    "p3.energy_err": (2.0, 0.10),  # mean |ΔKE| / KE (quadratic in speed: twice the slack)
    "p3.elastic_err": (2.0, 0.10),  # mean |v_after - v_elastic| / speed
}
TELEPORT_RADII = 3.0  # P5: a jump longer than this many radii plus the predicted motion
RESIZE_FRACTION = 0.25  # P5: a radius change beyond this fraction
MIN_POINTS = {"p1": 3, "p2": 5, "p3": 3, "p4": 3}  # clear detections a segment needs for each fit
MIN_BOUNCE_SPEED = 10.0  # px/s: P4 skips slower impacts (half a pixel per step at 20 fps)
COLLISION_WINDOW = 6  # P3: frames of free flight fitted on each side of a ball–ball hit
#: P3: relative errors are divided by at least this fraction of the scalar sums (Σ m|v|, mean
#: speed), so a near-zero total momentum (equal balls head-on) does not blow them up
P3_MIN_SCALE = 0.25
EVENT_KINDS = ("vanish", "appear", "teleport", "resize")


# ---------------------------------------------------------------------------
# scene parameters and ground truth
# ---------------------------------------------------------------------------


@dataclass
class SceneParams:
    """What the probes need to know about a scene, from a recording header or a World."""

    scene: str
    frame_size: tuple[int, int]  # (H, W)
    dt: float  # seconds per step
    gravity: float = 0.0  # px/s² along +y (down) in pixels of this frame
    restitution: float = 1.0  # wall restitution
    occluders: list = field(default_factory=list)  # [(x0, y0, x1, y1)] px
    occluder_color: tuple | None = None
    background: tuple = BACKGROUND

    @property
    def distractors(self) -> list:
        """Colours of known non-objects, so unmixing does not read them as objects."""
        return [self.occluder_color] if self.occluders and self.occluder_color is not None else []


def _occluder_color() -> tuple[int, int, int]:
    from simcore.scenes.occlusion import OCCLUDER_COLOR

    return tuple(OCCLUDER_COLOR)


def scene_params(scene: str, options: dict[str, Any], frame_size, fps: float | None = None) -> SceneParams:
    """Probe parameters from a scene id, its resolved options and the frame size.

    Option lengths are in px of a 64-px frame (``simcore.scene``) and scaled here;
    the occluder of ``Occlusion-v0`` is a full-height band ``options["occluder"]``.
    """
    h, w = (int(v) for v in frame_size)
    scale = min(h, w) / REFERENCE_SIZE
    occluders = []
    if options.get("occluder") is not None:
        x0, x1 = (float(v) * scale for v in options["occluder"])
        occluders.append((x0, 0.0, x1, float(h)))
    return SceneParams(scene=scene, frame_size=(h, w), dt=1.0 / float(fps or 20.0),
                       gravity=float(options.get("gravity", 0.0) or 0.0) * scale,
                       restitution=float(options.get("restitution", 1.0)),
                       occluders=occluders, occluder_color=_occluder_color() if occluders else None)


@dataclass
class Truth:
    """Ground-truth object tables of an episode stacked over time (T steps, K objects)."""

    kinds: list[str]  # (K,)
    color: np.ndarray  # (K, 3) uint8
    pos: np.ndarray  # (T, K, 2) px
    vel: np.ndarray  # (T, K, 2) px/s
    radius: np.ndarray  # (T, K) px
    size: np.ndarray  # (T, K, 2) width, height
    visible: np.ndarray  # (T, K) bool
    wall_hits: np.ndarray | None = None  # (T, K) cumulative counters, when the scene keeps them
    ball_hits: np.ndarray | None = None

    @property
    def equivalent_radius(self) -> np.ndarray:
        """(T, K) radius of a disc of the object's area: the radius for balls,
        sqrt(w·h/π) for boxes (what ``sqrt(area/π)`` of a perceived paddle reads)."""
        box = np.sqrt(np.prod(self.size, axis=-1) / math.pi)
        return np.where(self.balls[None, :], self.radius, box)

    @property
    def balls(self) -> np.ndarray:
        """(K,) bool: round objects (the probes of motion look at these only)."""
        return np.array([k == "ball" for k in self.kinds], dtype=bool)

    def __len__(self) -> int:
        return len(self.pos)


def truth_from_tables(tables: Sequence[dict]) -> Truth:
    """Stack per-step object tables (``Scene.objects`` / a recording step's ``state``)."""
    if not tables:
        raise ValueError("no object tables")
    first = tables[0]
    n = len(first["color"])
    for t, tab in enumerate(tables):
        if len(tab["color"]) != n:
            raise ValueError(f"step {t} has {len(tab['color'])} objects, step 0 has {n}: the probes need a "
                             "fixed set of objects per episode")

    def stack(key, dtype=np.float64, shape=()):
        if key not in first:
            return None
        return np.stack([np.asarray(tab[key], dtype=dtype).reshape((n,) + shape) for tab in tables])

    radius = stack("radius")
    size = stack("size", shape=(2,))
    return Truth(
        kinds=[str(k) for k in first.get("kind", ["ball"] * n)],
        color=np.asarray(first["color"], dtype=np.uint8).reshape(n, 3),
        pos=stack("pos", shape=(2,)),
        vel=stack("vel", shape=(2,)) if "vel" in first else np.zeros((len(tables), n, 2)),
        radius=radius,
        size=size if size is not None else np.repeat(2 * radius[..., None], 2, axis=-1),
        visible=stack("visible", bool) if "visible" in first else np.ones((len(tables), n), bool),
        wall_hits=stack("wall_hits", np.int64),
        ball_hits=stack("ball_hits", np.int64),
    )


def render_truth(truth: Truth, params: SceneParams) -> np.ndarray:
    """Ground-truth frames (T, H, W, 3) uint8 drawn from the tables: boxes (e.g. paddles)
    first, then balls, then occluders, as the scenes draw them."""
    from simcore import raster

    h, w = params.frame_size
    frames = np.empty((len(truth), h, w, 3), np.uint8)
    balls = truth.balls
    for t in range(len(truth)):
        f = raster.blank(h, w, params.background)
        for k in np.flatnonzero(~balls):
            (x, y), (sw, sh) = truth.pos[t, k], truth.size[t, k]
            raster.draw_rect(f, x - sw / 2, y - sh / 2, x + sw / 2, y + sh / 2, truth.color[k])
        for k in np.flatnonzero(balls):
            raster.draw_disc(f, *truth.pos[t, k], truth.radius[t, k], truth.color[k])
        for rect in params.occluders:
            raster.draw_rect(f, *rect, params.occluder_color)
        frames[t] = f
    return frames


def perceive(frames: np.ndarray, truth: Truth, params: SceneParams, **kw: Any) -> perception.Track:
    """Track the truth's objects (by colour) through ``frames``, seeded with the first
    table (so an object hidden from the start is known to be occluded)."""
    return perception.track(frames, truth.color, params.background, occluders=params.occluders,
                            distractors=params.distractors, init_pos=truth.pos[0], init_vel=truth.vel[0],
                            init_radius=truth.equivalent_radius[0], dt=params.dt, **kw)


# ---------------------------------------------------------------------------
# free flight
# ---------------------------------------------------------------------------


def free_steps(truth: Truth, params: SceneParams) -> np.ndarray:
    """(T, K) bool: step t-1 -> t was free flight for object k (False at t=0).

    Free means the table follows exact constant-acceleration motion
    (``simcore.physics.ballistic``) and no hit counter moved.
    """
    t_len, k = truth.radius.shape
    free = np.zeros((t_len, k), bool)
    if t_len < 2:
        return free
    dt, g = params.dt, np.array([0.0, params.gravity])
    p0, v0, p1, v1 = truth.pos[:-1], truth.vel[:-1], truth.pos[1:], truth.vel[1:]
    scale = 1e-6 * (1.0 + np.abs(p1).max(-1))
    ok = (np.abs(p1 - (p0 + v0 * dt + 0.5 * g * dt * dt)).max(-1) <= scale) & \
         (np.abs(v1 - (v0 + g * dt)).max(-1) <= 1e-6 * (1.0 + np.abs(v1).max(-1)))
    for counters in (truth.wall_hits, truth.ball_hits):
        if counters is not None:
            ok &= counters[1:] == counters[:-1]
    free[1:] = ok
    return free


def segments(truth: Truth, params: SceneParams, *, balls_only: bool = True) -> list[tuple[int, int, int]]:
    """Free-flight segments ``(k, a, b)``: frames a..b of object k joined by free steps (b > a)."""
    free = free_steps(truth, params)
    out = []
    objs = np.flatnonzero(truth.balls) if balls_only else range(free.shape[1])
    for k in objs:
        a = 0
        for t in range(1, free.shape[0] + 1):
            if t == free.shape[0] or not free[t, k]:
                if t - 1 > a:
                    out.append((int(k), a, t - 1))
                a = t
    return out


def _fit(times: np.ndarray, values: np.ndarray, degree: int, known_accel: float = 0.0):
    """Least squares of ``values`` (n,) on times (n,) (centred at their mean).

    degree 1: values - ½·known_accel·τ² = c0 + c1·τ -> (tm, c0, c1) with c1 the velocity at tm.
    degree 2: values = c0 + c1·τ + c2·τ²            -> (tm, c0, c1, 2·c2, weight) with weight
    the information of the curvature term (Σ q², q = τ² without its [1, τ] part), so
    segments combine by inverse variance.
    """
    tm = float(times.mean())
    tau = times - tm
    if degree == 1:
        y = values - 0.5 * known_accel * tau * tau
        a = np.stack([np.ones_like(tau), tau], 1)
        c0, c1 = np.linalg.lstsq(a, y, rcond=None)[0]
        return tm, float(c0), float(c1)
    a = np.stack([np.ones_like(tau), tau, tau * tau], 1)
    (c0, c1, c2) = np.linalg.lstsq(a, values, rcond=None)[0]
    base = a[:, :2]
    q = tau * tau - base @ np.linalg.lstsq(base, tau * tau, rcond=None)[0]
    return tm, float(c0), float(c1), 2.0 * float(c2), float((q * q).sum())


def _clear_points(track: perception.Track, k: int, a: int, b: int) -> np.ndarray:
    idx = np.arange(a, b + 1)
    return idx[track.clear[a:b + 1, k]]


# ---------------------------------------------------------------------------
# probes
# ---------------------------------------------------------------------------


def inertia(track: perception.Track, truth: Truth, params: SceneParams, segs=None) -> dict[str, Any]:
    """P1: velocity from a line fit (gravity removed) over each free-flight segment,
    compared with the truth's velocity at the segment's mean time.

    ``vel_rel_err`` = Σ|Δv| / Σ|v| over segments (a ratio of sums, so a ball at rest
    does not divide by zero); ``vel_err`` = mean |Δv| in px/s.
    """
    segs = segments(truth, params) if segs is None else segs
    g = np.array([0.0, params.gravity])
    errs, speeds = [], []
    for k, a, b in segs:
        idx = _clear_points(track, k, a, b)
        if len(idx) < MIN_POINTS["p1"]:
            continue
        times = idx * params.dt
        v_fit = np.array([_fit(times, track.pos[idx, k, ax], 1, g[ax])[2] for ax in (0, 1)])
        v_true = truth.vel[idx, k].mean(0)  # linear in time -> the velocity at the mean time
        errs.append(float(np.hypot(*(v_fit - v_true))))
        speeds.append(float(np.hypot(*v_true)))
    n = len(errs)
    return {"segments": n, "vel_err": float(np.mean(errs)) if n else None,
            "vel_rel_err": float(np.sum(errs) / max(np.sum(speeds), 1e-9)) if n else None,
            "speed": float(np.mean(speeds)) if n else None}


def gravity(track: perception.Track, truth: Truth, params: SceneParams, segs=None) -> dict[str, Any]:
    """P2: a parabola y(t) fitted per free-flight segment; fitted g combined over
    segments by inverse variance (long arcs count far more than short ones)."""
    segs = segments(truth, params) if segs is None else segs
    gs, ws = [], []
    for k, a, b in segs:
        idx = _clear_points(track, k, a, b)
        if len(idx) < MIN_POINTS["p2"]:
            continue
        _, _, _, g_fit, weight = _fit(idx * params.dt, track.pos[idx, k, 1], 2)
        gs.append(g_fit)
        ws.append(weight)
    g_true = params.gravity
    if not gs:
        return {"segments": 0, "g_fit": None, "g_true": g_true, "g_err": None, "g_rel_err": None}
    g_fit = float(np.average(gs, weights=ws))
    return {"segments": len(gs), "g_fit": g_fit, "g_true": g_true, "g_err": abs(g_fit - g_true),
            "g_rel_err": abs(g_fit - g_true) / abs(g_true) if g_true else None}


def _bounces(truth: Truth, params: SceneParams, segs) -> list[tuple[int, int, int, tuple, tuple]]:
    """Single-wall bounces ``(k, t, axis, pre segment, post segment)``: object k hit a
    wall during step t-1 -> t, a free segment ends at t-1 and another starts at t,
    and exactly one velocity component changed sign."""
    h, w = params.frame_size
    dt, g = params.dt, (0.0, params.gravity)
    by_end = {(k, b): (a, b) for k, a, b in segs}
    by_start = {(k, a): (a, b) for k, a, b in segs}
    out = []
    for (k, b), pre in by_end.items():
        t = b + 1
        post = by_start.get((k, t))
        if post is None:
            continue
        if truth.wall_hits is not None and truth.wall_hits[t, k] - truth.wall_hits[t - 1, k] != 1:
            continue
        if truth.ball_hits is not None and truth.ball_hits[t, k] != truth.ball_hits[t - 1, k]:
            continue
        flips = np.sign(truth.vel[t - 1, k]) * np.sign(truth.vel[t, k]) < 0  # (2,)
        if flips.sum() != 1:
            continue
        axis = int(np.argmax(flips))
        # a wall, not a paddle or a ball: free flight would have carried it past the frame's edge
        reach = truth.pos[t - 1, k, axis] + truth.vel[t - 1, k, axis] * dt + 0.5 * g[axis] * dt * dt
        r, size = truth.radius[t - 1, k], (w, h)[axis]
        if not (reach < r or reach > size - r):
            continue
        out.append((k, t, axis, pre, post))
    return sorted(out, key=lambda x: (x[1], x[0]))


def bounce(track: perception.Track, truth: Truth, params: SceneParams, segs=None) -> dict[str, Any]:
    """P4: restitution from the fitted normal velocity just before and just after each
    wall hit, both evaluated at the contact time (where the pre-bounce fit reaches the
    wall), compared with the scene's restitution."""
    segs = segments(truth, params) if segs is None else segs
    h, w = params.frame_size
    es = []
    for k, t, axis, (a0, b0), (a1, b1) in _bounces(truth, params, segs):
        pre, post = _clear_points(track, k, a0, b0), _clear_points(track, k, a1, b1)
        if len(pre) < MIN_POINTS["p4"] or len(post) < MIN_POINTS["p4"]:
            continue
        acc = params.gravity if axis == 1 else 0.0
        tm0, c0, v0 = _fit(pre * params.dt, track.pos[pre, k, axis], 1, acc)
        tm1, _, v1 = _fit(post * params.dt, track.pos[post, k, axis], 1, acc)
        r = truth.radius[t, k]
        wall = ((w, h)[axis] - r) if truth.vel[t - 1, k, axis] > 0 else r
        # contact: c0 + v0·s + ½·acc·s² = wall for s = τ - tm0 within the bounce step
        lo, hi = (t - 1) * params.dt - tm0, t * params.dt - tm0
        roots = np.roots([0.5 * acc, v0, c0 - wall]) if acc else np.array([(wall - c0) / v0 if v0 else np.nan])
        roots = [float(s.real) for s in np.atleast_1d(roots) if abs(s.imag) < 1e-9 and lo - 1e-9 <= s.real <= hi + 1e-9]
        tc = tm0 + (roots[0] if roots else 0.5 * (lo + hi))
        vb = v0 + acc * (tc - tm0)
        va = v1 + acc * (tc - tm1)
        if abs(vb) < MIN_BOUNCE_SPEED:  # a ball settling on the floor: sub-pixel steps, e is noise
            continue
        es.append(-va / vb)
    e_true = params.restitution
    if not es:
        return {"bounces": 0, "restitution_fit": None, "restitution": e_true, "restitution_err": None}
    es = np.array(es)
    return {"bounces": len(es), "restitution_fit": float(es.mean()), "restitution": e_true,
            "restitution_err": float(np.abs(es - e_true).mean())}


def _collisions(truth: Truth, params: SceneParams, segs) -> list[tuple[int, int, int, dict]]:
    """Ball–ball hits ``(i, j, t, {k: (pre segment, post segment)})``: the ``ball_hits``
    counters of exactly two balls went up by one during step t-1 -> t, and each has a
    free segment ending at t-1 and another starting at t."""
    if truth.ball_hits is None or len(truth) < 2:
        return []
    by_end = {(k, b): (a, b) for k, a, b in segs}
    by_start = {(k, a): (a, b) for k, a, b in segs}
    out = []
    for t in range(1, len(truth)):
        inc = truth.ball_hits[t] - truth.ball_hits[t - 1]
        hit = np.flatnonzero((inc > 0) & truth.balls)
        if len(hit) != 2 or (inc[hit] != 1).any() or (inc[~truth.balls] != 0).any() or (inc > 0).sum() != 2:
            continue  # ambiguous: several pairs, or a multiple hit, in one step
        sides = {}
        for k in hit.tolist():
            pre, post = by_end.get((k, t - 1)), by_start.get((k, t))
            if pre is None or post is None:
                break
            sides[k] = (pre, post)
        else:
            out.append((int(hit[0]), int(hit[1]), t, sides))
    return out


def collision(track: perception.Track, truth: Truth, params: SceneParams, segs=None) -> dict[str, Any]:
    """P3: each ball's velocity from a line fit (gravity removed) over up to
    ``COLLISION_WINDOW`` clear frames of free flight just before (frames ≤ t-1) and just
    after (frames ≥ t+1: the collision frame t, where the balls touch, is left out) a
    ball–ball hit at step t, both evaluated at the hit time t·dt; masses ∝ r² of the
    tracked radii (median of the clear readings used). Per event:

    * ``momentum_err`` = |Σ m v_after − Σ m v_before| / |Σ m v_before|
    * ``energy_err`` = |KE_after − KE_before| / KE_before
    * ``elastic_err`` = |v_after − v_elastic| / |v_elastic| averaged over both balls, with
      v_elastic the elastic impulse along the line of centres (the pre-hit fits
      extrapolated back to where they touch within the hit step, as the simulator's
      substeps resolve a hit mid-step) applied to the measured pre-hit velocities.

    Denominators are kept above ``P3_MIN_SCALE`` times Σ m|v_before| (momentum) and the
    pair's mean speed (elastic), so equal balls meeting head-on (P ≈ 0) or a ball left at
    rest stay measurable. Events with fewer than ``MIN_POINTS["p3"]`` clear frames on a
    side are skipped. The aggregates are means over events.
    """
    segs = segments(truth, params) if segs is None else segs
    dt, g = params.dt, np.array([0.0, params.gravity])
    n_min, window = MIN_POINTS["p3"], COLLISION_WINDOW
    events = []
    for i, j, t, sides in _collisions(truth, params, segs):
        tc = t * dt
        fit = {}
        for k in (i, j):
            (a0, b0), (a1, b1) = sides[k]
            pre = _clear_points(track, k, max(a0, b0 - window + 1), b0)
            post = _clear_points(track, k, a1 + 1, min(b1, a1 + window))
            if len(pre) < n_min or len(post) < n_min:
                break
            vals = []
            for idx in (pre, post):
                coef = [_fit(idx * dt, track.pos[idx, k, ax], 1, g[ax]) for ax in (0, 1)]
                tm = coef[0][0]
                v = np.array([c[2] for c in coef]) + g * (tc - tm)
                p = np.array([c[1] for c in coef]) + np.array([c[2] for c in coef]) * (tc - tm) \
                    + 0.5 * g * (tc - tm) ** 2
                vals.append((v, p))
            r = float(np.nanmedian(track.radius[np.concatenate([pre, post]), k]))
            fit[k] = (vals[0], vals[1], r * r)
        else:
            (vi, pi), (ui, _), mi = fit[i]
            (vj, pj), (uj, _), mj = fit[j]
            # line of centres at contact: |d + dv·s| = r_i + r_j for s in the hit step (s ≤ 0;
            # gravity cancels in the relative motion); t·dt when the fits never touch there
            d, dv, reach = pi - pj, vi - vj, math.sqrt(mi) + math.sqrt(mj)
            roots = np.roots([dv @ dv, 2 * d @ dv, d @ d - reach * reach]) if dv @ dv > 1e-12 else []
            roots = [float(x.real) for x in np.atleast_1d(roots) if abs(x.imag) < 1e-9 and -dt - 1e-9 <= x.real <= 1e-9]
            if roots:
                s_c = min(roots)
                pi, pj = pi + vi * s_c, pj + vj * s_c
            p_before, p_after = mi * vi + mj * vj, mi * ui + mj * uj
            ke_before = 0.5 * (mi * vi @ vi + mj * vj @ vj)
            ke_after = 0.5 * (mi * ui @ ui + mj * uj @ uj)
            p_scale = max(float(np.hypot(*p_before)), P3_MIN_SCALE * (mi * np.hypot(*vi) + mj * np.hypot(*vj)), 1e-9)
            delta = pi - pj
            normal = delta / max(float(np.hypot(*delta)), 1e-9)
            approach = float((vi - vj) @ normal)
            ei, ej = vi.copy(), vj.copy()
            if approach < 0:  # the fits say they approach: elastic impulse as simcore.physics.collide
                ei = vi - (2 * mj / (mi + mj)) * approach * normal
                ej = vj + (2 * mi / (mi + mj)) * approach * normal
            v_scale = P3_MIN_SCALE * 0.5 * (np.hypot(*vi) + np.hypot(*vj))
            elastic = [float(np.hypot(*(u - e)) / max(float(np.hypot(*e)), v_scale, 1e-9))
                       for u, e in ((ui, ei), (uj, ej))]
            events.append({"t": t, "objects": [i, j],
                           "momentum_err": float(np.hypot(*(p_after - p_before)) / p_scale),
                           "energy_err": float(abs(ke_after - ke_before) / max(ke_before, 1e-9)),
                           "elastic_err": float(np.mean(elastic)),
                           "mass_ratio": float(mi / mj)})
    if not events:
        return {"collisions": 0, "momentum_err": None, "energy_err": None, "elastic_err": None, "details": []}
    return {"collisions": len(events),
            **{m: float(np.mean([e[m] for e in events])) for m in ("momentum_err", "energy_err", "elastic_err")},
            "details": events[:50]}


def permanence_events(track: perception.Track, ref_radius: np.ndarray | None = None) -> list[dict]:
    """P5 events in a track: ``vanish`` (undetected where it should be visible, i.e. not
    behind an occluder), ``appear`` (detected again after vanishing, or a second blob of
    one colour), ``teleport`` (a jump between two clear detections longer than
    ``TELEPORT_RADII`` radii plus the predicted motion), ``resize`` (a clear radius off
    the reference by more than ``RESIZE_FRACTION``). ``ref_radius`` (K,): true sizes;
    default, the median of the clear readings."""
    t_len, k = track.status.shape
    if ref_radius is None:
        ref_radius = np.array([np.nanmedian(track.radius[track.clear[:, i], i]) if track.clear[:, i].any()
                               else np.nan for i in range(k)])
    events = []
    miss = track.status == perception.MISSING
    for i in range(k):
        r = ref_radius[i]
        for t in range(t_len):
            if miss[t, i] and (t == 0 or not miss[t - 1, i]):
                events.append({"kind": "vanish", "t": t, "object": i})
            if t and track.visible[t, i] and miss[t - 1, i]:
                events.append({"kind": "appear", "t": t, "object": i})
            if track.blobs is not None and track.clear[t, i] and track.blobs[t, i] > 1:
                events.append({"kind": "appear", "t": t, "object": i, "blobs": int(track.blobs[t, i])})
            if not track.clear[t, i] or not np.isfinite(r):
                continue
            if abs(track.radius[t, i] / r - 1.0) > RESIZE_FRACTION:
                events.append({"kind": "resize", "t": t, "object": i,
                               "ratio": float(track.radius[t, i] / r)})
            if t and track.clear[t - 1, i]:
                step = track.pos[t - 1, i] - track.pos[t - 2, i] if t > 1 and track.clear[t - 2, i] else np.zeros(2)
                jump = float(np.hypot(*(track.pos[t, i] - track.pos[t - 1, i])))
                if jump > TELEPORT_RADII * r + float(np.hypot(*step)):
                    events.append({"kind": "teleport", "t": t, "object": i, "jump_px": jump})
    return sorted(events, key=lambda e: (e["t"], e["object"], e["kind"]))


def permanence(track: perception.Track, floor: perception.Track | None = None,
               ref_radius: np.ndarray | None = None, *, window: int = 1) -> dict[str, Any]:
    """P5: event counts; with a ``floor`` track (the same objects in ground-truth frames)
    an event the floor also shows within ``window`` steps is excused (it is what the
    truth does or what perception cannot tell apart), the rest are violations."""
    events = permanence_events(track, ref_radius)
    floor_events = permanence_events(floor, ref_radius) if floor is not None else []
    for e in events:
        e["excused"] = any(f["kind"] == e["kind"] and f["object"] == e["object"] and abs(f["t"] - e["t"]) <= window
                           for f in floor_events)
    counts = {kind: sum(1 for e in events if e["kind"] == kind and not e["excused"]) for kind in EVENT_KINDS}
    return {"violation": any(counts.values()), "events": counts,
            "excused": sum(e["excused"] for e in events), "details": events[:50]}


def drift(track: perception.Track, truth: Truth) -> dict[str, Any]:
    """P8: per-step position error in radii (measured, or predicted while occluded;
    infinite for an object missing where the truth shows it), median over objects;
    H* = the first step whose median error exceeds one radius (the horizon if none)."""
    t_len = len(truth)
    err = np.hypot(*(track.pos - truth.pos).transpose(2, 0, 1)) / truth.radius  # (T, K)
    hidden = ~truth.visible
    err = np.where(track.missing & ~hidden, np.inf, err)
    err = np.where(hidden & ~track.visible, np.nan, err)  # truly hidden and unseen: no claim
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN steps (everything hidden) stay NaN
        med = np.nanmedian(err, axis=1) if err.shape[1] else np.full(t_len, np.nan)
        mean = np.nanmean(np.where(np.isinf(err), np.nan, err), axis=1) if err.shape[1] else med
    horizon = t_len - 1
    over = np.flatnonzero(med > 1.0)
    return {"horizon": horizon, "h_star": int(over[0]) if len(over) else horizon, "exceeded": bool(len(over)),
            "median_err": med.tolist(), "mean_err": mean.tolist(),
            "final_median_err": float(med[-1]) if t_len else None}


# ---------------------------------------------------------------------------
# whole episodes
# ---------------------------------------------------------------------------


def run_probes(frames: np.ndarray, truth: Truth, params: SceneParams, floor_track=None) -> tuple[dict, Any]:
    """P1, P2, P3 (scenes with two balls or more), P4, P5, P8 of ``frames`` against
    ``truth``; returns (results, track)."""
    track = perceive(frames, truth, params)
    segs = segments(truth, params)
    ref = truth.equivalent_radius[0]
    out = {
        "p1": inertia(track, truth, params, segs),
        "p2": gravity(track, truth, params, segs),
        "p4": bounce(track, truth, params, segs),
        "p5": permanence(track, floor_track, ref),
        "p8": drift(track, truth),
    }
    if int(truth.balls.sum()) >= 2:
        out["p3"] = collision(track, truth, params, segs)
    return out, track


def violations(result: dict, floor: dict, tolerances: dict[str, tuple[float, float]] | None = None) -> list[str]:
    """Human-readable violations of ``result`` against ``floor`` (empty: it passes)."""
    tolerances = TOLERANCES if tolerances is None else tolerances
    out = []
    for key, (factor, slack) in tolerances.items():
        probe, metric = key.split(".")
        if probe not in result or probe not in floor:  # e.g. P3 on a scene with one ball
            continue
        value, base = result[probe].get(metric), floor[probe].get(metric)
        if value is None:
            continue
        limit = factor * (base or 0.0) + slack
        if value > limit:
            floor_text = "-" if base is None else f"{base:.4g}"
            out.append(f"{probe.upper()} {metric} {value:.4g} > {limit:.4g} (floor {floor_text})")
    p5 = result["p5"]
    if p5["violation"]:
        counts = ", ".join(f"{n} {k}" for k, n in p5["events"].items() if n)
        out.append(f"P5 permanence: {counts}")
    return out


def probe_episode(frames: np.ndarray, truth: Truth, params: SceneParams, *,
                  roundtrip: Callable[[np.ndarray], np.ndarray] | None = None,
                  tolerances: dict | None = None) -> dict[str, Any]:
    """Probe ``frames`` (T, H, W, 3) of one episode against its ``truth``.

    The floor is the same probes on frames re-rendered from the truth (and, with
    ``roundtrip`` — e.g. an autoencoder's encode+decode of a frame batch — on its
    round trips too, as ``floor_ae``; tolerances then use the worse of the two floors).
    """
    gt_frames = render_truth(truth, params)
    floor, floor_track = run_probes(gt_frames, truth, params)  # its P5 counts every event (nothing excuses them)
    result, _ = run_probes(frames, truth, params, floor_track)
    out: dict[str, Any] = {**result, "floor": floor}
    basis = floor
    if roundtrip is not None:
        ae, ae_track = run_probes(np.asarray(roundtrip(gt_frames)), truth, params, floor_track)
        out["floor_ae"] = ae
        basis = {p: {m: _worse(floor[p].get(m), ae[p].get(m)) for m in floor[p]} if isinstance(floor[p], dict)
                 else floor[p] for p in floor}
    out["violations"] = violations(result, basis, tolerances)
    return out


def _worse(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return max(a, b)
    return a


def episode_truth(episode, plugin_manager=None) -> tuple[SceneParams, Truth]:
    """Scene parameters and ground truth of a recorded episode.

    The truth is each step's ``state`` (the object table the simulator wrote). Steps
    without one (frames a model dreamed) are rebuilt by re-running the scene's
    simulator from the header's seed and options with the recorded actions.
    """
    header = episode.header
    options = dict(header.get("options") or {})
    params = scene_params(header["scene"], options, header["frame_size"], header.get("fps"))
    states = [s.get("state") or {} for s in episode.steps]
    if all("pos" in st and "color" in st for st in states):
        return params, truth_from_tables(states)
    return params, truth_from_tables(resimulate(episode, plugin_manager))


def resimulate(episode, plugin_manager=None) -> list[dict]:
    """Object tables of an episode re-simulated from its header (seed, options) and actions."""
    import simcore
    from simcore.errors import RecordingError

    header = episode.header
    if header.get("start_step", 0) or header.get("seed") is None:
        raise RecordingError("this recording has steps without ground truth and cannot be re-simulated "
                             "(it does not start at a reset with a known seed)")
    world = simcore.make(header["scene"], frame_size=tuple(header["frame_size"]), plugin_manager=plugin_manager,
                         **(header.get("options") or {}))
    _, info = world.reset(seed=header["seed"])
    tables = [info["objects"]]
    for step in episode.steps[1:]:
        _, _, _, _, info = world.step(step["action"])
        tables.append(info["objects"])
    world.close()
    return tables


def probe_recording(path, *, episodes: Sequence[int] | None = None, roundtrip=None,
                    tolerances: dict | None = None, plugin_manager=None) -> dict[str, Any]:
    """Run :func:`probe_episode` on the recorded frames of every episode of ``path``."""
    from simcore.recording import read_episodes

    eps = read_episodes(path)
    report: dict[str, Any] = {"file": os.fspath(path), "tolerances": tolerances or TOLERANCES, "episodes": []}
    for i, ep in enumerate(eps):
        if episodes is not None and i not in episodes:
            continue
        if len(ep.steps) < 2:
            continue
        params, truth = episode_truth(ep, plugin_manager)
        res = probe_episode(ep.frames, truth, params, roundtrip=roundtrip, tolerances=tolerances)
        report["episodes"].append({"episode": i, "scene": params.scene, "seed": ep.header.get("seed"),
                                   "steps": len(ep.steps), **res})
    report["violations"] = sum(len(e["violations"]) for e in report["episodes"])
    return jsonable(report)


# ---------------------------------------------------------------------------
# the live plugin
# ---------------------------------------------------------------------------

_enabled = os.environ.get("SIMCORE_PROBES", "").strip().lower() in ("1", "true", "yes", "on")
#: world -> (its state object, object table, unmixing extras); a new state object renews it
_reference: "weakref.WeakKeyDictionary[Any, tuple[dict, dict, dict]]" = weakref.WeakKeyDictionary()


def enable(flag: bool = True) -> None:
    """Report live probes on every transition, not only while dreaming."""
    global _enabled
    _enabled = bool(flag)


def is_enabled() -> bool:
    return _enabled


def _reference_table(world) -> tuple[dict, list] | None:
    """The simulator's object table for ``world`` (its last simulated state: while
    dreaming, positions are stale but colours and sizes still hold), cached per state."""
    state = world.state
    if state is None:
        return None
    try:
        cached = _reference.get(world)
    except TypeError:  # not weak-referenceable: no cache
        cached = None
    if cached is None or cached[0] is not state:
        hidden = {}
        if "occluder" in state:  # Occlusion-v0: a grey band drawn over the balls
            hidden = {"distractors": [_occluder_color()], "ignore": [tuple(float(v) for v in state["occluder"])]}
        cached = (state, world.scene.objects(state), hidden)
        try:
            _reference[world] = cached
        except TypeError:
            pass
    return cached[1], cached[2]


def live_metrics(world, transition) -> dict[str, float] | None:
    """Cheap readouts of one transition's frame (a single :func:`perception.detect`)."""
    table = transition.info.get("objects")
    ref = _reference_table(world)
    if ref is None:
        return None
    ref_table, hidden = ref
    table = table if table is not None else ref_table
    det = perception.detect(transition.observation, table["color"], getattr(world.scene, "background", BACKGROUND),
                            **hidden)
    balls = np.array([k == "ball" for k in table.get("kind", ["ball"] * len(det))], dtype=bool)
    out = {"probe_objects_seen": float(det.visible.sum()), "probe_objects_expected": float(len(det))}
    seen = balls & det.visible
    if seen.any():
        out["probe_radius_error"] = float(np.mean(np.abs(det.radius[seen] / np.asarray(table["radius"])[seen] - 1)))
    if "objects" in transition.info:  # positions are current only when simulated
        vis = np.asarray(table.get("visible", np.ones(len(det), bool)), bool)
        out["probe_objects_expected"] = float(vis.sum())
        both = det.visible & vis
        pos, r = np.asarray(table["pos"], float), np.asarray(table["radius"], float)
        for x0, y0, x1, y1 in hidden.get("ignore", ()):  # partly hidden: centroid biased, leave out
            gap = np.hypot(np.maximum(np.maximum(x0 - pos[:, 0], pos[:, 0] - x1), 0),
                           np.maximum(np.maximum(y0 - pos[:, 1], pos[:, 1] - y1), 0))
            both &= gap > r + 1.0
        if both.any():
            out["probe_position_error_px"] = float(np.mean(np.hypot(*(det.pos[both] - table["pos"][both]).T)))
    return out


@hookimpl
def simcore_configure(config: dict[str, Any]) -> None:
    if "probes" in config:
        enable(bool(config["probes"]))


@hookimpl
def simcore_probe(world, transition) -> dict[str, float] | None:
    if not (_enabled or world.dreaming):
        return None
    return live_metrics(world, transition)


# ---------------------------------------------------------------------------
# P7 control: does the model follow the actions?
# ---------------------------------------------------------------------------

#: Matrix-Game's bar for action following (direction accuracy) and Genie's ΔPSNR (≈ 1.2 dB)
CONTROL_ACCURACY_TARGET = 0.95
CONTROL_DPSNR_TARGET_DB = 1.0
CONTROL_HOLD = (3, 6)  # random actions are held for this many steps (inclusive)
CONTROL_THRESHOLD_FRACTION = 1.0 / 3.0  # |dy| threshold: this fraction of the paddle's per-step move
CONTROL_ACTIONS = {0: "noop", 1: "up", 2: "down"}
CONTROL_BALL_MARGIN = 1.0  # px: steps where the sim's ball comes this close to the player paddle are skipped


def held_actions(rng: np.random.Generator, n: int, num_actions: int = 3, hold=CONTROL_HOLD) -> np.ndarray:
    """``n`` random actions, each held for a random ``hold[0]..hold[1]`` steps: (n,) int64."""
    out: list[int] = []
    while len(out) < n:
        out += [int(rng.integers(num_actions))] * int(rng.integers(hold[0], hold[1] + 1))
    return np.asarray(out[:n], dtype=np.int64)


def paddle_centre_y(frame: np.ndarray, colors, background=BACKGROUND, x_max: float | None = None) -> float:
    """The player's paddle centre y (px) in ``frame``: alpha-weighted centroid of the first
    of ``colors`` (the player colour; the others are the scene's other colours, so their
    pixels are not taken for it), read only in columns ``< x_max``. NaN when not visible."""
    f = np.asarray(frame)
    if x_max is not None:
        f = f[:, :max(1, int(math.ceil(x_max)))]
    det = perception.detect(f, colors, background)
    return float(det.pos[0, 1]) if det.visible[0] else math.nan


def direction_correct(action: int, dy: float, thr: float) -> bool:
    """Whether a paddle move ``dy`` (px, y down) matches ``action`` (0 noop, 1 up, 2 down)."""
    if not math.isfinite(dy):
        return False
    if action == 1:
        return dy < -thr
    if action == 2:
        return dy > thr
    return abs(dy) <= thr


def _near_paddle(state: dict, box) -> bool:
    """The ball's disc within CONTROL_BALL_MARGIN px of the paddle box (it may cover part of it)."""
    (x, y), r = state["ball_pos"], float(state["ball_radius"])
    x0, y0, x1, y1 = box
    gap = math.hypot(max(x0 - x, 0.0, x - x1), max(y0 - y, 0.0, y - y1))
    return gap <= r + CONTROL_BALL_MARGIN


def _accuracy(records: list[dict], key: str) -> dict[str, Any]:
    """Overall and per-action accuracy of ``records`` (counted steps only)."""
    used = [r for r in records if not r["skipped"]]
    out: dict[str, Any] = {"accuracy": float(np.mean([r[key] for r in used])) if used else math.nan,
                           "steps": len(used), "per_action": {}}
    for a, name in CONTROL_ACTIONS.items():
        sel = [r[key] for r in used if r["action"] == a]
        out["per_action"][name] = {"accuracy": float(np.mean(sel)) if sel else math.nan, "steps": len(sel)}
    return out


def _control_rollout(scene: str, m, seed: int, actions: np.ndarray, *, frame_size, denoise_steps, pm,
                     measure: bool) -> dict[str, Any]:
    """One lockstep rollout of a model world and a sim twin fed ``actions`` (n,), or
    (n, 2) for (sim action, model action) pairs. Returns the dreamed steps' frames and,
    with ``measure``, per-step paddle readings."""
    import simcore

    mw = simcore.make(scene, backend="model", model=m, denoise_steps=denoise_steps, frame_size=frame_size,
                      plugin_manager=pm)
    sw = simcore.make(scene, frame_size=frame_size, plugin_manager=pm)
    try:
        sw.reset(seed=seed)
        obs_m, _ = mw.reset(seed=seed)
        scene_obj = sw.scene
        bg = getattr(scene_obj, "background", BACKGROUND)
        colors = [scene_obj.colors["player"]] + [c for k, c in scene_obj.colors.items() if k != "player"]
        h, w = frame_size
        x_max = w / 4.0  # the player's paddle lives at the left edge
        thr = float(sw.state["paddle_speed"]) * scene_obj.dt * CONTROL_THRESHOLD_FRACTION
        prev_y_m = paddle_centre_y(obs_m, colors, bg, x_max)
        prev_y_s = prev_y_m
        model_frames, sim_frames, records = [], [], []
        prompt = 0
        for k in range(len(actions)):
            a = int(actions[k][0]) if actions.ndim == 2 else int(actions[k])
            a_model = int(actions[k][1]) if actions.ndim == 2 else a
            before = sw.state
            obs_m, *_ = mw.step(a_model)
            obs_s, *_ = sw.step(a)
            after = sw.state
            if not mw.dreaming:  # prompt step: simulated in both
                prompt += 1
                if measure:
                    prev_y_m = paddle_centre_y(obs_m, colors, bg, x_max)
                    prev_y_s = paddle_centre_y(obs_s, colors, bg, x_max)
                continue
            model_frames.append(obs_m)
            sim_frames.append(obs_s)
            if not measure:
                continue
            y_m = paddle_centre_y(obs_m, colors, bg, x_max)
            y_s = paddle_centre_y(obs_s, colors, bg, x_max)
            move = {0: 0.0, 1: -1.0, 2: 1.0}[a] * float(before["paddle_speed"]) * scene_obj.dt
            actual = float(after["paddle_y"][0] - before["paddle_y"][0])
            at_wall = abs(actual - move) > 1e-3
            ball = any(_near_paddle(st, scene_obj.paddle_boxes(st)[0]) for st in (before, after))
            dy_m, dy_s = y_m - prev_y_m, y_s - prev_y_s
            records.append({"action": a, "dy_model": dy_m, "dy_sim": dy_s, "dy_true": actual,
                            "at_wall": bool(at_wall), "ball_near": bool(ball), "skipped": bool(at_wall or ball),
                            "model_ok": direction_correct(a, dy_m, thr), "sim_ok": direction_correct(a, dy_s, thr)})
            prev_y_m, prev_y_s = y_m, y_s
        return {"model": np.stack(model_frames) if model_frames else np.zeros((0, h, w, 3), np.uint8),
                "sim": np.stack(sim_frames) if sim_frames else np.zeros((0, h, w, 3), np.uint8),
                "records": records, "prompt": prompt, "threshold_px": thr,
                "prompt_frames": mw.dreamer.prompt_frames, "denoise_steps": mw.dreamer.denoise_steps}
    finally:
        mw.close()
        sw.close()


def control(model: Any = "default", scene: str = "simcore/Pong-v0", rollouts: int = 8, horizon: int = 32,
            seed: int = 1_000_000, denoise_steps: int | None = None, plugin_manager: Any = None) -> dict[str, Any]:
    """P7: does the model follow the actions? (Pong's left paddle: 0 noop, 1 up, 2 down.)

    For rollout ``i`` a model world and a sim twin are reset with seed ``seed + i`` and
    stepped in lockstep with random actions held 3–6 steps (``np.random.default_rng(seed + i)``),
    through the prompt and then ``horizon`` dreamed steps.

    * Direction accuracy: after each dreamed step the player's paddle centre y is read
      from the frame (:func:`paddle_centre_y`, colour unmixing) and its change ``dy``
      judged against the action: up ``dy < -thr``, down ``dy > thr``, noop ``|dy| <= thr``,
      ``thr`` = a third of the paddle's per-step move (``paddle_speed * dt``, in frame px).
      Steps where the sim twin's paddle is stopped by a wall, or its ball comes within
      ``CONTROL_BALL_MARGIN`` px of the player paddle (covering part of it), are skipped.
      The same reading of the sim frames is the floor (~1.0).
    * ΔPSNR: mean PSNR of model vs sim frames over the dreamed steps with the true
      actions, minus the same with the dreamed steps' actions randomly permuted for the
      model (the prompt keeps the true actions; the sim always gets them; the model's
      sampling noise is seeded alike, so only the actions differ).

    Returns a JSON-safe dict (NaN/inf as None) with per-rollout values and ``targets``.
    """
    import simcore
    from simcore.dream import get_model
    from simcore.errors import SimcoreError
    from simcore.evaluate import frame_psnr

    if int(rollouts) < 1:
        raise SimcoreError(f"rollouts must be at least 1, got {rollouts!r}")
    if int(horizon) < 1:
        raise SimcoreError(f"horizon must be at least 1, got {horizon!r}")
    rollouts, horizon, seed = int(rollouts), int(horizon), int(seed)
    m = get_model(model)
    frame_size = tuple(m.cfg.frame_size)
    # fails with the model backend's BackendError for a scene the model does not know
    probe_world = simcore.make(scene, backend="model", model=m, denoise_steps=denoise_steps, frame_size=frame_size,
                               plugin_manager=plugin_manager)
    probe_world.reset(seed=seed)
    has_paddle = "player" in getattr(probe_world.scene, "colors", {}) and \
        {"paddle_y", "paddle_speed"} <= set(probe_world.state or {})
    probe_world.close()
    if not has_paddle:
        raise SimcoreError(f"control() reads a player paddle (Pong-like scenes); {scene!r} has none")
    prompt = max(1, int(m.cfg.prompt_frames))
    steps = prompt - 1 + horizon
    kw = dict(frame_size=frame_size, denoise_steps=denoise_steps, pm=plugin_manager)

    per_rollout, all_records = [], []
    psnr_true_all, psnr_shuf_all = [], []
    threshold = used_steps = None
    for i in range(rollouts):
        s = seed + i
        rng = np.random.default_rng(s)
        actions = held_actions(rng, steps)
        true = _control_rollout(scene, m, s, actions, **kw, measure=True)
        p = true["prompt"]
        shuffled = actions.copy()
        shuffled[p:] = rng.permutation(actions[p:])
        shuf = _control_rollout(scene, m, s, np.stack([actions, shuffled], axis=1), **kw, measure=False)
        threshold, used_steps = true["threshold_px"], true["denoise_steps"]
        pt = frame_psnr(true["model"], true["sim"])
        ps = frame_psnr(shuf["model"], true["sim"])  # the sim twin with the true actions
        recs = true["records"]
        all_records += recs
        psnr_true_all.append(pt)
        psnr_shuf_all.append(ps)
        acc_m, acc_s = _accuracy(recs, "model_ok"), _accuracy(recs, "sim_ok")
        per_rollout.append({
            "seed": s, "actions": actions[p:].tolist(), "shuffled_actions": shuffled[p:].tolist(),
            "accuracy": acc_m["accuracy"], "sim_accuracy": acc_s["accuracy"],
            "per_action": acc_m["per_action"], "sim_per_action": acc_s["per_action"],
            "steps_counted": acc_m["steps"],
            "skipped_wall": int(sum(r["at_wall"] for r in recs)),
            "skipped_ball": int(sum(r["ball_near"] and not r["at_wall"] for r in recs)),
            "model_paddle_missing": int(sum(not math.isfinite(r["dy_model"]) for r in recs if not r["skipped"])),
            "psnr_true": float(np.mean(np.minimum(pt, 100.0))), "psnr_shuffled": float(np.mean(np.minimum(ps, 100.0))),
            "delta_psnr": float(np.mean(np.minimum(pt, 100.0)) - np.mean(np.minimum(ps, 100.0))),
            "dy_model": [r["dy_model"] for r in recs], "dy_sim": [r["dy_sim"] for r in recs],
            "dy_true": [r["dy_true"] for r in recs], "skipped": [r["skipped"] for r in recs],
        })
    acc_m, acc_s = _accuracy(all_records, "model_ok"), _accuracy(all_records, "sim_ok")
    pt_mean = float(np.mean(np.minimum(np.concatenate(psnr_true_all), 100.0)))
    ps_mean = float(np.mean(np.minimum(np.concatenate(psnr_shuf_all), 100.0)))
    dpsnr = pt_mean - ps_mean
    acc = acc_m["accuracy"]
    targets = {
        "direction_accuracy": {"name": "direction_accuracy", "threshold": CONTROL_ACCURACY_TARGET, "measured": acc,
                               "passed": bool(acc >= CONTROL_ACCURACY_TARGET) if math.isfinite(acc) else None,
                               "reference": "Matrix-Game"},
        "delta_psnr": {"name": "delta_psnr", "threshold": CONTROL_DPSNR_TARGET_DB, "measured": dpsnr,
                       "passed": bool(dpsnr >= CONTROL_DPSNR_TARGET_DB) if math.isfinite(dpsnr) else None,
                       "reference": "Genie (≈ 1.2 dB)"},
    }
    return jsonable({
        "probe": "p7_control", "scene": scene, "seed": seed, "rollouts": rollouts, "horizon": horizon,
        "prompt_frames": prompt, "denoise_steps": used_steps, "threshold_px": threshold,
        "hold_steps": list(CONTROL_HOLD),
        "accuracy": acc, "per_action": acc_m["per_action"], "steps_counted": acc_m["steps"],
        "sim_accuracy": acc_s["accuracy"], "sim_per_action": acc_s["per_action"],
        "psnr_true": pt_mean, "psnr_shuffled": ps_mean, "delta_psnr": dpsnr,
        "per_rollout": per_rollout, "targets": targets,
        "all_passed": all(t["passed"] is True for t in targets.values()),
        "notes": "PSNR capped at 100 dB (identical frames); steps with the sim paddle at a wall or the ball "
                 "near the player paddle are skipped; shuffled = dreamed steps' actions permuted for the model only",
    })
