"""Errors simcore raises on bad input.

Every error names the problem and, where it helps, what would have been accepted.
They subclass the built-in exception a caller would naturally catch (``KeyError``
for an unknown scene, ``ValueError`` for a bad value) so generic code keeps working.
"""
from __future__ import annotations

import difflib


class SimcoreError(Exception):
    """Base class of every error simcore raises on purpose."""


class UnknownSceneError(SimcoreError, KeyError):
    """A scene id that no plugin registered."""

    def __init__(self, scene_id: str, known: list[str]):
        close = difflib.get_close_matches(scene_id, known, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        msg = f"unknown scene {scene_id!r}.{hint} Registered scenes: {', '.join(sorted(known)) or '(none)'}"
        super().__init__(msg)
        self.scene_id = scene_id

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class SceneOptionError(SimcoreError, ValueError):
    """An option a scene does not have, or a value it cannot take."""


class FrameSizeError(SimcoreError, ValueError):
    """A frame size the scenes or the model cannot draw (must divide by 8)."""


class InvalidActionError(SimcoreError, ValueError):
    """An action outside the world's action space."""


class BackendError(SimcoreError, ValueError):
    """A backend name that does not exist, or one that cannot run here."""


class PluginError(SimcoreError, RuntimeError):
    """A plugin that cannot be found, loaded or disabled."""


class RecordingError(SimcoreError, ValueError):
    """Misuse of the recording API, or a recording that cannot be read."""


class CorruptRecordingError(RecordingError):
    """A recording whose bytes are not a valid simcore stream (corrupt or hostile)."""
