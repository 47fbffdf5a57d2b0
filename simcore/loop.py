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

Save, rewind, branch (docs/save-rewind.md): the session keeps a bounded ring of
in-memory ``World.snapshot()``s (every ``rewind_every`` steps, at most ``rewind_steps``
steps back and ``rewind_memory`` bytes) plus the log of actions, so :meth:`rewind`
goes back exactly n steps (restoring the nearest snapshot at or before, then
re-stepping the logged actions). :meth:`branch` forks the world into a second one
shown side by side (``frames["branch"]``); :meth:`save` / :meth:`load` write and read a
``.simsave`` file (``simcore.savefile``). Each of these sets ``session.last_event``,
which the display's HUD shows.
"""
from __future__ import annotations

import collections
import copy
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pluggy

from simcore.errors import SimcoreError

Policy = Callable[[Any, dict], Any]

DEFAULT_REWIND_MEMORY = 256 * 2**20  # bytes of snapshots the rewind ring may hold


@dataclass
class _RingEntry:
    """One rewind point: the main timeline at position ``pos`` (main-world updates
    since the session began)."""

    pos: int
    world: dict[str, Any]
    compare: dict[str, Any] | None
    view: dict[str, Any]  # observations/infos the session showed
    counters: dict[str, Any]
    nbytes: int


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
    rewind_every:   keep an in-memory snapshot every this many steps (1: every step;
                    larger values trade rewind time for memory and step time). Default:
                    1 for the model/render backends (re-running a model step costs more
                    than a snapshot), 10 for the simulator (a snapshot every step costs
                    +58-87 % per step there, re-stepping 9 steps ~1 ms).
    rewind_steps:   how far back :meth:`rewind` can reach, in steps (0: no rewind).
    rewind_memory:  most bytes the snapshot ring may hold; the oldest go first.
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
        rewind_every: int | None = None,
        rewind_steps: int = 600,
        rewind_memory: int = DEFAULT_REWIND_MEMORY,
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
        if rewind_every is None:
            rewind_every = 1 if world.backend in ("model", "render") else 10
        if int(rewind_every) < 1:
            raise SimcoreError(f"rewind_every must be at least 1, got {rewind_every!r}")
        if int(rewind_steps) < 0 or int(rewind_memory) < 0:
            raise SimcoreError(f"rewind_steps and rewind_memory must be >= 0, got {rewind_steps!r}, {rewind_memory!r}")
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

        # save / rewind / branch
        self.rewind_every = int(rewind_every)
        self.rewind_steps = int(rewind_steps)
        self.rewind_memory = int(rewind_memory)
        #: the last save/load/rewind/branch event, for the HUD (None: nothing yet)
        self.last_event: str | None = None
        self.episode_seed: int | None = None  # seed of the current episode's reset
        self._history: list[Any] = []  # main-world actions; _history[i] was taken at position _history_base + i
        self._history_base = 0
        self._pos = 0  # main-world updates so far (the main timeline's position)
        self._episode_start = 0  # position of the current episode's reset
        self._ring: collections.deque[_RingEntry] = collections.deque()
        self._ring_bytes = 0
        self._resumed = False  # True once restored from a file: run() does not reset
        self.branch_world = None
        self.branch_policy: Policy | None = None
        self.branch_observation: np.ndarray | None = None
        self.branch_info: dict[str, Any] = {}
        self.branch_actions: list[Any] = []  # since the branch's episode began
        self.branch_done = False  # the branch's episode ended: it holds its last frame
        #: which world the session's actions (policy, keyboard) drive: "world" or "branch"
        self.control = "world"

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
            if not self._resumed:
                self._reset()
            self._record(force=True)
            previous = self.clock()
            accumulator = 0.0
            while not self._stop:
                tick_start = self.clock()
                elapsed = max(0.0, tick_start - previous)
                previous = tick_start
                if self._reset_requested:
                    self._reset_requested = False
                    self._reset()
                    self._clear_ring()  # a manual reset is not in the action log: no rewinding past it
                    self._record(force=True)
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
        # the seed that reproduces this episode (an unseeded reset draws one; gymnasium keeps it)
        self.episode_seed = seed if seed is not None else getattr(self.world, "np_random_seed", None)
        self._episode_start = self._pos
        self.episode_return = 0.0
        self.last_reward = 0.0

    def _choose_action(self) -> Any:
        on_branch = self.branch_world is not None and self.control == "branch"
        obs, info = (self.branch_observation, self.branch_info) if on_branch else (self.observation, self.info)
        if self.policy is not None:
            return self.policy(obs, info)
        action = self.pm.hook.simcore_action(session=self, observation=obs, info=info)
        if action is None:
            action = self.world.scene.noop_action
        return action

    def _update(self) -> None:
        action = self._choose_action()
        if self.branch_world is not None and self.control == "branch":
            self._step_branch(action)  # the main world holds while the branch has the controls
        else:
            self._step_main(action)
            if self.branch_world is not None and self.branch_policy is not None:
                self._step_branch(self.branch_policy(self.branch_observation, self.branch_info))
        self.last_action = action
        self.steps += 1

    def _step_main(self, action: Any) -> None:
        """One update of the main timeline (world and compare) with ``action``; also how
        :meth:`rewind` re-steps logged actions."""
        obs, reward, terminated, truncated, info = self.world.step(action)
        if self.compare is not None:
            self.compare_observation, _, _, _, self.compare_info = self.compare.step(action)
        self.observation, self.info = obs, info
        self._history.append(action)
        self._pos += 1
        self.last_reward = float(reward)
        self.episode_return += float(reward)
        if terminated or truncated:
            self.returns.append(self.episode_return)
            self.episodes += 1
            self._reset()
        self._record()

    def current_frames(self) -> dict[str, np.ndarray]:
        """What ``simcore_render`` receives: ``{"world": frame, "compare": frame,
        "branch": frame}`` (compare and branch when there are such worlds)."""
        frames = {"world": self.observation}
        if self.compare is not None:
            frames["compare"] = self.compare_observation
        if self.branch_world is not None:
            frames["branch"] = self.branch_observation
        return frames

    # -- rewind ------------------------------------------------------------------------
    @property
    def actions(self) -> list[Any]:
        """The main world's actions since its current episode's reset (oldest first)."""
        return list(self._history[self._episode_start - self._history_base:])

    @property
    def rewind_available(self) -> int:
        """How many steps back :meth:`rewind` can go now."""
        return self._pos - self._ring[0].pos if self._ring else 0

    def _counters(self) -> dict[str, Any]:
        return {"episodes": self.episodes, "returns": list(self.returns), "episode_return": self.episode_return,
                "last_reward": self.last_reward, "episode_index": self._episode_index,
                "episode_start": self._episode_start, "episode_seed": self.episode_seed}

    def _set_counters(self, c: dict[str, Any]) -> None:
        self.episodes = int(c["episodes"])
        self.returns = [float(r) for r in c["returns"]]
        self.episode_return = float(c["episode_return"])
        self.last_reward = float(c["last_reward"])
        self._episode_index = int(c["episode_index"])
        self._episode_start = int(c["episode_start"])
        self.episode_seed = c["episode_seed"]

    def _record(self, force: bool = False) -> None:
        """Push a rewind point for the current position (every ``rewind_every`` steps)."""
        if self.rewind_steps <= 0 or self.world.state is None:
            return
        if not force and self._pos % self.rewind_every:
            return
        from simcore.savefile import tree_nbytes

        world = self.world.snapshot()
        compare = self.compare.snapshot() if self.compare is not None else None
        view = copy.deepcopy({"observation": self.observation, "info": self.info,
                              "compare_observation": self.compare_observation, "compare_info": self.compare_info})
        entry = _RingEntry(self._pos, world, compare, view, self._counters(),
                           tree_nbytes(world) + tree_nbytes(compare) + tree_nbytes(view))
        while self._ring and self._ring[-1].pos >= entry.pos:  # re-recorded (rewind, reset): replace
            self._ring_bytes -= self._ring.pop().nbytes
        self._ring.append(entry)
        self._ring_bytes += entry.nbytes
        while len(self._ring) > 1 and (self._ring_bytes > self.rewind_memory
                                       or self._ring[0].pos < self._pos - self.rewind_steps):
            self._ring_bytes -= self._ring.popleft().nbytes
        self._trim_history()

    def _trim_history(self) -> None:
        keep_from = min([self._episode_start] + ([self._ring[0].pos] if self._ring else []))
        drop = keep_from - self._history_base
        if drop > 1024 and drop > len(self._history) // 2:  # amortized: trim in chunks
            del self._history[:drop]
            self._history_base = keep_from

    def _clear_ring(self) -> None:
        self._ring.clear()
        self._ring_bytes = 0

    def _restore_entry(self, entry: _RingEntry) -> None:
        self.world.restore(entry.world)
        if self.compare is not None and entry.compare is not None:
            self.compare.restore(entry.compare)
        view = copy.deepcopy(entry.view)
        self.observation, self.info = view["observation"], view["info"]
        self.compare_observation, self.compare_info = view["compare_observation"], view["compare_info"]
        self._set_counters(entry.counters)
        del self._history[entry.pos - self._history_base:]
        self._pos = entry.pos
        while self._ring and self._ring[-1].pos > entry.pos:
            self._ring_bytes -= self._ring.pop().nbytes

    def rewind(self, n: int) -> int:
        """Go back ``n`` steps on the main timeline (world and compare): restore the
        nearest snapshot at or before the target and re-step the logged actions from
        there (their hooks run again). Clamped to what the ring holds; returns the
        number of steps actually rewound. A later step continues from the rewound
        moment exactly as the first time (same actions, same frames)."""
        n = int(n)
        if n < 1:
            raise SimcoreError(f"rewind needs a positive number of steps, got {n}")
        if self.branch_world is not None and self.control == "branch":
            raise SimcoreError("rewind goes back on the main world; switch the controls back to it (Tab) "
                               "or close the branch (F7) first")
        if not self._ring:
            self.last_event = "rewind: nothing to rewind to"
            return 0
        start = self._pos
        target = max(start - n, self._ring[0].pos)
        entry = next(e for e in reversed(self._ring) if e.pos <= target)
        replay = self._history[entry.pos - self._history_base:target - self._history_base]
        self._restore_entry(entry)
        for action in replay:
            self._step_main(action)
        self.last_action = replay[-1] if replay else None
        rewound = start - self._pos
        self.last_event = f"rewound {rewound} step{'s' if rewound != 1 else ''}"
        return rewound

    # -- branch ---------------------------------------------------------------------------
    def branch(self, policy: Policy | None = None):
        """Fork the main world at this moment into a second World shown side by side as
        ``frames["branch"]``; returns it. With ``policy``, the branch steps in lockstep
        with the main world, driven by ``policy(observation, info)``; without one, the
        session's actions (keyboard/policy) drive the branch and the main world holds
        still until :meth:`switch_control`. An open branch is replaced."""
        from simcore.savefile import fork_world

        if self.world.state is None:
            raise SimcoreError("nothing to branch from: the session has not started")
        if policy is not None and not callable(policy):
            raise SimcoreError(f"branch policy must be callable as policy(observation, info), got {policy!r}")
        if self.branch_world is not None:
            self.close_branch()
        self.branch_world = fork_world(self.world)
        self.branch_observation = None if self.observation is None else self.observation.copy()
        self.branch_info = copy.deepcopy(self.info)
        self.branch_policy = policy
        self.branch_actions = self.actions
        self.branch_done = False
        self.control = "world" if policy is not None else "branch"
        self.last_event = f"branch opened at step {self.world.t}"
        return self.branch_world

    def _step_branch(self, action: Any) -> None:
        if self.branch_done:
            return
        obs, _, terminated, truncated, info = self.branch_world.step(action)
        self.branch_observation, self.branch_info = obs, info
        self.branch_actions.append(action)
        if terminated or truncated:
            self.branch_done = True  # it holds its last frame; close or replace it to go on
            self.last_event = "branch episode ended"

    def switch_control(self) -> str:
        """Hand the session's actions to the other side of an open branch (the side left
        holds still unless it has a branch policy). Returns the new ``control``."""
        if self.branch_world is None:
            self.last_event = "no branch to switch to"
            return self.control
        self.control = "world" if self.control == "branch" else "branch"
        self.last_event = f"controls: {self.control}"
        return self.control

    def close_branch(self) -> None:
        """Discard the branch; the controls return to the main world."""
        if self.branch_world is None:
            return
        self.branch_world.close()
        self.branch_world = None
        self.branch_policy = None
        self.branch_observation, self.branch_info = None, {}
        self.branch_actions = []
        self.branch_done = False
        self.control = "world"
        self.last_event = "branch closed"

    # -- save / load -------------------------------------------------------------------------
    #: what :meth:`from_loaded` carries from one Session to the next (the rewind ring starts over)
    _CARRIED = ("observation", "info", "compare_observation", "compare_info", "last_action", "last_reward",
                "episode_return", "episodes", "returns", "episode_seed", "_episode_index",
                "_episode_start", "_history", "_history_base", "_pos", "branch_world", "branch_policy",
                "branch_observation", "branch_info", "branch_actions", "branch_done", "control", "_resumed",
                "last_event")

    @classmethod
    def from_loaded(cls, loaded: "Session", **kwargs: Any) -> "Session":
        """A new Session with other loop options (``policy``, ``fps``, ``config``,
        ``max_steps``...) that continues exactly where ``loaded`` stands (e.g. one from
        ``simcore.load_session``, or one that has finished running): same worlds, seeds,
        counters and action log; ``run()`` goes on without a reset."""
        if loaded.running:
            raise SimcoreError("cannot resume a session that is still running")
        kwargs.setdefault("compare", loaded.compare)
        kwargs.setdefault("seed", loaded.seed)
        kwargs.setdefault("options", loaded.options)
        new = cls(loaded.world, **kwargs)
        for name in cls._CARRIED:
            value = getattr(loaded, name)
            setattr(new, name, copy.copy(value) if isinstance(value, (list, dict)) else value)
        new._resumed = loaded._resumed or loaded.world.state is not None
        return new

    def save_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(worlds, session) trees for ``simcore.savefile``: every world's spec and
        snapshot with its episode seed and action log, and the session's counters."""
        from simcore.savefile import world_entry

        if self.world.state is None:
            raise SimcoreError("nothing to save: the session has not started")
        actions = self.actions
        worlds = {"world": world_entry(self.world, self.episode_seed, actions)}
        if self.compare is not None:
            worlds["compare"] = world_entry(self.compare, self.episode_seed, actions)
        if self.branch_world is not None:
            worlds["branch"] = world_entry(self.branch_world, self.episode_seed, self.branch_actions)
        session = {"seed": self.seed, "options": self.options, "steps": self.steps,
                   "counters": {**self._counters(), "episode_start": 0}, "control": self.control,
                   "branch_done": self.branch_done, "branch_policy": self.branch_policy is not None,
                   "last_action": self.last_action}
        return worlds, session

    def save(self, path: str | os.PathLike) -> str:
        """Write the whole session (worlds, RNGs, KV caches, counters, action log) to a
        ``.simsave`` file; returns its path."""
        from simcore.savefile import save_session

        out = save_session(self, path)
        self.last_event = f"saved {out.name} at step {self.world.t}"
        return str(out)

    def load(self, path: str | os.PathLike) -> None:
        """Return this session to a ``.simsave`` file's moment (same scene, backend,
        frame size and model weights, else ``SaveFileError``). Worlds are restored in
        place; the rewind ring starts over; a saved branch reopens (without its policy)."""
        from simcore.savefile import SaveFileError, check_compatible, read_payload

        payload = read_payload(path)
        saved = payload["worlds"]
        check_compatible(self.world, saved["world"]["spec"], path, "world")
        if self.compare is not None:
            if "compare" not in saved:
                raise SaveFileError(f"{path}: has no compare world, but this session shows one")
            check_compatible(self.compare, saved["compare"]["spec"], path, "compare world")
        if "branch" in saved:
            check_compatible(self.world, saved["branch"]["spec"], path, "branch")
        self.restore_saved(payload, {"world": self.world, "compare": self.compare}, source=path)

    def restore_saved(self, payload: dict[str, Any], worlds: dict[str, Any], source: Any = None) -> None:
        """Apply a decoded save file (``simcore.savefile.read_payload``) to this session:
        restore ``worlds[role]`` from the saved snapshots and the session state."""
        from simcore.savefile import SaveFileError, fork_world, restore_world

        saved = payload["worlds"]
        name = os.path.basename(str(source)) if source is not None else "a save"
        try:
            for role in ("world", "compare"):
                if worlds.get(role) is not None and role in saved:
                    restore_world(worlds[role], saved[role]["snapshot"])
            self.close_branch()
            if "branch" in saved:
                branch = worlds.get("branch") or fork_world(self.world)
                restore_world(branch, saved["branch"]["snapshot"])
                self.branch_world = branch
        except (SimcoreError, KeyError, TypeError, ValueError, RuntimeError) as exc:
            if isinstance(exc, SaveFileError):
                raise
            raise SaveFileError(f"{source}: its snapshots do not fit this session's worlds: {exc}") from exc
        sess = payload.get("session") or {}
        main = saved["world"]
        if sess:  # later episodes continue the saved session's seeds and options
            self.seed = sess.get("seed")
            self.options = sess.get("options")
        self._history = list(main["actions"] or [])
        self._history_base = 0
        self._pos = len(self._history)
        counters = sess.get("counters") or {"episodes": 0, "returns": [], "episode_return": 0.0, "last_reward": 0.0,
                                            "episode_index": 1, "episode_seed": main["seed"]}
        self._set_counters({**counters, "episode_start": 0})
        self.last_action = sess.get("last_action")
        self.observation = main["snapshot"]["frame"].copy()
        self.info = self.world._info()
        if self.compare is not None and "compare" in saved:
            self.compare_observation = saved["compare"]["snapshot"]["frame"].copy()
            self.compare_info = self.compare._info()
        if self.branch_world is not None:
            self.branch_observation = saved["branch"]["snapshot"]["frame"].copy()
            self.branch_info = self.branch_world._info()
            self.branch_actions = list(saved["branch"]["actions"] or [])
            self.branch_done = bool(sess.get("branch_done", False))
            self.control = sess["control"] if sess.get("control") in ("world", "branch") else "branch"
        self._resumed = True
        self._clear_ring()
        if self.running:
            self._record(force=True)
        self.last_event = f"loaded {name} (step {self.world.t})"

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
        summary = {
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
        if self.last_event is not None:
            summary["last_event"] = self.last_event
        return summary

    def __repr__(self) -> str:
        return (f"Session({self.world.scene_id!r}, steps={self.steps}, episodes={self.episodes}, "
                f"frames={self.frames}, paused={self.paused})")
