"""World: one Gymnasium Env for every backend.

``simcore.make(scene_id, backend="sim")`` builds one. The ``sim`` backend runs the
scene's own simulator and rasterizer (ground truth); ``model`` dreams the frames with
a world model (``simcore.dream``); ``render`` steps the simulator exactly and lets a
render model draw each frame from the engine state (``simcore.render``). Every
``reset``/``step`` calls the ``simcore_probe`` and ``simcore_after_step`` hooks with a
:class:`Transition`. ``world.event(...)`` changes the world mid-rollout (gravity, an
added ball, a recoloured ball; ``simcore.events``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import pluggy

from simcore.errors import BackendError, InvalidActionError, SceneOptionError, SimcoreError
from simcore.scene import DEFAULT_FRAME_SIZE, Scene

BACKENDS = ("sim", "model", "render")


@dataclass
class Transition:
    """What one ``reset`` (action None) or ``step`` produced."""

    step: int  # index of ``observation`` in the episode (0 = the reset frame)
    observation: np.ndarray  # (H, W, 3) uint8, the new frame
    action: Any
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any] = field(default_factory=dict)
    previous: np.ndarray | None = None  # the frame before this step (None on reset)


class World(gym.Env):
    """A scene run by a backend, as a Gymnasium Env.

    Observation: the frame, (H, W, 3) uint8. ``info``: ``step``, ``objects`` (the
    ground-truth object table, see ``Scene``), scene extras, and ``probes`` when a
    probe plugin reported metrics.
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 20}

    def __init__(
        self,
        scene: Scene,
        *,
        backend: str = "sim",
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
        plugin_manager: pluggy.PluginManager | None = None,
        model: Any = "default",
        denoise_steps: int | None = None,
        context: int | None = None,
        device: str = "cpu",
    ):
        if backend not in BACKENDS:
            raise BackendError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise SimcoreError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        if max_episode_steps is not None and int(max_episode_steps) <= 0:
            raise SimcoreError(f"max_episode_steps must be positive, got {max_episode_steps!r}")
        from simcore.plugin_manager import get_plugin_manager

        self.scene = scene
        self.scene_id = scene.id
        self.backend = backend
        self.render_mode = render_mode
        self.max_episode_steps = max_episode_steps
        self.pm = plugin_manager or get_plugin_manager()
        self.metadata = {**self.metadata, "render_fps": scene.metadata.get("render_fps", 20)}
        h, w = scene.frame_size
        self.frame_size = (h, w)
        self.observation_space = gym.spaces.Box(0, 255, (h, w, 3), np.uint8)
        self.action_space = scene.action_space
        self.options: dict[str, Any] = dict(scene.default_options)
        self._state: dict[str, Any] | None = None
        self._frame: np.ndarray | None = None
        self._t = 0
        self._window = None
        self.dreamer = None  # the model backend's generative state
        self.renderer = None  # the render backend's generative state
        self._pending_events: list = []  # events applied since the last step (reported with the next)
        self._step_events: list[dict[str, Any]] = []  # events of the current step, as dicts
        if backend == "model":
            from simcore.dream import ModelBackend

            self.dreamer = ModelBackend(self, model, denoise_steps=denoise_steps, context=context, device=device)
        elif backend == "render":
            from simcore.render import RenderBackend

            self.renderer = RenderBackend(self, model, denoise_steps=denoise_steps, context=context, device=device)

    # -- Gymnasium API -------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if options and "frame_size" in options:
            raise SceneOptionError(
                "frame_size is fixed when the world is made: simcore.make(scene, frame_size=(H, W))"
            )
        self.options = self.scene.resolve(options)
        self._state = self.scene.initial(self.np_random, self.options)
        self._t = 0
        self._pending_events, self._step_events = [], []
        self._frame = self.scene.render(self._state)
        if self.dreamer is not None:
            self.dreamer.reset(self._frame, seed)
        if self.renderer is not None:
            self.renderer.reset(self._frame, seed)
        info = self._info()
        self._emit(Transition(0, self._frame, None, 0.0, False, False, info))
        if self.render_mode == "human":
            self.render()
        return self._frame.copy(), info

    def step(self, action):
        if self._state is None:
            raise SimcoreError("call reset() before step()")
        if not self.action_space.contains(action):
            raise InvalidActionError(
                f"action {action!r} is outside the action space {self.action_space} of {self.scene_id}"
                + (f" (meanings: {', '.join(f'{i}={m}' for i, m in enumerate(self.scene.action_meanings))})"
                   if self.scene.action_meanings else "")
            )
        previous = self._frame
        manual, self._pending_events = [e.to_dict() for e in self._pending_events], []
        if self.dreamer is not None and not self.dreamer.in_prompt(self._t + 1):
            self._t += 1  # dreaming: the model alone makes the frame
            self._step_events = manual
            self._frame = self.dreamer.dream(action, self._t)
            reward, terminated = 0.0, False
        else:
            state = self.scene.step(self._state, action, self.np_random)
            reward = float(self.scene.reward(self._state, action, state))
            self._state = state
            self._t += 1
            self._step_events = manual + list(state.get("events") or [])  # the scene's own random events too
            terminated = bool(self.scene.terminal(state))
            if self.renderer is not None and not self.renderer.in_prompt(self._t):
                self._frame = self.renderer.render(action, self._t)  # the model draws the simulated state
            else:
                self._frame = self.scene.render(state)
                if self.dreamer is not None:
                    self.dreamer.observe(self._frame, action, self._t)
                if self.renderer is not None:
                    self.renderer.observe(self._frame, action, self._t)
        truncated = self.max_episode_steps is not None and self._t >= self.max_episode_steps
        info = self._info()
        self._emit(Transition(self._t, self._frame, action, reward, terminated, truncated, info, previous))
        if self.render_mode == "human":
            self.render()
        return self._frame.copy(), reward, terminated, truncated, info

    def render(self):
        if self._frame is None:
            raise SimcoreError("call reset() before render()")
        if self.render_mode == "rgb_array":
            return self._frame.copy()
        if self.render_mode == "human":
            from simcore.plugins.display import Window

            if self._window is None:
                self._window = Window(title=f"simcore — {self.scene_id}", fps=self.metadata["render_fps"])
            self._window.show({"world": self._frame}, hud={"scene": self.scene_id, "step": self._t})
            self._window.tick()
        return None

    def close(self):
        if self._window is not None:
            self._window.close()
            self._window = None

    # -- snapshots -------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything needed to rewind to this moment: state, RNG, step, options."""
        if self._state is None:
            raise SimcoreError("call reset() before snapshot()")
        snap = copy.deepcopy({
            "scene": self.scene_id,
            "backend": self.backend,
            "state": self._state,
            "rng": self.np_random.bit_generator.state,
            "t": self._t,
            "options": self.options,
            "frame": self._frame,
            "events": {"pending": [e.to_dict() for e in self._pending_events], "step": self._step_events},
        })
        # the generator's snapshot is already a copy (Rollout.state_dict clones the KV cache):
        # deep-copying it again would copy the cache twice on every rewind-ring step
        snap["dream"] = self._generator.snapshot() if self._generator is not None else None
        return snap

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Return to a snapshot taken from a world of the same scene and backend."""
        if snapshot.get("scene") != self.scene_id or snapshot.get("backend") != self.backend:
            raise SimcoreError(
                f"snapshot of {snapshot.get('scene')!r}/{snapshot.get('backend')!r} cannot be restored "
                f"into {self.scene_id!r}/{self.backend!r}"
            )
        snap = copy.deepcopy(snapshot)
        self._state = snap["state"]
        self.np_random.bit_generator.state = snap["rng"]
        self._t = snap["t"]
        self.options = snap["options"]
        self._frame = snap["frame"]
        events = snap.get("events") or {}
        from simcore.events import Event

        self._pending_events = [Event.from_dict(e) for e in events.get("pending", [])]
        self._step_events = list(events.get("step", []))
        if self._generator is not None:
            self._generator.restore(snap["dream"])

    # -- world events --------------------------------------------------------------------
    def event(self, event: Any) -> Any:
        """Change the world now: ``event`` is an :class:`simcore.events.Event`, a dict
        (``{"type": "gravity", "gravity": 150}``) or a text prompt ("add a red ball",
        "turn ball 2 blue", "gravity 120"). The scene's state changes at once (the next
        step moves on from it) and the event is reported in the next step's
        ``info["events"]`` and conditioning vector. Returns the event as applied
        (relative changes resolved, defaults filled in)."""
        from simcore.events import apply_event, coerce_event

        if self._state is None:
            raise SimcoreError("call reset() before event()")
        ev = coerce_event(event)
        if self.dreaming and "event" not in self.dreamer.model.cfg.cond_dims:
            raise BackendError("this world model was not trained with world events (no 'event' conditioning; "
                               "train with `simcore train ... --condition event` on recordings with events)")
        self._state, applied = apply_event(self.scene, self._state, ev, self.np_random)
        self._pending_events.append(applied)
        return applied

    @property
    def step_events(self) -> list[dict[str, Any]]:
        """The world events of the current step (as dicts), for plugins and conditioning."""
        return list(self._step_events)

    @property
    def _generator(self):
        return self.dreamer if self.dreamer is not None else self.renderer

    # -- internals --------------------------------------------------------------------
    @property
    def t(self) -> int:
        """Steps since the last reset."""
        return self._t

    @property
    def state(self) -> dict[str, Any] | None:
        """The scene's current state (read-only by convention)."""
        return self._state

    @property
    def dreaming(self) -> bool:
        """True once the model (not the simulator) makes the frames."""
        return self.dreamer is not None and not self.dreamer.in_prompt(self._t)

    def _info(self) -> dict[str, Any]:
        if self.dreaming:  # the simulator's state no longer describes the frame
            info = {"step": self._t, "dream": True}
        else:
            info = {"step": self._t, "objects": self.scene.objects(self._state), **self.scene.extra_info(self._state)}
            if self.renderer is not None and not self.renderer.in_prompt(self._t):
                info["rendered"] = True  # the frame was drawn by the render model
        if self._step_events:
            info["events"] = [dict(e) for e in self._step_events]
        return info

    def _emit(self, transition: Transition) -> None:
        hook = self.pm.hook
        metrics: dict[str, float] = {}
        for result in hook.simcore_probe(world=self, transition=transition):
            if result:
                metrics.update(result)
        if metrics:
            transition.info["probes"] = metrics
        hook.simcore_after_step(world=self, transition=transition)


def make(
    scene_id: str,
    backend: str = "sim",
    *,
    frame_size=DEFAULT_FRAME_SIZE,
    render_mode: str | None = None,
    max_episode_steps: int | None = None,
    plugin_manager: pluggy.PluginManager | None = None,
    model: Any = "default",
    denoise_steps: int | None = None,
    context: int | None = None,
    device: str = "cpu",
    **options: Any,
) -> World:
    """Make a World for ``scene_id``. ``options`` are the scene's parameters (defaults
    for every episode; ``reset(options=...)`` overrides them per episode).

    ``backend="model"`` draws frames with a world model: ``model`` is a shipped name
    ("default"), a directory or a .safetensors file; ``denoise_steps`` (default 4)
    Euler steps per frame; ``context`` frames in the rolling KV cache.
    ``backend="render"``: the simulator steps, a render model (default: the shipped
    "render") draws each frame from the engine state."""
    from simcore.plugin_manager import get_registry

    scene_cls = get_registry(plugin_manager).get(scene_id)
    scene = scene_cls(frame_size, **options)
    if backend not in ("model", "render") and (model != "default" or denoise_steps or context):
        raise BackendError("model, denoise_steps and context apply to backend='model' or 'render' only")
    return World(scene, backend=backend, render_mode=render_mode, max_episode_steps=max_episode_steps,
                 plugin_manager=plugin_manager, model=model, denoise_steps=denoise_steps, context=context,
                 device=device)


def make_vec(scene_id: str, num_envs: int, *, vectorization_mode: str = "sync", **kwargs: Any) -> gym.vector.VectorEnv:
    """``num_envs`` copies of a World in a Gymnasium vector env ("sync" in-process, or
    "async" one subprocess each). ``kwargs`` go to :func:`make`.

    ``vectorization_mode="batched"`` (``backend="model"`` only) steps every dreamed env
    through one batched rollout and one batched decode instead of ``num_envs`` separate
    models (:class:`simcore.batched.BatchedModelEnv`; the way to run 64+ agents on a GPU)."""
    if int(num_envs) < 1:
        raise SimcoreError(f"num_envs must be at least 1, got {num_envs!r}")
    if vectorization_mode not in ("sync", "async", "batched"):
        raise SimcoreError(f"vectorization_mode must be 'sync', 'async' or 'batched', got {vectorization_mode!r}")
    if vectorization_mode == "batched":
        backend = kwargs.pop("backend", "sim")
        if backend != "model":
            raise SimcoreError(f"vectorization_mode='batched' batches dreamed envs: it needs backend='model', "
                               f"got backend={backend!r}")
        from simcore.batched import BatchedModelEnv

        return BatchedModelEnv(scene_id, int(num_envs), **kwargs)
    make(scene_id, **kwargs).close()  # fail here, with a clear error, not in a worker
    fns = [lambda: make(scene_id, **kwargs) for _ in range(int(num_envs))]
    if vectorization_mode == "sync":
        return gym.vector.SyncVectorEnv(fns)
    return gym.vector.AsyncVectorEnv(fns)
