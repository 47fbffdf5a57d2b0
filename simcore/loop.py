"""Session: the fixed-timestep loop around a World ("Fix Your Timestep").

The simulation advances in fixed updates of ``dt = 1 / fps`` seconds of game time,
whatever the display does: each loop tick measures the real time that passed, adds
it to an accumulator and runs as many updates as fit (at most ``max_substeps``; time
owed beyond that is dropped, so a slow machine slows the game down instead of
spiralling into ever longer catch-ups). Then it renders once, through the
``simcore_render`` hook, and sleeps until the next tick. Rendering is decoupled from
updating: a tick may run several updates, or none (paused).

    session = Session(world, policy=world.scene.demo_policy(0), seed=0,
                      config={"display": {"headless": True, "out": "run.gif"}},
                      max_steps=200)
    summary = session.run()

The first tick only renders the first episode's reset frame. After it, with
``realtime=False`` (headless batch) every tick runs exactly one update and the loop
never sleeps, so ``max_steps=N`` renders N + 1 frames. ``clock`` and ``sleep`` are injectable so tests drive the loop
with a fake clock.

Actions, in order of precedence: the ``policy(observation, info)`` given to the
session; else the first non-None ``simcore_action`` hook result (the display plugin
returns the keyboard's action); else the scene's no-op action.

Plugins (and the display's keys) control a running session with :meth:`pause`,
:meth:`resume`, :meth:`toggle_pause`, :meth:`step_once`, :meth:`request_reset`,
:meth:`stop` and :meth:`toggle_recording`; per-session plugin state lives in
``session.plugin_state[name]``.
"""
from __future__ import annotations

import collections
import time
from typing import Any, Callable

import numpy as np
import pluggy

from simcore.errors import SimcoreError

Policy = Callable[[Any, dict], Any]


class Session:
    """Drives ``world`` (and, in lockstep, an optional ``compare`` world) with a policy,
    the keyboard or no-ops, calling the session hooks.

    world:          the World to run.
    policy:         ``policy(observation, info) -> action``; None: ask the
                    ``simcore_action`` hook, then fall back to the scene's no-op.
    compare:        a second World stepped with the same actions and reset with the
                    same seeds and options (e.g. the world model next to ground truth);
                    rendered as ``frames["compare"]``.
    seed:           seed of the first episode; episode ``i`` uses ``seed + i``. With a
                    compare world and no seed, one is drawn so both worlds match.
    options:        scene options for every reset.
    fps:            updates per second of game time and target render rate (default
                    ``world.metadata["render_fps"]``).
    realtime:       pace the loop with the clock; False: one update per tick, no sleep.
    max_substeps:   most updates per tick; owed time beyond that is dropped.
    max_steps:      stop after this many updates (all episodes together).
    max_frames:     stop after this many rendered ticks.
    config:         a dict plugins read in ``simcore_session_start``, e.g.
                    ``{"display": {"headless": True, "out": "run.gif", "scale": 4}}``;
                    without a ``"display"`` key no window opens.
    plugin_manager: whose hooks to call (default ``world.pm``).
    clock, sleep:   time source (seconds) and sleep function.
    """

    def __init__(
        self,
        world,
        *,
        policy: Policy | None = None,
        compare=None,
        seed: int | None = None,
        options: dict[str, Any] | None = None,
        fps: float | None = None,
        realtime: bool = True,
        max_substeps: int = 5,
        max_steps: int | None = None,
        max_frames: int | None = None,
        config: dict[str, Any] | None = None,
        plugin_manager: pluggy.PluginManager | None = None,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], Any] = time.sleep,
    ):
        if policy is not None and not callable(policy):
            raise SimcoreError(f"policy must be callable as policy(observation, info), got {policy!r}")
        fps = world.metadata.get("render_fps", 20) if fps is None else fps
        try:
            fps = float(fps)
        except (TypeError, ValueError):
            raise SimcoreError(f"fps must be a positive number, got {fps!r}") from None
        if not fps > 0 or fps == float("inf"):
            raise SimcoreError(f"fps must be a positive number, got {fps!r}")
        if int(max_substeps) < 1:
            raise SimcoreError(f"max_substeps must be at least 1, got {max_substeps!r}")
        for name, value in (("max_steps", max_steps), ("max_frames", max_frames)):
            if value is not None and int(value) < 0:
                raise SimcoreError(f"{name} must be >= 0 or None, got {value!r}")
        if compare is not None and compare is world:
            raise SimcoreError("compare must be a different World from world")
        if seed is None and compare is not None:
            seed = int(np.random.SeedSequence().generate_state(1)[0] >> 1)

        self.world = world
        self.compare = compare
        self.policy = policy
        self.seed = None if seed is None else int(seed)
        self.options = dict(options) if options else None
        self.target_fps = fps
        self.dt = 1.0 / fps
        self.realtime = bool(realtime)
        self.max_substeps = int(max_substeps)
        self.max_steps = None if max_steps is None else int(max_steps)
        self.max_frames = None if max_frames is None else int(max_frames)
        self.config: dict[str, Any] = config if config is not None else {}
        self.pm = plugin_manager or world.pm
        self.clock = clock
        self.sleep = sleep
        #: per-plugin state for this session, keyed by plugin name
        self.plugin_state: dict[str, Any] = {}

        self.paused = False
        self.recording = False
        self.running = False
        self.steps = 0  # updates, all episodes together
        self.episodes = 0  # finished episodes (terminated or truncated)
        self.frames = 0  # rendered ticks
        self.ticks = 0
        self.dropped = 0  # updates owed but skipped (max_substeps)
        self.returns: list[float] = []  # one per finished episode
        self.observation: np.ndarray | None = None
        self.info: dict[str, Any] = {}
        self.compare_observation: np.ndarray | None = None
        self.compare_info: dict[str, Any] = {}
        self.last_action: Any = None
        self.last_reward = 0.0
        self.episode_return = 0.0
        self.fps = 0.0  # measured render rate
        self.summary: dict[str, Any] | None = None

        self._episode_index = 0  # episodes started; seeds the next reset
        self._stop = False
        self._step_requested = False
        self._reset_requested = False
        self._render_times: collections.deque[float] = collections.deque(maxlen=max(2, int(round(fps)) + 1))
        self._start_time = 0.0

    # -- commands (plugins and keys call these) -----------------------------------------
    def pause(self) -> None:
        """Stop updating; frames keep being rendered."""
        self.paused = True

    def resume(self) -> None:
        """Continue updating (no catch-up for the time spent paused)."""
        self.paused = False
        self._step_requested = False

    def toggle_pause(self) -> None:
        if self.paused:
            self.resume()
        else:
            self.pause()

    def step_once(self) -> None:
        """Advance exactly one update on the next tick, then stay paused (pauses a
        running session)."""
        self.paused = True
        self._step_requested = True

    def request_reset(self) -> None:
        """Start a new episode on the next tick (the current one is not counted as
        finished)."""
        self._reset_requested = True

    def stop(self) -> None:
        """End the loop after the current tick."""
        self._stop = True

    def toggle_recording(self) -> None:
        """Flip ``session.recording`` (read by recording plugins)."""
        self.recording = not self.recording

    @property
    def stopping(self) -> bool:
        return self._stop

    # -- the loop ---------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run until ``max_steps``/``max_frames``/``stop()`` (or Ctrl+C); returns the
        summary also passed to ``simcore_session_finish``."""
        if self.running or self.summary is not None:
            raise SimcoreError("a session runs once; make a new Session to run again")
        self.running = True
        self._stop = False
        interrupted = False
        hook = self.pm.hook
        self._start_time = self.clock()
        try:
            hook.simcore_session_start(session=self)
            self._reset()
            previous = self.clock()
            accumulator = 0.0
            while not self._stop:
                tick_start = self.clock()
                elapsed = max(0.0, tick_start - previous)
                previous = tick_start
                if self._reset_requested:
                    self._reset_requested = False
                    self._reset()
                updates, accumulator = self._updates_owed(elapsed, accumulator)
                for _ in range(updates):
                    if self._steps_done():
                        break
                    self._update()
                self._render()
                if self._steps_done() or (self.max_frames is not None and self.frames >= self.max_frames):
                    self._stop = True
                if self.realtime and not self._stop:
                    remaining = tick_start + self.dt - self.clock()
                    if remaining > 0:
                        self.sleep(remaining)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            self.running = False
            summary = self._summary()
            if interrupted:
                summary["interrupted"] = True
            self.summary = summary
            hook.simcore_session_finish(session=self, summary=summary)
        return summary

    def _updates_owed(self, elapsed: float, accumulator: float) -> tuple[int, float]:
        """How many fixed updates this tick runs, and the accumulator left over."""
        self.ticks += 1
        if self.ticks == 1:
            return 0, 0.0  # the first tick shows the reset frame
        if self.paused:
            n = 1 if self._step_requested else 0
            self._step_requested = False
            return n, 0.0
        if not self.realtime:
            return 1, 0.0
        accumulator += elapsed
        owed = int(accumulator / self.dt + 1e-9)
        accumulator = max(0.0, accumulator - owed * self.dt)
        if owed > self.max_substeps:
            self.dropped += owed - self.max_substeps
            owed = self.max_substeps
        return owed, accumulator

    def _steps_done(self) -> bool:
        return self.max_steps is not None and self.steps >= self.max_steps

    def _reset(self) -> None:
        seed = None if self.seed is None else self.seed + self._episode_index
        self._episode_index += 1
        self.observation, self.info = self.world.reset(seed=seed, options=self.options)
        if self.compare is not None:
            self.compare_observation, self.compare_info = self.compare.reset(seed=seed, options=self.options)
        self.episode_return = 0.0
        self.last_reward = 0.0

    def _choose_action(self) -> Any:
        if self.policy is not None:
            return self.policy(self.observation, self.info)
        action = self.pm.hook.simcore_action(session=self, observation=self.observation, info=self.info)
        if action is None:
            action = self.world.scene.noop_action
        return action

    def _update(self) -> None:
        action = self._choose_action()
        obs, reward, terminated, truncated, info = self.world.step(action)
        if self.compare is not None:
            self.compare_observation, _, _, _, self.compare_info = self.compare.step(action)
        self.observation, self.info = obs, info
        self.last_action = action
        self.last_reward = float(reward)
        self.episode_return += float(reward)
        self.steps += 1
        if terminated or truncated:
            self.returns.append(self.episode_return)
            self.episodes += 1
            self._reset()

    def current_frames(self) -> dict[str, np.ndarray]:
        """What ``simcore_render`` receives: ``{"world": frame, "compare": frame}``."""
        frames = {"world": self.observation}
        if self.compare is not None:
            frames["compare"] = self.compare_observation
        return frames

    def _render(self) -> None:
        self.frames += 1
        now = self.clock()
        self._render_times.append(now)
        if len(self._render_times) >= 2:
            span = self._render_times[-1] - self._render_times[0]
            self.fps = (len(self._render_times) - 1) / span if span > 0 else 0.0
        self.pm.hook.simcore_render(session=self, frames=self.current_frames())

    def _summary(self) -> dict[str, Any]:
        wall = max(0.0, self.clock() - self._start_time)
        return {
            "scene": self.world.scene_id,
            "backend": self.world.backend,
            "seed": self.seed,
            "steps": self.steps,
            "episodes": self.episodes,
            "frames": self.frames,
            "dropped": self.dropped,
            "wall_time": wall,
            "steps_per_second": self.steps / wall if wall > 0 else 0.0,
            "frames_per_second": self.frames / wall if wall > 0 else 0.0,
            "returns": list(self.returns),
            "episode_return": self.episode_return,
        }

    def __repr__(self) -> str:
        return (f"Session({self.world.scene_id!r}, steps={self.steps}, episodes={self.episodes}, "
                f"frames={self.frames}, paused={self.paused})")
