"""Turning a World's transitions into recording records (``simcore.recording``).

Shared by ``simcore collect`` (many episodes, no window) and the recorder plugin
(live play), so both write exactly the same format.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from simcore.recording import RecordingWriter
from simcore.world import Transition, World


def episode_header(world: World, seed: int | None, **extra: Any) -> dict[str, Any]:
    """The header map of an episode of ``world`` started with ``seed``."""
    return {
        "scene": world.scene_id,
        "seed": seed,
        "options": world.options,
        "frame_size": list(world.frame_size),
        "fps": world.metadata["render_fps"],
        "action_space": world.action_space,
        "backend": world.backend,
        **extra,
    }


def _action(action: Any) -> Any:
    if action is None:
        return None
    if isinstance(action, (np.integer, int)) and not isinstance(action, bool):
        return int(action)
    return np.asarray(action)


def step_record(transition: Transition, t: int | None = None) -> dict[str, Any]:
    """The step map for ``transition`` (``t`` overrides its index, e.g. when a
    recording starts in the middle of an episode)."""
    info = {k: v for k, v in transition.info.items() if k not in ("objects", "step")}
    return {
        "t": transition.step if t is None else t,
        "frame": transition.observation,
        "action": None if (t == 0 or transition.action is None) else _action(transition.action),
        "reward": float(transition.reward),
        "terminated": bool(transition.terminated),
        "truncated": bool(transition.truncated),
        "state": transition.info.get("objects", {}),
        "info": info,
    }


class EpisodeRecorder:
    """Feeds transitions of one World into a RecordingWriter, episode by episode."""

    def __init__(self, writer: RecordingWriter, world: World):
        self.writer = writer
        self.world = world
        self.t: int | None = None  # index within the open recorded episode, None if none is open
        self.steps = 0

    def begin(self, seed: int | None, **extra: Any) -> None:
        self.end()
        self.writer.begin_episode(episode_header(self.world, seed, start_step=self.world.t, **extra))
        self.t = 0

    def add(self, transition: Transition) -> None:
        if self.t is None:
            raise RuntimeError("EpisodeRecorder.add before begin")
        self.writer.write_step(step_record(transition, self.t))
        self.t += 1
        self.steps += 1
        if transition.terminated or transition.truncated:
            self.end()

    def end(self, **footer: Any) -> None:
        if self.t is not None:
            self.writer.end_episode(**footer)
            self.t = None
