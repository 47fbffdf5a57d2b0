"""The ``model`` backend: frames come from a world model ("dream" mode).

The scene's simulator supplies the opening: ``reset(seed=s)`` gives exactly the sim
backend's frame for seed ``s``, and the first ``prompt_frames - 1`` steps are still
simulated (with the caller's actions) while their frames are fed to the model as
context. From then on the model alone produces every frame from the actions; the
simulator is not consulted (reward 0, never terminated: there is no reward model).

Hooks for the frame-deadline governor and the drift watchdog (``simcore.governor``,
``simcore.plugins.watchdog``): :attr:`ModelBackend.steps` changes the Euler steps of
the running rollout, :attr:`ModelBackend.frame_start` / :attr:`ModelBackend.timings`
time the last dreamed frame, :attr:`ModelBackend.last_latent` is the latent most
recently put into the context (with :func:`latent_stats` and
:attr:`ModelBackend.reference_stats`, measured on encoded simulator frames, to spot
blow-ups), :meth:`ModelBackend.reanchor` swaps the newest context frame for an
encoded simulator frame, and :meth:`ModelBackend.boost_context_noise` raises the
context noise for a few frames.
"""
from __future__ import annotations

import collections
import os
import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from simcore.errors import BackendError

if TYPE_CHECKING:  # pragma: no cover
    from simcore.model import WorldModel
    from simcore.world import World

_MODELS: dict[tuple[str, float], "WorldModel"] = {}
#: encoded simulator frames whose latent statistics form the reference (a rolling window)
REFERENCE_FRAMES = 64


@torch.no_grad()
def latent_stats(z: torch.Tensor, clip: float | None = None) -> dict[str, Any]:
    """Summary of one latent frame z (1, C, h, w) (or (C, h, w)): overall RMS, largest
    magnitude, per-channel mean and std (C,), and, given the model's ``latent_clip``,
    the fraction of values pinned at the clip (a generated latent that blew up)."""
    z = z.detach().float().reshape(-1, *z.shape[-3:])[0]  # (C, h, w)
    flat = z.flatten(1)  # (C, h·w)
    out = {"rms": float(z.pow(2).mean().sqrt()), "max_abs": float(z.abs().max()),
           "channel_mean": flat.mean(1).cpu().numpy(), "channel_std": flat.std(1, unbiased=False).cpu().numpy(),
           "finite": bool(torch.isfinite(z).all())}
    if clip is not None:
        out["clip_fraction"] = float((z.abs() >= clip * (1 - 1e-6)).float().mean())
    return out


def get_model(model: "str | os.PathLike | WorldModel", device: str = "cpu") -> "WorldModel":
    """A loaded model (cached per file, so many envs share one copy)."""
    from simcore.checkpoint import load_model, resolve
    from simcore.model import WorldModel

    if isinstance(model, WorldModel):
        return model
    path = resolve(model)
    key = (f"{path}@{device}", path.stat().st_mtime)
    if key not in _MODELS:
        _MODELS[key] = load_model(path, device=device)
    return _MODELS[key]


class ModelBackend:
    """Holds a World's generative state: the model, its rollout (KV cache), the step."""

    def __init__(self, world: "World", model: Any = "default", *, denoise_steps: int | None = None,
                 context: int | None = None, device: str = "cpu"):
        self.world = world
        self.model = get_model(model, device)
        cfg = self.model.cfg
        if tuple(cfg.frame_size) != tuple(world.frame_size):
            raise BackendError(f"the model draws {cfg.frame_size[0]}x{cfg.frame_size[1]} frames; this world is "
                               f"{world.frame_size[0]}x{world.frame_size[1]} (make it with frame_size={tuple(cfg.frame_size)})")
        try:
            self.scene_index = self.model.scene_index(world.scene_id)
        except KeyError:
            raise BackendError(f"the model was not trained on {world.scene_id!r}; its scenes: "
                               f"{', '.join(cfg.scenes)}") from None
        n = getattr(world.action_space, "n", None)
        if n is None or n > cfg.num_actions:
            raise BackendError(f"{world.scene_id} has action space {world.action_space}; the model knows "
                               f"{cfg.num_actions} discrete actions")
        self.denoise_steps = int(denoise_steps or cfg.sample_steps)
        self.context = int(context or cfg.dit.window)
        self.prompt_frames = max(1, int(cfg.prompt_frames))
        self.rollout = None
        #: time source of :attr:`frame_start` / :attr:`timings` (a governor may swap in the session's clock)
        self.clock: Callable[[], float] = time.perf_counter
        self.frame_start: float | None = None  # clock() when the last dreamed frame began
        self.timings: dict[str, float] = {}  # seconds of the last dreamed frame: generate, decode, steps
        self.last_latent: torch.Tensor | None = None  # (1, C, h, w): newest latent put into the context
        self.reference_stats: collections.deque = collections.deque(maxlen=REFERENCE_FRAMES)
        self._last = None  # (step, shifted action, conditioning) of the newest context frame
        self._noise_boost = 0  # frames left with a raised context noise
        self._base_ctx_noise: float | None = None

    # -- knobs for the governor ------------------------------------------------------------
    @property
    def steps(self) -> int:
        """Euler denoising steps per dreamed frame (of this and every later rollout)."""
        return self.denoise_steps

    @steps.setter
    def steps(self, n: int) -> None:
        n = int(n)
        if n < 1:
            raise BackendError(f"denoising steps must be at least 1, got {n}")
        self.denoise_steps = n
        if self.rollout is not None:
            self.rollout.steps = n

    # -- conditioning ----------------------------------------------------------------
    def conditioning(self, step: int) -> dict[str, np.ndarray]:
        merged: dict[str, Any] = {}
        for result in self.world.pm.hook.simcore_conditioning(world=self.world, step=step):
            for k, v in (result or {}).items():
                if k in merged:
                    raise BackendError(f"conditioning {k!r} is supplied by two plugins")
                merged[k] = v
        need = self.model.cfg.cond_dims
        missing = sorted(set(need) - set(merged))
        if missing:
            raise BackendError(f"the model needs conditioning {missing} that no plugin supplies "
                               f"(is the 'conditioning' plugin disabled?)")
        return {k: np.asarray(merged[k], dtype=np.float32).reshape(-1) for k in need}

    # -- frames ------------------------------------------------------------------------
    @torch.no_grad()
    def _encode(self, frame: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(frame))[None, None].to(next(self.model.parameters()).device)
        return self.model.encode_frames(t)[:, 0]  # (1, C, h, w)

    def reset(self, frame: np.ndarray, seed: int | None) -> None:
        """Start a rollout whose context is the simulator's opening frame."""
        from simcore.rollout import Rollout

        if seed is None:
            seed = int(self.world.np_random.integers(2**31))
        self.rollout = Rollout(self.model, batch=1, steps=self.denoise_steps, window=self.context, seed=seed,
                               scene=self.scene_index)
        self._noise_boost, self._base_ctx_noise = 0, None
        self.reference_stats.clear()
        self._append_true(frame, 0, 0)

    def in_prompt(self, t: int) -> bool:
        """Whether step ``t`` (the index of the frame about to be made) is still simulated."""
        return t < self.prompt_frames

    def observe(self, frame: np.ndarray, action: Any, t: int) -> None:
        """Feed a simulated prompt frame (made by ``action``) to the model's context."""
        self._append_true(frame, int(action) + 1, t)

    def _append_true(self, frame: np.ndarray, shifted_action: int, t: int, cond=None) -> None:
        """Encode a simulator frame into the context; its statistics join the reference."""
        z = self._encode(frame)  # (1, C, h, w)
        cond = self.conditioning(t) if cond is None else cond
        self.rollout.append(z, shifted_action, cond)
        self.last_latent, self._last = z, (t, shifted_action, cond)
        self.reference_stats.append(latent_stats(z))

    @torch.no_grad()
    def dream(self, action: Any, t: int) -> np.ndarray:
        """The model's next frame for ``action``: (H, W, 3) uint8."""
        self.frame_start = start = self.clock()
        cond = self.conditioning(t)
        z = self.rollout.generate(int(action) + 1, cond)  # (1, C, h, w), now the newest context frame
        if z.is_cuda:  # launches are asynchronous: time the work, not the launch (the governor budgets on it)
            torch.cuda.synchronize(z.device)
        made = self.clock()
        frame = self.model.decode_latents(z[:, None])[0, 0].cpu().numpy()
        self.timings = {"generate": made - start, "decode": self.clock() - made, "steps": float(self.rollout.steps)}
        self._dreamed(z, int(action) + 1, t, cond)
        return frame

    def _dreamed(self, z: torch.Tensor, shifted_action: int, t: int, cond) -> None:
        """Bookkeeping once a dreamed latent z (1, C, h, w) is the newest context frame."""
        self.last_latent, self._last = z, (t, shifted_action, cond)
        if self._noise_boost > 0:  # the boost lasts a number of dreamed frames
            self._noise_boost -= 1
            if self._noise_boost == 0:
                self.rollout.ctx_noise = self._base_ctx_noise

    # -- recovery (the drift watchdog) -----------------------------------------------------
    @torch.no_grad()
    def reanchor(self, frame: np.ndarray) -> None:
        """Replace the newest context frame (the one the model just dreamed) with the
        simulator's frame of the same step, encoded: the next frame is generated from the
        truth instead of the drifted picture. ``frame``: (H, W, 3) uint8 of that step."""
        if self.rollout is None or self._last is None or self.rollout.count == 0:
            raise BackendError("reanchor() needs a running rollout: call reset() first")
        frame = np.asarray(frame)
        if frame.shape != (*self.world.frame_size, 3) or frame.dtype != np.uint8:
            raise BackendError(f"reanchor() takes the simulator's frame as a {self.world.frame_size[0]}x"
                               f"{self.world.frame_size[1]}x3 uint8 array, got {frame.dtype} {frame.shape}")
        r = self.rollout
        newest = int(torch.argmax(r.slot_frame))
        r.slot_frame[newest] = -1  # drop the dreamed frame ...
        r.count -= 1
        t, shifted_action, cond = self._last
        self._append_true(frame, shifted_action, t, cond)  # ... and put the truth in its place (same frame number)

    def boost_context_noise(self, level: float, frames: int) -> None:
        """Noise the next ``frames`` dreamed frames more (``level`` instead of the model's
        ``ctx_noise``) as they enter the context, so the model leans less on a drifted
        picture; the usual level returns afterwards. ``level`` in [0, 1)."""
        level, frames = float(level), int(frames)
        if not 0.0 <= level < 1.0 or frames < 1:
            raise BackendError(f"context noise must be in [0, 1) for at least one frame, got {level} for {frames}")
        if self.rollout is None:
            raise BackendError("boost_context_noise() needs a running rollout: call reset() first")
        if self._noise_boost == 0:
            self._base_ctx_noise = self.rollout.ctx_noise
        self.rollout.ctx_noise = max(level, self._base_ctx_noise)
        self._noise_boost = frames

    # -- snapshots -----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {"rollout": self.rollout.state_dict() if self.rollout is not None else None}

    def restore(self, snap: dict[str, Any]) -> None:
        if snap["rollout"] is not None:
            self.rollout.load_state_dict(snap["rollout"])
