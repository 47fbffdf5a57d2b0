"""The ``model`` backend: frames come from a world model ("dream" mode).

The scene's simulator supplies the opening: ``reset(seed=s)`` gives exactly the sim
backend's frame for seed ``s``, and the first ``prompt_frames - 1`` steps are still
simulated (with the caller's actions) while their frames are fed to the model as
context. From then on the model alone produces every frame from the actions; the
simulator is not consulted (reward 0, never terminated: there is no reward model).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from simcore.errors import BackendError

if TYPE_CHECKING:  # pragma: no cover
    from simcore.model import WorldModel
    from simcore.world import World

_MODELS: dict[tuple[str, float], "WorldModel"] = {}


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
        self.denoise_steps = int(denoise_steps or 4)
        self.context = int(context or cfg.dit.window)
        self.prompt_frames = max(1, int(cfg.prompt_frames))
        self.rollout = None

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
        self.rollout.append(self._encode(frame), 0, self.conditioning(0))

    def in_prompt(self, t: int) -> bool:
        """Whether step ``t`` (the index of the frame about to be made) is still simulated."""
        return t < self.prompt_frames

    def observe(self, frame: np.ndarray, action: Any, t: int) -> None:
        """Feed a simulated prompt frame (made by ``action``) to the model's context."""
        self.rollout.append(self._encode(frame), int(action) + 1, self.conditioning(t))

    @torch.no_grad()
    def dream(self, action: Any, t: int) -> np.ndarray:
        """The model's next frame for ``action``: (H, W, 3) uint8."""
        z = self.rollout.generate(int(action) + 1, self.conditioning(t))
        return self.model.decode_latents(z[:, None])[0, 0].cpu().numpy()

    # -- snapshots -----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {"rollout": self.rollout.state_dict() if self.rollout is not None else None}

    def restore(self, snap: dict[str, Any]) -> None:
        if snap["rollout"] is not None:
            self.rollout.load_state_dict(snap["rollout"])
