"""Rigid-ball dynamics shared by the ball scenes: exact ballistic motion, walls with
restitution, elastic ball–ball collisions with masses.

Everything works on numpy arrays ``pos (N, 2)``, ``vel (N, 2)``, ``radius (N,)``,
``mass (N,)`` in pixels and seconds; ``x`` grows to the right and ``y`` downwards,
so positive gravity pulls down. Functions return new arrays (the scenes' state is
immutable) plus per-ball hit counters the probes use to split trajectories into
free-flight segments.
"""
from __future__ import annotations

import numpy as np


def ballistic(pos: np.ndarray, vel: np.ndarray, gravity: np.ndarray, dt: float):
    """Exact constant-acceleration update (no integration error for projectiles)."""
    return pos + vel * dt + 0.5 * gravity * dt * dt, vel + gravity * dt


def walls(pos, vel, radius, box, restitution: float = 1.0):
    """Reflect balls off the box [0, W] x [0, H]; returns (pos, vel, hit mask (N,)).

    A ball found past a wall is mirrored back by ``restitution`` times its overshoot
    and its normal velocity is reversed and scaled by ``restitution``.
    """
    lo = radius[:, None]  # (N, 1)
    hi = np.asarray(box, dtype=np.float64)[None, :] - lo  # (N, 2)
    low = (pos < lo) & (vel < 0)
    high = (pos > hi) & (vel > 0)
    pos = np.where(low, lo + restitution * (lo - pos), pos)
    pos = np.where(high, hi - restitution * (pos - hi), pos)
    either = low | high
    vel = np.where(either, -restitution * vel, vel)
    return pos, vel, either.any(axis=1)


def collide(pos, vel, radius, mass):
    """Resolve every overlapping, approaching pair with an elastic impulse.

    Conserves momentum and kinetic energy exactly per pair; overlapping balls are
    pushed apart along the normal (inverse-mass weighted, centre of mass fixed).
    Returns (pos, vel, hit counts (N,)).
    """
    n = len(pos)
    hits = np.zeros(n, dtype=np.int64)
    if n < 2:
        return pos, vel, hits
    d = pos[:, None, :] - pos[None, :, :]  # (N, N, 2)
    dist = np.sqrt((d * d).sum(-1))
    touching = dist < (radius[:, None] + radius[None, :])
    iu, ju = np.triu_indices(n, k=1)
    pairs = touching[iu, ju]
    if not pairs.any():
        return pos, vel, hits
    i_idx, j_idx = iu[pairs], ju[pairs]
    if len(i_idx) == 0:
        return pos, vel, hits
    pos, vel = pos.copy(), vel.copy()
    for i, j in zip(i_idx.tolist(), j_idx.tolist()):
        delta = pos[i] - pos[j]
        dd = float(np.hypot(*delta))
        normal = delta / dd if dd > 1e-9 else np.array([1.0, 0.0])
        mi, mj = mass[i], mass[j]
        approach = float(np.dot(vel[i] - vel[j], normal))
        if approach < 0:  # moving towards each other
            vel[i] = vel[i] - (2 * mj / (mi + mj)) * approach * normal
            vel[j] = vel[j] + (2 * mi / (mi + mj)) * approach * normal
            hits[i] += 1
            hits[j] += 1
        overlap = radius[i] + radius[j] - dd
        if overlap > 0:
            pos[i] = pos[i] + overlap * mj / (mi + mj) * normal
            pos[j] = pos[j] - overlap * mi / (mi + mj) * normal
    return pos, vel, hits


def kinetic_energy(vel, mass) -> float:
    return float(0.5 * (mass * (vel * vel).sum(-1)).sum())


def momentum(vel, mass) -> np.ndarray:
    return (mass[:, None] * vel).sum(0)
