"""N balls in a box: elastic walls and ball–ball collisions."""
from __future__ import annotations

from simcore.balls import BallScene, common_options


class BouncingBalls(BallScene):
    """Several balls bouncing in a box, colliding elastically with walls and each other."""

    id = "simcore/BouncingBalls-v0"
    options = common_options(count=(2, 4))
