"""Built-in scenes (installed as ``simcore.scenes``), one module per scene.

They register through the same hook a user's scene would use.
"""
from __future__ import annotations

from simcore.hookspecs import hookimpl

from .bouncing_balls import BouncingBalls
from .collision import Collision
from .occlusion import Occlusion
from .pong import Pong
from .projectile import Projectile
from .uniform_motion import UniformMotion

SCENES = (UniformMotion, Projectile, Collision, BouncingBalls, Occlusion, Pong)


@hookimpl
def simcore_register_scenes(registry) -> None:
    for scene in SCENES:
        registry.register(scene)
