"""``simcore eval``: roll a world model out against the simulator on held-out seeds.

For every scene and rollout ``i`` a ``model`` world and a ``sim`` world are reset
with seed ``seed + i`` and stepped in lockstep with the same actions, chosen by the
scene's demo policy from the *sim* world's observation and info (so it sees the
ground truth). Horizon step ``k`` is the k-th frame the model generated itself; the
prompt frames (simulated while ``world.dreaming`` is False) are not counted.

Measured per scene: PSNR and SSIM per horizon step (mean over rollouts), the
autoencoder round-trip PSNR on the sim frames of those rollouts, and one long
rollout (seed ``seed + rollouts``) of ``long_horizon`` steps: PSNR/SSIM around steps
256 and 1200, NaNs in the generated latents, and collapse to a blank or static
frame. Results go to ``report.json``, ``psnr_ssim.png`` and one
``side_by_side_<scene>.gif`` (model | sim, worst rollout) per scene.

Physics probes (``probes=True``, the default; ``simcore.probe_report``): every rollout
also keeps the simulator's object tables, and every probe is applied — P1–P5 and P8
offline against two floors (ground-truth and autoencoder round-trip frames), P7 on
paddle scenes, and every ``simcore_probe`` hook (users' plugins included) — with
bootstrap 95 % intervals over rollouts and the issue's targets (``probe_targets``),
plus ``error_vs_horizon.png`` and ``probe_bars.png``. ``splits`` ("id", "ood",
"composition"; ``simcore.splits``) choose the scene options; the first split run
fills ``per_scene``, the others ``per_split``. See docs/probes.md.

    report = evaluate("runs/small", scenes=["simcore/Pong-v0"], rollouts=4, horizon=32)
    report["per_scene"]["simcore/Pong-v0"]["psnr_at"]["16"]

Metrics: PSNR with data range 255 over all pixels and channels (identical frames:
``inf``, written to JSON as the string ``"inf"``). SSIM as in Wang et al. (2004):
11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, data range 255, "valid"
windows only (no padding), computed per RGB channel and averaged over channels.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from simcore import plots
from simcore.errors import SimcoreError
from simcore.jsonable import jsonable
from simcore.machine import describe as describe_machine

#: the issue's targets for the shipped model (64x64, held-out seeds)
AE_TARGET_DB = 35.0
PSNR_TARGETS = {16: 28.0, 32: 25.0}  # horizon step -> minimum mean PSNR (dB)
LONG_TARGET_STEPS = 1200
LONG_POINTS = (256, 1200)  # long-rollout steps reported (mean over +-LONG_WINDOW steps)
LONG_WINDOW = 8
REPORT_STEPS = (1, 16, 32, 64)
BLANK_STD = 2.0  # a frame whose pixel std is below this is blank
STATIC_CHANGE = 0.05  # mean |frame_t - frame_{t-1}| below this is static
TAIL = 100  # collapse is judged on the last TAIL steps of the long rollout
RANK_CAP_DB = 100.0  # inf PSNR counts as this when ranking rollouts (worst = lowest mean)
GIF_SCALE = 3
GIF_GAP = 2 * GIF_SCALE
PLOT_INF_DB = 60.0  # where an infinite PSNR is drawn in the plot

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_METHOD = ("Wang et al. 2004: 11x11 Gaussian window (sigma 1.5), K1=0.01, K2=0.03, data range 255, "
               "valid windows only, per RGB channel then averaged over channels")


# ---------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------


def psnr(x: np.ndarray, y: np.ndarray, data_range: float = 255.0) -> float:
    """PSNR (dB) of two images (or any two equal-shaped arrays) over all their elements;
    ``inf`` when they are identical."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"psnr needs equal shapes, got {x.shape} and {y.shape}")
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def frame_psnr(x: np.ndarray, y: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """PSNR per frame of two (N, ...) stacks: (N,) float64 (``inf`` where identical)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"frame_psnr needs equal shapes, got {x.shape} and {y.shape}")
    mse = ((x - y) ** 2).reshape(len(x), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return np.where(mse == 0, np.inf, 10.0 * np.log10(data_range**2 / np.maximum(mse, 1e-300)))


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The normalized 1-D Gaussian (size,) whose outer product is the SSIM window."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(x: np.ndarray, y: np.ndarray, data_range: float = 255.0) -> float | np.ndarray:
    """Mean SSIM of two images. Shapes: (H, W) grayscale, (H, W, C) one image (SSIM per
    channel, averaged), or (N, H, W, C) a batch -> (N,) array. H and W must be >= 11."""
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape:
        raise ValueError(f"ssim needs equal shapes, got {x.shape} and {y.shape}")
    if x.ndim == 2:
        return float(_ssim_batch(x[None, :, :, None], y[None, :, :, None], data_range)[0])
    if x.ndim == 3:
        return float(_ssim_batch(x[None], y[None], data_range)[0])
    if x.ndim == 4:
        return _ssim_batch(x, y, data_range)
    raise ValueError(f"ssim takes (H, W), (H, W, C) or (N, H, W, C) arrays, got shape {x.shape}")


def _ssim_batch(x: np.ndarray, y: np.ndarray, data_range: float, chunk: int = 256) -> np.ndarray:
    n, h, w, c = x.shape
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise ValueError(f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {h}x{w}")
    g = torch.from_numpy(gaussian_window())
    gy, gx = g.view(1, 1, -1, 1), g.view(1, 1, 1, -1)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2

    def blur(t: torch.Tensor) -> torch.Tensor:  # (M, 1, H, W) -> valid Gaussian means
        return F.conv2d(F.conv2d(t, gy), gx)

    out = []
    for i in range(0, n, chunk):
        a = torch.from_numpy(np.ascontiguousarray(x[i:i + chunk], dtype=np.float64))
        b = torch.from_numpy(np.ascontiguousarray(y[i:i + chunk], dtype=np.float64))
        m = a.shape[0]
        a = a.permute(0, 3, 1, 2).reshape(m * c, 1, h, w)
        b = b.permute(0, 3, 1, 2).reshape(m * c, 1, h, w)
        mu_a, mu_b = blur(a), blur(b)
        var_a = blur(a * a) - mu_a**2
        var_b = blur(b * b) - mu_b**2
        cov = blur(a * b) - mu_a * mu_b
        smap = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        out.append(smap.mean(dim=(1, 2, 3)).reshape(m, c).mean(dim=1).numpy())
    return np.concatenate(out) if out else np.zeros(0)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _at(curve: list[float], step: int) -> float | None:
    """The value at 1-based horizon ``step`` of a curve, None when not reached."""
    return float(curve[step - 1]) if 1 <= step <= len(curve) else None


def _round(values, nd: int = 3) -> list[float]:
    return [float(round(v, nd)) if math.isfinite(v) else float(v) for v in np.asarray(values, dtype=np.float64)]


def _load(model: Any) -> tuple[Any, dict[str, Any]]:
    """(WorldModel, description) for "default", a path or a WorldModel."""
    from simcore.checkpoint import load_card, resolve
    from simcore.dream import get_model
    from simcore.model import WorldModel

    if isinstance(model, WorldModel):
        return model, {"name": "model", "path": None, "card_name": None}
    path = resolve(model)  # CheckpointError for an unknown name or path
    m = get_model(model)
    card = load_card(model)
    name = card.get("name") or (str(model) if isinstance(model, str) and not Path(model).exists()
                                else path.parent.name)
    return m, {"name": str(name), "path": str(path), "card_name": card.get("name")}


class _NaNCounter:
    """Wraps a Rollout's ``generate`` to count non-finite values in generated latents
    (decoded frames are uint8, where a NaN can no longer be seen)."""

    def __init__(self, rollout: Any):
        self.count = 0
        self._generate = rollout.generate
        rollout.generate = self

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        z = self._generate(*args, **kwargs)
        self.count += int((~torch.isfinite(z)).sum())
        return z


def _model_world(scene: str, model: Any, *, frame_size, denoise_steps, pm, options: dict, condition_as: str | None):
    """A ``model`` World for ``scene``. With ``condition_as`` (a scene the model knows),
    the model is conditioned as that scene while the scene itself (its opening frames,
    options and ground truth) is ``scene``: how a model is probed on a scene it was
    not trained on (e.g. UniformMotion through BouncingBalls, the same physics)."""
    import simcore
    from simcore.errors import BackendError

    if not condition_as or condition_as == scene:
        return simcore.make(scene, backend="model", model=model, denoise_steps=denoise_steps, frame_size=frame_size,
                            plugin_manager=pm, **options)
    target = simcore.make(scene, frame_size=frame_size, plugin_manager=pm, **options)
    world = simcore.make(condition_as, backend="model", model=model, denoise_steps=denoise_steps,
                         frame_size=frame_size, plugin_manager=pm)
    if world.action_space != target.action_space:
        raise BackendError(f"cannot condition {scene} as {condition_as}: their action spaces differ "
                           f"({target.action_space} vs {world.action_space})")
    world.scene, world.options = target.scene, dict(target.options)  # the model keeps condition_as's scene index
    target.close()
    return world


def _roundtrip(model: Any, frames: np.ndarray, batch: int = 64) -> np.ndarray:
    """Frames (N, H, W, 3) uint8 after the model's autoencoder (encode + decode)."""
    dev = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(frames), batch):
            f = torch.from_numpy(np.ascontiguousarray(frames[i:i + batch])).to(dev)
            out.append(model.to_uint8(model.ae(model.to_unit(f))).cpu().numpy())
    return np.concatenate(out) if out else np.zeros_like(frames)


def _probe_impls(pm: Any) -> list:
    from simcore.plugin_manager import get_plugin_manager

    return (pm or get_plugin_manager()).hook.simcore_probe.get_hookimpls()


def _call_impl(impl: Any, **kwargs: Any) -> Any:
    return impl.function(*[kwargs[a] for a in impl.argnames])


def _run_pair(scene: str, model: Any, seed: int, steps: int, *, frame_size, denoise_steps, pm, tick,
              options: dict | None = None, condition_as: str | None = None, collect: bool = False) -> dict:
    """One lockstep rollout: ``steps`` model-generated frames after the prompt.

    Returns model/sim frames from the reset frame on (prompt frames included),
    ``prompt`` (how many leading frames are not horizon steps), the NaN count and
    the step (if any) where the sim episode terminated (it keeps stepping: the model
    has no notion of an episode's end). With ``collect``, also the simulator's object
    tables (``tables``, one per frame), the actions, and every probe hook's readouts on
    the dreamed steps (``hooks``: model world, sim world, and round-trip frames)."""
    import simcore
    from simcore.world import Transition

    options = dict(options or {})
    mw = _model_world(scene, model, frame_size=frame_size, denoise_steps=denoise_steps, pm=pm, options=options,
                      condition_as=condition_as)
    sw = simcore.make(scene, frame_size=frame_size, plugin_manager=pm, **options)
    try:
        obs_s, info_s = sw.reset(seed=seed)
        obs_m, _ = mw.reset(seed=seed)
        counter = _NaNCounter(mw.dreamer.rollout) if getattr(mw.dreamer, "rollout", None) is not None else None
        policy = sw.scene.demo_policy(seed)
        model_frames, sim_frames = [obs_m], [obs_s]
        tables, actions, rewards, terms = [info_s["objects"]], [None], [0.0], [False]
        hook_m: dict[str, list] = {}
        hook_s: dict[str, list] = {}
        prompt, generated, terminated_at = 1, 0, None
        while generated < steps:
            action = policy(obs_s, info_s)
            obs_m, _, _, _, info_m = mw.step(action)
            obs_s, reward, term, _, info_s = sw.step(action)
            if term and terminated_at is None:
                terminated_at = sw.t
            model_frames.append(obs_m)
            sim_frames.append(obs_s)
            if collect:
                tables.append(info_s["objects"])
                actions.append(action)
                rewards.append(reward)
                terms.append(bool(term))
            if mw.dreaming:
                generated += 1
                if collect:
                    for store, info in ((hook_m, info_m), (hook_s, info_s)):
                        for k, v in (info.get("probes") or {}).items():
                            store.setdefault(k, []).append(float(v))
            else:
                prompt += 1
            tick()
        out = {"model": np.stack(model_frames), "sim": np.stack(sim_frames), "prompt": prompt,
               "nan_count": counter.count if counter is not None else None,
               "denoise_steps": mw.dreamer.denoise_steps, "prompt_frames": mw.dreamer.prompt_frames,
               "sim_terminated_at": terminated_at, "fps": float(sw.metadata["render_fps"])}
        if collect:
            m = mw.dreamer.model
            rt = _roundtrip(m, out["sim"])
            out["roundtrip"] = rt
            hook_ae: dict[str, list] = {}
            owners: dict[str, str] = {}
            impls = _probe_impls(pm)
            for t in range(prompt, len(rt)):  # the sim world, shown the round-trip frame of each dreamed step
                info = {"step": t, "objects": tables[t]}
                tr = Transition(t, rt[t], actions[t], rewards[t], terms[t], False, info, rt[t - 1])
                for impl in impls:
                    res = _call_impl(impl, world=sw, transition=tr)
                    for k, v in (res or {}).items():
                        hook_ae.setdefault(k, []).append(float(v))
                        owners.setdefault(k, impl.plugin_name)
            out.update(tables=tables, actions=actions,
                       hooks={"model": hook_m, "floor_gt": hook_s, "floor_ae": hook_ae}, hook_owners=owners,
                       options=dict(sw.options))
        return out
    finally:
        mw.close()
        sw.close()


def _ae_psnr(model: Any, frames: np.ndarray, batch: int = 64) -> float:
    """Mean per-frame PSNR of frames (N, H, W, 3) uint8 after an AE round trip."""
    return float(frame_psnr(_roundtrip(model, frames, batch), frames).mean())


def _long_stats(run: dict, long_horizon: int) -> dict[str, Any]:
    p = run["prompt"]
    gen, sim = run["model"][p:], run["sim"][p:]  # horizon steps 1..long_horizon
    ps, ss = frame_psnr(gen, sim), ssim(gen, sim)
    at = {}
    for k in LONG_POINTS:
        if long_horizon >= k:
            lo, hi = max(1, k - LONG_WINDOW), min(long_horizon, k + LONG_WINDOW)
            at[str(k)] = {"psnr": float(ps[lo - 1:hi].mean()), "ssim": float(ss[lo - 1:hi].mean()),
                          "window": [lo, hi]}
    std_m = gen.reshape(len(gen), -1).std(axis=1)
    std_s = sim.reshape(len(sim), -1).std(axis=1)
    # change over the last TAIL steps: |f_t - f_{t-1}| for the TAIL (or fewer) last steps
    full_m, full_s = run["model"].astype(np.float32), run["sim"].astype(np.float32)
    n_tail = min(TAIL, len(gen))
    diff_m = np.abs(np.diff(full_m[-(n_tail + 1):], axis=0)).mean() if n_tail else 0.0
    diff_s = np.abs(np.diff(full_s[-(n_tail + 1):], axis=0)).mean() if n_tail else 0.0
    tail_std_m = float(np.median(std_m[-n_tail:])) if n_tail else 0.0
    tail_std_s = float(np.median(std_s[-n_tail:])) if n_tail else 0.0
    nan_count = run["nan_count"]
    return {
        "seed": run["seed"],
        "steps": int(len(gen)),
        "psnr_at": {k: v["psnr"] for k, v in at.items()},
        "ssim_at": {k: v["ssim"] for k, v in at.items()},
        "windows": {k: v["window"] for k, v in at.items()},
        "psnr": _round(ps), "ssim": _round(ss, 4), "frame_std": _round(std_m, 2),
        "nan_count": nan_count,
        "blank_steps": int((std_m < BLANK_STD).sum()),
        "tail_steps": n_tail,
        "tail_frame_std_median": tail_std_m, "sim_tail_frame_std_median": tail_std_s,
        "tail_change": float(diff_m), "sim_tail_change": float(diff_s),
        "sim_terminated_at": run["sim_terminated_at"],
        "nan_free": nan_count == 0 if nan_count is not None else None,
        "collapsed_blank": bool(tail_std_m < BLANK_STD and tail_std_s >= BLANK_STD),
        "collapsed_static": bool(diff_m < STATIC_CHANGE and diff_s >= STATIC_CHANGE),
    }


def _target(name: str, description: str, threshold: float | None, measured: Any, passed: bool | None,
            per_scene: dict | None = None, note: str | None = None) -> dict[str, Any]:
    t = {"name": name, "description": description, "threshold": threshold, "measured": measured,
         "passed": passed, "per_scene": per_scene}
    if note:
        t["note"] = note
    return t


def _targets(per_scene: dict[str, dict], horizon: int, long_horizon: int, frame_size) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ae = {s: r["ae_psnr"] for s, r in per_scene.items()}
    worst = min(ae.values())
    out["ae_psnr"] = _target("ae_psnr", f"autoencoder round-trip PSNR >= {AE_TARGET_DB:g} dB (worst scene)",
                             AE_TARGET_DB, worst, bool(worst >= AE_TARGET_DB), ae)
    for step, thr in PSNR_TARGETS.items():
        vals = {s: r["psnr_at"].get(str(step)) for s, r in per_scene.items()}
        name, desc = f"psnr_{step}", f"rollout PSNR at step {step} >= {thr:g} dB with true actions (worst scene)"
        if horizon < step:
            out[name] = _target(name, desc, thr, None, None, vals, f"not measured: horizon {horizon} < {step}")
        else:
            worst = min(vals.values())
            out[name] = _target(name, desc, thr, worst, bool(worst >= thr), vals)
    desc = f"no NaN and no collapse to a blank or static frame over {LONG_TARGET_STEPS} steps"
    if long_horizon <= 0:
        out["long_rollout"] = _target("long_rollout", desc, LONG_TARGET_STEPS, None, None, None,
                                      "not measured: long rollout disabled (long_horizon=0)")
    else:
        flags = {s: {"nan_free": r["long"]["nan_free"], "collapsed_blank": r["long"]["collapsed_blank"],
                     "collapsed_static": r["long"]["collapsed_static"]} for s, r in per_scene.items()}
        bad = any(f["nan_free"] is False or f["collapsed_blank"] or f["collapsed_static"] for f in flags.values())
        measured = {"steps": long_horizon,
                    "nan_count": sum(r["long"]["nan_count"] or 0 for r in per_scene.values()),
                    "collapsed_blank": sorted(s for s, f in flags.items() if f["collapsed_blank"]),
                    "collapsed_static": sorted(s for s, f in flags.items() if f["collapsed_static"])}
        note = None
        if bad:
            passed: bool | None = False
        elif long_horizon < LONG_TARGET_STEPS:
            passed, note = None, f"incomplete: measured over {long_horizon} < {LONG_TARGET_STEPS} steps"
        else:
            passed = True
        out["long_rollout"] = _target("long_rollout", desc, LONG_TARGET_STEPS, measured, passed, flags, note)
    results = [t["passed"] for t in out.values()]
    summary = {"targets": out, "all_passed": all(r is True for r in results),
               "failed": [k for k, t in out.items() if t["passed"] is False],
               "not_measured": [k for k, t in out.items() if t["passed"] is None]}
    if tuple(frame_size) != (64, 64):
        summary["note"] = f"the targets are stated for 64x64 frames; this model draws {frame_size[0]}x{frame_size[1]}"
    return summary


# ---------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------


def _scale(frame: np.ndarray, k: int) -> np.ndarray:
    return np.repeat(np.repeat(frame, k, axis=0), k, axis=1)


def write_side_by_side(path: Path, model_frames: np.ndarray, sim_frames: np.ndarray, fps: float = 20,
                       scale: int = GIF_SCALE) -> Path:
    """GIF of model | sim frames next to each other, each scaled up ``scale`` times
    (GIF_SCALE by default), with a grey gap of 2 * scale px."""
    from simcore.video import side_by_side, write_video

    frames = (side_by_side([_scale(m, scale), _scale(s, scale)], gap=2 * scale, fill=128)
              for m, s in zip(model_frames, sim_frames))
    return write_video(path, frames, fps=fps)


def write_plot(path: Path, report: dict[str, Any]) -> Path:
    """PSNR and SSIM per horizon step per scene, with the target lines (matplotlib, Agg)."""
    per_scene = report["per_scene"]
    has_long = any(r.get("long") for r in per_scene.values())
    fig, axes = plots.figure(15 if has_long else 10, 4.2, 1, 3 if has_long else 2)
    ax_p, ax_s = axes[0], axes[1]
    any_inf = False
    for scene, r in per_scene.items():
        steps = np.arange(1, len(r["psnr"]) + 1)
        p = np.asarray(r["psnr"], dtype=np.float64)
        any_inf |= bool(np.isinf(p).any())
        ax_p.plot(steps, np.where(np.isinf(p), PLOT_INF_DB, p), marker=".", label=scene)
        ax_s.plot(steps, r["ssim"], marker=".", label=scene)
        if has_long and r.get("long"):
            lp = np.asarray(r["long"]["psnr"], dtype=np.float64)
            any_inf |= bool(np.isinf(lp).any())
            axes[2].plot(np.arange(1, len(lp) + 1), np.where(np.isinf(lp), PLOT_INF_DB, lp), lw=0.8, label=scene)
    for step, thr in PSNR_TARGETS.items():
        for ax in [ax_p] + ([axes[2]] if has_long else []):
            ax.axhline(thr, ls="--", lw=0.8, color="gray")
        ax_p.plot([step], [thr], marker="v", ms=9, color="red", ls="none")
        ax_p.annotate(f"target {thr:g} dB @ {step}", (step, thr), textcoords="offset points", xytext=(4, 6),
                      fontsize=7, color="red")
    ax_p.set(xlabel="horizon step", ylabel="PSNR (dB)" + (f"  (inf drawn at {PLOT_INF_DB:g})" if any_inf else ""),
             title=f"rollout PSNR, mean of {report['rollouts']} rollouts")
    ax_s.set(xlabel="horizon step", ylabel="SSIM", title="rollout SSIM", ylim=(min(0.0, ax_s.get_ylim()[0]), 1.02))
    if has_long:
        axes[2].set(xlabel="step", ylabel="PSNR (dB)", title=f"long rollout ({report['long_horizon']} steps)")
        axes[2].legend(fontsize=7)
    ax_p.legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    return plots.save(fig, path, f"{report['model']['name']}: {report['denoise_steps']} denoising steps, "
                                 f"seeds from {report['seed']}", dpi=110)


# ---------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------


def _scene_kind(scene: str, pm: Any) -> tuple[bool, bool]:
    """(ball scene, has a player paddle) of a registered scene."""
    from simcore.balls import BallScene
    from simcore.plugin_manager import get_registry

    cls = get_registry(pm).get(scene)
    return issubclass(cls, BallScene), "player" in (getattr(cls, "colors", None) or {})


def _probe_split(scene: str, runs: list[dict], m: Any, frame_size, ps: np.ndarray) -> dict[str, Any]:
    """Every probe over one split's rollouts of one scene (see ``simcore.probe_report``)."""
    from simcore import probe_report
    from simcore.plugins.probes import scene_params

    records, hooks, owners = [], [], {}
    for run in runs:
        p = run["prompt"]
        params = scene_params(scene, run["options"], frame_size, run["fps"])
        # from the last prompt frame (index 0, a simulated frame) through horizon step T
        rec = probe_report.rollout_probes(run["model"][p - 1:], run["tables"][p - 1:], params,
                                          roundtrip=lambda f: _roundtrip(m, f))
        rec["seed"] = run["seed"]
        records.append(rec)
        hooks.append(run["hooks"])
        owners.update(run["hook_owners"])
    out = probe_report.aggregate_offline(records)
    out["hooks"] = probe_report.aggregate_hooks(hooks, owners)
    out["violations_per_rollout"] = [r["violations"] for r in records]
    return out


@torch.no_grad()
def evaluate(
    model: Any = "default",
    scenes: list[str] | tuple[str, ...] | None = None,
    rollouts: int = 8,
    horizon: int = 64,
    long_horizon: int = 1200,
    seed: int = 1_000_000,
    denoise_steps: int | None = None,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    plugin_manager: Any = None,
    command: str | None = None,
    splits: list[str] | tuple[str, ...] | str = ("id",),
    probes: bool = True,
    condition_as: str | None = None,
    gif_scale: int = GIF_SCALE,
) -> dict[str, Any]:
    """Roll ``model`` out against the simulator and write/return the report (see the
    module docstring). ``model``: "default", a directory/.safetensors, or a WorldModel.
    ``scenes``: default all of the model's. ``long_horizon=0`` skips the long rollout.
    ``out_dir``: default ``eval/<model name>/``. ``command``: recorded in the report
    (default: the equivalent Python call).

    ``splits``: any of "id", "ood", "composition" (``simcore.splits``); "ood" brings
    "id" along (P1's OOD ÷ ID ratio needs both). ``report["per_scene"]`` holds the
    first split ("id" when run) with the long rollout; ``report["per_split"]`` every
    split. ``probes``: apply every probe (offline P1–P5, P8; P7 on paddle scenes; every
    ``simcore_probe`` hook) with bootstrap intervals and the issue's targets.
    ``condition_as``: dream scenes the model was not trained on under this scene's
    conditioning (e.g. "simcore/BouncingBalls-v0" for the other ball scenes)."""
    from simcore import probe_report
    from simcore import splits as split_table

    if int(rollouts) < 1:
        raise SimcoreError(f"rollouts must be at least 1, got {rollouts!r}")
    if int(horizon) < 1:
        raise SimcoreError(f"horizon must be at least 1, got {horizon!r}")
    if int(long_horizon) < 0:
        raise SimcoreError(f"long_horizon must be >= 0 (0 disables the long rollout), got {long_horizon!r}")
    if denoise_steps is not None and int(denoise_steps) < 1:
        raise SimcoreError(f"denoise_steps must be at least 1, got {denoise_steps!r}")
    if int(gif_scale) < 1:
        raise SimcoreError(f"gif_scale must be at least 1, got {gif_scale!r}")
    split_list = [splits] if isinstance(splits, str) else list(splits or ["id"])
    for sp in split_list:
        if sp not in split_table.SPLIT_NAMES:
            raise SimcoreError(f"unknown split {sp!r}; splits: {', '.join(split_table.SPLIT_NAMES)}")
    if "ood" in split_list and "id" not in split_list:
        split_list.insert(0, "id")  # OOD is judged relative to in-distribution
    split_list = list(dict.fromkeys(split_list))
    rollouts, horizon, long_horizon, seed = int(rollouts), int(horizon), int(long_horizon), int(seed)
    start = time.perf_counter()
    m, desc = _load(model)
    scenes = list(scenes) if scenes else list(m.cfg.scenes)
    if not scenes:
        raise SimcoreError("the model names no scenes; pass scenes=[...]")
    frame_size = tuple(m.cfg.frame_size)
    import simcore

    from simcore.errors import BackendError

    if condition_as is not None and condition_as not in m.cfg.scenes:
        raise BackendError(f"condition_as={condition_as!r}: the model was not trained on it; its scenes: "
                           f"{', '.join(m.cfg.scenes)}")
    # which (scene, split) pairs run; fail early on an unknown scene, a scene the model does not know
    # (without condition_as), wrong actions, held-out seeds that are not held out
    plan: dict[str, list[str]] = {sp: [] for sp in split_list}
    skipped: list[dict[str, str]] = []
    for scene in scenes:
        cond = condition_as if (condition_as and scene not in m.cfg.scenes) else None
        try:
            _model_world(scene, m, frame_size=frame_size, denoise_steps=denoise_steps, pm=plugin_manager,
                         options={}, condition_as=cond).close()
        except BackendError as exc:
            if "not trained on" in str(exc) and condition_as is None:
                raise BackendError(f"{exc} (to probe a scene outside the model's training set, dream it under a "
                                   "scene the model knows: condition_as=... / --condition-as SCENE)") from None
            raise
        split_table.held_out_seeds(scene, seed, rollouts + (1 if long_horizon else 0))
        for sp in split_list:
            try:
                split_table.split_options(scene, sp)
            except SimcoreError as exc:
                skipped.append({"scene": scene, "split": sp, "why": str(exc)})
                continue
            plan[sp].append(scene)
    plan = {sp: sc for sp, sc in plan.items() if sc}
    if not plan:
        raise SimcoreError("nothing to evaluate: " + "; ".join(x["why"] for x in skipped))
    primary = next(iter(plan))
    out = Path(out_dir) if out_dir is not None else Path("eval") / desc["name"].replace(os.sep, "_")
    out.mkdir(parents=True, exist_ok=True)

    from tqdm import tqdm

    from simcore.plugins import probes as builtin_probes

    prompt = max(1, int(m.cfg.prompt_frames))
    n_runs = sum(len(sc) for sc in plan.values())
    total = n_runs * rollouts * (horizon + prompt - 1) + \
        len(plan[primary]) * (long_horizon + prompt - 1 if long_horizon else 0)
    bar = tqdm(total=total, desc="eval", unit="step", disable=not progress, file=sys.stderr, leave=False)
    tick = lambda: bar.update(1)  # noqa: E731
    kw = dict(frame_size=frame_size, denoise_steps=denoise_steps, pm=plugin_manager, tick=tick)

    per_split: dict[str, dict[str, dict[str, Any]]] = {}
    files: dict[str, Any] = {"report": str(out / "report.json"), "plot": None, "gifs": {}, "probe_plots": {}}
    used_steps = None
    was_enabled = builtin_probes.is_enabled()
    if probes:
        builtin_probes.enable(True)  # the built-in live probe also reads the sim world: the hooks' floor
    try:
        for sp, sp_scenes in plan.items():
            per_split[sp] = {}
            for scene in sp_scenes:
                t0 = time.perf_counter()
                bar.set_postfix_str(f"{scene} [{sp}]")
                options = split_table.split_options(scene, sp)
                cond = condition_as if (condition_as and scene not in m.cfg.scenes) else None
                runs = []
                for i in range(rollouts):
                    run = _run_pair(scene, m, seed + i, horizon, options=options, condition_as=cond,
                                    collect=probes, **kw)
                    run["seed"] = seed + i
                    runs.append(run)
                used_steps = runs[0]["denoise_steps"]
                p = runs[0]["prompt"]
                gen = np.stack([r["model"][p:] for r in runs])  # (R, horizon, H, W, 3)
                sim = np.stack([r["sim"][p:] for r in runs])
                shape = gen.shape
                ps = frame_psnr(gen.reshape(-1, *shape[2:]), sim.reshape(-1, *shape[2:])).reshape(shape[:2])
                ss = ssim(gen.reshape(-1, *shape[2:]), sim.reshape(-1, *shape[2:])).reshape(shape[:2])
                psnr_curve, ssim_curve = ps.mean(axis=0), ss.mean(axis=0)
                rank = np.minimum(ps, RANK_CAP_DB).mean(axis=1)
                worst = int(np.argmin(rank))
                ae = _ae_psnr(m, np.concatenate([r["sim"] for r in runs]))
                tag = scene.replace("/", "_") + ("" if sp == primary else f"_{sp}")
                gif = out / f"side_by_side_{tag}.gif"
                write_side_by_side(gif, runs[worst]["model"], runs[worst]["sim"], fps=runs[worst]["fps"],
                                   scale=gif_scale)
                files["gifs"][scene if sp == primary else f"{scene} [{sp}]"] = str(gif)
                r: dict[str, Any] = {
                    "split": sp,
                    "options": split_table.split_options(scene, sp),
                    "conditioned_as": cond,
                    "ae_psnr": ae,
                    "ae_frames": int(sum(len(x["sim"]) for x in runs)),
                    "psnr": _round(psnr_curve), "ssim": _round(ssim_curve, 4),
                    "psnr_at": {str(k): _at(list(psnr_curve), k) for k in REPORT_STEPS if k <= horizon},
                    "ssim_at": {str(k): _at(list(ssim_curve), k) for k in REPORT_STEPS if k <= horizon},
                    "psnr_mean": float(psnr_curve.mean()), "ssim_mean": float(ssim_curve.mean()),
                    "rollout_mean_psnr": _round(ps.mean(axis=1)),
                    "rollout_seeds": [x["seed"] for x in runs],
                    "worst_rollout": {"index": worst, "seed": runs[worst]["seed"],
                                      "mean_psnr": float(ps[worst].mean()), "gif": str(gif)},
                    "prompt_frames": p,
                    "nan_count": sum(x["nan_count"] or 0 for x in runs),
                    "sim_terminated_at": [x["sim_terminated_at"] for x in runs],
                    "long": None,
                }
                if probes:
                    from simcore import bootstrap

                    r["psnr_band"] = probe_report.psnr_band(ps)
                    r["psnr_mean_ci"] = bootstrap.summary(np.minimum(ps, probe_report.PSNR_CAP_DB).mean(axis=1))
                    r["ssim_mean_ci"] = bootstrap.summary(ss.mean(axis=1))
                    r["probes"] = _probe_split(scene, runs, m, frame_size, ps)
                    r["options_resolved"] = jsonable(runs[0]["options"])
                del runs, gen, sim
                if long_horizon and sp == primary:
                    run = _run_pair(scene, m, seed + rollouts, long_horizon, options=options, condition_as=cond, **kw)
                    run["seed"] = seed + rollouts
                    r["long"] = _long_stats(run, long_horizon)
                    del run
                r["wall_time_s"] = round(time.perf_counter() - t0, 2)
                per_split[sp][scene] = r
        probe_targets: list[dict[str, Any]] = []
        if probes:
            from simcore import bootstrap

            for scene in scenes:
                res = {sp: per_split[sp][scene] for sp in per_split if scene in per_split[sp]}
                is_ball, has_paddle = _scene_kind(scene, plugin_manager)
                if "id" in res and has_paddle:
                    t0 = time.perf_counter()
                    bar.set_postfix_str(f"{scene} [P7 control]")
                    ctrl = builtin_probes.control(m, scene, rollouts=rollouts, horizon=horizon, seed=seed,
                                                  denoise_steps=denoise_steps, plugin_manager=plugin_manager)
                    res["id"]["probes"]["p7"] = probe_report.control_summary(ctrl)
                    res["id"]["wall_time_s"] = round(res["id"]["wall_time_s"] + time.perf_counter() - t0, 2)
                if "id" in res and "ood" in res and "p1" in res["ood"]["probes"] and "p1" in res["id"]["probes"]:
                    a = res["ood"]["probes"]["p1"]["per_rollout"]["model"]
                    b = res["id"]["probes"]["p1"]["per_rollout"]["model"]
                    ca, cb = [v for v in a if v is not None], [v for v in b if v is not None]
                    value = float(np.mean(ca) / np.mean(cb)) if ca and cb and np.mean(cb) > 0 else math.nan
                    lo, hi = bootstrap.bootstrap_two_sample_ratio_ci(ca, cb)
                    res["ood"]["probes"]["p1_ood_id"] = {"value": value, "ci": [lo, hi], "n": [len(ca), len(cb)],
                                                         "metric": "mean P1 vel_rel_err (ood) / mean (id)"}
                for sp in ("ood", "composition"):
                    if sp in res and "id" in res:
                        res[sp]["probes"]["vs_id"] = _vs_id(res[sp], res["id"])
                probe_targets += probe_report.scene_targets(scene, is_ball, res, horizon)
    finally:
        builtin_probes.enable(was_enabled)
        bar.close()

    per_scene = per_split[primary]
    if command is None:
        args = [f"model={desc['path'] or desc['name']!r}", f"scenes={scenes!r}", f"rollouts={rollouts}",
                f"horizon={horizon}", f"long_horizon={long_horizon}", f"seed={seed}",
                f"denoise_steps={denoise_steps!r}", f"out_dir={str(out)!r}", f"splits={split_list!r}"]
        if condition_as:
            args.append(f"condition_as={condition_as!r}")
        command = f"simcore.evaluate.evaluate({', '.join(args)})"
    report: dict[str, Any] = {
        "model": {**desc, "frame_size": list(frame_size), "prompt_frames": prompt,
                  "parameters": m.num_parameters(), "scenes": list(m.cfg.scenes)},
        "scenes": scenes,
        "seed": seed,
        "seeds": {"rollouts": list(range(seed, seed + rollouts)),
                  "long": seed + rollouts if long_horizon else None},
        "rollouts": rollouts,
        "horizon": horizon,
        "long_horizon": long_horizon,
        "denoise_steps": used_steps,
        "policy": "the scene's demo policy (seeded like the episode), fed the sim world's observation and info",
        "split": primary,
        "splits": {sp: {"description": split_table.DESCRIPTIONS[sp], "scenes": sc,
                        "options": {s: split_table.split_options(s, sp) for s in sc}} for sp, sc in plan.items()},
        "skipped": skipped,
        "condition_as": condition_as,
        "metrics": {
            "psnr": "10*log10(255^2 / MSE) over all pixels and channels; identical frames give inf",
            "ssim": SSIM_METHOD,
            "horizon_step": "k-th frame the model generated itself (prompt frames not counted)",
            "ae_psnr": "mean per-frame PSNR of the sim frames of the evaluation rollouts after encode/decode",
            "long_window": f"long-rollout values at step k are means over steps k-{LONG_WINDOW}..k+{LONG_WINDOW}",
            "nan_count": "non-finite values in the generated latents",
            "blank": f"frame pixel std < {BLANK_STD}; collapsed_blank: median std over the last {TAIL} steps "
                     "is blank while the sim's is not",
            "static": f"mean |frame_t - frame_(t-1)| over the last {TAIL} steps < {STATIC_CHANGE} "
                      "while the sim's is not",
            **(PROBE_METRICS if probes else {}),
        },
        "per_scene": per_scene,
        "per_split": {sp: v for sp, v in per_split.items() if sp != primary},
        **_targets(per_scene, horizon, long_horizon, frame_size),
        "files": files,
        "machine": describe_machine(str(next(m.parameters()).device)),
        "simcore_version": simcore.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command,
    }
    if probes:
        report["probe_targets"] = probe_targets
        report["probe_summary"] = {"passed": [f"{t['target']} {t['scene']}" for t in probe_targets if t["passed"]],
                                   "failed": [f"{t['target']} {t['scene']}" for t in probe_targets
                                              if t["passed"] is False],
                                   "not_measured": [f"{t['target']} {t['scene']}" for t in probe_targets
                                                    if t["passed"] is None]}
    try:
        write_plot(out / "psnr_ssim.png", report)
        files["plot"] = str(out / "psnr_ssim.png")
        if probes:
            entries = [(f"{sc.split('/')[-1]} [{sp}]", r) for sp, v in per_split.items() for sc, r in v.items()]
            title = f"{desc['name']}: {rollouts} rollouts x {horizon} steps, seeds {seed}+"
            files["probe_plots"]["error_vs_horizon"] = str(
                probe_report.write_horizon_plot(out / "error_vs_horizon.png", entries, title))
            files["probe_plots"]["probe_bars"] = str(
                probe_report.write_bars_plot(out / "probe_bars.png", entries, title))
    except ImportError as exc:  # pragma: no cover - matplotlib is a dependency
        report["warnings"] = [f"no plot: matplotlib is not importable ({exc}); pip install matplotlib"]
    report["wall_time_s"] = round(time.perf_counter() - start, 2)
    (out / "report.json").write_text(json.dumps(jsonable(report, nonfinite="string"), indent=1, allow_nan=False) + "\n")
    return report


def _vs_id(r: dict[str, Any], id_r: dict[str, Any]) -> dict[str, Any]:
    """A split's headline figures divided by (or minus) the in-distribution ones."""
    out: dict[str, Any] = {"psnr_mean_delta_db": r["psnr_mean"] - id_r["psnr_mean"],
                           "ssim_mean_delta": r["ssim_mean"] - id_r["ssim_mean"]}
    for p in ("p1", "p2", "p3", "p4"):
        a, b = r["probes"].get(p), id_r["probes"].get(p)
        if a and b and a["model"]["n"] and b["model"]["n"] and b["model"]["value"]:
            out[f"{p}_{a['metric']}_ratio"] = a["model"]["value"] / b["model"]["value"]
    out["p5_share_delta"] = r["probes"]["p5"]["share"]["value"] - id_r["probes"]["p5"]["share"]["value"]
    h, hi = r["probes"]["p8"].get("h_star"), id_r["probes"]["p8"].get("h_star")
    if h and hi:
        out["p8_h_star_delta"] = h["value"] - hi["value"]
    return out


PROBE_METRICS = {
    "probe_floor": "every offline probe runs on the model frames, on ground-truth frames (floor_gt) and on their "
                   "autoencoder round trips (floor_ae); floor = the worse of the two per rollout; ratio = "
                   "mean(model) / mean(floor) over rollouts",
    "probe_frames": "offline probes see the last prompt frame (index 0) and the horizon steps 1..T",
    "intervals": "percentile bootstrap over rollouts, 1000 resamples, seed 0, 95%",
    "p1": "vel_rel_err: sum |v_fit - v_true| / sum |v_true| over free-flight segments (line fits)",
    "p2": "g_rel_err: |g_fit - g| / g from parabola fits (None without gravity; g_err in px/s^2 then)",
    "p3": "momentum_err: |P_after - P_before| / |P_before| per ball-ball collision (line fits either side)",
    "p4": "restitution_err: mean |e_fit - e| over wall bounces",
    "p5": "share of rollouts with a vanish/appear/teleport/resize event the ground-truth floor does not show",
    "p7": "Pong: direction accuracy of the paddle vs the commanded action; PSNR(true actions) - PSNR(shuffled)",
    "p8": "per-step median (over objects, then rollouts) position error in radii; H* = first step above 1 radius "
          "(the horizon when never)",
    "hooks": "every simcore_probe hook: per-rollout mean of its readouts over the dreamed steps, on the model "
             "world, the sim world (floor_gt) and round-trip frames (floor_ae)",
}
