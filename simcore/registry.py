"""The scene registry: scene id -> Scene class, filled through the
``simcore_register_scenes`` hook."""
from __future__ import annotations

from typing import Iterator

from simcore.errors import PluginError, UnknownSceneError
from simcore.scene import Scene


class SceneRegistry:
    """Maps scene ids ("simcore/Pong-v0") to Scene classes."""

    def __init__(self) -> None:
        self._scenes: dict[str, type[Scene]] = {}

    def register(self, scene_cls: type[Scene]) -> type[Scene]:
        """Add a Scene subclass under its ``id``; usable as a class decorator."""
        if not (isinstance(scene_cls, type) and issubclass(scene_cls, Scene)):
            raise PluginError(f"can only register Scene subclasses, got {scene_cls!r}")
        sid = scene_cls.id
        if not sid or not isinstance(sid, str):
            raise PluginError(f"scene class {scene_cls.__qualname__} has no id (set the class attribute `id`)")
        known = self._scenes.get(sid)
        if known is not None and known is not scene_cls:
            raise PluginError(
                f"scene id {sid!r} is registered twice: {known.__module__}.{known.__qualname__} "
                f"and {scene_cls.__module__}.{scene_cls.__qualname__}"
            )
        self._scenes[sid] = scene_cls
        return scene_cls

    def get(self, scene_id: str) -> type[Scene]:
        try:
            return self._scenes[scene_id]
        except KeyError:
            raise UnknownSceneError(scene_id, list(self._scenes)) from None

    def ids(self) -> list[str]:
        return sorted(self._scenes)

    def __contains__(self, scene_id: object) -> bool:
        return scene_id in self._scenes

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids())

    def __len__(self) -> int:
        return len(self._scenes)
