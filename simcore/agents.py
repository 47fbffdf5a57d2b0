"""Policies: callables ``policy(observation, info) -> action``.

``simcore play --agent module:function`` loads any such callable (or a factory
returning one when called with no arguments); these are the built-in ones.
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any, Callable

import numpy as np

from simcore.errors import SimcoreError

Policy = Callable[[Any, dict], Any]


class StickyRandomPolicy:
    """Random actions that persist: keep the last action with probability ``stick``.

    Longer, purposeful-looking motions than i.i.d. noise, which is what a world
    model needs to see to learn what an action does.
    """

    def __init__(self, action_space, seed: int | None = None, stick: float = 0.8):
        self.action_space = action_space
        self.rng = np.random.default_rng(seed)
        self.stick = stick
        self.last = None
        self.action_space.seed(int(self.rng.integers(2**31)))

    def __call__(self, observation, info) -> Any:
        if self.last is None or self.rng.random() >= self.stick:
            self.last = self.action_space.sample()
        return self.last


def load_policy(spec: str) -> Policy:
    """Load ``module:function`` or ``path/to/file.py:function``.

    A class is instantiated with no arguments (so a policy can keep state).
    """
    if ":" not in spec:
        raise SimcoreError(f"agent must be given as module:function or file.py:function, got {spec!r}")
    mod_name, _, attr = spec.rpartition(":")
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            if not path.is_file():
                raise SimcoreError(f"agent file {mod_name!r} does not exist")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise SimcoreError(f"cannot import agent module {mod_name!r}: {exc}") from exc
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise SimcoreError(f"agent module {mod_name!r} has no attribute {attr!r}") from None
    if isinstance(obj, type):
        obj = obj()
    if not callable(obj):
        raise SimcoreError(f"agent {spec!r} is not callable")
    return obj
