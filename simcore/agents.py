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


class HeldRandomPolicy:
    """Uniformly random actions, each held for a uniformly random ``hold`` = (lo, hi)
    steps, inclusive (``simcore collect --policy sticky``).

    Why: a world model must see every action in every situation, or it learns to
    ignore the action. A tracking demo policy's actions are predictable from the
    frames (the paddle follows the ball), so the model can fit the data without
    reading the action at all. Uniform draws make the action independent of the
    frame; holding each one for a few steps produces motions long enough to show
    what it does (one-step i.i.d. noise mostly jitters in place). Unlike
    :class:`StickyRandomPolicy` (geometric holds, often 1 step), every hold is
    bounded to ``lo..hi``.

    All randomness comes from ``seed`` (the episode seed in ``collect``), so a
    shard is the same whichever worker records it. A space with one action (a
    scene with no controls) just gets that action.
    """

    def __init__(self, action_space, seed: int | None = None, hold: tuple[int, int] = (3, 8)):
        lo, hi = hold
        if not 1 <= lo <= hi:
            raise ValueError(f"hold must be (lo, hi) with 1 <= lo <= hi, got {hold!r}")
        self.action_space = action_space
        self.hold = (int(lo), int(hi))
        self.rng = np.random.default_rng(seed)
        self.action_space.seed(int(self.rng.integers(2**31)))
        n = getattr(action_space, "n", None)  # Discrete(n)
        self.only = action_space.sample() if isinstance(n, (int, np.integer)) and n == 1 else None
        self.action: Any = None
        self.left = 0  # steps the current action is still held

    def __call__(self, observation, info) -> Any:
        if self.only is not None:
            return self.only
        if self.left == 0:
            self.action = self.action_space.sample()
            self.left = int(self.rng.integers(self.hold[0], self.hold[1] + 1))
        self.left -= 1
        return self.action


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
