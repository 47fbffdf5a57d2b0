"""Built-in conditioning plugin: scene parameters as a vector for the world model.

``scene_params`` = [gravity / 100, mean ball count / 8, mean speed / 100, mean radius / 10]
from the episode's options (0 where a scene has no such option). The trainer computes
the same vector from a recording's header, so a model trained on several gravities
can be asked for another one: ``simcore.make(scene, backend="model", gravity=40)``.

Per step it also supplies ``state`` — the engine state (``simcore.render.state_vector``
of the scene's object table) while the simulator owns the state, i.e. not while a
``model`` world dreams — and ``event``, the world events of the step
(``simcore.events.event_vector``; zeros on a step without events). A model consumes
only the names in its ``cond_dims``: render models ``state``, event-trained models
``event``; the trainer computes the same vectors from each recorded step.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from simcore.hookspecs import hookimpl

NAME = "scene_params"
SIZE = 4


def _mean(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, (list, tuple)):
        return float(np.mean([float(v) for v in value])) if value else 0.0
    return float(value)


def scene_params(options: dict[str, Any]) -> np.ndarray:
    """The conditioning vector (4,) float32 for a scene's resolved options."""
    speed = options.get("speed_range", options.get("ball_speed_range"))
    radius = options.get("radius_range", options.get("ball_radius"))
    return np.array([
        _mean(options.get("gravity", 0.0)) / 100.0,
        _mean(options.get("count", 1)) / 8.0,
        _mean(speed) / 100.0,
        _mean(radius) / 10.0,
    ], dtype=np.float32)


@hookimpl
def simcore_conditioning(world, step: int) -> dict[str, Any] | None:
    from simcore.events import event_vector
    from simcore.render import STATE, state_vector

    out = {NAME: scene_params(world.options), "event": event_vector(getattr(world, "step_events", []))}
    state = getattr(world, "state", None)
    if state is not None and not getattr(world, "dreaming", False):
        out[STATE] = state_vector(world.scene.objects(state), world.frame_size)
    return out
