"""Autoregressive rollout of a WorldModel: one new frame at a time, a few Euler steps
each, with the context frames' keys/values in a rolling KV cache.

The cache is a ring of ``window`` frame slots per block, allocated once:
``k``/``v`` (B, H, W, N, hd). A slot keeps *un-rotated* keys; before each new frame
the live slots are rotated to their window-relative time positions (0 = oldest), so
positions always match the 0..window range the model was trained on, however long
the rollout runs, and cost and memory per frame stay flat.

``use_cache=False`` recomputes every context frame at every Euler step (the
reference the cached path is tested against; identical until the window fills).
"""
from __future__ import annotations

from typing import Any

import torch

from simcore import kernels
from simcore.model import WorldModel, apply_rope


class Rollout:
    """Generation state for a batch of B independent rollouts of one model.

    prompt(latents, actions, extra) -> feed ground-truth context frames.
    generate(actions, extra) -> next latent frames (B, C, h, w), appended to the context.
    """

    def __init__(self, model: WorldModel, *, batch: int = 1, steps: int = 4, window: int | None = None,
                 ctx_noise: float | None = None, seed: int = 0, use_cache: bool = True, scene: int | list = 0,
                 guidance: float | None = None):
        self.model = model
        self.dit = model.dit
        self.batch = batch
        self.steps = int(steps)
        self.window = int(window or model.cfg.dit.window)
        self.ctx_noise = float(model.cfg.ctx_noise if ctx_noise is None else ctx_noise)
        self.use_cache = use_cache
        self.guidance = float(model.cfg.guidance if guidance is None else guidance)  # action guidance (1: none)
        if self.steps < 1 or self.window < 1:
            raise ValueError("steps and window must be at least 1")
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.generator = torch.Generator(device="cpu").manual_seed(int(seed))
        self.scene = torch.as_tensor(scene, dtype=torch.long, device=self.device).expand(batch).clone()
        c, h, w = model.latent_shape
        self.latent_shape = (c, h, w)
        n = self.dit.grid[0] * self.dit.grid[1]
        heads, hd = model.cfg.dit.heads, self.dit.head_dim
        depth = len(self.dit.blocks)
        if use_cache:  # (B, H, W, N, hd) per block, allocated once
            self.k = torch.zeros(depth, batch, heads, self.window, n, hd, device=self.device, dtype=self.dtype)
            self.v = torch.zeros_like(self.k)
        else:  # the context itself: noised latents, actions, cond, per slot
            self.ctx_z = torch.zeros(batch, self.window, c, h, w, device=self.device, dtype=self.dtype)
            self.ctx_a = torch.zeros(batch, self.window, dtype=torch.long, device=self.device)
            self.ctx_extra: list[dict[str, torch.Tensor]] = [{} for _ in range(self.window)]
        self.prev = torch.zeros(batch, c, h, w, device=self.device, dtype=self.dtype)  # newest clean frame (residual models)
        self.slot_frame = torch.full((self.window,), -1, dtype=torch.long)  # global frame number per slot
        self.count = 0  # frames in the context so far (global counter)

    # -- context bookkeeping --------------------------------------------------------
    def _live_slots(self) -> torch.Tensor:
        """Indices of filled slots, oldest first."""
        live = (self.slot_frame >= 0).nonzero().flatten()
        return live[torch.argsort(self.slot_frame[live])]

    def _noise(self, shape) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator).to(self.device, self.dtype)

    def _ctx_latents(self, z: torch.Tensor) -> torch.Tensor:
        """A clean frame as the model sees it in context: lightly noised to ctx_noise."""
        if self.ctx_noise <= 0:
            return z
        return (1 - self.ctx_noise) * z + self.ctx_noise * self._noise(z.shape)

    def _extra_frames(self, extra, t: int = 1) -> dict[str, torch.Tensor] | None:
        """name -> (B, n) (or (n,)) vectors as (B, t, n)."""
        if not extra:
            return None
        out = {}
        for k, v in extra.items():
            v = torch.as_tensor(v, dtype=self.dtype, device=self.device)
            if v.dim() == 1:
                v = v.expand(self.batch, -1)
            out[k] = v[:, None].expand(-1, t, -1)
        return out

    def _cache(self, live: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Per block {"k", "v"} (B, H, L·N, hd) of the live slots, keys rotated to 0..L-1."""
        cos, sin = self.dit.rope(torch.arange(len(live), device=self.device))
        out = []
        for i in range(len(self.dit.blocks)):
            k = self.k[i][:, :, live].flatten(2, 3)  # (B, H, L·N, hd)
            v = self.v[i][:, :, live].flatten(2, 3)
            out.append({"k": apply_rope(k, cos, sin), "v": v})
        return out

    def _next_slot(self) -> int:
        free = (self.slot_frame < 0).nonzero().flatten()
        return int(free[0]) if len(free) else int(torch.argmin(self.slot_frame))  # evict the oldest

    # -- public API -------------------------------------------------------------------
    @torch.no_grad()
    def append(self, z: torch.Tensor, actions, extra=None) -> None:
        """Add a clean frame (B, C, h, w) that the given actions (B,) led to to the context."""
        actions = torch.as_tensor(actions, dtype=torch.long, device=self.device).expand(self.batch)
        z = z.to(self.device, self.dtype)
        zc = self._ctx_latents(z)
        slot = self._next_slot()
        if self.slot_frame[slot] >= 0:
            self.slot_frame[slot] = -1  # evicted
        live = self._live_slots()
        tau = torch.full((self.batch, 1), self.ctx_noise, device=self.device)
        ex = self._extra_frames(extra)
        if self.use_cache:
            cache = self._cache(live) if len(live) else None
            pos = torch.tensor([len(live)], device=self.device)
            _, kvs = self.dit(zc[:, None], tau, actions[:, None], self.scene, ex, positions=pos, cache=cache,
                              return_kv=True)
            for i, (k, v) in enumerate(kvs):  # k, v (B, H, N, hd), un-rotated
                kernels.kv_write(self.k[i], slot, k)  # in place into the ring slot (evicts its old frame)
                kernels.kv_write(self.v[i], slot, v)
        else:
            self.ctx_z[:, slot] = zc
            self.ctx_a[:, slot] = actions
            self.ctx_extra[slot] = ex or {}
        self.prev = z.clone()
        self.slot_frame[slot] = self.count
        self.count += 1

    @torch.no_grad()
    def prompt(self, latents: torch.Tensor, actions, extra=None) -> None:
        """Feed ground-truth frames (B, T, C, h, w) with the actions that led to each (B, T)."""
        actions = torch.as_tensor(actions, dtype=torch.long).reshape(self.batch, -1)
        for t in range(latents.shape[1]):
            self.append(latents[:, t], actions[:, t], extra)

    @torch.no_grad()
    def generate(self, actions, extra=None) -> torch.Tensor:
        """Denoise the next frame for actions (B,) (already +1-shifted indices) from pure
        noise in ``steps`` Euler steps; append it to the context and return it (B, C, h, w).

        With ``guidance`` w ≠ 1 (a model trained with action dropout) each step also
        predicts the frame without its action (row 0, "no action") in the same batch and
        follows v_u + w·(v − v_u): the action's effect amplified (classifier-free guidance)."""
        actions = torch.as_tensor(actions, dtype=torch.long, device=self.device).expand(self.batch)[:, None]
        x = self._noise((self.batch, *self.latent_shape))[:, None]  # (B, 1, C, h, w)
        live = self._live_slots()
        ex = self._extra_frames(extra)
        taus = torch.linspace(1.0, 0.0, self.steps + 1)
        guided = self.guidance != 1.0
        scene, prev = self.scene, self.prev[:, None]
        if guided:  # conditional and unconditional rows in one batch: (2B, ...)
            acts = torch.cat([actions, torch.zeros_like(actions)])
            scene, prev = scene.repeat(2), prev.repeat(2, 1, 1, 1, 1)
            ex2 = {k: v.repeat(2, 1, 1) for k, v in ex.items()} if ex else ex
        if self.use_cache:
            cache = self._cache(live) if len(live) else None
            if guided and cache is not None:
                cache = [{k: t.repeat(2, 1, 1, 1) for k, t in c.items()} for c in cache]
            pos = torch.tensor([len(live)], device=self.device)
        for i in range(self.steps):
            dt = (taus[i + 1] - taus[i]).item()
            if guided:
                tau = torch.full((2 * self.batch, 1), float(taus[i]), device=self.device)
                if self.use_cache:
                    v2 = self.dit(x.repeat(2, 1, 1, 1, 1), tau, acts, scene, ex2, positions=pos, cache=cache, prev=prev)
                    v, vu = v2.chunk(2)
                else:
                    v = self._uncached_velocity(x, tau[:self.batch], actions, ex, live)
                    vu = self._uncached_velocity(x, tau[:self.batch], torch.zeros_like(actions), ex, live)
                kernels.euler_update(x, v.contiguous(), dt, vu.contiguous(), self.guidance)
                continue
            tau = torch.full((self.batch, 1), float(taus[i]), device=self.device)
            if self.use_cache:
                v = self.dit(x, tau, actions, scene, ex, positions=pos, cache=cache, prev=prev)
            else:
                v = self._uncached_velocity(x, tau, actions, ex, live)
            kernels.euler_update(x, v, dt)  # in place: Euler step towards τ = 0
        z = x[:, 0].clamp(-self.model.cfg.latent_clip, self.model.cfg.latent_clip)
        self.append(z, actions[:, 0], extra)
        return z

    def _uncached_velocity(self, x, tau, actions, ex, live):
        """Run the whole window (context + current frame) with the block-causal mask."""
        L = len(live)
        z = torch.cat([self.ctx_z[:, live], x], dim=1)  # (B, L+1, C, h, w)
        taus = torch.cat([torch.full((self.batch, L), self.ctx_noise, device=self.device), tau], dim=1)
        acts = torch.cat([self.ctx_a[:, live], actions], dim=1)
        full_ex = None
        if ex:
            full_ex = {k: torch.cat([self.ctx_extra[int(s)][k] for s in live] + [ex[k]], dim=1) for k in ex}
        prev = torch.cat([torch.zeros_like(self.ctx_z[:, live]), self.prev[:, None]], dim=1)
        v = self.dit(z, taus, acts, self.scene, full_ex, prev=prev)
        return v[:, -1:]

    # -- snapshots ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything that determines future frames (copied)."""
        s: dict[str, Any] = {"slot_frame": self.slot_frame.clone(), "count": self.count, "prev": self.prev.clone(),
                             "generator": self.generator.get_state(), "scene": self.scene.clone()}
        if self.use_cache:
            s.update(k=self.k.clone(), v=self.v.clone())
        else:
            s.update(ctx_z=self.ctx_z.clone(), ctx_a=self.ctx_a.clone(),
                     ctx_extra=[{k: v.clone() for k, v in e.items()} for e in self.ctx_extra])
        return s

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.slot_frame = s["slot_frame"].clone()
        self.count = int(s["count"])
        if "prev" in s:  # (snapshots from before residual models have none: zeros, which v models ignore)
            self.prev.copy_(s["prev"])
        self.generator.set_state(s["generator"])
        self.scene = s["scene"].clone()
        if self.use_cache:
            self.k.copy_(s["k"])
            self.v.copy_(s["v"])
        else:
            self.ctx_z.copy_(s["ctx_z"])
            self.ctx_a.copy_(s["ctx_a"])
            self.ctx_extra = [{k: v.clone() for k, v in e.items()} for e in s["ctx_extra"]]
