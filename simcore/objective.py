"""The training objective of the world model: the noise levels a clip's frames get
(teacher-forced or per-frame independent, uniform or logit-normal), the weight on
moving latents, and the rectified-flow loss in the DiT's own target (v or x0).
``simcore.train`` draws batches and steps the optimizer; this module says what a
batch is scored on, so each knob of the recipe is in one place and testable alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from simcore.model import WorldModel


def ae_loss(ae, frames: torch.Tensor) -> torch.Tensor:
    """L1 + L2 reconstruction of uint8 frames (B, H, W, 3)."""
    x = WorldModel.to_unit(frames)
    rec = ae(x)
    return F.l1_loss(rec, x) + F.mse_loss(rec, x)


def sample_tau(b: int, t: int, gen: torch.Generator, ctx_max: float = 0.1, *, tf_share: float = 0.5,
               dist: str = "uniform", loc: float = 0.0, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise levels (B, T) and the teacher-forced clips (B,) bool.

    A share ``tf_share`` of the clips is teacher-forced (rollout-like): context frames
    get only light noise (≤ ``ctx_max``) and the last frame a noisy level; the others
    draw a level per frame independently (diffusion forcing). Noisy levels are uniform
    or logit-normal (σ(N(loc, scale)); loc > 0 puts them toward high noise, where the
    dynamics are learned rather than the texture)."""
    if dist == "uniform":
        tau = torch.rand(b, t, generator=gen)
    elif dist == "logit-normal":
        tau = torch.sigmoid(loc + scale * torch.randn(b, t, generator=gen))
    else:
        raise ValueError(f"noise-level distribution must be 'uniform' or 'logit-normal', got {dist!r}")
    forced = torch.rand(b, generator=gen) < tf_share
    ctx = torch.rand(b, t, generator=gen) * ctx_max
    tau[forced, :-1] = ctx[forced, :-1]
    return tau, forced


def moving(z: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """(B, T, 1, h, w) float: 1 where a latent changes from the previous frame or to the
    next (an object left or entered), dilated by one latent pixel; 0 elsewhere."""
    d = (z[:, 1:] - z[:, :-1]).abs().amax(dim=2) > threshold  # (B, T-1, h, w)
    m = torch.zeros(z.shape[0], z.shape[1], *z.shape[3:], dtype=torch.bool, device=z.device)
    m[:, 1:] |= d
    m[:, :-1] |= d
    m = F.max_pool2d(m.float().flatten(0, 1)[:, None], 3, stride=1, padding=1)  # (B·T, 1, h, w)
    return m.reshape(z.shape[0], z.shape[1], 1, *z.shape[3:])


def flow_loss(dit, z, tau, actions, scene, extra, gen: torch.Generator, weight=None, *,
              motion_weight: float = 0.0) -> torch.Tensor:
    """Rectified-flow loss: x_τ = (1-τ)z + τε per frame; the DiT's own target is
    regressed (v = ε - z, or the clean z for x0 models; residual models get each
    frame's previous clean latent). ``weight`` (B, T) weighs frames; ``motion_weight``
    adds weight on the latent pixels that move (:func:`moving`)."""
    cfg = getattr(dit, "module", dit).cfg.dit  # DDP wraps the DiT
    eps = torch.randn(z.shape, generator=gen).to(z)
    t = tau.to(z)[:, :, None, None, None]
    prev = torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1]], dim=1) if cfg.residual else None
    y = dit(((1 - t) * z + t * eps), tau.to(z), actions, scene, extra, prev=prev, output=cfg.target)
    goal = (eps - z) if cfg.target == "v" else z
    sq = (y.float() - goal.float()).pow(2)  # (B, T, C, h, w)
    if motion_weight > 0:
        w = 1.0 + motion_weight * moving(z.float())
        err = (sq * w).mean(dim=(2, 3, 4)) / w.mean(dim=(2, 3, 4))  # (B, T)
    else:
        err = sq.mean(dim=(2, 3, 4))  # (B, T)
    if weight is not None:
        err = err * weight
        return err.sum() / weight.sum().clamp_min(1e-8)
    return err.mean()
