"""Bootstrap confidence intervals over rollouts (percentile method, numpy only).

Probe figures are means (or medians, or ratios of means) over a few dozen rollouts,
and a figure without its spread cannot say whether a model met a target or was
lucky. Every interval in an eval report comes from here: rollouts are resampled with
replacement ``resamples`` times from a fixed seed (so a report is reproducible), the
statistic is recomputed on each resample, and the ``(1 - level) / 2`` and
``(1 + level) / 2`` quantiles of those values are the interval.

    lo, hi = bootstrap_ci(errors)                              # 95 % interval of the mean
    lo, hi = bootstrap_ratio_ci(model_err, floor_err)          # of mean(model) / mean(floor), paired
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95
SEED = 0


def _clean(values) -> np.ndarray:
    v = np.asarray([np.nan if x is None else x for x in np.ravel(np.asarray(values, dtype=object))], dtype=np.float64)
    return v[np.isfinite(v)]


def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) indices drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _interval(stats: np.ndarray, level: float) -> tuple[float, float]:
    stats = stats[np.isfinite(stats)]
    if not len(stats):
        return (math.nan, math.nan)
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return (float(lo), float(hi))


def bootstrap_ci(values, statistic: Callable[..., np.ndarray] = np.mean, *, resamples: int = RESAMPLES,
                 level: float = LEVEL, seed: int = SEED) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``statistic`` (called with ``axis=1`` on a
    (resamples, n) array) over ``values`` (n,). None/NaN/inf entries are dropped; with
    fewer than two values left the interval is (nan, nan): one rollout has no spread to
    resample, and printing it as [v, v] would read like a certain figure."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    v = _clean(values)
    if len(v) < 2:
        return (math.nan, math.nan)
    return _interval(np.asarray(statistic(v[_indices(len(v), resamples, seed)], axis=1), dtype=np.float64), level)


def bootstrap_ratio_ci(num, den, *, resamples: int = RESAMPLES, level: float = LEVEL,
                       seed: int = SEED) -> tuple[float, float]:
    """Interval of ``mean(num) / mean(den)``, resampling the pairs ``(num[i], den[i])``
    together (the model's and the floor's figure of the same rollout). Pairs with a
    missing side are dropped; fewer than two pairs give (nan, nan)."""
    a = np.asarray([np.nan if x is None else x for x in num], dtype=np.float64)
    b = np.asarray([np.nan if x is None else x for x in den], dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"bootstrap_ratio_ci needs paired values, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) < 2:
        return (math.nan, math.nan)
    idx = _indices(len(a), resamples, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        stats = a[idx].mean(axis=1) / b[idx].mean(axis=1)
    return _interval(stats, level)


def bootstrap_two_sample_ratio_ci(num, den, *, resamples: int = RESAMPLES, level: float = LEVEL,
                                  seed: int = SEED) -> tuple[float, float]:
    """Interval of ``mean(num) / mean(den)`` for two independent samples (e.g. the OOD
    and the in-distribution rollouts), each resampled on its own."""
    a, b = _clean(num), _clean(den)
    if not len(a) or not len(b):
        return (math.nan, math.nan)
    ia, ib = _indices(len(a), resamples, seed), _indices(len(b), resamples, seed + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        stats = a[ia].mean(axis=1) / b[ib].mean(axis=1)
    return _interval(stats, level)


def _safe_ratio(a: float, b: float) -> float:
    if b == 0:
        return math.inf if a > 0 else math.nan
    return float(a / b)


def summary(values, statistic: Callable[..., np.ndarray] = np.mean, **kw) -> dict:
    """``{"value", "ci": [lo, hi], "n"}`` of ``values`` (None/non-finite entries dropped)."""
    v = _clean(values)
    value = float(statistic(v[None, :], axis=1)[0]) if len(v) else math.nan
    lo, hi = bootstrap_ci(v, statistic, **kw)
    return {"value": value, "ci": [lo, hi], "n": int(len(v))}


def ratio_summary(num, den, **kw) -> dict:
    """``{"value": mean(num) / mean(den), "ci", "n"}`` over the complete pairs."""
    a = np.asarray([np.nan if x is None else x for x in num], dtype=np.float64)
    b = np.asarray([np.nan if x is None else x for x in den], dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    value = _safe_ratio(float(a[keep].mean()), float(b[keep].mean())) if keep.any() else math.nan
    lo, hi = bootstrap_ratio_ci(a, b, **kw)
    return {"value": value, "ci": [lo, hi], "n": int(keep.sum())}
