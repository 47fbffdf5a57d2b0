"""simcore: a plugin-based, game-engine-style world simulator with generative rendering.

    import simcore
    world = simcore.make("simcore/BouncingBalls-v0")
    obs, info = world.reset(seed=0)
    obs, reward, terminated, truncated, info = world.step(world.action_space.sample())
"""
from __future__ import annotations

__version__ = "0.1.0"

from simcore.errors import (  # noqa: E402
    BackendError,
    CorruptRecordingError,
    FrameSizeError,
    InvalidActionError,
    PluginError,
    RecordingError,
    SceneOptionError,
    SimcoreError,
    UnknownSceneError,
)
from simcore.hookspecs import hookimpl, hookspec  # noqa: E402
from simcore.plugin_manager import create_plugin_manager, get_plugin_manager, get_registry  # noqa: E402
from simcore.scene import Option, Scene  # noqa: E402
from simcore.world import Transition, World, make, make_vec  # noqa: E402
from simcore.savefile import SaveFileError, load_session, save_session  # noqa: E402


def list_scenes() -> list[str]:
    """Ids of every registered scene."""
    return get_registry().ids()


def register_scene(scene_cls: type[Scene]) -> type[Scene]:
    """Register a Scene class in the default registry (usable as a decorator)."""
    return get_registry().register(scene_cls)


__all__ = [
    "__version__", "make", "make_vec", "list_scenes", "register_scene", "World", "Transition", "Scene", "Option",
    "hookimpl", "hookspec", "create_plugin_manager", "get_plugin_manager", "get_registry",
    "SimcoreError", "UnknownSceneError", "SceneOptionError", "FrameSizeError", "InvalidActionError",
    "BackendError", "PluginError", "RecordingError", "CorruptRecordingError",
    "save_session", "load_session", "SaveFileError",
]
