"""Balls passing behind a static occluder (object permanence)."""
from __future__ import annotations

from typing import Any

import numpy as np

from simcore import raster
from simcore.balls import BallScene, common_options
from simcore.scene import Option, State

OCCLUDER_COLOR = (128, 128, 128)


class Occlusion(BallScene):
    """Balls moving left/right behind a grey wall they pass behind and reappear from."""

    id = "simcore/Occlusion-v0"
    options = {
        **common_options(count=(2, 3)),
        "occluder": Option((26.0, 38.0), "occluder's x extent (left, right) in px of a 64-px frame; full height",
                           "range", 0.0, 64.0),
    }

    def initial(self, rng: np.random.Generator, options: dict[str, Any]) -> State:
        state = super().initial(rng, options)
        x0, x1 = options["occluder"]
        state["occluder"] = np.array([self.px(x0), 0.0, self.px(x1), float(self.frame_size[0])])
        return state

    def render(self, state: State) -> np.ndarray:
        frame = super().render(state)
        raster.draw_rect(frame, *state["occluder"], OCCLUDER_COLOR)
        return frame

    def objects(self, state: State) -> dict[str, Any]:
        table = super().objects(state)
        x0, _, x1, _ = state["occluder"]
        x, r = state["pos"][:, 0], state["radius"]
        # visible unless the whole disc lies inside the occluder's x extent
        table["visible"] = ~((x - r >= x0) & (x + r <= x1))
        return table
