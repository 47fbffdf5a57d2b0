"""One ball in uniform motion, no gravity (PhyWorld's inertia setting)."""
from __future__ import annotations

from simcore.balls import BallScene, common_options


class UniformMotion(BallScene):
    """One ball moving at constant velocity, bouncing elastically off the walls."""

    id = "simcore/UniformMotion-v0"
    # speed_range and radius_range are the in-distribution ranges; hold out e.g.
    # speed_range=(70, 100) or radius_range=(8, 10) as an out-of-distribution split.
    options = common_options(count=(1, 1), speed_range=(20.0, 60.0), radius_range=(4.0, 7.0))
