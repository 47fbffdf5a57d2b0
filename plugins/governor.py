"""Frame-deadline governor plugin: measures each dreamed frame and sets the model's
Euler steps through :class:`simcore.governor.StepGovernor`.

Two ways to measure, one controller:

* In a Session (``config={"governor": {"target_fps": F}}``, ``simcore play
  --target-fps F``): a frame's time runs from the moment the model starts dreaming
  it (``ModelBackend.frame_start``, on the session's clock) to the end of the tick's
  rendering (this plugin's ``simcore_render`` runs last), so the simulator twin,
  probes, recorder and display are all paid for. A tick that ran k updates counts
  its time / k per frame. The loop's sleep is not counted: it is the headroom.
* On a World stepped by your own loop (:func:`attach`): from the start of the dream to
  the end of the world's ``simcore_after_step`` hooks — the cost of ``World.step``.

The controller's steps go to ``world.dreamer.steps`` (the running rollout and every
later one).
"""
from __future__ import annotations

import weakref
from typing import Any

from simcore.errors import SimcoreError
from simcore.governor import GovernorSettings, StepGovernor
from simcore.hookspecs import hookimpl


class Governed:
    """One governed ``model`` World: the controller plus the frame being timed."""

    def __init__(self, world, settings: Any, *, per_tick: bool):
        dreamer = getattr(world, "dreamer", None)
        if dreamer is None or not all(hasattr(dreamer, a) for a in ("steps", "frame_start", "timings")):
            raise SimcoreError(f"the frame-deadline governor adapts a world model's steps; {world.scene_id!r} "
                               f"runs backend {world.backend!r} (use backend='model')")
        self.world = world
        self.governor = StepGovernor(GovernorSettings.from_config(settings), steps=dreamer.steps)
        dreamer.steps = self.governor.steps
        self.per_tick = per_tick
        self._start: float | None = None  # clock() when the tick's first dreamed frame began
        self._frames = 0  # dreamed frames since then
        self._pass: float | None = None  # seconds per DiT pass of the latest frame

    def dreamed(self) -> None:
        """The world just produced a dreamed frame (called from ``simcore_after_step``)."""
        d = self.world.dreamer
        if self._start is None:
            self._start = d.frame_start
        self._frames += 1
        t = d.timings
        if t.get("generate") is not None and t.get("steps"):
            self._pass = t["generate"] / (t["steps"] + 1)  # steps Euler passes + one cache-write pass

    def finish(self, now: float) -> None:
        """The frame(s) are done (rendered, or the step returned): feed the controller."""
        if self._start is None or self._frames == 0:
            return
        per_frame = max(0.0, now - self._start) / self._frames
        self._start, self._frames = None, 0
        self.world.dreamer.steps = self.governor.update(per_frame, self._pass)


#: world -> its governor (API use and sessions alike)
_governed: "weakref.WeakKeyDictionary[Any, Governed]" = weakref.WeakKeyDictionary()


def attach(world, target_fps: float | None = None, **settings: Any) -> StepGovernor:
    """Govern ``world`` (backend ``model``) stepped by your own loop: each ``step`` is
    timed and the next one's steps chosen to keep ``World.step`` under 1/target_fps.
    Returns the controller (its ``steps``, ``history`` and ``summary()``)."""
    if target_fps is not None:
        settings["target_fps"] = target_fps
    g = Governed(world, settings, per_tick=False)
    world.dreamer.clock = _clock_of(world)
    _governed[world] = g
    return g.governor


def detach(world) -> StepGovernor | None:
    g = _governed.pop(world, None)
    return None if g is None else g.governor


def governor_of(world) -> StepGovernor | None:
    g = _governed.get(world)
    return None if g is None else g.governor


def _clock_of(world):
    import time

    return getattr(world.dreamer, "clock", None) or time.perf_counter


@hookimpl
def simcore_session_start(session) -> None:
    config = session.config.get("governor")
    if config is None:
        return
    world = session.world
    g = Governed(world, config, per_tick=True)
    world.dreamer.clock = session.clock  # frame starts and ends on one clock (a test's fake one too)
    _governed[world] = g
    session.plugin_state["governor"] = g.governor


@hookimpl(trylast=True)
def simcore_after_step(world, transition) -> None:
    g = _governed.get(world)
    if g is None or not transition.info.get("dream"):
        return
    g.dreamed()
    if not g.per_tick:
        g.finish(world.dreamer.clock())


@hookimpl(trylast=True)
def simcore_render(session, frames) -> None:
    g = _governed.get(session.world)
    if g is not None and g.per_tick:
        g.finish(session.clock())


@hookimpl
def simcore_session_finish(session, summary: dict[str, Any]) -> None:
    gov = session.plugin_state.get("governor")
    if gov is not None:
        summary["governor"] = gov.summary()
        _governed.pop(session.world, None)
