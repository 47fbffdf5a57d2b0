"""The ``render`` backend: the scene's simulator owns the state, the world model draws
the frame (generative rendering of a simulated world, DESIGN §1).

Every step the simulator steps exactly; the model then generates the frame from

* the **engine state**: a fixed-size vector (:func:`state_vector`) built from
  ``info["objects"]`` and delivered like any plugin conditioning (the built-in
  ``conditioning`` plugin supplies it under the name ``"state"``), and
* **its own previous frames**: the KV-cached rollout context, for temporal
  consistency (only the reset frame comes from the scene's rasterizer).

How the state enters the DiT. A global per-frame vector only modulates every token
of a frame alike (adaLN), and the DiT's attention is relative (RoPE), so a token
cannot tell from it *where* an object should be drawn. :class:`RenderDiT` therefore
adds **state tokens**: for every patch token and every object, the object's offset
from the patch centre, its half size, colour, shape and draw order go through a small
shared MLP; the sum over objects is added to that token's embedding (spatially
aligned conditioning, as layout/ControlNet-style conditioning does for images). The
same vector also enters the adaLN conditioning through ``DiT.cond``'s ``extra``
vectors. ``model.py`` and ``rollout.py`` are used unchanged: the state tokens ride
on the ``extra`` dict the rollout already passes to the DiT.

Render models are saved as ``model.safetensors`` with format ``simcore.rendermodel``
(so a plain ``load_model`` refuses them with a clear message) plus a model card.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from simcore.errors import BackendError
from simcore.model import DiT, ModelConfig, WorldModel

if TYPE_CHECKING:  # pragma: no cover
    from simcore.world import World

#: conditioning name of the engine-state vector
STATE = "state"
#: objects the state vector holds (more are dropped, fewer zero-padded)
MAX_OBJECTS = 8
#: per object: x, y (centre / frame side), w, h (size / frame side), r, g, b (/255),
#: visible, present, is_box (not a ball)
OBJECT_FEATURES = ("x", "y", "w", "h", "r", "g", "b", "visible", "present", "is_box")
NUM_FEATURES = len(OBJECT_FEATURES)
STATE_DIM = MAX_OBJECTS * NUM_FEATURES

RENDER_FORMAT = "simcore.rendermodel"
RENDER_VERSION = "1"


# ---------------------------------------------------------------------------
# the engine state as a vector
# ---------------------------------------------------------------------------


def state_vector(objects: dict[str, Any] | None, frame_size: tuple[int, int],
                 max_objects: int = MAX_OBJECTS) -> np.ndarray:
    """The engine state as a fixed-size conditioning vector.

    ``objects``: a scene's object table (``info["objects"]`` or a recording step's
    ``state``): ``pos`` (N, 2) px, ``size`` (N, 2) px (or ``radius`` (N,)),
    ``color`` (N, 3) uint8, optional ``visible`` (N,) and ``kind`` (N,) str.
    Returns (max_objects · NUM_FEATURES,) float32 = rows of
    [x/W, y/H, w/W, h/H, r/255, g/255, b/255, visible, present, is_box], one per
    object in table order (= draw order), zero rows for absent objects. Objects past
    ``max_objects`` are dropped.
    """
    h, w = (float(s) for s in frame_size)
    out = np.zeros((max_objects, NUM_FEATURES), dtype=np.float32)  # (K, F)
    if not objects or "pos" not in objects:
        return out.reshape(-1)
    pos = np.asarray(objects["pos"], dtype=np.float64).reshape(-1, 2)  # (N, 2)
    n = min(len(pos), max_objects)
    if n == 0:
        return out.reshape(-1)
    if objects.get("size") is not None:
        size = np.asarray(objects["size"], dtype=np.float64).reshape(-1, 2)[:n]  # (n, 2)
    else:
        size = np.repeat(2 * np.asarray(objects["radius"], dtype=np.float64).reshape(-1, 1)[:n], 2, axis=1)
    color = np.asarray(objects.get("color", np.zeros((n, 3))), dtype=np.float64).reshape(-1, 3)[:n]  # (n, 3)
    visible = np.asarray(objects.get("visible", np.ones(n)), dtype=np.float64).reshape(-1)[:n]
    kinds = list(objects.get("kind", ["ball"] * n))[:n]
    out[:n, 0] = pos[:n, 0] / w
    out[:n, 1] = pos[:n, 1] / h
    out[:n, 2] = size[:, 0] / w
    out[:n, 3] = size[:, 1] / h
    out[:n, 4:7] = color / 255.0
    out[:n, 7] = visible
    out[:n, 8] = 1.0
    out[:n, 9] = [0.0 if k == "ball" else 1.0 for k in kinds]
    return out.reshape(-1)


# ---------------------------------------------------------------------------
# state tokens and the render DiT
# ---------------------------------------------------------------------------


class StateTokens(nn.Module):
    """Engine-state vectors (B, T, K·F) -> per-token embeddings (B, T, N, D).

    For token (i, j) of the (gh, gw) patch grid and object k, in patch units:
    dx, dy = object centre - patch centre (clipped to ±4), hw, hh = half size; the
    pair's features [dx, dy, hw, hh, r, g, b, is_box, k/K, 1] are gated by
    present · visible · near (near: the object's box grown by 1.5 patches overlaps
    the patch, softly) and mapped by a shared MLP; the sum over objects is the
    token's state embedding. The last layer starts at zero, so a fresh render DiT
    is the plain DiT until training finds the state useful.
    """

    PAIR_FEATURES = 10

    def __init__(self, grid: tuple[int, int], dim: int, hidden: int = 64):
        super().__init__()
        self.grid = grid
        gh, gw = grid
        cy = (torch.arange(gh, dtype=torch.float32) + 0.5) / gh
        cx = (torch.arange(gw, dtype=torch.float32) + 0.5) / gw
        yy, xx = torch.meshgrid(cy, cx, indexing="ij")
        self.register_buffer("centres", torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1), persistent=False)  # (N, 2)
        self.mlp = nn.Sequential(nn.Linear(self.PAIR_FEATURES, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                 nn.SiLU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        b, t, _ = state.shape
        gh, gw = self.grid
        s = state.float().reshape(b, t, MAX_OBJECTS, NUM_FEATURES)  # (B, T, K, F)
        scale = torch.tensor([gw, gh], dtype=s.dtype, device=s.device)
        pos, size = s[..., 0:2], s[..., 2:4]  # (B, T, K, 2) in frame fractions
        d = (pos[:, :, None] - self.centres[None, None, :, None]) * scale  # (B, T, N, K, 2) patch units
        half = (size * scale / 2)[:, :, None].expand_as(d)  # (B, T, N, K, 2)
        gap = (d.abs() - half - 0.5).clamp_min(0.0)  # distance from the patch to the object's box
        near = (1.5 - gap).clamp(0.0, 1.0).prod(dim=-1)  # (B, T, N, K)
        gate = near * s[..., 7][:, :, None] * s[..., 8][:, :, None]  # visible · present
        n, k = self.centres.shape[0], MAX_OBJECTS
        rgb = s[..., 4:7][:, :, None].expand(b, t, n, k, 3)
        box = s[..., 9:10][:, :, None].expand(b, t, n, k, 1)
        order = (torch.arange(k, dtype=s.dtype, device=s.device) / k).view(1, 1, 1, k, 1).expand(b, t, n, k, 1)
        feats = torch.cat([d.clamp(-4, 4), half.clamp(0, 8), rgb, box, order, torch.ones_like(order)], dim=-1)
        emb = self.mlp(feats)  # (B, T, N, K, D)
        return (emb * gate[..., None]).sum(dim=3)  # (B, T, N, D)


class RenderDiT(DiT):
    """The DiT plus :class:`StateTokens`: token embeddings get the state embedding of
    their frame's ``extra["state"]`` added (through a forward hook on ``embed``, so the
    DiT's own forward, blocks and KV-cache path are reused as they are)."""

    def __init__(self, cfg: ModelConfig):
        if cfg.cond_dims.get(STATE) != STATE_DIM:
            raise ValueError(f"a render model needs cond_dims[{STATE!r}] = {STATE_DIM}, got {cfg.cond_dims}")
        super().__init__(cfg)
        self.state_tokens = StateTokens(self.grid, cfg.dit.dim)
        self._pending: torch.Tensor | None = None
        self.embed.register_forward_hook(self._add_state)

    def _add_state(self, module, inputs, output):
        if self._pending is None:
            return output
        return output + self._pending.to(output.dtype)  # (B, T, N, D)

    def forward(self, z, tau, actions, scene, extra=None, **kwargs):
        if extra is None or STATE not in extra:
            raise KeyError(f"a render model needs the {STATE!r} conditioning; got {sorted(extra or {})}")
        self._pending = self.state_tokens(extra[STATE])  # (B, T, N, D)
        try:
            return super().forward(z, tau, actions, scene, extra, **kwargs)
        finally:
            self._pending = None


class RenderModel(WorldModel):
    """A WorldModel whose DiT is a :class:`RenderDiT` (same autoencoder, same rollout)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.dit = RenderDiT(cfg)


# ---------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------


def save_render_model(model: RenderModel, directory: str | os.PathLike, card: dict[str, Any] | None = None) -> Path:
    """Weights (safetensors, format ``simcore.rendermodel``, written atomically) + card."""
    from simcore.checkpoint import write_weights

    return write_weights(model, directory, card, fmt=RENDER_FORMAT, version=RENDER_VERSION,
                         card_extra={"kind": "render"})


_RENDER_MODELS: dict[tuple[str, float], RenderModel] = {}


def load_render_model(name: str | os.PathLike | RenderModel = "render", device: str = "cpu") -> RenderModel:
    """A render model in eval mode from a shipped name ("render"; "default", the name every
    backend's default model goes by, means it too), a directory or a .safetensors file
    (cached per file); every failure names the file and the problem."""
    from simcore.checkpoint import CheckpointError, read_checked, resolve

    if isinstance(name, RenderModel):
        return name
    if isinstance(name, str) and name == "default":
        name = "render"
    if isinstance(name, WorldModel):
        raise BackendError("the render backend needs a render model (trained with `simcore train --backend render`),"
                           " not a plain world model")
    path = resolve(name)
    key = (f"{path}@{device}", path.stat().st_mtime)
    if key in _RENDER_MODELS:
        return _RENDER_MODELS[key]
    meta, tensors = read_checked(path, fmt=RENDER_FORMAT, version=RENDER_VERSION, error=CheckpointError,
                                 what="simcore render model", kind="render model",
                                 hint="; train one with `simcore train DATA --backend render`")
    try:
        model = RenderModel(ModelConfig.from_dict(json.loads(meta["config"])))
        model.load_state_dict(tensors)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: config or weights do not build a render model: {exc}") from exc
    model = model.to(device).eval()
    _RENDER_MODELS[key] = model
    return model


# ---------------------------------------------------------------------------
# the backend
# ---------------------------------------------------------------------------


def _model_backend():
    from simcore.dream import ModelBackend

    return ModelBackend


class RenderBackend(_model_backend()):
    """A render World's generative state: a :class:`RenderModel` and its rollout.

    It is the model backend's machinery (conditioning through the plugin hook, KV-cached
    rollout, snapshots) with a different contract: the World steps the simulator every
    step, and :meth:`render` draws the frame for the state the simulator just reached
    (the ``conditioning`` plugin supplies ``state`` from ``world.state``). The reset
    frame (and ``prompt_frames - 1`` more) comes from the scene's rasterizer; every
    later frame is generated.
    """

    def __init__(self, world: World, model: Any = "render", *, denoise_steps: int | None = None,
                 context: int | None = None, device: str = "cpu", prompt_frames: int | None = None):
        m = load_render_model(model, device)
        super().__init__(world, m, denoise_steps=denoise_steps, context=context, device=device)
        if prompt_frames is not None:
            self.prompt_frames = max(1, int(prompt_frames))

    def render(self, action: Any, t: int) -> np.ndarray:
        """The model's frame (H, W, 3) uint8 for the simulator's state at step ``t``
        (reached by ``action``)."""
        return self.dream(action, t)

    def restore(self, snap: dict[str, Any]) -> None:
        if snap["rollout"] is not None and self.rollout is None:  # a fresh world: make the rollout to fill
            from simcore.rollout import Rollout

            self.rollout = Rollout(self.model, batch=1, steps=self.denoise_steps, window=self.context, seed=0,
                                   scene=self.scene_index)
        super().restore(snap)


# ---------------------------------------------------------------------------
# evaluation: the render backend against the simulator's own rasterizer
# ---------------------------------------------------------------------------


REPORT_STEPS = (1, 16, 32, 64)


def _write_plot(path: Path, report: dict[str, Any]) -> Path:
    """PSNR and SSIM per step per scene (matplotlib, Agg), the AE bound dashed."""
    from simcore import plots

    fig, (ax_p, ax_s) = plots.figure(10, 4, 1, 2)
    for i, (scene, r) in enumerate(report["per_scene"].items()):
        steps = np.arange(1, len(r["psnr"]) + 1)
        line, = ax_p.plot(steps, np.minimum(np.asarray(r["psnr"], dtype=float), 60.0), marker=".", label=scene)
        ax_p.axhline(r["ae_psnr"], ls="--", lw=0.8, color=line.get_color())
        ax_s.plot(steps, r["ssim"], marker=".", label=scene)
    ax_p.set(xlabel="step", ylabel="PSNR vs rasterizer (dB); dashed: AE bound",
             title=f"render backend, mean of {report['rollouts']} rollouts")
    ax_s.set(xlabel="step", ylabel="SSIM", title="SSIM vs rasterizer")
    for ax in (ax_p, ax_s):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return plots.save(fig, path, dpi=110)


def _probe_summary(res: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of one ``probes.probe_episode`` result (or its floor)."""
    out: dict[str, Any] = {
        "p1_vel_rel_err": res["p1"].get("vel_rel_err"),
        "p2_g_rel_err": res["p2"].get("g_rel_err"),
        "p4_restitution_err": res["p4"].get("restitution_err"),
        "p5_events": dict(res["p5"]["events"]) if "events" in res["p5"] else None,
        "p8_h_star": res["p8"]["h_star"], "p8_horizon": res["p8"]["horizon"],
        "p8_final_median_err_radii": res["p8"]["final_median_err"],
    }
    if "p3" in res:
        out["p3_momentum_err"] = res["p3"].get("momentum_err")
    return out


def _mean_of(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if isinstance(v, (int, float)) and v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else None


@torch.no_grad()
def evaluate_render(model: Any = "render", scenes: list[str] | None = None, rollouts: int = 8, horizon: int = 64,
                    seed: int = 1_000_000, denoise_steps: int | None = None, out_dir: str | os.PathLike | None = None,
                    probes: bool = True, progress: bool = True, plugin_manager: Any = None,
                    command: str | None = None) -> dict[str, Any]:
    """Run ``render`` worlds next to ``sim`` worlds (same seeds, same demo-policy actions:
    the simulator states are identical, only the drawing differs) and measure, per
    scene and per step after the reset frame: PSNR/SSIM of the generated frame against
    the scene's own rasterizer; the autoencoder round-trip PSNR of the sim frames (the
    bound a latent renderer cannot beat); and, with ``probes``, the physics probes
    (``simcore.plugins.probes.probe_episode``) on the generated frames next to their
    floor (the same probes on ground-truth frames). Writes ``report.json``, a PSNR/SSIM
    plot and one render | sim GIF per scene (the worst rollout)."""
    import sys
    import time

    import simcore
    from simcore.errors import SimcoreError
    from simcore import evaluate
    from simcore.evaluate import frame_psnr, ssim, write_side_by_side
    from simcore.jsonable import jsonable
    from simcore.machine import describe as describe_machine

    if int(rollouts) < 1 or int(horizon) < 1:
        raise SimcoreError(f"rollouts and horizon must be at least 1, got {rollouts!r} and {horizon!r}")
    start = time.perf_counter()
    m = load_render_model(model)
    scenes = list(scenes) if scenes else list(m.cfg.scenes)
    frame_size = tuple(m.cfg.frame_size)
    out = Path(out_dir) if out_dir is not None else Path("eval") / "render"
    out.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    bar = tqdm(total=len(scenes) * rollouts * horizon, desc="eval render", unit="step", disable=not progress,
               file=sys.stderr, leave=False)
    per_scene: dict[str, Any] = {}
    gifs: dict[str, str] = {}
    used_steps = None
    try:
        for scene in scenes:
            t0 = time.perf_counter()
            runs = []
            for i in range(rollouts):
                rw = simcore.make(scene, backend="render", model=m, denoise_steps=denoise_steps,
                                  frame_size=frame_size, plugin_manager=plugin_manager)
                sw = simcore.make(scene, frame_size=frame_size, plugin_manager=plugin_manager)
                obs_r, _ = rw.reset(seed=seed + i)
                obs_s, info_s = sw.reset(seed=seed + i)
                policy = sw.scene.demo_policy(seed + i)
                rf, sf, tables = [obs_r], [obs_s], [info_s["objects"]]
                for _ in range(horizon):
                    action = policy(obs_s, info_s)
                    obs_r, _, _, _, info_r = rw.step(action)
                    obs_s, _, _, _, info_s = sw.step(action)
                    if not np.array_equal(info_r["objects"]["pos"], info_s["objects"]["pos"]):
                        raise SimcoreError(f"{scene} seed {seed + i}: the render world's simulator left the sim "
                                           "world's (it must step exactly)")
                    rf.append(obs_r)
                    sf.append(obs_s)
                    tables.append(info_s["objects"])
                    bar.update(1)
                used_steps = rw.renderer.denoise_steps
                prompt = rw.renderer.prompt_frames
                runs.append({"render": np.stack(rf), "sim": np.stack(sf), "tables": tables, "seed": seed + i,
                             "options": dict(sw.options), "fps": float(sw.metadata["render_fps"]), "prompt": prompt})
                rw.close()
                sw.close()
            p = runs[0]["prompt"]
            gen = np.stack([r["render"][p:] for r in runs])  # (R, horizon - p + 1, H, W, 3)
            sim = np.stack([r["sim"][p:] for r in runs])
            shape = gen.shape
            ps = frame_psnr(gen.reshape(-1, *shape[2:]), sim.reshape(-1, *shape[2:])).reshape(shape[:2])
            ss = ssim(gen.reshape(-1, *shape[2:]), sim.reshape(-1, *shape[2:])).reshape(shape[:2])
            curve, scurve = ps.mean(axis=0), ss.mean(axis=0)
            worst = int(np.argmin(np.minimum(ps, 100.0).mean(axis=1)))
            gif = out / f"render_vs_sim_{scene.replace('/', '_')}.gif"
            write_side_by_side(gif, runs[worst]["render"], runs[worst]["sim"], fps=runs[worst]["fps"])
            gifs[scene] = str(gif)
            r: dict[str, Any] = {
                "psnr": [round(float(v), 3) for v in curve], "ssim": [round(float(v), 4) for v in scurve],
                "psnr_at": {str(k): float(curve[k - 1]) for k in REPORT_STEPS if k <= len(curve)},
                "ssim_at": {str(k): float(scurve[k - 1]) for k in REPORT_STEPS if k <= len(scurve)},
                "psnr_mean": float(curve.mean()), "ssim_mean": float(scurve.mean()),
                "rollout_mean_psnr": [round(float(v), 3) for v in ps.mean(axis=1)],
                "ae_psnr": evaluate._ae_psnr(m, np.concatenate([x["sim"] for x in runs])),
                "worst_rollout": {"seed": runs[worst]["seed"], "gif": str(gif)},
                "long": None,
            }
            if probes:
                from simcore.plugins.probes import (
                    probe_episode,
                    scene_params,
                    truth_from_tables,
                )

                results, floors = [], []
                for x in runs:
                    params = scene_params(scene, x["options"], frame_size, x["fps"])
                    res = probe_episode(x["render"], truth_from_tables(x["tables"]), params)
                    results.append(_probe_summary(res))
                    floors.append(_probe_summary(res["floor"]))
                    results[-1]["violations"] = res["violations"]
                keys = [k for k in results[0] if k not in ("p5_events", "violations")]
                r["probes"] = {
                    "mean": {k: _mean_of([x.get(k) for x in results]) for k in keys},
                    "floor_mean": {k: _mean_of([x.get(k) for x in floors]) for k in keys},
                    "p5_events_total": {k: int(sum(x["p5_events"][k] for x in results)) for k in results[0]["p5_events"]},
                    "rollouts_with_violations": int(sum(bool(x["violations"]) for x in results)),
                    "per_rollout": results,
                }
            r["wall_time_s"] = round(time.perf_counter() - t0, 2)
            per_scene[scene] = r
    finally:
        bar.close()
    from simcore.checkpoint import load_card, resolve

    card = load_card(model) if not isinstance(model, RenderModel) else {}
    report: dict[str, Any] = {
        "kind": "render backend vs the simulator's rasterizer",
        "model": {"name": card.get("name") or str(model) if not isinstance(model, RenderModel) else "render model",
                  "path": None if isinstance(model, RenderModel) else str(resolve(model)),
                  "parameters": m.num_parameters(), "scenes": list(m.cfg.scenes)},
        "scenes": scenes, "seed": seed, "rollouts": rollouts, "horizon": horizon, "long_horizon": 0,
        "denoise_steps": used_steps,
        "policy": "the scene's demo policy (seeded like the episode), fed the sim world's observation and info",
        "metrics": {
            "psnr": "10*log10(255^2 / MSE) of the generated frame vs the sim world's rasterized frame (same state)",
            "horizon_step": "k-th generated frame after the reset frame (which comes from the rasterizer)",
            "ae_psnr": "mean PSNR of the sim frames after an autoencoder round trip: the bound for a latent renderer",
            "probes": "simcore.plugins.probes.probe_episode on the generated frames; floor = on ground-truth frames",
        },
        "per_scene": per_scene,
        "files": {"report": str(out / "report.json"), "gifs": gifs, "plot": None},
        "machine": describe_machine("cpu"),
        "simcore_version": simcore.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command or (f"simcore.render.evaluate_render(model={model!r}, scenes={scenes!r}, "
                               f"rollouts={rollouts}, horizon={horizon}, seed={seed}, out_dir={str(out)!r})"),
    }
    report["files"]["plot"] = str(_write_plot(out / "psnr_ssim.png", report))
    report["wall_time_s"] = round(time.perf_counter() - start, 2)
    (out / "report.json").write_text(json.dumps(jsonable(report, nonfinite="string"), indent=2, allow_nan=False) + "\n")
    return report


# ---------------------------------------------------------------------------
# world events through the render backend: does the generated world respond?
# ---------------------------------------------------------------------------


def _fit_g(ys: np.ndarray, dt: float) -> float | None:
    """Vertical acceleration (px/s²) of a parabola fitted to y positions (T,) at dt spacing."""
    ok = np.isfinite(ys)
    if ok.sum() < 5:
        return None
    t = np.arange(len(ys))[ok] * dt
    return float(2 * np.polyfit(t, ys[ok], 2)[0])


def _free_runs(hits: np.ndarray, min_len: int = 6) -> list[tuple[int, int]]:
    """(a, b) index ranges (inclusive) where the hit counters (T,) do not change."""
    runs, a = [], 0
    for t in range(1, len(hits) + 1):
        if t == len(hits) or hits[t] != hits[t - 1]:
            if t - a >= min_len:
                runs.append((a, t - 1))
            a = t
    return runs


@torch.no_grad()
def evaluate_events(model: Any = "render", scene: str = "simcore/BouncingBalls-v0", seeds: int = 6,
                    before: int = 12, after: int = 36, gravities: tuple[float, ...] = (75.0, 165.0),
                    seed: int = 2_000_000, out_dir: str | os.PathLike | None = None,
                    denoise_steps: int | None = None) -> dict[str, Any]:
    """Issue events mid-rollout in ``render`` worlds and read the generated frames back
    (``simcore.perception``), next to the same reading of the simulator's rasterized
    frames (the floor). Per event type, over ``seeds`` held-out seeds:

    * add_ball (a palette colour not in play, random place): fraction of the ``after``
      frames in which the new ball is detected within one radius of where the
      simulator has it, and its median position error in radii;
    * recolor (ball 0 -> an unused colour): fraction of frames with the new colour
      detected at the ball (within one radius) and the old colour gone;
    * gravity (one ball, held-out values ``gravities``; the render model was trained on
      gravity-free data): fitted vertical acceleration over free-flight runs after the
      event vs the true value; a value of 0 (the scene's own) is the control: what the
      fit reads when nothing changes.
    """
    import time

    import simcore
    from simcore.events import Event
    from simcore.jsonable import jsonable
    from simcore.machine import describe as describe_machine
    from simcore.perception import detect
    from simcore.scene import BACKGROUND, PALETTE

    m = load_render_model(model)
    frame_size = tuple(m.cfg.frame_size)
    palette = [tuple(c) for c in PALETTE.values()]

    def pair(options, s):
        rw = simcore.make(scene, backend="render", model=m, frame_size=frame_size, denoise_steps=denoise_steps,
                          **options)
        sw = simcore.make(scene, frame_size=frame_size, **options)
        rw.reset(seed=s)
        sw.reset(seed=s)
        for _ in range(before):
            rw.step(0)
            sw.step(0)
        return rw, sw

    def run(rw, sw, event, steps):
        applied = rw.event(event)
        sw.event(applied)
        frames_r, frames_s, tables = [], [], []
        for _ in range(steps):
            fr, *_, info = rw.step(0)
            fs, *_ = sw.step(0)
            frames_r.append(fr)
            frames_s.append(fs)
            tables.append(info["objects"])
        return applied, frames_r, frames_s, tables

    def seen(frame, color, pos, radius):
        d = detect(frame, np.asarray([color]), BACKGROUND)
        if not d.visible[0]:
            return False, None
        return True, float(np.hypot(*(d.pos[0] - pos)) / radius)

    start = time.perf_counter()
    add = {"render": [], "sim": [], "err_render": [], "err_sim": []}
    rec = {"render": [], "sim": [], "old_gone_render": [], "old_gone_sim": []}
    for i in range(seeds):
        s = seed + i
        rw, sw = pair({"count": (2, 3)}, s)
        used = {tuple(int(v) for v in c) for c in rw.state["color"]}
        color = next(c for c in palette if c not in used)
        _, fr, fs, tables = run(rw, sw, Event("add_ball", color=color), after)
        for frames, key, ekey in ((fr, "render", "err_render"), (fs, "sim", "err_sim")):
            hits = [seen(f, color, tab["pos"][-1], tab["radius"][-1]) for f, tab in zip(frames, tables)]
            add[key].append(float(np.mean([h[0] and h[1] < 1.0 for h in hits])))  # seen where the ball is
            errs = [h[1] for h in hits if h[0]]
            add[ekey].append(float(np.median(errs)) if errs else None)
        rw, sw = pair({"count": (2, 3)}, s)
        used = {tuple(int(v) for v in c) for c in rw.state["color"]}
        old = tuple(int(v) for v in rw.state["color"][0])
        new = next(c for c in reversed(palette) if c not in used)
        _, fr, fs, tables = run(rw, sw, Event("recolor", index=0, color=new), after)
        for frames, key, gkey in ((fr, "render", "old_gone_render"), (fs, "sim", "old_gone_sim")):
            ok = [seen(f, new, tab["pos"][0], tab["radius"][0]) for f, tab in zip(frames, tables)]
            rec[key].append(float(np.mean([h[0] and h[1] is not None and h[1] < 1.0 for h in ok])))
            gone = [not detect(f, np.asarray([old]), BACKGROUND).visible[0] for f in frames]
            rec[gkey].append(float(np.mean(gone)))
    grav = []
    dt = 1.0 / 20.0
    for g in gravities:
        for i in range(seeds):
            rw, sw = pair({"count": (1, 1), "speed_range": (10.0, 30.0)}, seed + 100 + i)
            _, fr, fs, tables = run(rw, sw, Event("gravity", gravity=g), after)
            hits = np.array([int(t["wall_hits"][0]) for t in tables])
            color = tuple(int(v) for v in tables[0]["color"][0])
            fits = {"render": [], "sim": []}
            for a, b in _free_runs(hits):
                for frames, key in ((fr, "render"), (fs, "sim")):
                    ys = np.array([detect(f, np.asarray([color]), BACKGROUND).pos[0][1] for f in frames[a:b + 1]])
                    fit = _fit_g(ys, dt)
                    if fit is not None:
                        fits[key].append(fit * 64.0 / min(frame_size))
            grav.append({"gravity": g, "seed": seed + 100 + i,
                         "fit_render": float(np.median(fits["render"])) if fits["render"] else None,
                         "fit_sim": float(np.median(fits["sim"])) if fits["sim"] else None})

    def mean(xs):
        xs = [x for x in xs if x is not None]
        return float(np.mean(xs)) if xs else None

    per_g = {}
    for g in gravities:
        rows = [r for r in grav if r["gravity"] == g]
        per_g[str(g)] = {"fit_render_mean": mean([r["fit_render"] for r in rows]),
                         "fit_sim_mean": mean([r["fit_sim"] for r in rows]),
                         "rel_err_render": mean([abs(r["fit_render"] / g - 1) for r in rows
                                                 if r["fit_render"] is not None]) if g else None,
                         "rel_err_sim": mean([abs(r["fit_sim"] / g - 1) for r in rows
                                              if r["fit_sim"] is not None]) if g else None,
                         "rollouts_with_a_fit": sum(r["fit_render"] is not None for r in rows)}
    report = {
        "kind": "world events through the render backend, read back from the generated frames",
        "model": str(model) if not isinstance(model, RenderModel) else "render model",
        "scene": scene, "seeds": list(range(seed, seed + seeds)), "steps_before_event": before,
        "steps_after_event": after,
        "add_ball": {"detected_at_ball_fraction_render": mean(add["render"]), "detected_at_ball_fraction_sim": mean(add["sim"]),
                     "median_pos_err_radii_render": mean(add["err_render"]),
                     "median_pos_err_radii_sim": mean(add["err_sim"]), "per_seed": add},
        "recolor": {"new_colour_at_ball_fraction_render": mean(rec["render"]),
                    "new_colour_at_ball_fraction_sim": mean(rec["sim"]),
                    "old_colour_gone_fraction_render": mean(rec["old_gone_render"]),
                    "old_colour_gone_fraction_sim": mean(rec["old_gone_sim"]), "per_seed": rec},
        "gravity": {"held_out_values": list(gravities), "per_value": per_g, "per_rollout": grav,
                    "note": "render model trained on gravity-free BouncingBalls + Pong; fits over free-flight runs "
                            "(>= 6 steps between wall bounces) after the event, in px/s² of a 64-px frame"},
        "metrics": {"detected": "simcore.perception.detect finds the colour (soft unmixing, min area)",
                    "floor": "the same reading on the simulator's rasterized frames of the same states"},
        "machine": describe_machine("cpu"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": f"simcore.render.evaluate_events(model={model!r}, seeds={seeds}, before={before}, after={after}, "
                   f"gravities={tuple(gravities)!r}, seed={seed})",
        "wall_time_s": round(time.perf_counter() - start, 2),
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "events.json").write_text(json.dumps(jsonable(report, nonfinite="string"), indent=2,
                                                    allow_nan=False) + "\n")
    return report
