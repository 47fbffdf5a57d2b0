"""One ball under gravity: a projectile launched upward, bouncing off the floor."""
from __future__ import annotations

import math

import numpy as np

from simcore.balls import BallScene, common_options
from simcore.scene import Option


class Projectile(BallScene):
    """A ball thrown up and sideways under gravity, bouncing off the floor and walls."""

    id = "simcore/Projectile-v0"
    options = {
        **common_options(count=(1, 1), gravity=120.0, speed_range=(50.0, 90.0)),
        "angle_range": Option((45.0, 80.0), "launch angle above the horizontal in degrees", "range", 0.0, 90.0),
    }

    def place(self, rng: np.random.Generator, o: dict, radius: np.ndarray):
        h, w = self.frame_size
        r = radius[0]
        x = rng.uniform(r, w - r)
        y = rng.uniform(h * 0.6, h - r)
        speed = self.px(rng.uniform(*o["speed_range"]))
        angle = math.radians(rng.uniform(*o["angle_range"]))
        direction = 1.0 if x < w / 2 else -1.0  # throw towards the middle
        vel = np.array([[direction * speed * math.cos(angle), -speed * math.sin(angle)]])
        return np.array([[x, y]]), vel
