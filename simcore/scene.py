"""The Scene protocol: dynamics as pure functions of an explicit state.

A scene never stores per-episode data on itself: ``initial`` builds a state from an
RNG and options, ``step`` returns a new state, ``render`` draws one. That makes
snapshots, replays and lockstep comparison with a world model trivial (cf.
Gymnasium's FuncEnv). The ``World`` (``simcore.world``) wraps a scene into a
Gymnasium Env.

Units: lengths and speeds in options are given in pixels of a 64-pixel frame and
scaled by ``min(H, W) / 64`` (so a scene looks the same at any resolution); the
state and ``objects()`` are in pixels of the actual frame, seconds for time.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from simcore.errors import FrameSizeError, SceneOptionError

State = dict[str, Any]

DEFAULT_FRAME_SIZE = (64, 64)
REFERENCE_SIZE = 64  # option lengths are in pixels of a frame this big

# Distinct, saturated colours that unmix well against the dark background.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 60, 60),
    "green": (60, 200, 80),
    "blue": (70, 110, 240),
    "yellow": (240, 210, 60),
    "magenta": (210, 70, 210),
    "cyan": (60, 210, 220),
    "orange": (245, 140, 40),
    "white": (235, 235, 235),
}
BACKGROUND = (20, 20, 28)


def check_frame_size(frame_size) -> tuple[int, int]:
    """Validate a (height, width) pair: positive ints divisible by 8."""
    try:
        h, w = (int(v) for v in frame_size)
        ok = (h, w) == tuple(frame_size)
    except (TypeError, ValueError):
        raise FrameSizeError(f"frame_size must be a (height, width) pair, got {frame_size!r}") from None
    if not ok or h <= 0 or w <= 0 or h % 8 or w % 8:
        raise FrameSizeError(
            f"frame_size must be positive integers divisible by 8 (height, width), got {tuple(frame_size)!r}"
        )
    return h, w


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One scene parameter: its default, meaning and accepted values.

    kinds: ``float``, ``int``, ``bool``, ``range`` (a (low, high) pair of floats drawn
    from uniformly at reset), ``int_range``, ``colors`` (a list of palette names or RGB
    triples), ``choice``.
    """

    default: Any
    doc: str
    kind: str = "float"
    low: float | None = None
    high: float | None = None
    choices: tuple = ()

    def validate(self, name: str, value: Any) -> Any:
        def bad(why: str) -> SceneOptionError:
            return SceneOptionError(f"option {name!r}: {why} (got {value!r}; {self.doc})")

        def bounded(v: float) -> float:
            if not math.isfinite(v):
                raise bad("must be finite")
            if self.low is not None and v < self.low:
                raise bad(f"must be >= {self.low}")
            if self.high is not None and v > self.high:
                raise bad(f"must be <= {self.high}")
            return v

        k = self.kind
        if k == "bool":
            if not isinstance(value, (bool, np.bool_)):
                raise bad("must be true or false")
            return bool(value)
        if k in ("float", "int"):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise bad("must be a number")
            if k == "int" and float(value) != int(value):
                raise bad("must be an integer")
            return bounded(int(value) if k == "int" else float(value))
        if k in ("range", "int_range"):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = (value, value)  # a single value is a degenerate range
            try:
                lo, hi = value
                lo, hi = float(lo), float(hi)
            except (TypeError, ValueError):
                raise bad("must be a (low, high) pair or a single number") from None
            if lo > hi:
                raise bad("low must not exceed high")
            lo, hi = bounded(lo), bounded(hi)
            if k == "int_range":
                if lo != int(lo) or hi != int(hi):
                    raise bad("must be integers")
                return (int(lo), int(hi))
            return (lo, hi)
        if k == "colors":
            if isinstance(value, str):
                value = [value]
            out = []
            for c in value:
                if isinstance(c, str):
                    if c not in PALETTE:
                        raise bad(f"unknown colour {c!r}; known: {', '.join(PALETTE)}")
                    out.append(PALETTE[c])
                else:
                    try:
                        rgb = tuple(int(v) for v in c)
                    except (TypeError, ValueError):
                        raise bad("colours are palette names or (r, g, b) triples") from None
                    if len(rgb) != 3 or any(not 0 <= v <= 255 for v in rgb):
                        raise bad("an RGB colour needs three values in 0..255")
                    out.append(rgb)
            if not out:
                raise bad("needs at least one colour")
            return tuple(out)
        if k == "choice":
            if value not in self.choices:
                raise bad(f"must be one of {list(self.choices)}")
            return value
        raise AssertionError(f"unknown option kind {k!r}")


def resolve_options(specs: dict[str, Option], overrides: dict[str, Any] | None, base: dict | None = None) -> dict:
    """Merge ``overrides`` onto ``base`` (or the defaults), validating every value."""
    merged = dict(base) if base is not None else {k: s.validate(k, s.default) for k, s in specs.items()}
    for key, value in (overrides or {}).items():
        if key not in specs:
            close = difflib.get_close_matches(key, list(specs), n=2)
            hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
            known = ", ".join(sorted(specs)) or "(none)"
            raise SceneOptionError(f"unknown option {key!r}.{hint} Options of this scene: {known}")
        merged[key] = specs[key].validate(key, value)
    return merged


# ---------------------------------------------------------------------------
# Scene
# ---------------------------------------------------------------------------


class Scene:
    """Base class for scenes. Subclasses set ``id``, ``options``, ``action_space`` and
    implement ``initial``, ``step``, ``render`` and ``objects``.

    ``objects(state)`` returns the ground-truth object table: a dict of arrays with
    one row per object — ``kind`` (list of str), ``pos`` (N, 2) centre in pixels,
    ``vel`` (N, 2) px/s, ``radius`` (N,) (half the size for boxes), ``size`` (N, 2)
    width/height, ``color`` (N, 3) uint8, ``mass`` (N,), ``visible`` (N,) bool.
    """

    id: ClassVar[str] = ""
    description: ClassVar[str] = ""
    metadata: ClassVar[dict[str, Any]] = {"render_fps": 20}
    options: ClassVar[dict[str, Option]] = {}
    #: pygame key names -> action, for live play; the no-op action applies otherwise
    keymap: ClassVar[dict[str, Any]] = {}
    action_meanings: ClassVar[tuple[str, ...]] = ()
    background: ClassVar[tuple[int, int, int]] = BACKGROUND

    def __init__(self, frame_size=DEFAULT_FRAME_SIZE, **options: Any):
        self.frame_size = check_frame_size(frame_size)
        self.scale = min(self.frame_size) / REFERENCE_SIZE
        self.default_options = resolve_options(self.options, options)
        self.action_space = self.make_action_space()

    # -- to implement -------------------------------------------------------
    def make_action_space(self):
        """The Gymnasium action space. Default: one no-op action (``Discrete(1)``)."""
        import gymnasium as gym

        return gym.spaces.Discrete(1)

    def initial(self, rng: np.random.Generator, options: dict[str, Any]) -> State:
        raise NotImplementedError

    def step(self, state: State, action: Any, rng: np.random.Generator) -> State:
        raise NotImplementedError

    def render(self, state: State) -> np.ndarray:
        raise NotImplementedError

    def objects(self, state: State) -> dict[str, Any]:
        raise NotImplementedError

    def reward(self, state: State, action: Any, next_state: State) -> float:
        return 0.0

    def terminal(self, state: State) -> bool:
        return False

    def extra_info(self, state: State) -> dict[str, Any]:
        """Scene-specific entries for ``info`` besides the object table (e.g. a score)."""
        return {}

    # -- provided -------------------------------------------------------------
    @property
    def dt(self) -> float:
        return 1.0 / float(self.metadata["render_fps"])

    @property
    def noop_action(self) -> Any:
        """The action that means "do nothing" (0 for discrete spaces)."""
        return 0

    def resolve(self, overrides: dict[str, Any] | None) -> dict[str, Any]:
        """This scene's construction options with per-episode ``overrides`` applied."""
        return resolve_options(self.options, overrides, base=self.default_options)

    def demo_policy(self, seed: int | None = None):
        """A scripted policy ``(observation, info) -> action`` for headless demos and
        data collection. Default: sticky random actions (``simcore.agents``)."""
        from simcore.agents import StickyRandomPolicy

        return StickyRandomPolicy(self.action_space, seed=seed)

    def px(self, value: float) -> float:
        """Convert an option length (64-px reference frame) to pixels of this frame."""
        return float(value) * self.scale

    @classmethod
    def describe(cls) -> str:
        lines = (cls.description or cls.__doc__ or "").strip().splitlines()
        return lines[0] if lines else cls.__name__


SceneFactory = Callable[..., Scene]
