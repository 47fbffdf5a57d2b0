"""Every hook simcore calls, in one place (pytest/pluggy style).

A plugin is any module or object with functions named like these hooks and marked
``@simcore.hookimpl``. Built-in plugins are listed in ``simcore.plugins.BUILTIN``;
third-party ones register under the ``simcore`` entry-point group. Arguments are
passed by name, so an implementation may take any subset of them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from simcore.loop import Session
    from simcore.registry import SceneRegistry
    from simcore.world import Transition, World

hookspec = pluggy.HookspecMarker("simcore")
hookimpl = pluggy.HookimplMarker("simcore")


@hookspec(historic=True)
def simcore_configure(config: dict[str, Any]) -> None:
    """Receive the run's configuration (CLI options, environment) once it is known.

    Historic: a plugin registered later still receives the call.
    """


@hookspec
def simcore_register_scenes(registry: "SceneRegistry") -> None:
    """Register scene classes with ``registry.register(SceneClass)``.

    Called once, the first time the scene registry is needed. Built-in scenes arrive
    this way too, so a user's scene is registered exactly like ours.
    """


@hookspec
def simcore_session_start(session: "Session") -> None:
    """A session (the fixed-timestep loop around a World) is about to run.

    Plugins keep a reference to ``session`` to read its world or send it commands
    (``session.pause()``, ``session.request_reset()``, ``session.stop()``).
    """


@hookspec
def simcore_session_finish(session: "Session", summary: dict[str, Any]) -> None:
    """A session ended; ``summary`` holds its counts (steps, episodes, frames, fps)."""


@hookspec(firstresult=True)
def simcore_action(session: "Session", observation: Any, info: dict[str, Any]) -> Any | None:
    """Return the action for the next step when the session has no policy.

    First non-None result wins (the display returns the keyboard's action); with no
    answer the scene's no-op action is used.
    """


@hookspec
def simcore_conditioning(world: "World", step: int) -> dict[str, Any] | None:
    """Return extra conditioning for the world model at ``step`` (name -> vector).

    Results from all plugins are merged; a name given twice is an error. The ``sim``
    backend ignores conditioning; the ``model`` and ``render`` backends feed it to
    the world model next to the action.
    """


@hookspec
def simcore_after_step(world: "World", transition: "Transition") -> None:
    """Called after every ``World.step`` and ``World.reset`` with what happened.

    For display, recording and anything else that watches the world evolve.
    ``transition.action`` is ``None`` for the frame produced by ``reset``.
    """


@hookspec
def simcore_probe(world: "World", transition: "Transition") -> dict[str, float] | None:
    """Return metrics about the last transition (e.g. a physics-probe readout).

    Results from all plugins are merged into ``info["probes"]`` of that step.
    """


@hookspec
def simcore_render(session: "Session", frames: dict[str, Any]) -> None:
    """Draw the session's current frames (``{"world": frame, ...}``) once per loop tick.

    Called at the display rate, decoupled from the simulation rate: several steps
    may happen between two calls, or none (paused).
    """
