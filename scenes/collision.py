"""Two balls on a collision course; masses are proportional to area."""
from __future__ import annotations

import math

import numpy as np

from simcore.balls import BallScene, common_options
from simcore.scene import Option


class Collision(BallScene):
    """Two balls launched towards each other; elastic collision, masses ∝ area."""

    id = "simcore/Collision-v0"
    options = {
        **common_options(count=(2, 2), radius_range=(4.0, 8.0), speed_range=(25.0, 60.0)),
        "aim_jitter": Option(8.0, "max angle in degrees between a ball's velocity and the line to the other", "float", 0.0, 45.0),
    }

    def place(self, rng: np.random.Generator, o: dict, radius: np.ndarray):
        h, w = self.frame_size
        n = len(radius)
        pos = np.zeros((n, 2))
        vel = np.zeros((n, 2))
        for i, r in enumerate(radius):
            side = 0.25 if i % 2 == 0 else 0.75
            pos[i] = [rng.uniform(w * side - w * 0.1, w * side + w * 0.1), rng.uniform(h * 0.3, h * 0.7)]
            pos[i] = np.clip(pos[i], r, np.array([w, h]) - r)
        for i in range(n):
            target = pos[(i + 1) % n]
            base = math.atan2(target[1] - pos[i][1], target[0] - pos[i][0])
            angle = base + math.radians(rng.uniform(-o["aim_jitter"], o["aim_jitter"]))
            speed = self.px(rng.uniform(*o["speed_range"]))
            vel[i] = [speed * math.cos(angle), speed * math.sin(angle)]
        return pos, vel
