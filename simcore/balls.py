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
    }
    for key, value in defaults.items():
        spec = opts[key]
        opts[key] = Option(value, spec.doc, spec.kind, spec.low, spec.high, spec.choices)
    return opts


class BallScene(Scene):
    """Balls in a box. No actions (``Discrete(1)``): the scene runs on its own."""

    options = common_options()

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
        return {**state, "t": state["t"] + 1, "pos": pos, "vel": vel, "wall_hits": wall_hits, "ball_hits": ball_hits}

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
