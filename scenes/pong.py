"""Pong: the player's paddle (left) against a scripted opponent (right).

The action-driven scene: discrete keyboard actions (no-op, up, down) and a reward
(+1 when the opponent misses, -1 when the player does).
"""
from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from simcore import raster
from simcore.scene import PALETTE, Option, Scene, State

PADDLE_X = 4.0  # paddle centre's distance from its side wall, px of a 64-px frame
PADDLE_W = 2.0


class Pong(Scene):
    """Pong against a scripted opponent; up/down moves the left paddle."""

    id = "simcore/Pong-v0"
    options = {
        "ball_speed_range": Option((35.0, 55.0), "ball speed at serve in px/s (64-px frame)", "range", 1.0, 400.0),
        "ball_radius": Option(2.5, "ball radius in px (64-px frame)", "float", 1.0, 8.0),
        "paddle_height": Option(14.0, "paddle height in px (64-px frame)", "float", 4.0, 64.0),
        "paddle_speed": Option(60.0, "player paddle speed in px/s (64-px frame)", "float", 1.0, 400.0),
        "opponent_speed": Option(35.0, "opponent paddle speed in px/s (64-px frame)", "float", 0.0, 400.0),
        "points_to_win": Option(5, "the episode ends when a side reaches this score (0 = never)", "int", 0, 1000),
    }
    keymap = {"up": 1, "w": 1, "down": 2, "s": 2}
    action_meanings = ("noop", "up", "down")
    colors = {"ball": PALETTE["white"], "player": PALETTE["cyan"], "opponent": PALETTE["orange"]}

    def make_action_space(self):
        return gym.spaces.Discrete(3)

    # -- episode start --------------------------------------------------------
    def initial(self, rng: np.random.Generator, options: dict[str, Any]) -> State:
        h, _ = self.frame_size
        state = {
            "t": 0,
            "paddle_y": np.array([h / 2, h / 2]),
            "score": np.zeros(2, dtype=np.int64),
            "ball_radius": self.px(options["ball_radius"]),
            "paddle_h": self.px(options["paddle_height"]),
            "paddle_speed": self.px(options["paddle_speed"]),
            "opponent_speed": self.px(options["opponent_speed"]),
            "speed_range": tuple(self.px(v) for v in options["ball_speed_range"]),
            "points_to_win": int(options["points_to_win"]),
            "hits": 0,
        }
        return self.serve(state, rng)

    def serve(self, state: State, rng: np.random.Generator) -> State:
        h, w = self.frame_size
        speed = rng.uniform(*state["speed_range"])
        angle = rng.uniform(-math.pi / 5, math.pi / 5) + (math.pi if rng.random() < 0.5 else 0.0)
        return {
            **state,
            "ball_pos": np.array([w / 2, rng.uniform(h * 0.25, h * 0.75)]),
            "ball_vel": np.array([speed * math.cos(angle), speed * math.sin(angle)]),
        }

    # -- dynamics ---------------------------------------------------------------
    def step(self, state: State, action: Any, rng: np.random.Generator) -> State:
        h, w = self.frame_size
        dt = self.dt
        half = state["paddle_h"] / 2
        paddle_y = state["paddle_y"].copy()
        move = {0: 0.0, 1: -1.0, 2: 1.0}[int(action)]
        paddle_y[0] += move * state["paddle_speed"] * dt
        # the opponent follows the ball while it approaches, at a limited speed
        pos, vel = state["ball_pos"].copy(), state["ball_vel"].copy()
        if vel[0] > 0:
            gap = pos[1] - paddle_y[1]
            paddle_y[1] += float(np.clip(gap, -state["opponent_speed"] * dt, state["opponent_speed"] * dt))
        paddle_y = np.clip(paddle_y, half, h - half)

        pos = pos + vel * dt
        r = state["ball_radius"]
        if pos[1] < r and vel[1] < 0:
            pos[1], vel[1] = 2 * r - pos[1], -vel[1]
        if pos[1] > h - r and vel[1] > 0:
            pos[1], vel[1] = 2 * (h - r) - pos[1], -vel[1]

        hits = state["hits"]
        score = state["score"].copy()
        px = self.px(PADDLE_X) + self.px(PADDLE_W) / 2  # paddle faces
        for side, face, sign in ((0, px, 1.0), (1, w - px, -1.0)):
            approaching = vel[0] * sign < 0
            crossed = (pos[0] - r <= face) if side == 0 else (pos[0] + r >= face)
            if approaching and crossed and abs(pos[1] - paddle_y[side]) <= half + r:
                offset = (pos[1] - paddle_y[side]) / (half + r)  # -1..1: where it hit
                speed = float(np.hypot(*vel)) * 1.03
                angle = offset * math.pi / 3.5
                vel = np.array([sign * speed * math.cos(angle), speed * math.sin(angle)])
                pos[0] = face + sign * r
                hits += 1
        new = {**state, "t": state["t"] + 1, "paddle_y": paddle_y, "ball_pos": pos, "ball_vel": vel, "hits": hits}
        if pos[0] < -r or pos[0] > w + r:
            score[1 if pos[0] < 0 else 0] += 1
            new = self.serve({**new, "score": score}, rng)
        return new

    def reward(self, state: State, action: Any, next_state: State) -> float:
        gained = next_state["score"] - state["score"]
        return float(gained[0] - gained[1])

    def terminal(self, state: State) -> bool:
        return state["points_to_win"] > 0 and int(state["score"].max()) >= state["points_to_win"]

    # -- drawing and ground truth ----------------------------------------------------
    def paddle_boxes(self, state: State):
        _, w = self.frame_size
        half_w, half_h = self.px(PADDLE_W) / 2, state["paddle_h"] / 2
        xs = (self.px(PADDLE_X), w - self.px(PADDLE_X))
        return [(x - half_w, y - half_h, x + half_w, y + half_h) for x, y in zip(xs, state["paddle_y"])]

    def render(self, state: State) -> np.ndarray:
        frame = raster.blank(*self.frame_size, self.background)
        for box, who in zip(self.paddle_boxes(state), ("player", "opponent")):
            raster.draw_rect(frame, *box, self.colors[who])
        raster.draw_disc(frame, *state["ball_pos"], state["ball_radius"], self.colors["ball"])
        return frame

    def objects(self, state: State) -> dict[str, Any]:
        boxes = self.paddle_boxes(state)
        r = state["ball_radius"]
        pos = [state["ball_pos"]] + [((x0 + x1) / 2, (y0 + y1) / 2) for x0, y0, x1, y1 in boxes]
        size = [(2 * r, 2 * r)] + [(x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes]
        return {
            "kind": ["ball", "paddle", "paddle"],
            "pos": np.array(pos, dtype=np.float64),
            "vel": np.array([state["ball_vel"], (0.0, 0.0), (0.0, 0.0)], dtype=np.float64),
            "radius": np.array([r] + [s[1] / 2 for s in size[1:]]),
            "size": np.array(size, dtype=np.float64),
            "color": np.array([self.colors["ball"], self.colors["player"], self.colors["opponent"]], dtype=np.uint8),
            "mass": np.array([math.pi * r * r, np.inf, np.inf]),
            "visible": np.ones(3, dtype=bool),
        }

    def extra_info(self, state: State) -> dict[str, Any]:
        return {"score": state["score"].copy()}

    def demo_policy(self, seed: int | None = None):
        return PongTracker(seed)


class PongTracker:
    """Scripted Pong player: moves the paddle towards the ball, with 15% random moves
    so that recordings show every action in every situation."""

    def __init__(self, seed: int | None = None, noise: float = 0.15):
        self.rng = np.random.default_rng(seed)
        self.noise = noise

    def __call__(self, observation, info) -> int:
        objects = info.get("objects") if isinstance(info, dict) else None
        if objects is None or self.rng.random() < self.noise:
            return int(self.rng.integers(3))
        ball_y, paddle_y = objects["pos"][0][1], objects["pos"][1][1]
        if abs(ball_y - paddle_y) < 1.5:
            return 0
        return 1 if ball_y < paddle_y else 2
