"""Batched ``model`` envs: B dreamed worlds stepped through ONE batched rollout.

``simcore.make_vec(scene, B, backend="model")`` gives B independent Worlds, each
with its own batch-1 :class:`~simcore.rollout.Rollout`, so every step runs the DiT
B times on one frame each. For agents that is the wrong shape: the transformer's
work per call is small, and on a GPU B calls of batch 1 cost about as much as one
call of batch B. :class:`BatchedModelEnv` keeps one simulator per env (for the
opening frames and the seeds) and one rollout for all of them, so each step is one
batched denoise (``steps`` DiT calls on B frames) and one batched decode.

Each env behaves exactly like ``simcore.make(scene, backend="model")`` with the
same seed and actions (tested to match frame for frame, within float rounding of
batched kernels): ``reset(seed=s)`` renders the simulator's frame for ``s``, the
first ``prompt_frames - 1`` steps are still simulated (their frames fed to the
model as context), then the model alone makes the frames (reward 0, never
terminated, ``info["dream"] = True``). The rollout's noise for env ``i`` comes from
its own generator seeded like the single env's, which is what makes the two equal.

Autoreset: Gymnasium's ``NEXT_STEP`` mode (its default). The step after an env
reports ``terminated`` or ``truncated`` resets it (ignoring its action) and returns
the new episode's first frame with reward 0. Envs reset in the same call share one
rollout (a "cohort"); envs reset at different times cannot share the rollout's
context slots, so they run as separate cohorts (one batched call each) until they
are reset together again, or until their contexts are both full and dreamed: then every
context is just the last ``context`` frames, oldest first, whatever their age, and
the cohorts are merged into one batch again (same frames as before the merge).
Dreamed episodes end only by ``max_episode_steps``, so envs reset together stay
together; ``reset(options={"reset_mask": mask})`` resets some envs only.

Plugin hooks: ``simcore_conditioning`` is called per env, as in a single World;
the per-step ``simcore_probe``/``simcore_after_step`` hooks fire for the
simulated opening steps only (the simulators' own), not for dreamed frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import torch

from simcore.errors import InvalidActionError, SimcoreError
from simcore.rollout import Rollout

__all__ = ["BatchedModelEnv"]


class _RowSeededRollout(Rollout):
    """A Rollout whose noise for row ``b`` comes from generator ``b``: the same numbers
    a batch-1 Rollout seeded like that row would draw, so each row of the batch
    reproduces its own single-env rollout."""

    def __init__(self, model, generators: list[torch.Generator], **kwargs: Any):
        super().__init__(model, batch=len(generators), **kwargs)
        self.generators = generators

    def _noise(self, shape) -> torch.Tensor:
        # shape (B, ...): one draw of shape (...) per row, each from its own generator
        rows = [torch.randn(tuple(shape[1:]), generator=g) for g in self.generators]
        return torch.stack(rows).to(self.device, self.dtype)


@dataclass
class _Cohort:
    """Envs reset in the same call: one rollout, one row each (row order = ``envs``)."""

    envs: list[int]
    rollout: _RowSeededRollout


class BatchedModelEnv(gym.vector.VectorEnv):
    """B ``model``-backend envs of one scene and one world model, stepped as one batch.

    Observations (B, H, W, 3) uint8; actions (B,) ints (a ``MultiDiscrete``).
    ``info`` is Gymnasium's vector form (``info["step"]`` (B,), ``info["dream"]``,
    with ``info["_step"]`` masks).
    """

    metadata = {"render_modes": [], "autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, scene_id: str, num_envs: int, *, model: Any = "default", denoise_steps: int | None = None,
                 context: int | None = None, device: str = "cpu", frame_size=None,
                 max_episode_steps: int | None = None, plugin_manager=None, **options: Any):
        import simcore
        from simcore.dream import ModelBackend

        if int(num_envs) < 1:
            raise SimcoreError(f"num_envs must be at least 1, got {num_envs!r}")
        if max_episode_steps is not None and int(max_episode_steps) <= 0:
            raise SimcoreError(f"max_episode_steps must be positive, got {max_episode_steps!r}")
        self.num_envs = int(num_envs)
        kw: dict[str, Any] = {"plugin_manager": plugin_manager, **options}
        if frame_size is not None:
            kw["frame_size"] = tuple(frame_size)
        # the simulators: the opening frames, seeds and per-episode options of each env
        self.sims = [simcore.make(scene_id, "sim", **kw) for _ in range(self.num_envs)]
        # one ModelBackend per env for its checks and its conditioning (the model itself is shared)
        self.backends = [ModelBackend(w, model, denoise_steps=denoise_steps, context=context, device=device)
                         for w in self.sims]
        first = self.backends[0]
        self.model = first.model
        self.denoise_steps, self.context, self.prompt_frames = first.denoise_steps, first.context, first.prompt_frames
        self.scene_index = first.scene_index
        self.device = next(self.model.parameters()).device
        self.scene_id = scene_id
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)

        self.single_observation_space = self.sims[0].observation_space
        self.single_action_space = self.sims[0].action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self.metadata = {**self.metadata, "render_fps": self.sims[0].metadata["render_fps"]}

        h, w = self.sims[0].frame_size
        self._frames = np.zeros((self.num_envs, h, w, 3), np.uint8)
        self._t = np.zeros(self.num_envs, np.int64)
        self._needs_reset = np.ones(self.num_envs, bool)  # until the first reset
        self._autoreset = np.zeros(self.num_envs, bool)
        self._cohorts: list[_Cohort] = []

    # -- helpers -------------------------------------------------------------------
    def _cond(self, envs: Sequence[int], step: int) -> dict[str, np.ndarray]:
        """Conditioning of ``envs`` stacked: name -> (len(envs), n)."""
        per_env = [self.backends[i].conditioning(step) for i in envs]
        return {k: np.stack([c[k] for c in per_env]) for k in per_env[0]} if per_env and per_env[0] else {}

    @torch.no_grad()
    def _encode(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> latents (N, C, h, w), one batched encode."""
        x = torch.from_numpy(np.ascontiguousarray(frames))[:, None].to(self.device)  # (N, 1, H, W, 3)
        return self.model.encode_frames(x)[:, 0]

    def _drop(self, envs: set[int]) -> None:
        """Take ``envs`` out of their cohorts (keeping the other rows' contexts)."""
        kept: list[_Cohort] = []
        for c in self._cohorts:
            rows = [r for r, e in enumerate(c.envs) if e not in envs]
            if len(rows) == len(c.envs):
                kept.append(c)
            elif rows:
                kept.append(_Cohort([c.envs[r] for r in rows], self._take_rows(c.rollout, rows)))
        self._cohorts = kept

    def _take_rows(self, roll: _RowSeededRollout, rows: list[int]) -> _RowSeededRollout:
        new = _RowSeededRollout(self.model, [roll.generators[r] for r in rows], steps=roll.steps,
                                window=roll.window, ctx_noise=roll.ctx_noise, scene=roll.scene[rows])
        idx = torch.as_tensor(rows, device=roll.k.device)
        new.k.copy_(roll.k[:, idx])  # (depth, B, heads, window, N, hd): rows are dim 1
        new.v.copy_(roll.v[:, idx])
        new.prev.copy_(roll.prev[idx])
        new.slot_frame, new.count = roll.slot_frame.clone(), roll.count
        return new

    def _merge_full_cohorts(self) -> None:
        """Merge every cohort whose context window is full and whose envs dream: with all
        slots live, a row's context is its last ``window`` frames oldest first, so
        re-laying each cohort's slots oldest-first into slots 0..W-1 (and evicting slot 0
        next, the oldest) changes no frame."""
        full = [c for c in self._cohorts
                if c.rollout.count >= c.rollout.window and int(self._t[c.envs[0]]) + 1 >= self.prompt_frames]
        if len(full) < 2:
            return
        parts = []
        for c in full:
            order = c.rollout._live_slots().to(c.rollout.k.device)  # slot indices, oldest first
            parts.append((c.rollout.k[:, :, :, order], c.rollout.v[:, :, :, order]))  # (depth, n, H, W, N, hd)
        envs = [e for c in full for e in c.envs]
        first = full[0].rollout
        merged = _RowSeededRollout(self.model, [g for c in full for g in c.rollout.generators], steps=first.steps,
                                   window=first.window, ctx_noise=first.ctx_noise,
                                   scene=torch.cat([c.rollout.scene for c in full]))
        merged.k.copy_(torch.cat([k for k, _ in parts], dim=1))
        merged.v.copy_(torch.cat([v for _, v in parts], dim=1))
        merged.prev.copy_(torch.cat([c.rollout.prev for c in full]))
        merged.slot_frame = torch.arange(first.window, dtype=torch.long)
        merged.count = first.window
        self._cohorts = [c for c in self._cohorts if all(c is not f for f in full)] + [_Cohort(envs, merged)]

    def _reset_envs(self, envs: list[int], seeds: list[int | None], options: dict[str, Any] | None) -> list[dict]:
        """Reset ``envs`` as a new cohort; returns their infos (in ``envs`` order)."""
        self._drop(set(envs))
        infos, generators = [], []
        for i, seed in zip(envs, seeds):
            frame, info = self.sims[i].reset(seed=seed, options=options)
            if seed is None:  # as ModelBackend.reset: drawn from the episode's RNG after the initial state
                seed = int(self.sims[i].np_random.integers(2**31))
            generators.append(torch.Generator(device="cpu").manual_seed(int(seed)))
            self._frames[i] = frame
            self._t[i] = 0
            infos.append(info)
        roll = _RowSeededRollout(self.model, generators, steps=self.denoise_steps, window=self.context,
                                 scene=self.scene_index)
        z = self._encode(self._frames[envs])  # (n, C, h, w)
        roll.append(z, torch.zeros(len(envs), dtype=torch.long), self._cond(envs, 0))
        self._cohorts.append(_Cohort(list(envs), roll))
        self._needs_reset[envs] = False
        self._autoreset[envs] = False
        return infos

    def _vector_info(self, infos: dict[int, dict]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i in sorted(infos):
            out = self._add_info(out, infos[i], i)
        return out

    # -- Gymnasium VectorEnv API -------------------------------------------------------
    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None):
        """Reset every env (or those in ``options["reset_mask"]``). ``seed``: an int
        (env i gets ``seed + i``, as in Gymnasium's vector envs), a list of B seeds, or None."""
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        envs = list(range(self.num_envs)) if mask is None else [int(i) for i in np.flatnonzero(np.asarray(mask))]
        if mask is not None and np.asarray(mask).shape != (self.num_envs,):
            raise SimcoreError(f"reset_mask must be {self.num_envs} booleans, got shape {np.asarray(mask).shape}")
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise SimcoreError(f"reset(seed=...) takes one int or {self.num_envs} seeds, got {len(seeds)}")
        infos = self._reset_envs(envs, [seeds[i] for i in envs], options or None) if envs else []
        return self._frames.copy(), self._vector_info(dict(zip(envs, infos)))

    @torch.no_grad()
    def step(self, actions):
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise InvalidActionError(f"actions must have shape ({self.num_envs},), got {actions.shape}")
        if self._needs_reset.any():
            raise SimcoreError("call reset() before step()")
        for i, a in enumerate(actions):
            if not self._autoreset[i] and not self.single_action_space.contains(a):
                raise InvalidActionError(f"action {a!r} of env {i} is outside the action space "
                                         f"{self.single_action_space} of {self.scene_id}")
        rewards = np.zeros(self.num_envs, np.float64)
        terminated = np.zeros(self.num_envs, bool)
        truncated = np.zeros(self.num_envs, bool)
        infos: dict[int, dict] = {}

        resetting = [i for i in range(self.num_envs) if self._autoreset[i]]
        if resetting:
            infos.update(zip(resetting, self._reset_envs(resetting, [None] * len(resetting), None)))
        self._merge_full_cohorts()
        dreamed_z, dreamed_envs = [], []
        for c in self._cohorts:
            envs = [e for e in c.envs if e not in infos]
            if not envs:
                continue  # just reset: its first frame is this step's observation
            t = int(self._t[envs[0]]) + 1  # same for the whole cohort
            acts = torch.as_tensor(actions[envs].astype(np.int64)) + 1  # (n,) action indices, 0 = none
            if t < self.prompt_frames:  # still simulated: the model only watches
                for i in envs:
                    frame, r, term, _, info = self.sims[i].step(actions[i])
                    self._frames[i], rewards[i], terminated[i] = frame, r, term
                    infos[i] = info
                c.rollout.append(self._encode(self._frames[envs]), acts, self._cond(envs, t))
            else:
                dreamed_z.append(c.rollout.generate(acts, self._cond(envs, t)))  # (n, C, h, w)
                dreamed_envs += envs
                for i in envs:
                    infos[i] = {"step": t, "dream": True}
            self._t[envs] = t
            for i in envs:
                infos[i]["step"] = t
                truncated[i] = self.max_episode_steps is not None and t >= self.max_episode_steps
        if dreamed_envs:  # one batched decode for every dreamed env
            frames = self.model.decode_latents(torch.cat(dreamed_z)[:, None])[:, 0]  # (n, H, W, 3)
            self._frames[dreamed_envs] = frames.cpu().numpy()
        self._autoreset = terminated | truncated
        return self._frames.copy(), rewards, terminated, truncated, self._vector_info(infos)

    def close_extras(self, **kwargs: Any) -> None:
        for w in self.sims:
            w.close()

    @property
    def cohorts(self) -> list[list[int]]:
        """Env indices per rollout batch (one list when all envs were reset together)."""
        return [list(c.envs) for c in self._cohorts]
