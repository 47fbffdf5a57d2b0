"""BallScene: the common base of the ball scenes (uniform motion, projectile,
collision, bouncing balls, occlusion). Subclasses choose options and how balls are
placed; dynamics, drawing and the object table are shared.

State (all in pixels of the actual frame, seconds):
    t            int       steps since reset
    pos          (N, 2)    ball centres (x, y), y down
    vel          (N, 2)    px/s
    radius       (N,)
    mass         (N,)      ∝ area (density 1 per px²)
    color        (N, 3)    uint8
    gravity      (2,)      px/s²
    restitution  float     wall restitution (1 = elastic)
    collisions   bool      ball–ball collisions on
    wall_hits    (N,)      cumulative wall bounces per ball
    ball_hits    (N,)      cumulative ball–ball collisions per ball
    events_rate  float     chance per step of a random world event (collection only)
    events       list      (only when events_rate > 0) the random events of the last step, as dicts

World events (``simcore.events``): every ball scene supports ``gravity``,
``add_ball`` and ``recolor``; :meth:`BallScene.apply_event` applies one exactly.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from simcore import physics, raster
from simcore.scene import Option, Scene, State


def common_options(**defaults: Any) -> dict[str, Option]:
    """The options every ball scene shares; ``defaults`` overrides their defaults."""
    opts = {
        "count": Option((1, 1), "number of balls (low, high), drawn per episode", "int_range", 1, 16),
        "radius_range": Option((4.0, 7.0), "ball radius range in px of a 64-px frame", "range", 1.0, 24.0),
        "speed_range": Option((20.0, 60.0), "initial speed range in px/s (64-px frame)", "range", 0.0, 400.0),
        "colors": Option(("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "white"),
                         "colours balls are drawn from, without replacement while they last", "colors"),
        "gravity": Option(0.0, "downward acceleration in px/s² (64-px frame); negative pulls up", "float", -2000, 2000),
        "restitution": Option(1.0, "wall restitution (1 = elastic)", "float", 0.0, 1.0),
        "collisions": Option(True, "ball–ball collisions", "bool"),
        "substeps": Option(2, "physics substeps per frame", "int", 1, 64),
        "events_rate": Option(0.0, "chance per step of a random world event (gravity change, added ball, "
                              "recolour), recorded in info['events'], for collecting event data", "float", 0.0, 1.0),
    }
    for key, value in defaults.items():
        spec = opts[key]
        opts[key] = Option(value, spec.doc, spec.kind, spec.low, spec.high, spec.choices)
    return opts


class BallScene(Scene):
    """Balls in a box. No actions (``Discrete(1)``): the scene runs on its own."""

    options = common_options()
    supported_events = ("gravity", "add_ball", "recolor")
    #: random events add balls only while fewer than this many are in play (the render state holds 8)
    random_event_max_balls = 8

    # -- episode start --------------------------------------------------------
    def initial(self, rng: np.random.Generator, options: dict[str, Any]) -> State:
        o = options
        n = int(rng.integers(o["count"][0], o["count"][1] + 1))
        radius = np.array([self.px(rng.uniform(*o["radius_range"])) for _ in range(n)])
        pos, vel = self.place(rng, o, radius)
        palette = list(o["colors"])
        order = rng.permutation(len(palette))
        color = np.array([palette[order[i % len(palette)]] for i in range(n)], dtype=np.uint8)
        return {
            "t": 0,
            "pos": pos,
            "vel": vel,
            "radius": radius,
            "mass": math.pi * radius**2,
            "color": color,
            "gravity": np.array([0.0, self.px(o["gravity"])]),
            "restitution": float(o["restitution"]),
            "collisions": bool(o["collisions"]),
            "substeps": int(o["substeps"]),
            "wall_hits": np.zeros(n, dtype=np.int64),
            "ball_hits": np.zeros(n, dtype=np.int64),
            "events_rate": float(o.get("events_rate", 0.0)),
        }

    def random_velocity(self, rng: np.random.Generator, speed_range) -> np.ndarray:
        speed = self.px(rng.uniform(*speed_range))
        angle = rng.uniform(0.0, 2 * math.pi)
        return np.array([speed * math.cos(angle), speed * math.sin(angle)])

    def place(self, rng: np.random.Generator, o: dict, radius: np.ndarray):
        """Non-overlapping random positions, random directions. Returns (pos, vel)."""
        h, w = self.frame_size
        pos = np.zeros((len(radius), 2))
        for i, r in enumerate(radius):
            for _attempt in range(200):
                p = np.array([rng.uniform(r, w - r), rng.uniform(r, h - r)])
                if all(np.hypot(*(p - pos[j])) > r + radius[j] + 1 for j in range(i)):
                    break
            pos[i] = p
        vel = np.stack([self.random_velocity(rng, o["speed_range"]) for _ in radius]) if len(radius) else pos * 0
        return pos, vel

    # -- dynamics ---------------------------------------------------------------
    def step(self, state: State, action: Any, rng: np.random.Generator) -> State:
        h, w = self.frame_size
        rate = float(state.get("events_rate", 0.0))
        events: list[dict[str, Any]] = []
        if rate > 0 and rng.random() < rate:  # a random world event happens before this step's motion
            state, applied = self.apply_event(state, self.random_event(state, rng), rng)
            events.append(applied.to_dict())
        pos, vel, radius, mass = state["pos"], state["vel"], state["radius"], state["mass"]
        wall_hits, ball_hits = state["wall_hits"].copy(), state["ball_hits"].copy()
        dt = self.dt / state["substeps"]
        for _ in range(state["substeps"]):
            pos, vel = physics.ballistic(pos, vel, state["gravity"], dt)
            pos, vel, hit = physics.walls(pos, vel, radius, (w, h), state["restitution"])
            wall_hits += hit
            if state["collisions"]:
                pos, vel, hits = physics.collide(pos, vel, radius, mass)
                ball_hits += hits
        new = {**state, "t": state["t"] + 1, "pos": pos, "vel": vel, "wall_hits": wall_hits, "ball_hits": ball_hits}
        if rate > 0:
            new["events"] = events
        return new

    # -- world events --------------------------------------------------------------
    def apply_event(self, state: State, event, rng: np.random.Generator):
        """Apply a :class:`simcore.events.Event` exactly: (new state, event as applied,
        in 64-px-frame units with relative changes resolved and defaults drawn)."""
        from simcore.events import (
            DEFAULT_GRAVITY,
            GRAVITY_LIMIT,
            MAX_BALLS,
            Event,
            EventError,
        )

        if event.type == "gravity":
            current = float(state["gravity"][1]) / self.scale
            if event.gravity is not None:
                g = event.gravity
            elif abs(current) < 1e-9 and event.factor > 1:
                g = DEFAULT_GRAVITY * (event.factor / 1.5)  # "stronger" from zero: switch it on
            else:
                g = current * event.factor
            if abs(g) > GRAVITY_LIMIT:
                raise EventError(f"gravity would become {g:g} px/s², beyond ±{GRAVITY_LIMIT:g}")
            return {**state, "gravity": np.array([0.0, self.px(g)])}, Event("gravity", gravity=round(g, 6))
        n = len(state["radius"])
        if event.type == "recolor":
            idx = event.index + n if event.index < 0 else event.index
            if not 0 <= idx < n:
                raise EventError(f"there is no ball {event.index + 1 if event.index >= 0 else 'last'}: the scene "
                                 f"has {n} ball(s) (indices 0..{n - 1}; prompts count from 1)")
            color = state["color"].copy()
            color[idx] = event.color
            return {**state, "color": color}, Event("recolor", index=idx, color=event.color)
        if event.type == "add_ball":
            if n >= MAX_BALLS:
                raise EventError(f"the scene already holds {n} balls, the most it allows ({MAX_BALLS})")
            h, w = self.frame_size
            o = self.default_options
            r64 = event.radius if event.radius is not None else float(rng.uniform(*o["radius_range"]))
            r = self.px(r64)
            if event.pos is not None:
                x, y = self.px(event.pos[0]), self.px(event.pos[1])
                if not (r <= x <= w - r and r <= y <= h - r):
                    raise EventError(f"a ball of radius {r64:g} at {event.pos} would not lie inside the frame "
                                     f"(x in [{r64:g}, {w / self.scale - r64:g}], y in [{r64:g}, {h / self.scale - r64:g}]"
                                     ", 64-px frame units)")
                p = np.array([x, y])
            else:
                p = np.array([rng.uniform(r, w - r), rng.uniform(r, h - r)])
                for _attempt in range(200):  # a free spot if there is one
                    if all(np.hypot(*(p - q)) > r + rq + 1 for q, rq in zip(state["pos"], state["radius"])):
                        break
                    p = np.array([rng.uniform(r, w - r), rng.uniform(r, h - r)])
            v = np.array([self.px(c) for c in event.vel]) if event.vel is not None \
                else self.random_velocity(rng, o["speed_range"])
            if event.color is not None:
                c = np.array(event.color, dtype=np.uint8)
            else:
                used = {tuple(int(x) for x in row) for row in state["color"]}
                free = [tuple(col) for col in o["colors"] if tuple(col) not in used]
                choices = free or [tuple(col) for col in o["colors"]]
                c = np.array(choices[int(rng.integers(len(choices)))], dtype=np.uint8)
            new = {
                **state,
                "pos": np.concatenate([state["pos"], p[None]]),
                "vel": np.concatenate([state["vel"], v[None]]),
                "radius": np.concatenate([state["radius"], [r]]),
                "mass": np.concatenate([state["mass"], [math.pi * r * r]]),
                "color": np.concatenate([state["color"], c[None]]).astype(np.uint8),
                "wall_hits": np.concatenate([state["wall_hits"], np.zeros(1, dtype=np.int64)]),
                "ball_hits": np.concatenate([state["ball_hits"], np.zeros(1, dtype=np.int64)]),
            }
            applied = Event("add_ball", pos=(float(p[0] / self.scale), float(p[1] / self.scale)),
                            vel=(float(v[0] / self.scale), float(v[1] / self.scale)), radius=float(r64),
                            color=tuple(int(x) for x in c))
            return new, applied
        raise EventError(f"{self.id} does not support {event.type!r} events")

    def random_event(self, state: State, rng: np.random.Generator):
        """A random event for data collection: a gravity value in -60..240 (steps of 10),
        a ball added (while fewer than ``random_event_max_balls``), or a ball recoloured."""
        from simcore.events import Event

        n = len(state["radius"])
        kinds = ["gravity", "recolor"] if n else ["gravity"]
        if n < self.random_event_max_balls:
            kinds.append("add_ball")
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind == "gravity":
            return Event("gravity", gravity=float(10 * rng.integers(-6, 25)))
        if kind == "add_ball":
            return Event("add_ball")
        idx = int(rng.integers(n))
        palette = [tuple(int(x) for x in c) for c in self.default_options["colors"]]
        others = [c for c in palette if c != tuple(int(x) for x in state["color"][idx])] or palette
        return Event("recolor", index=idx, color=others[int(rng.integers(len(others)))])

    # -- drawing and ground truth ----------------------------------------------------
    def render(self, state: State) -> np.ndarray:
        frame = raster.blank(*self.frame_size, self.background)
        for (x, y), r, c in zip(state["pos"], state["radius"], state["color"]):
            raster.draw_disc(frame, x, y, r, c)
        return frame

    def objects(self, state: State) -> dict[str, Any]:
        n = len(state["radius"])
        return {
            "kind": ["ball"] * n,
            "pos": state["pos"].copy(),
            "vel": state["vel"].copy(),
            "radius": state["radius"].copy(),
            "size": np.repeat(2 * state["radius"][:, None], 2, axis=1),
            "color": state["color"].copy(),
            "mass": state["mass"].copy(),
            "visible": np.ones(n, dtype=bool),
            "wall_hits": state["wall_hits"].copy(),
            "ball_hits": state["ball_hits"].copy(),
        }
